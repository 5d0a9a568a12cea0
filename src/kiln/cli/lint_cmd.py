"""``kiln lint PATH...``: check notebooks for reproducibility, production and security problems."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lint",
        parents=parents,
        help="check notebooks for reproducibility, production and security problems",
        description="Check notebooks without running them: execution order, names used before "
        "they are defined, stale outputs, unseeded randomness, local paths, input(), pip "
        "installs, secrets and personal data in sources and outputs. Exit code 1 when an "
        "error is found, 2 on bad usage. Settings: the 'lint' section of kiln.yaml; the "
        "options below take precedence. A cell tagged kiln-noqa opts out of every rule, one "
        "tagged kiln-noqa:KL301 (an id or prefix; one tag per code) of that rule.",
    )
    p.add_argument(
        "paths",
        nargs="*",
        default=["."],
        metavar="PATH",
        help="notebooks or folders (searched recursively for *.ipynb; default: .)",
    )
    p.add_argument(
        "--format",
        choices=("text", "json", "sarif"),
        default="text",
        help="report format (default: text; sarif for code-scanning UIs)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE")
    p.add_argument(
        "--select",
        action="append",
        metavar="CODES",
        help="only these rules: ids or prefixes, comma-separated (KL1,KL301); replaces "
        "kiln.yaml's selection",
    )
    p.add_argument(
        "--ignore", action="append", metavar="CODES", help="skip these rules (ids or prefixes)"
    )
    p.add_argument(
        "--require-parameters",
        action="store_true",
        help="every notebook must have a cell tagged 'parameters' (KL206)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="worker processes for many notebooks (default 0: one per CPU; 1: none)",
    )
    p.add_argument("--no-hints", action="store_true", help="text format: leave out fix hints")
    p.add_argument("--list-rules", action="store_true", help="print the rules and exit")
    p.set_defaults(handler=handle)


def _codes(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [code for value in values for code in value.replace(",", " ").split()]


def handle(args: argparse.Namespace) -> int:
    from kiln.errors import UsageError
    from kiln.lint import FORMATS, lint_paths, load_lint_config
    from kiln.lint.formats import format_text

    if args.list_rules:
        _print_rules()
        return 0
    config = load_lint_config().with_overrides(
        select=_codes(args.select),
        ignore=_codes(args.ignore),
        require_parameters=args.require_parameters,
    )
    if args.jobs < 0:
        raise UsageError(f"--jobs must be 0 or more, not {args.jobs}")
    report = lint_paths(args.paths, config=config, jobs=args.jobs)
    if args.format == "text":
        text = format_text(report, hints=not args.no_hints)
    else:
        text = FORMATS[args.format](report)
    if args.output:
        from kiln.notebook import atomic_write_text

        try:
            atomic_write_text(args.output, text)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        from kiln.lint.formats import summary

        print(summary(report), file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return report.exit_code


def _print_rules() -> None:
    from kiln.lint import RULES

    for rule in RULES:
        options = ", ".join(f"{k}={v!r}" for k, v in rule.options.items())
        extra = f" [options: {options}]" if options else ""
        print(f"{rule.id}  {rule.severity:<7}  {rule.name:<22}  {rule.summary}{extra}")
