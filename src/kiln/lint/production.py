"""KL201-KL207: what stops a notebook that works on a laptop from running unattended."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kiln.lint.cells import CodeCell, NotebookView, output_size, text_of
from kiln.lint.findings import Hit

# A path that only exists on one machine: a home folder, a drive letter, or `~/`.
_LOCAL_PATH = re.compile(
    r"(?:^|(?<=[\s\"'=(,;:]))"
    r"(?P<path>/(?:Users|home)/[A-Za-z0-9._-]+(?:/[^\s\"']*)?"
    r"|/root/[^\s\"']+"
    r"|~[/\\][^\s\"']*"
    r"|[A-Za-z]:[\\/](?:[^\s\"'\\/]+[\\/]?)+)"
)
_PIP_INSTALL = re.compile(
    r"^\s*(?:[!%]\s*)?(?:python3?\s+-m\s+)?(?:pip3?|conda|mamba|uv\s+pip)\s+install\b", re.M
)
_INPUT_CALLS = frozenset({"input", "getpass", "raw_input"})
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def large_outputs(cells: Sequence[CodeCell], *, max_output_kb: int) -> Iterator[Hit]:
    limit = max_output_kb * 1024
    for cell in cells:
        size = sum(output_size(o) for o in cell.outputs)
        if size > limit:
            yield Hit(
                "KL201",
                cell.index,
                message=f"outputs take {size // 1024} KB (limit {max_output_kb} KB)",
            )


def embedded_data(view: NotebookView, *, max_source_kb: int) -> Iterator[Hit]:
    limit = max_source_kb * 1024
    for index, cell in enumerate(view.cells):
        size = len(text_of(cell.get("source")))
        attachments = cell.get("attachments")
        if isinstance(attachments, Mapping):
            size += sum(
                output_size({"data": a}) for a in attachments.values() if isinstance(a, Mapping)
            )
        if size > limit:
            yield Hit(
                "KL207",
                index,
                message=f"the cell embeds {size // 1024} KB of source and attachments "
                f"(limit {max_source_kb} KB)",
            )


def local_paths(cells: Sequence[CodeCell]) -> Iterator[Hit]:
    for cell in cells:
        if "/" not in cell.source and "\\" not in cell.source and "~" not in cell.source:
            continue
        seen: set[str] = set()
        for line, column, value in _strings(cell):
            for match in _LOCAL_PATH.finditer(value):
                path = match.group("path")
                if path in seen or _URL.match(value):
                    continue
                seen.add(path)
                yield Hit(
                    "KL202", cell.index, line, column, f"'{_short(path)}' is a path on one machine"
                )


def _strings(cell: CodeCell) -> Iterator[tuple[int, int, str]]:
    """String literals (line, column, value), and the text of magic and shell lines."""
    for node in cell.nodes().strings:
        yield node.lineno, node.col_offset + 1, str(node.value)
    for magic in cell.magics:
        yield magic.line, 1, magic.args


def interactive_input(cells: Sequence[CodeCell]) -> Iterator[Hit]:
    redefined = False
    for cell in cells:
        if cell.tree is None or not any(name in cell.source for name in _INPUT_CALLS):
            continue
        nodes = cell.nodes()
        redefined = redefined or "input" in nodes.function_names
        if redefined:
            continue
        for node in nodes.calls:
            name = _called_name(node.func)
            if name in _INPUT_CALLS:
                yield Hit(
                    "KL203",
                    cell.index,
                    node.lineno,
                    node.col_offset + 1,
                    f"{name}() waits for someone to type an answer",
                )


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and func.attr == "getpass":
        return "getpass"
    return None


def run_local_files(cells: Sequence[CodeCell]) -> Iterator[Hit]:
    for cell in cells:
        for magic in cell.magics:
            if magic.kind != "%" or magic.name not in ("run", "load"):
                continue
            target = _magic_target(magic.args)
            if target is None:
                continue
            yield Hit(
                "KL204",
                cell.index,
                magic.line,
                1,
                f"%{magic.name} {_short(target)} depends on a local file",
            )


def _magic_target(args: str) -> str | None:
    words = args.split()
    for index, word in enumerate(words):
        if word == "-m":  # `%run -m module`: an installed module, not a file
            return None
        if word.startswith("-"):
            continue
        if _URL.match(word):
            return None
        return " ".join(words[index : index + 1])
    return None


def pip_installs(cells: Sequence[CodeCell]) -> Iterator[Hit]:
    for cell in cells:
        if "install" not in cell.source:
            continue
        for match in _PIP_INSTALL.finditer(cell.source):
            line = cell.source.count("\n", 0, match.start()) + 1
            command = match.group(0).strip()
            yield Hit(
                "KL205",
                cell.index,
                line,
                1,
                f"`{_short(command)} ...` installs packages at run time",
            )


def missing_parameters(view: NotebookView, *, required_by: str) -> Iterator[Hit]:
    from kiln.errors import ParameterError
    from kiln.parameters import infer_schema

    try:
        schema = infer_schema(view_as_notebook(view), notebook=view.path)
    except ParameterError as exc:
        yield Hit("KL206", None, message=f"{exc.message} ({required_by})")
        return
    if schema.cell_index is None:
        yield Hit("KL206", None, message=f"no cell is tagged 'parameters' ({required_by})")


def view_as_notebook(view: NotebookView) -> Mapping[str, Any]:
    return {"metadata": view.metadata, "cells": list(view.cells)}


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
