"""The project's notebooks as the API lists them: path (relative to the root) and parameter
schema, read without running anything and cached while the file is unchanged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kiln.errors import KilnError, NotebookNotFound, UsageError
from kiln.server.settings import confine

#: folders never searched for notebooks (state, environments, checkpoints, dependencies)
SKIPPED = frozenset({"node_modules", "__pycache__", "site-packages", "venv", "env"})
#: a project with more notebooks than this is listed up to here
MAX_NOTEBOOKS = 5000


class NotebookIndex:
    """Finds notebooks under ``root`` and their schemas (``kiln params --json``'s shape)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._schemas: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}

    def paths(self) -> list[Path]:
        found: list[Path] = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED)
            for name in sorted(files):
                if name.endswith(".ipynb") and not name.startswith("."):
                    path = Path(folder) / name
                    if path.is_symlink() and not self._inside(path):
                        continue  # a link out of the project: never listed nor read
                    found.append(path)
                    if len(found) >= MAX_NOTEBOOKS:
                        return found
        return found

    def _inside(self, path: Path) -> bool:
        try:
            confine(self.root, path.relative_to(self.root).as_posix())
        except (UsageError, ValueError):
            return False
        return True

    def relative(self, path: Path | str) -> str:
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def resolve(self, given: str) -> Path:
        """A notebook named by a request: inside the root, an existing ``.ipynb`` file."""
        path = confine(self.root, given)
        if path.suffix != ".ipynb":
            raise UsageError(f"{given!r} is not a notebook (.ipynb)")
        if not path.is_file():
            raise NotebookNotFound(f"no notebook {given!r} in the project", path=given)
        return path

    def schema(self, path: Path) -> dict[str, Any]:
        """The parameter schema of a notebook (an ``error`` entry when it cannot be read)."""
        try:
            stat = path.stat()
        except OSError as exc:
            return {"error": f"cannot read the notebook: {exc.strerror}"}
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._schemas.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        from kiln.notebook import load_notebook
        from kiln.parameters import infer_schema

        try:
            schema: dict[str, Any] = infer_schema(
                load_notebook(str(path)), notebook=self.relative(path)
            ).to_json()
        except KilnError as exc:
            schema = {"error": exc.message}
        self._schemas[path] = (key, schema)
        return schema

    def listing(self) -> list[dict[str, Any]]:
        return [{"path": self.relative(p), "parameters": self.schema(p)} for p in self.paths()]
