"""``kiln export NB [-o OUT] [--to FORMAT]``: a notebook as a Python module with a typed CLI,
or (``--to py:percent`` and other jupytext formats) as a paired text notebook.

An existing file is overwritten only when kiln export wrote it and nobody changed it since (its
``kiln-export`` checksum matches, see :mod:`kiln.convert.stamp`), or with ``--force``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kiln.errors import UsageError

SCRIPT = "script"


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        parents=parents,
        help="export a notebook as a Python script with a command-line interface",
        description="Write the notebook as a plain Python module: its parameters become a "
        "typed command line (python report.py --region EU --n 3) and a main(**params) "
        "function that runs the code cells in order; markdown becomes comments; magics are "
        "translated where a plain-Python equivalent is safe and flagged otherwise. "
        "With --to py:percent (or another jupytext format) write a jupytext text notebook.",
    )
    p.add_argument("notebook")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="where to write (default: the notebook's name with .py, or the format's "
        "extension; - for stdout)",
    )
    p.add_argument(
        "--to",
        default=SCRIPT,
        metavar="FORMAT",
        help="script (default: a module with a CLI), or a jupytext format: py:percent, "
        "py:light, md, md:myst, ...",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing file that kiln export did not write, or that was edited "
        "since it wrote it",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from kiln.notebook import atomic_write_text, load_notebook

    source = Path(args.notebook)
    nb = load_notebook(source)
    target = _target(source, args.output, args.to)
    if args.to == SCRIPT:
        text, summary = _script(nb, source, target)
    else:
        from kiln.convert.export import export_jupytext

        paired = target is not None and target.parent.resolve() == source.parent.resolve()
        paired = paired and target is not None and target.stem == source.stem
        text = export_jupytext(nb, args.to, paired=paired)
        summary = f"{args.to} text notebook" + (f", paired with {source.name}" if paired else "")
    if target is None:
        sys.stdout.write(text)
        return 0
    _refuse_overwrite(target, force=args.force)
    try:
        atomic_write_text(target, text)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    if args.to == SCRIPT:
        _make_executable(target)
    if not args.quiet:
        print(f"Wrote {target}: {summary}", file=sys.stderr)
    return 0


def _target(source: Path, output: str | None, fmt: str) -> Path | None:
    if output == "-":
        return None
    if output:
        return Path(output)
    extension = "py" if fmt == SCRIPT else fmt.split(":", 1)[0].lstrip(".")
    target = source.with_suffix(f".{extension}")
    if target == source:
        raise UsageError(f"--to {fmt} would overwrite the notebook itself; give -o OUT")
    return target


def _script(nb: Any, source: Path, target: Path | None) -> tuple[str, str]:
    from kiln.convert.export import export_script

    name = target.name if target is not None else source.with_suffix(".py").name
    result = export_script(nb, source_name=source.name, script_name=name)
    for issue in result.warnings:
        where = f" cell {issue.cell}" if issue.cell >= 0 else ""
        print(f"Warning: {source}{where}: {issue.message}", file=sys.stderr)
    options = ", ".join(f"--{p.name.replace('_', '-')}" for p in result.parameters) or "none"
    summary = f"{result.entry}() and a command line (options: {options})"
    if result.warnings:
        summary += f"; {len(result.warnings)} warning(s) above"
    return result.text, summary


#: the first line of scripts written before kiln export recorded a checksum
_UNCHECKED_MARKER = "# kiln export: generated from"


def _refuse_overwrite(target: Path, *, force: bool) -> None:
    """Never overwrite a file someone wrote or edited by hand, unless told to."""
    from kiln.convert import stamp

    if force or not target.exists():
        return
    if target.is_dir():
        raise UsageError(f"cannot write {target}: it is a folder")
    try:
        text = target.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = ""  # not text kiln export wrote
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None
    state = stamp.check(text)
    if state == "intact":
        return
    if state == "edited":
        why = (
            "was edited since kiln export wrote it (its kiln-export checksum no longer matches); "
            "pass --force to overwrite it and lose those edits"
        )
    elif _UNCHECKED_MARKER in text[:2000]:
        why = (
            "was written by an older kiln export that recorded no checksum, so Kiln cannot tell "
            "whether it was edited since; pass --force to overwrite it"
        )
    else:
        why = "exists and was not written by kiln export; pass --force to overwrite it"
    raise UsageError(f"{target} {why}, or -o to write elsewhere")


def _make_executable(target: Path) -> None:
    """``chmod +x`` as far as the umask allows (0755 under the usual 022)."""
    umask = os.umask(0)  # the only way to read it; the CLI runs one thread
    os.umask(umask)
    try:
        os.chmod(target, 0o777 & ~umask)
    except OSError as exc:  # a file system without modes: the script still runs with python
        print(f"Warning: could not make {target} executable: {exc.strerror}", file=sys.stderr)
