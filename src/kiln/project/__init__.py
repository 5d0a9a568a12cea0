"""The project: its file ``kiln.yaml`` (found, parsed, validated, typed) and its home folder.

This is the one place that finds and reads ``kiln.yaml``. Every command that works in a project
calls :func:`load_project`, which validates the *whole* file first, so a broken file is refused
with the same located error (``kiln.yaml:12:5: lint.selct: unknown key ...``, exit 2) whatever
the command. Sections are typed (:mod:`kiln.project.sections`); ``kiln config schema`` prints
their JSON Schema.

The home folder (run history and run folders) is :func:`find_home`: ``$KILN_HOME`` when set,
else ``.kiln/`` beside the nearest ``kiln.yaml`` above the working directory, so the CLI, a
server and a scheduler started anywhere in one project share one history; else ``.kiln/`` in
the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.walkup import nearest

if TYPE_CHECKING:
    from kiln.project.file import (
        Project,
        ProjectFileError,
        json_schema,
        load_project,
        run_defaults,
    )
    from kiln.project.sections import ProjectConfig

__all__ = [
    "PROJECT_FILE",
    "Project",
    "ProjectConfig",
    "ProjectFileError",
    "find_home",
    "find_project_file",
    "json_schema",
    "load_project",
    "run_defaults",
]

PROJECT_FILE = "kiln.yaml"


def find_project_file(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest ``kiln.yaml`` in ``start`` (a folder, or a file's folder; default: the
    working directory) or one of its parents."""
    found = nearest(
        start if start is not None else os.getcwd(),
        lambda folder: os.path.isfile(os.path.join(folder, PROJECT_FILE)),
    )
    return Path(found, PROJECT_FILE) if found is not None else None


def find_home(cwd: str | os.PathLike[str] | None = None) -> Path:
    """Kiln's state folder: ``$KILN_HOME``; else ``.kiln/`` beside the nearest ``kiln.yaml``
    above ``cwd`` (default: the working directory); else ``<cwd>/.kiln``."""
    env = os.environ.get("KILN_HOME")
    if env:
        return Path(env).expanduser().absolute()
    folder = Path(cwd if cwd is not None else Path.cwd()).absolute()
    project = find_project_file(folder)
    return (project.parent if project is not None else folder) / ".kiln"


_LAZY = {
    "Project": "kiln.project.file",
    "ProjectFileError": "kiln.project.file",
    "json_schema": "kiln.project.file",
    "load_project": "kiln.project.file",
    "run_defaults": "kiln.project.file",
    "ProjectConfig": "kiln.project.sections",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
