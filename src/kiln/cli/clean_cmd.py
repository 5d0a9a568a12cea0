"""``kiln clean NB|DIR...``: strip outputs, execution counts and volatile metadata.

Three modes: rewrite files in place (only those that change), ``--check`` for pre-commit and CI
(exit 1 and a list when any file is not clean), and ``--stdout``/``-`` for a git clean filter
(stdin to stdout).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kiln.errors import UsageError


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "clean",
        parents=parents,
        help="strip outputs and volatile metadata from notebooks",
        description="Strip outputs, execution counts and volatile metadata (timings, widget "
        "state, papermill/Kiln run data, UI state) from notebooks, keeping sources, tags, "
        "kernelspec and the outputs of cells tagged 'keep-output'. Files are rewritten "
        "atomically and only when something changes.",
        epilog="Exit codes: 0 clean (or cleaned), 1 --check found notebooks to clean, "
        "2 a notebook could not be read. As a git clean filter: kiln clean --stdout -",
    )
    p.add_argument("paths", nargs="+", metavar="NB", help="notebooks or folders; - for stdin")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="change nothing; list the notebooks that are not clean and exit 1 if any",
    )
    mode.add_argument(
        "--stdout",
        action="store_true",
        help="write the cleaned notebook to stdout instead of in place (one notebook, or - "
        "for stdin: a git clean filter)",
    )
    p.add_argument(
        "--keep-outputs",
        action="store_true",
        help="keep every cell's outputs (execution counts and volatile metadata still go)",
    )
    p.add_argument("--json", action="store_true", help="print what was (or would be) cleaned")
    p.add_argument(
        "--stdin-name",
        metavar="NAME",
        default="<stdin>",
        help="the file name to show in messages when reading stdin (git passes %%f)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.stdout or args.paths == ["-"]:
        if len(args.paths) != 1:
            raise UsageError("--stdout takes one notebook (or - for stdin)")
        return _to_stdout(args.paths[0], args)
    if "-" in args.paths:
        raise UsageError("- (stdin) cannot be mixed with files; use: kiln clean --stdout -")
    return _files(args)


def _to_stdout(path: str, args: argparse.Namespace) -> int:
    from kiln.convert.clean import clean_text
    from kiln.errors import NotebookError
    from kiln.notebook.io import read_bytes

    if path != "-":
        text, _ = clean_text(read_bytes(path), path=path, keep_outputs=args.keep_outputs)
        _write_utf8(text)
        return 0
    data = sys.stdin.buffer.read()
    try:
        text, _ = clean_text(data, path=args.stdin_name, keep_outputs=args.keep_outputs)
    except NotebookError as exc:
        # A git filter that fails blocks `git add` (the filter is `required`); a file that is not
        # a notebook yet (merge conflict markers, a half-written file) passes through unchanged.
        message = exc.message.rstrip(".")
        print(f"Warning: {message}; passed through unchanged", file=sys.stderr)
        sys.stdout.buffer.write(data)
        return 0
    _write_utf8(text)
    return 0


def _write_utf8(text: str) -> None:
    # Bytes, not text: a git filter may run under LANG=C, where sys.stdout is ASCII.
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.flush()


def _files(args: argparse.Namespace) -> int:
    from kiln.convert.clean import clean_file, find_notebooks
    from kiln.errors import NotebookError

    notebooks = find_notebooks(args.paths)
    dirty: list[str] = []
    failed = 0
    report: list[dict[str, Any]] = []
    for path in notebooks:
        try:
            result = clean_file(path, check=args.check, keep_outputs=args.keep_outputs)
        except NotebookError as exc:
            failed += 1
            print(f"Error: {exc.message}", file=sys.stderr)
            report.append({"path": str(path), "error": exc.message})
            continue
        report.append(
            {"path": str(path), "clean": not result.changed, "changes": result.summary() or None}
        )
        if result.changed:
            dirty.append(str(path))
            verb = "not clean" if args.check else "cleaned"
            if (args.check or not args.quiet) and not args.json:
                print(f"{path}: {verb} ({result.summary()})")
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    elif not args.quiet:
        _summary(len(notebooks), len(dirty), failed, check=args.check)
    if failed:
        return 2
    return 1 if args.check and dirty else 0


def _summary(total: int, dirty: int, failed: int, *, check: bool) -> None:
    if total == 0:
        print("No notebooks found.", file=sys.stderr)
        return
    verb = "to clean" if check else "cleaned"
    parts = [f"{dirty} {verb}", f"{total - dirty - failed} already clean"]
    if failed:
        parts.append(f"{failed} unreadable")
    hint = " (run: kiln clean PATH...)" if check and dirty else ""
    print(f"{total} notebook(s): {', '.join(parts)}{hint}", file=sys.stderr)
