"""The notebooks the UI shows: kiln.yaml's ``notebooks`` section when it has one (title,
description, app, cache, form defaults), else every notebook of the project; with each one's
parameter schema and description, read without running anything and cached while unchanged."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError, NotebookNotFound

if TYPE_CHECKING:
    from kiln.parameters.schema import ParameterSchema
    from kiln.server.app import ServerContext

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*")
#: characters of a description shown
DESCRIPTION = 280


@dataclass(frozen=True)
class Entry:
    """One notebook as the UI lists it (``path`` relative to the project, with ``.ipynb``)."""

    path: str
    file: Path
    title: str
    description: str
    app: bool = False
    cache: float | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Read:
    schema: ParameterSchema | None
    error: str | None
    description: str
    cells: list[dict[str, Any]]


class Catalog:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._read: dict[Path, tuple[tuple[int, int], Read]] = {}

    def _section(self) -> tuple[dict[str, Any], list[str]]:
        """kiln.yaml's notebooks section (fresh when the file changed) and its problems."""
        from kiln.project import load_project

        try:
            project = load_project(self.ctx.settings.root)
        except KilnError as exc:
            return {}, [f"kiln.yaml: {exc.message}"]
        return dict(project.config.notebooks), []

    def entries(self) -> tuple[list[Entry], list[str]]:
        """The notebooks to list, and problems with kiln.yaml's section (shown, not fatal)."""
        section, problems = self._section()
        if not section:
            files = self.ctx.notebooks.paths()
            return [self._entry(self.ctx.notebooks.relative(f), f, None) for f in files], problems
        found = []
        for path, spec in section.items():
            try:
                file = self.ctx.notebooks.resolve(path)
            except KilnError as exc:
                problems.append(f"kiln.yaml notebooks.{path}: {exc.message}")
                continue
            found.append(self._entry(self.ctx.notebooks.relative(file), file, spec))
        return found, problems

    def get(self, path: str) -> Entry:
        """The notebook at ``path`` (404 when it is not one the UI lists)."""
        file = self.ctx.notebooks.resolve(path)
        relative = self.ctx.notebooks.relative(file)
        section, _problems = self._section()
        if not section:
            return self._entry(relative, file, None)
        for given, spec in section.items():
            if given == relative or given.lstrip("./") == relative:
                return self._entry(relative, file, spec)
        raise NotebookNotFound(f"{relative} is not one of the notebooks kiln.yaml lists")

    def _entry(self, relative: str, file: Path, spec: Any) -> Entry:
        read = self.read(file)
        title = (spec.title if spec is not None else None) or file.stem.replace("_", " ")
        description = (spec.description if spec is not None else None) or read.description
        if spec is None:
            return Entry(relative, file, title, description)
        return Entry(
            relative,
            file,
            title,
            description,
            app=bool(spec.app),
            cache=float(spec.cache) if spec.cache else None,
            defaults=dict(spec.parameters or {}),
        )

    def read(self, file: Path) -> Read:
        """A notebook's schema, description and cells (cached while the file is unchanged)."""
        try:
            stat = file.stat()
        except OSError as exc:
            return Read(None, f"cannot read the notebook: {exc.strerror}", "", [])
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._read.get(file)
        if cached is not None and cached[0] == key:
            return cached[1]
        from kiln.notebook import load_notebook
        from kiln.parameters import infer_schema

        try:
            nb = load_notebook(str(file))
        except KilnError as exc:
            found = Read(None, exc.message, "", [])
        else:
            cells = [
                {
                    "kind": cell.get("cell_type", "?"),
                    "source": _text(cell.get("source", "")),
                    "tags": [
                        t
                        for t in cell.get("metadata", {}).get("tags", []) or []
                        if isinstance(t, str)
                    ],
                }
                for cell in nb.get("cells", [])
            ]
            try:
                schema: ParameterSchema | None = infer_schema(
                    nb, notebook=self.ctx.notebooks.relative(file)
                )
                error = None
            except KilnError as exc:
                schema, error = None, exc.message
            found = Read(schema, error, _description(cells), cells)
        if len(self._read) > 2000:
            self._read.clear()
        self._read[file] = (key, found)
        return found


def _text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else str(source)


def _description(cells: list[dict[str, Any]]) -> str:
    """The first Markdown cell's first paragraph that is not a heading (else its heading),
    headings' marks left out."""
    for cell in cells:
        if cell["kind"] != "markdown":
            continue
        paragraphs: list[tuple[bool, str]] = []
        lines: list[str] = []
        heading = False
        for line in [*cell["source"].splitlines(), ""]:
            if not line.strip() or _HEADING.match(line):
                if lines:
                    paragraphs.append((heading, " ".join(lines)))
                    lines = []
                heading = bool(_HEADING.match(line))
                if heading:
                    paragraphs.append((True, _HEADING.sub("", line).strip()))
                    heading = False
                continue
            lines.append(line.strip())
        plain = [text for is_heading, text in paragraphs if not is_heading and text]
        text = plain[0] if plain else next((t for _h, t in paragraphs if t), "")
        if len(text) > DESCRIPTION:
            text = text[: DESCRIPTION - 1].rstrip() + "…"
        return text
    return ""
