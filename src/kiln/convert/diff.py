"""A cell-level diff of two notebooks: sources, outputs and metadata.

Cells are aligned in two passes with :mod:`difflib`: cells whose type and source are equal
anchor the alignment (a longest-matching-blocks pass), then within each stretch between anchors
cells pair up when they share a cell id or have the same type and similar sources (a small
dynamic programme that maximises total similarity, keeping order). What is left is added or
removed. Paired cells are compared part by part: source lines (unified diff), outputs (text
parts as line diffs; images and other binary data as "image/png changed") and metadata (flat
``key: value`` lines).

By default the volatile parts ``kiln clean`` strips (execution counts, timings, widget state,
run metadata) are ignored, so two runs of one notebook differ only where their work did.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "CellDiff",
    "DiffLine",
    "NotebookDiff",
    "align_cells",
    "diff_notebooks",
    "flatten_metadata",
    "output_parts",
    "read_notebook",
    "source_text",
]

#: (kind, text): kind is "-", "+", " " (context), "@" (hunk), "#" (sub-heading), "!" (note)
DiffLine = tuple[str, str]

CellStatus = Literal["added", "removed", "modified"]

#: a pair of cells at least this similar (0..1) is a modified cell, not a removal plus an addition
SIMILARITY: Final = 0.5
#: above this many candidate pairs between two anchors, pair cells in order instead of searching
_MAX_PAIRS: Final = 4000
_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class CellDiff:
    """One cell that differs; ``a_index``/``b_index`` are positions in each notebook."""

    status: CellStatus
    a_index: int | None
    b_index: int | None
    cell_type: str
    source: list[DiffLine] = field(default_factory=list)
    outputs: list[DiffLine] = field(default_factory=list)
    metadata: list[DiffLine] = field(default_factory=list)


@dataclass(frozen=True)
class NotebookDiff:
    """Every difference between two notebooks (``changed`` is False when they are the same)."""

    a_name: str
    b_name: str
    cells: list[CellDiff]
    metadata: list[DiffLine]
    cells_a: int
    cells_b: int

    @property
    def changed(self) -> bool:
        return bool(self.cells or self.metadata)

    def to_json(self) -> dict[str, Any]:
        """The diff as data (``kiln diff --json``)."""
        import dataclasses

        return {
            "a": self.a_name,
            "b": self.b_name,
            "changed": self.changed,
            "counts": self.counts(),
            "cells": [dataclasses.asdict(cell) for cell in self.cells],
            "metadata": [list(line) for line in self.metadata],
        }

    def counts(self) -> dict[str, int]:
        found = {"modified": 0, "added": 0, "removed": 0}
        for cell in self.cells:
            found[cell.status] += 1
        return found


def diff_notebooks(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    a_name: str = "a",
    b_name: str = "b",
    outputs: bool = True,
    metadata: bool = True,
    volatile: bool = False,
) -> NotebookDiff:
    """Diff two nbformat 4 notebooks (dicts or NotebookNodes; neither is modified).

    ``volatile`` also compares what ``kiln clean`` strips (execution counts, timings, ...).
    """
    if not volatile:
        from kiln.convert.clean import clean_json

        a_copy, b_copy = copy.deepcopy(dict(a)), copy.deepcopy(dict(b))
        clean_json(a_copy, keep_outputs=True)
        clean_json(b_copy, keep_outputs=True)
        a, b = a_copy, b_copy
    cells_a: Sequence[Mapping[str, Any]] = a.get("cells") or []
    cells_b: Sequence[Mapping[str, Any]] = b.get("cells") or []
    found: list[CellDiff] = []
    for i, j in align_cells(cells_a, cells_b):
        if i is None and j is not None:
            cell = cells_b[j]
            lines = [("+", line) for line in source_text(cell).splitlines()]
            found.append(CellDiff("added", None, j, _type(cell), lines))
        elif j is None and i is not None:
            cell = cells_a[i]
            lines = [("-", line) for line in source_text(cell).splitlines()]
            found.append(CellDiff("removed", i, None, _type(cell), lines))
        elif i is not None and j is not None:
            change = _cell_change(cells_a[i], cells_b[j], i, j, outputs=outputs, meta=metadata)
            if change is not None:
                found.append(change)
    notebook_meta: list[DiffLine] = []
    if metadata:
        notebook_meta = _mapping_diff(_notebook_fields(a), _notebook_fields(b))
    return NotebookDiff(a_name, b_name, found, notebook_meta, len(cells_a), len(cells_b))


def read_notebook(path: str) -> dict[str, Any]:
    """A notebook file as nbformat 4 JSON, with Kiln's clear errors for anything else.

    nbformat 4 files are used as they are (no upgrade, no new cell ids, no nbformat import);
    nbformat 3 files are upgraded.
    """
    from kiln.errors import NotebookReadError
    from kiln.notebook.io import load_json, read_bytes, to_v4

    raw = load_json(read_bytes(path), path=path)
    if raw.get("nbformat") == 4:
        for index, cell in enumerate(raw["cells"]):
            if not isinstance(cell, dict):
                raise NotebookReadError(
                    f"{path} is not a valid notebook: cell {index} is not a JSON object", path=path
                )
        return raw
    return dict(to_v4(raw, path=path))


def _type(cell: Mapping[str, Any]) -> str:
    return str(cell.get("cell_type", "code"))


def source_text(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _notebook_fields(nb: Mapping[str, Any]) -> dict[str, Any]:
    fields = {"nbformat": f"{nb.get('nbformat')}.{nb.get('nbformat_minor', 0)}"}
    fields.update(flatten_metadata(nb.get("metadata") or {}, "metadata."))
    return fields


# -- alignment ----------------------------------------------------------------------------------


def align_cells(
    a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]
) -> list[tuple[int | None, int | None]]:
    """Pairs (index in a, index in b) in order; None on one side for an added/removed cell."""
    keys_a = [(_type(c), source_text(c)) for c in a]
    keys_b = [(_type(c), source_text(c)) for c in b]
    matcher = difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False)
    pairs: list[tuple[int | None, int | None]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pairs.extend(zip(range(i1, i2), range(j1, j2), strict=True))
        else:
            pairs.extend(_pair_similar(a, b, list(range(i1, i2)), list(range(j1, j2))))
    return pairs


def _similarity(x: Mapping[str, Any], y: Mapping[str, Any]) -> float:
    """0..1; 2.0 for a shared cell id (Jupyter keeps a cell's id however much it is edited)."""
    if x.get("id") and x.get("id") == y.get("id"):
        return 2.0
    if _type(x) != _type(y):
        return 0.0
    sx, sy = source_text(x), source_text(y)
    if not sx.strip() and not sy.strip():
        return 1.0
    if len(sx) + len(sy) > 4000:  # long cells: compare lines, not characters
        matcher = difflib.SequenceMatcher(None, sx.splitlines(), sy.splitlines(), autojunk=False)
    else:
        matcher = difflib.SequenceMatcher(None, sx, sy, autojunk=False)
    if matcher.real_quick_ratio() < SIMILARITY or matcher.quick_ratio() < SIMILARITY:
        return 0.0
    return matcher.ratio()


def _pair_similar(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    ia: list[int],
    ib: list[int],
) -> list[tuple[int | None, int | None]]:
    """Order-keeping pairing of two stretches of cells that maximises total similarity."""
    n, m = len(ia), len(ib)
    if n == 0 or m == 0 or n * m > _MAX_PAIRS:
        return _in_order(a, b, ia, ib)
    sim = [[_similarity(a[i], b[j]) for j in ib] for i in ia]
    # best[x][y]: the best total for ia[x:] and ib[y:]
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for x in range(n - 1, -1, -1):
        for y in range(m - 1, -1, -1):
            take = sim[x][y] + best[x + 1][y + 1] if sim[x][y] >= SIMILARITY else -1.0
            best[x][y] = max(take, best[x + 1][y], best[x][y + 1])
    pairs: list[tuple[int | None, int | None]] = []
    x = y = 0
    while x < n and y < m:
        if sim[x][y] >= SIMILARITY and best[x][y] == sim[x][y] + best[x + 1][y + 1]:
            pairs.append((ia[x], ib[y]))
            x, y = x + 1, y + 1
        elif best[x][y] == best[x + 1][y]:
            pairs.append((ia[x], None))
            x += 1
        else:
            pairs.append((None, ib[y]))
            y += 1
    pairs.extend((ia[k], None) for k in range(x, n))
    pairs.extend((None, ib[k]) for k in range(y, m))
    return pairs


def _in_order(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    ia: list[int],
    ib: list[int],
) -> list[tuple[int | None, int | None]]:
    """Greedy fallback for long stretches: pair position by position when similar enough."""
    pairs: list[tuple[int | None, int | None]] = []
    for x, y in zip(ia, ib, strict=False):
        if _similarity(a[x], b[y]) >= SIMILARITY:
            pairs.append((x, y))
        else:
            pairs.extend([(x, None), (None, y)])
    pairs.extend((x, None) for x in ia[len(ib) :])
    pairs.extend((None, y) for y in ib[len(ia) :])
    return pairs


# -- one pair of cells --------------------------------------------------------------------------


def _cell_change(
    x: Mapping[str, Any], y: Mapping[str, Any], i: int, j: int, *, outputs: bool, meta: bool
) -> CellDiff | None:
    source = _lines_diff(source_text(x).splitlines(), source_text(y).splitlines())
    if _type(x) != _type(y):
        source.insert(0, ("!", f"cell type changed: {_type(x)} -> {_type(y)}"))
    out: list[DiffLine] = []
    if outputs:
        out = _outputs_diff(list(x.get("outputs") or []), list(y.get("outputs") or []))
    metadata: list[DiffLine] = []
    if meta:
        metadata = _mapping_diff(_cell_fields(x), _cell_fields(y))
    if not (source or out or metadata):
        return None
    return CellDiff("modified", i, j, _type(y), source, out, metadata)


def _cell_fields(cell: Mapping[str, Any]) -> dict[str, Any]:
    fields = flatten_metadata(cell.get("metadata") or {}, "")
    if cell.get("execution_count") is not None:
        fields["execution_count"] = cell["execution_count"]
    for name, item in (cell.get("attachments") or {}).items():
        fields[f"attachments.{name}"] = _digest(json.dumps(item, sort_keys=True))
    return fields


def _lines_diff(a: list[str], b: list[str]) -> list[DiffLine]:
    """A unified diff (3 lines of context) as DiffLines, without the ---/+++ file header."""
    if a == b:
        return []
    lines: list[DiffLine] = []
    for row in list(difflib.unified_diff(a, b, n=3, lineterm=""))[2:]:
        kind = "@" if row.startswith("@@") else row[:1]
        lines.append((kind, row if kind == "@" else row[1:]))
    return lines


def flatten_metadata(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    if isinstance(value, Mapping) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten_metadata(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value} if prefix else {}


def _mapping_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[DiffLine]:
    lines: list[DiffLine] = []
    for key in sorted(set(a) | set(b)):
        if key in a and key in b and a[key] == b[key]:
            continue
        if key in a:
            lines.append(("-", f"{key}: {_short_json(a[key])}"))
        if key in b:
            lines.append(("+", f"{key}: {_short_json(b[key])}"))
    return lines


def _short_json(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputPart:
    """One displayable piece of an output: a text (lines) or binary data (digest and size)."""

    heading: str
    lines: tuple[str, ...] = ()
    digest: str | None = None
    size: int = 0

    @property
    def binary(self) -> bool:
        return self.digest is not None

    def describe(self) -> str:
        return f"{self.heading} {_size(self.size)} sha256:{self.digest}"


def output_parts(outputs: Sequence[Mapping[str, Any]]) -> list[OutputPart]:
    """The parts of a cell's outputs, in order: ``[stdout]`` text, ``[text/plain]``, images..."""
    parts: list[OutputPart] = []
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream":
            parts.append(_text_part(f"[{output.get('name', 'stdout')}]", output.get("text", "")))
        elif kind == "error":
            text = f"{output.get('ename', '')}: {output.get('evalue', '')}"
            parts.append(_text_part("[error]", text))
        elif kind in ("execute_result", "display_data", "update_display_data"):
            for mime, value in (output.get("data") or {}).items():
                parts.append(_mime_part(str(mime), value))
        else:
            parts.append(_text_part(f"[{kind}]", json.dumps(dict(output), sort_keys=True)))
    return parts


def _text_part(heading: str, value: Any) -> OutputPart:
    text = "".join(value) if isinstance(value, list) else str(value)
    return OutputPart(heading, tuple(_ANSI.sub("", text).splitlines()))


def _is_text_mime(mime: str) -> bool:
    if mime == "image/svg+xml":
        return False
    return mime.startswith("text/") or mime.endswith(("json", "javascript", "xml"))


def _mime_part(mime: str, value: Any) -> OutputPart:
    if _is_text_mime(mime):
        if not isinstance(value, (str, list)):
            value = json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False)
        return _text_part(f"[{mime}]", value)
    raw = "".join(value) if isinstance(value, list) else str(value)
    if mime == "image/svg+xml":
        size = len(raw.encode("utf-8"))
    else:  # base64: the decoded size
        packed = re.sub(r"\s", "", raw)
        size = len(packed) * 3 // 4 - packed[-2:].count("=")
    return OutputPart(f"[{mime}]", digest=_digest(raw), size=size)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} kB"


def _outputs_diff(a: list[Mapping[str, Any]], b: list[Mapping[str, Any]]) -> list[DiffLine]:
    pa, pb = output_parts(a), output_parts(b)
    if pa == pb:
        return []
    matcher = difflib.SequenceMatcher(
        None, [p.heading for p in pa], [p.heading for p in pb], autojunk=False
    )
    lines: list[DiffLine] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for x, y in zip(pa[i1:i2], pb[j1:j2], strict=True):
                lines.extend(_part_change(x, y))
            continue
        for part in pa[i1:i2]:
            lines.extend(_whole_part("-", part))
        for part in pb[j1:j2]:
            lines.extend(_whole_part("+", part))
    return lines


def _part_change(x: OutputPart, y: OutputPart) -> list[DiffLine]:
    if x == y:
        return []
    if x.binary or y.binary:
        what = "image" if x.heading.startswith("[image/") else "data"
        mime = x.heading.strip("[]")
        return [("!", f"{what} changed: {mime} ({_size(x.size)} -> {_size(y.size)})")]
    lines = _lines_diff(list(x.lines), list(y.lines))
    if sum(kind == "@" for kind, _ in lines) == 1:  # one hunk: its line numbers are noise here
        lines = [line for line in lines if line[0] != "@"]
    return [("#", x.heading), *lines]


def _whole_part(kind: str, part: OutputPart) -> list[DiffLine]:
    if part.binary:
        return [(kind, part.describe())]
    return [("#", f"{kind} {part.heading}"), *((kind, line) for line in part.lines)]
