"""``kiln run IN.ipynb [OUT.ipynb] -p NAME VALUE ...`` (papermill's common flags accepted)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kiln.errors import UsageError


class _Ordered(argparse.Action):
    """Collect -p/-r/-f/-y into one list, in command-line order (later wins)."""

    def __call__(
        self, parser: Any, namespace: Any, values: Any, option_string: str | None = None
    ) -> None:
        items = list(getattr(namespace, "param_sources", None) or [])
        items.append((self.const, values))
        namespace.param_sources = items


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a notebook with parameters",
        description="Run a notebook on a Jupyter kernel with validated parameters, recording "
        "the run (history, log, output notebook). Drop-in for papermill's common flags.",
    )
    p.add_argument("notebook", help="the notebook to run (never modified)")
    p.add_argument("output", nargs="?", help="output notebook path (default: in the run folder)")
    g = p.add_argument_group("parameters (applied in command-line order; later wins)")
    g.add_argument(
        "-p",
        "--parameters",
        nargs=2,
        metavar=("NAME", "VALUE"),
        action=_Ordered,
        const="p",
        dest="param_sources",
        help="a value, typed by the schema",
    )
    g.add_argument(
        "-r",
        "--parameters-raw",
        nargs=2,
        metavar=("NAME", "VALUE"),
        action=_Ordered,
        const="r",
        dest="param_sources",
        help="a raw string value",
    )
    g.add_argument(
        "-f",
        "--parameters-file",
        metavar="FILE",
        action=_Ordered,
        const="f",
        dest="param_sources",
        help="a YAML file of name: value",
    )
    g.add_argument(
        "-y",
        "--parameters-yaml",
        metavar="YAML",
        action=_Ordered,
        const="y",
        dest="param_sources",
        help="inline YAML of name: value",
    )
    g.add_argument(
        "--allow-unknown", action="store_true", help="pass parameters the notebook does not declare"
    )
    e = p.add_argument_group("execution")
    e.add_argument("-k", "--kernel", help="kernel name (default: the notebook's)")
    e.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "fork", "kernel"],
        help="fork: a child of a warm Python per run (fresh state, no kernel start-up); "
        "kernel: a Jupyter kernel; auto (default): fork for Python notebooks on Linux",
    )
    e.add_argument(
        "--memory-limit",
        type=_size,
        metavar="SIZE",
        help="cap the run's memory, e.g. 512M or 2G (fork engine)",
    )
    e.add_argument("--cwd", help="working directory of the kernel (default: notebook's folder)")
    e.add_argument(
        "--cell-timeout",
        "--execution-timeout",
        type=_seconds,
        dest="cell_timeout",
        metavar="SECONDS",
        help="time limit for each cell",
    )
    e.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="time limit for the whole run, kernel start included",
    )
    e.add_argument(
        "--start-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="accepted for papermill compatibility (kernel start is bounded by --timeout)",
    )
    e.add_argument("--allow-errors", action="store_true", help="keep going after a cell error")
    e.add_argument(
        "--prepare-only",
        action="store_true",
        help="inject parameters and write the output without executing",
    )
    o = p.add_argument_group("output")
    o.add_argument("--log-output", action="store_true", help="stream cell output live")
    o.add_argument("--report-mode", action="store_true", help="hide cell inputs in the output")
    o.add_argument("--progress-bar", dest="progress", action="store_true", default=None)
    o.add_argument("--no-progress-bar", dest="progress", action="store_false")
    o.add_argument("--json", action="store_true", help="print the run record as JSON")
    o.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(handler=handle, param_sources=[])


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _size(text: str) -> int:
    units = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    raw = text.strip().upper().removesuffix("IB").removesuffix("B") or "0"
    unit = raw[-1] if raw[-1] in units else ""
    number = raw[:-1] if unit else raw
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 2G, got {text!r}") from None
    if value < 16 * 1024**2:
        raise argparse.ArgumentTypeError(f"a memory limit under 16M cannot run Python: {text}")
    return int(value)


def collect_parameters(sources: list[tuple[str, Any]]) -> dict[str, Any]:
    """Turn -p/-r/-f/-y occurrences into one mapping (CliValue for -p)."""
    from kiln.parameters import CliValue, load_yaml_values, validate_name

    values: dict[str, Any] = {}
    for kind, item in sources:
        if kind == "p":
            validate_name(item[0])
            values[item[0]] = CliValue(item[1])
        elif kind == "r":
            validate_name(item[0])
            values[item[0]] = item[1]
        elif kind == "y":
            values.update(load_yaml_values(item, origin="-y"))
        elif kind == "f":
            path = Path(item)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read parameters file {path}: {exc.strerror}") from None
            values.update(load_yaml_values(text, origin=str(path)))
    return values


def handle(args: argparse.Namespace) -> int:
    from kiln.cli.console import Console
    from kiln.runner import Runner, RunRequest

    request = RunRequest(
        notebook=Path(args.notebook),
        parameters=collect_parameters(args.param_sources),
        output=Path(args.output) if args.output else None,
        kernel=args.kernel,
        engine=args.engine,
        cwd=Path(args.cwd) if args.cwd else None,
        cell_timeout=args.cell_timeout,
        timeout=args.timeout,
        allow_errors=args.allow_errors,
        allow_unknown=args.allow_unknown,
        report_mode=args.report_mode,
        prepare_only=args.prepare_only,
        memory_limit=args.memory_limit,
    )
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    console = Console(progress=progress and not args.quiet, log_output=args.log_output)
    try:
        with Runner(observers=[console.observe]) as runner:
            run = runner.run(request, check=False)
    finally:
        console.close()
    if args.json:
        print(json.dumps(run.to_json(), indent=2, default=str))
    if run.state != "succeeded":
        from kiln.errors import KilnError
        from kiln.runner import raise_for_state

        try:
            raise_for_state(run)
        except KilnError as exc:
            print(exc.show(), file=sys.stderr)
            return exc.exit_code
    if not args.quiet and not args.json:
        console.summary(run)
    return 0
