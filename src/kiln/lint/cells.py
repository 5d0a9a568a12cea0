"""A notebook read once for every rule: cell sources, parsed Python, magics and output texts.

Linting never runs code. Each code cell is parsed with :mod:`ast` at most a few times (as is,
then with IPython magics set aside line for line, so line numbers hold), and every rule reads
the same :class:`NotebookView`.
"""

from __future__ import annotations

import ast
import html
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: cell magics whose body is Python run in the kernel's namespace
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug", "memit"})

#: mime types whose payload is base64 binary: never scanned as text
BINARY_MIME = re.compile(r"^(image/(?!svg)|application/(pdf|octet-stream)|video/|audio/)")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w=.-]+)*;base64,[A-Za-z0-9+/=\s]{16,}")
_NEEDS_MAGIC_PASS = re.compile(r"^[ \t]*[%!?]|^[ \t]*[\w.]+\?{1,2}[ \t]*$|=[ \t]*[%!]", re.M)
_MAGIC_LINE = re.compile(r"^([ \t]*)(%{1,2}|!)(.*)$")
_ASSIGN_MAGIC = re.compile(r"^([ \t]*)([\w.,\s\[\]()*]+?)[ \t]*=[ \t]*[%!](.*)$")
_HELP_LINE = re.compile(r"^([ \t]*)(\?{1,2}[\w.]+|[\w.]+\?{1,2})[ \t]*$")
_AUTOMAGIC = re.compile(r"^([ \t]*)(pip3?|conda|mamba|uv|cd|ls|pwd|cat|mkdir|rm|cp|mv)[ \t]+\S")

#: the largest text any rule scans in one output or source (bigger ones are cut)
MAX_SCAN_CHARS = 5_000_000


def text_of(value: Any) -> str:
    """nbformat multiline strings are a str or a list of str."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(item for item in value if isinstance(item, str))
    return ""


def strip_data_uris(text: str) -> str:
    """Embedded images (``data:image/png;base64,...``) are data, not text to scan."""
    if "base64," not in text:
        return text
    return _DATA_URI.sub("data:…", text)


@dataclass(frozen=True)
class Magic:
    """An IPython magic or shell line: ``%run x.py`` -> kind "%", name "run", args "x.py"."""

    line: int
    kind: str
    name: str
    args: str


@dataclass(frozen=True)
class OutputText:
    """A scannable text of one output, labelled for messages (``output 1 (stdout)``)."""

    output: int
    label: str
    text: str


@dataclass
class CellNodes:
    strings: list[ast.Constant] = field(default_factory=list)
    calls: list[ast.Call] = field(default_factory=list)
    imports: list[ast.Import | ast.ImportFrom] = field(default_factory=list)
    function_names: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, tree: ast.Module | None) -> CellNodes:
        found = cls()
        if tree is None:
            return found
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant):
                if isinstance(node.value, str):
                    found.strings.append(node)
            elif isinstance(node, ast.Call):
                found.calls.append(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                found.imports.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.function_names.add(node.name)
        return found


@dataclass
class CodeCell:
    index: int
    source: str
    execution_count: int | None
    outputs: Sequence[Mapping[str, Any]]
    metadata: Mapping[str, Any]
    tags: tuple[str, ...]
    cell_magic: str | None = None
    magics: list[Magic] = field(default_factory=list)
    tree: ast.Module | None = None
    syntax_error: SyntaxError | None = None
    _texts: list[OutputText] | None = None
    _nodes: CellNodes | None = None

    @property
    def is_python(self) -> bool:
        """Whether the body is Python (not a ``%%bash``-style cell magic)."""
        return self.cell_magic is None or self.cell_magic in PYTHON_CELL_MAGICS

    def nodes(self) -> CellNodes:
        """The parsed cell's string literals, calls and imports, from one walk of its tree."""
        if self._nodes is None:
            self._nodes = CellNodes.of(self.tree)
        return self._nodes

    def output_texts(self) -> list[OutputText]:
        if self._texts is None:
            self._texts = list(_output_texts(self.outputs))
        return self._texts


