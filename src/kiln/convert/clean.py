"""Strip a notebook down to what its author wrote: for version control and code review.

What ``kiln clean`` removes (everything a run or a frontend writes, nothing the author does):

- code cells: ``outputs`` (except in cells tagged ``keep-output``) and ``execution_count``
  (also the ``execution_count`` of the kept ``execute_result`` outputs);
- cell metadata: :data:`VOLATILE_CELL_METADATA` (timings, collapsed/scrolled UI state, papermill
  and Kiln run data) and ``jupyter.outputs_hidden``;
- notebook metadata: :data:`VOLATILE_NOTEBOOK_METADATA` (widget state, papermill and Kiln run
  data, the trust signature), ``language_info.version`` and ``vscode.interpreter``.

Kept: sources, attachments, cell ids, tags and every other cell metadata (``editable``,
``slideshow``, ``jupyter.source_hidden``, ...), the kernelspec, the rest of ``language_info``,
``nbformat`` and ``nbformat_minor``. The notebook is handled as plain JSON (nbformat is not
imported, so a git filter stays fast): keys keep their order, strings keep their list-or-string
form, and the text is written like Jupyter writes it (1-space indent, UTF-8, a final newline).
Cleaning is idempotent: a clean notebook comes back byte for byte the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "KEEP_OUTPUT_TAG",
    "VOLATILE_CELL_METADATA",
    "VOLATILE_NOTEBOOK_METADATA",
    "CleanResult",
    "clean_file",
    "clean_json",
    "clean_text",
    "find_notebooks",
    "notebook_json_text",
]

KEEP_OUTPUT_TAG: Final = "keep-output"

#: cell metadata written by frontends and runners, never by the author
VOLATILE_CELL_METADATA: Final[tuple[str, ...]] = (
    "execution",  # JupyterLab's execution timings
    "ExecuteTime",  # the nbextensions ExecuteTime timings
    "collapsed",  # output collapsed in the classic notebook
    "scrolled",  # output scrolled in the classic notebook
    "heading_collapsed",  # collapsible headings UI state
    "hidden",  # collapsible headings UI state
    "papermill",  # papermill's per-cell status and timings
    "kiln",  # Kiln's per-cell run data
)

#: notebook metadata written by frontends and runners, never by the author
VOLATILE_NOTEBOOK_METADATA: Final[tuple[str, ...]] = (
    "widgets",  # ipywidgets state, often megabytes
    "papermill",  # papermill's run data: parameters, timings, environment
    "kiln",  # Kiln's run data: run id, parameters, paths, state
    "signature",  # the notebook trust signature
)

#: (section, key) pairs removed inside notebook metadata sections; the section goes if emptied
_VOLATILE_NESTED: Final[tuple[tuple[str, str], ...]] = (
    ("language_info", "version"),  # the interpreter's patch version
    ("vscode", "interpreter"),  # a hash of the local interpreter path
)


@dataclass
class CleanResult:
    """What cleaning changed in one notebook (empty when it was already clean)."""

    outputs_cleared: int = 0
    counts_cleared: int = 0
    metadata_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.outputs_cleared or self.counts_cleared or self.metadata_removed)

    def summary(self) -> str:
        """``outputs in 3 cells, 4 execution counts, metadata: widgets``."""
        parts = []
        if self.outputs_cleared:
            parts.append(f"outputs in {_plural(self.outputs_cleared, 'cell')}")
        if self.counts_cleared:
            parts.append(_plural(self.counts_cleared, "execution count"))
        if self.metadata_removed:
            parts.append("metadata: " + ", ".join(sorted(set(self.metadata_removed))))
        return ", ".join(parts) or "already clean"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def clean_json(nb: MutableMapping[str, Any], *, keep_outputs: bool = False) -> CleanResult:
    """Clean notebook JSON (nbformat 3 or 4, as parsed by :func:`json.loads`) in place.

    ``keep_outputs`` keeps every cell's outputs (execution counts and metadata still go).
    """
    result = CleanResult()
    metadata = nb.get("metadata")
    if isinstance(metadata, MutableMapping):
        _drop_keys(metadata, VOLATILE_NOTEBOOK_METADATA, "", result)
        for section, key in _VOLATILE_NESTED:
            inner = metadata.get(section)
            if isinstance(inner, MutableMapping) and key in inner:
                del inner[key]
                result.metadata_removed.append(f"{section}.{key}")
                if not inner:
                    del metadata[section]
    for cell in _cells(nb):
        _clean_cell(cell, keep_outputs=keep_outputs, result=result)
    return result


def _cells(nb: MutableMapping[str, Any]) -> Iterator[MutableMapping[str, Any]]:
    """The cells of a v4 notebook, or of every worksheet of a v3 one."""
    if nb.get("nbformat") == 3:
        groups = [ws.get("cells") for ws in nb.get("worksheets") or [] if isinstance(ws, dict)]
    else:
        groups = [nb.get("cells")]
    for cells in groups:
        for cell in cells if isinstance(cells, list) else []:
            if isinstance(cell, MutableMapping):
                yield cell


def _clean_cell(cell: MutableMapping[str, Any], *, keep_outputs: bool, result: CleanResult) -> None:
    metadata = cell.get("metadata")
    tags: Any = []
    if isinstance(metadata, MutableMapping):
        tags = metadata.get("tags") or []
        _drop_keys(metadata, VOLATILE_CELL_METADATA, "cell.", result)
        jupyter = metadata.get("jupyter")
        if isinstance(jupyter, MutableMapping) and "outputs_hidden" in jupyter:
            del jupyter["outputs_hidden"]
            result.metadata_removed.append("cell.jupyter.outputs_hidden")
            if not jupyter:
                del metadata["jupyter"]
    if cell.get("cell_type") != "code":
        return
    keep = keep_outputs or (isinstance(tags, list) and KEEP_OUTPUT_TAG in tags)
    counted = False
    for count_key in ("execution_count", "prompt_number"):  # v4, v3
        if cell.get(count_key) is not None:
            cell[count_key] = None
            counted = True
    outputs = cell.get("outputs")
    if isinstance(outputs, list) and outputs:
        if keep:
            for output in outputs:
                if isinstance(output, MutableMapping) and output.get("execution_count") is not None:
                    output["execution_count"] = None
                    counted = True
        else:
            cell["outputs"] = []
            result.outputs_cleared += 1
    result.counts_cleared += int(counted)


def _drop_keys(
    metadata: MutableMapping[str, Any], keys: tuple[str, ...], prefix: str, result: CleanResult
) -> None:
    for key in keys:
        if key in metadata:
            del metadata[key]
            result.metadata_removed.append(prefix + key)


def notebook_json_text(nb: Any) -> str:
    """Notebook JSON as Jupyter writes it: 1-space indent, non-ASCII kept, a final newline.

    Keys keep the order they have (Jupyter's files are already sorted), so a clean never
    reorders a file.
    """
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def clean_text(data: bytes, *, path: str, keep_outputs: bool = False) -> tuple[str, CleanResult]:
    """Clean notebook bytes; returns the cleaned text and what changed.

    Raises :class:`kiln.errors.NotebookReadError` for anything that is not a notebook.
    """
    from kiln.notebook.io import load_json

    nb = load_json(data, path=path)
    result = clean_json(nb, keep_outputs=keep_outputs)
    return notebook_json_text(nb), result


def clean_file(
    path: str | os.PathLike[str], *, check: bool = False, keep_outputs: bool = False
) -> CleanResult:
    """Clean a notebook file in place, atomically, and only when something changes.

    With ``check`` the file is never written: the result says what cleaning would change.
    """
    from kiln.notebook.io import atomic_write_text, read_bytes

    text, result = clean_text(read_bytes(path), path=str(path), keep_outputs=keep_outputs)
    if result.changed and not check:
        atomic_write_text(path, text)
    return result


def find_notebooks(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The ``.ipynb`` files named, and those found under the folders named.

    Inside folders, hidden entries (``.git``, ``.ipynb_checkpoints``, ``.venv``, ``.kiln``) and
    ``node_modules`` / ``__pycache__`` are skipped; a file named explicitly is always taken.
    """
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if not path.is_dir():
            found.append(path)
            continue
        found.extend(
            sorted(
                p
                for p in path.rglob("*.ipynb")
                if p.is_file() and not _skipped(p.relative_to(path).parts[:-1], p.name)
            )
        )
    unique: dict[Path, None] = dict.fromkeys(found)
    return list(unique)


def _skipped(folders: tuple[str, ...], name: str) -> bool:
    return name.startswith(".") or any(
        part.startswith(".") or part in _SKIPPED_FOLDERS for part in folders
    )


_SKIPPED_FOLDERS: Final = frozenset({"node_modules", "__pycache__"})
