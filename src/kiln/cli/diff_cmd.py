"""``kiln diff A.ipynb B.ipynb``: a cell-level diff; exit 0 when the same, 1 when different.

``kiln diff --textconv NB`` prints one notebook as text: git's ``diff.kiln.textconv`` (set by
``kiln git install``) diffs those renderings, so ``git diff`` on notebooks is readable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from kiln.errors import UsageError


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff",
        parents=parents,
        help="show a cell-level diff of two notebooks",
        description="Compare two notebooks cell by cell: changed source lines, changed outputs "
        "(text line by line; images and other binary data as 'image changed') and metadata. "
        "Execution counts, timings and other volatile metadata are ignored unless "
        "--include-volatile.",
        epilog="Exit codes, like diff(1): 0 the same, 1 different, 2 trouble.",
    )
    p.add_argument(
        "notebooks", nargs="+", metavar="NB", help="A.ipynb B.ipynb (one with --textconv)"
    )
    p.add_argument("--no-outputs", action="store_true", help="ignore outputs")
    p.add_argument("--json", action="store_true", help="print the differences as JSON")
    p.add_argument(
        "--outputs",
        action="store_true",
        help="with --textconv: show every output (by default only what 'kiln clean' keeps: the "
        "outputs of cells tagged keep-output, so git diff shows what a commit holds)",
    )
    p.add_argument("--no-metadata", action="store_true", help="ignore metadata")
    p.add_argument(
        "--include-volatile",
        action="store_true",
        help="also compare execution counts, timings and run metadata",
    )
    p.add_argument(
        "--textconv",
        action="store_true",
        help="print one notebook as text (for git's diff.<driver>.textconv)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.textconv:
        if len(args.notebooks) != 1:
            raise UsageError("--textconv takes exactly one notebook")
        return _textconv(args.notebooks[0], outputs=args.outputs)
    if len(args.notebooks) != 2:
        raise UsageError(f"kiln diff takes two notebooks, got {len(args.notebooks)}")
    from kiln.convert.diff import diff_notebooks, read_notebook
    from kiln.convert.render import render_diff

    a_path, b_path = (_notebook_or_run(name) for name in args.notebooks)
    diff = diff_notebooks(
        read_notebook(a_path),
        read_notebook(b_path),
        a_name=a_path,
        b_name=b_path,
        outputs=not args.no_outputs,
        metadata=not args.no_metadata,
        volatile=args.include_volatile,
    )
    if args.json:
        print(json.dumps(diff.to_json(), indent=2, default=str))
    else:
        sys.stdout.write(render_diff(diff, color=_use_color(args.color)))
    return 1 if diff.changed else 0


def _notebook_or_run(name: str) -> str:
    """A notebook path, or the output notebook of a recorded run (an id, prefix or ``last``)."""
    if name.endswith(".ipynb") or os.path.exists(name) or name == "-":
        return name
    from kiln.cli.runs_cmd import open_store
    from kiln.errors import HomeNotFound, RunNotFound

    try:
        with open_store() as store:
            run = store.get_run(name)
    except (HomeNotFound, RunNotFound) as exc:
        raise UsageError(
            f"{name} is neither a notebook file nor a recorded run: {exc.message}"
        ) from None
    from kiln.store.artifacts import is_remote

    if run.output_path and is_remote(run.output_path):  # in the artefact store
        return _downloaded(run.id, run.output_path)
    if not run.output_path or not os.path.exists(run.output_path):
        raise UsageError(f"run {run.id} has no output notebook on disk ({run.output_path})")
    return run.output_path


def _downloaded(run_id: str, url: str) -> str:
    """A local copy of an output notebook kept in the artefact store (removed at exit)."""
    import atexit
    import tempfile

    from kiln.store.artifacts import read_bytes

    try:
        data = read_bytes(url)
    except OSError as exc:
        raise UsageError(
            f"cannot read the output notebook of run {run_id} ({url}): {exc}"
        ) from None
    fd, name = tempfile.mkstemp(prefix=f"kiln-{run_id}-", suffix=".ipynb")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    atexit.register(os.unlink, name)
    return name


def _use_color(choice: str) -> bool:
    from kiln.cli.style import use_color

    return use_color(choice, sys.stdout)


def _textconv(path: str, *, outputs: bool) -> int:
    from kiln.convert.diff import read_notebook
    from kiln.convert.render import render_text
    from kiln.errors import NotebookError

    try:
        text = render_text(read_notebook(path), outputs=outputs)
    except NotebookError:
        # Not a notebook (yet): show git the file as it is rather than failing the whole diff.
        with open(path, "rb") as fh:
            sys.stdout.buffer.write(fh.read())
        return 0
    sys.stdout.buffer.write(text.encode("utf-8"))
    return 0