@dataclass
class NotebookView:
    path: str
    metadata: Mapping[str, Any]
    cells: Sequence[Mapping[str, Any]]
    code: list[CodeCell]
    python: bool


def cell_tags(cell: Mapping[str, Any]) -> tuple[str, ...]:
    metadata = cell.get("metadata")
    tags = metadata.get("tags") if isinstance(metadata, Mapping) else None
    if not isinstance(tags, list):
        return ()
    return tuple(t for t in tags if isinstance(t, str))


def notebook_is_python(nb: Mapping[str, Any]) -> bool:
    metadata = nb.get("metadata")
    if not isinstance(metadata, Mapping):
        return True
    for section, key in (
        ("kernelspec", "language"),
        ("language_info", "name"),
        ("jupytext", "main_language"),
    ):
        block = metadata.get(section)
        value = block.get(key) if isinstance(block, Mapping) else None
        if isinstance(value, str) and value.strip():
            lang = value.strip().lower()
            return lang.startswith("python") or lang == "ipython"
    return True


def view_notebook(nb: Mapping[str, Any], path: str) -> NotebookView:
    """Read a notebook (a NotebookNode or its plain JSON dict) into the view rules share."""
    raw_cells = nb.get("cells")
    cells: list[Mapping[str, Any]] = (
        [c for c in raw_cells if isinstance(c, Mapping)] if isinstance(raw_cells, list) else []
    )
    python = notebook_is_python(nb)
    code: list[CodeCell] = []
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        count = cell.get("execution_count")
        outputs = cell.get("outputs")
        metadata = cell.get("metadata")
        item = CodeCell(
            index=index,
            source=text_of(cell.get("source")),
            execution_count=count if isinstance(count, int) else None,
            outputs=[o for o in outputs if isinstance(o, Mapping)]
            if isinstance(outputs, list)
            else [],
            metadata=metadata if isinstance(metadata, Mapping) else {},
            tags=cell_tags(cell),
        )
        if python:
            _parse(item)
        code.append(item)
    metadata = nb.get("metadata")
    return NotebookView(
        path=path,
        metadata=metadata if isinstance(metadata, Mapping) else {},
        cells=cells,
        code=code,
        python=python,
    )


def _parse(cell: CodeCell) -> None:
    lines = cell.source.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        words = lines[first].lstrip()[2:].split()
        cell.cell_magic = words[0] if words else ""
        cell.magics.append(Magic(first + 1, "%%", cell.cell_magic, " ".join(words[1:])))
        if not cell.is_python:
            return
        lines[first] = ""  # a blank line: the line numbers below it hold
    source = "\n".join(lines)
    try:
        cell.tree = ast.parse(source)
        return
    except (SyntaxError, ValueError):
        pass
    except RecursionError:  # Python cannot compile it either: it would fail when run
        cell.syntax_error = SyntaxError("too deeply nested for Python's parser")
        return
    # Only a cell that does not parse as is can hold magics (`%x`, `!x` and `x?` never parse).
    if _NEEDS_MAGIC_PASS.search(source):
        cell.magics.extend(_magics(source))
    text = _blank_magics(source)
    for attempt in (text, _blank_automagic(text)):
        try:
            cell.tree = ast.parse(attempt)
            cell.syntax_error = None
            return
        except SyntaxError as exc:
            cell.syntax_error = exc
        except ValueError:  # null bytes
            cell.syntax_error = SyntaxError("source contains a null byte")
            return
        except RecursionError:
            cell.syntax_error = SyntaxError("too deeply nested for Python's parser")
            return


def _magics(source: str) -> Iterator[Magic]:
    for number, line in enumerate(source.split("\n"), start=1):
        match = _MAGIC_LINE.match(line) or _assign_magic(line)
        if match is None:
            continue
        kind, rest = match.group(2), match.group(3).strip()
        if kind == "!":
            yield Magic(number, "!", rest.split(" ", 1)[0] if rest else "", rest)
        else:
            name, _, args = rest.partition(" ")
            yield Magic(number, kind, name, args.strip())


def _assign_magic(line: str) -> re.Match[str] | None:
    match = _ASSIGN_MAGIC.match(line)
    if match is None:
        return None
    # `x = !ls` / `x = %sx ls`: re-match so group 2 is the magic kind, group 3 its text
    head = line.index("=", match.end(2)) + 1
    return _MAGIC_LINE.match(line[head:].lstrip())


def _blank_magics(source: str) -> str:
    """Each magic, shell or help line becomes ``pass`` (or ``x = None`` for ``x = !cmd``) at
    the same indentation, so blocks and line numbers still hold. ``%time stmt`` keeps stmt."""
    lines = []
    for line in source.split("\n"):
        assign = _ASSIGN_MAGIC.match(line)
        magic = _MAGIC_LINE.match(line)
        help_line = _HELP_LINE.match(line)
        if magic is not None:
            indent, body = magic.group(1), magic.group(3)
            if magic.group(2) == "%" and body.startswith("time "):
                line = indent + body[5:].lstrip()
            else:
                line = indent + "pass"
        elif assign is not None:
            line = f"{assign.group(1)}{assign.group(2)} = None"
        elif help_line is not None:
            line = help_line.group(1) + "pass"
        lines.append(line)
    return "\n".join(lines)


def _blank_automagic(source: str) -> str:
    """``pip install x`` or ``cd ..`` without ``%`` (IPython's automagic) -> ``pass``."""
    return "\n".join(
        (m.group(1) + "pass") if (m := _AUTOMAGIC.match(line)) else line
        for line in source.split("\n")
    )


def _output_texts(outputs: Sequence[Mapping[str, Any]]) -> Iterator[OutputText]:
    for number, output in enumerate(outputs):
        kind = output.get("output_type")
        if kind == "stream":
            name = output.get("name")
            label = name if isinstance(name, str) else "stream"
            yield OutputText(number, label, _cut(text_of(output.get("text"))))
        elif kind == "error":
            parts = [str(output.get("ename", "")), str(output.get("evalue", ""))]
            traceback = output.get("traceback")
            if isinstance(traceback, list):
                parts.extend(t for t in traceback if isinstance(t, str))
            yield OutputText(number, "traceback", _cut(_ANSI.sub("", "\n".join(parts))))
        elif kind in ("execute_result", "display_data", "update_display_data"):
            data = output.get("data")
            if isinstance(data, Mapping):
                yield from _data_texts(number, data)
        metadata = output.get("metadata")
        if isinstance(metadata, Mapping) and metadata:
            yield OutputText(number, "output metadata", _cut(_json_text(metadata)))


def _data_texts(number: int, data: Mapping[str, Any]) -> Iterator[OutputText]:
    for mime, value in data.items():
        if not isinstance(mime, str) or BINARY_MIME.match(mime):
            continue
        if isinstance(value, (str, list)) and not mime.endswith("json"):
            text = text_of(value)
        else:
            text = _json_text(value)
        if mime == "text/html" or mime.endswith("+xml"):
            text = html.unescape(text)
        yield OutputText(number, mime, _cut(strip_data_uris(text)))


def _json_text(value: Any) -> str:
    try:
        return strip_data_uris(json.dumps(value, ensure_ascii=False, indent=1, default=str))
    except (TypeError, ValueError):
        return ""


def json_text(value: Any) -> str:
    """A metadata value as scannable text (one key per line, embedded images removed)."""
    return _cut(_json_text(value))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SCAN_CHARS else text[:MAX_SCAN_CHARS]


def output_size(output: Mapping[str, Any]) -> int:
    """Characters an output takes in the saved file (text, data and traceback), roughly."""
    total = 0
    for key in ("text", "traceback"):
        total += _size(output.get(key))
    data = output.get("data")
    if isinstance(data, Mapping):
        total += sum(_size(v) for v in data.values())
    return total


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_size(v) for v in value.values()) + 2 * len(value)
    return 0 if value is None else len(str(value))
