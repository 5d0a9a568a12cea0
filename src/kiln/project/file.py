"""The project file read and typed: :class:`Project`, :func:`load_project`, the JSON Schema,
and the run options' defaults from the environment and the ``run`` section."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.project import PROJECT_FILE, find_project_file
from kiln.project.sections import ProjectConfig
from kiln.project.typed import Reader, SchemaBuilder, marks
from kiln.yamlio import Mark, YamlError, load_yaml

#: the project file may not be larger than this (it is configuration, not data)
MAX_PROJECT_FILE = 4 * 1024 * 1024

ProjectFileError = YamlError


@dataclass(frozen=True)
class Project:
    """A project: its root folder and its validated configuration.

    ``file`` is ``None`` when there is no ``kiln.yaml`` (``root`` is then the folder the search
    started from, and ``config`` holds every section's defaults)."""

    root: Path
    file: Path | None
    config: ProjectConfig = field(default_factory=ProjectConfig)

    @property
    def origin(self) -> str:
        """The file's name as shown in messages (relative to the working directory if near)."""
        if self.file is None:
            return PROJECT_FILE
        return _shown(self.file)

    def where(self, obj: Any, key: Any = None) -> Mark | None:
        """Where a section (or one of its keys) was written in the file, if it was."""
        if key is None:
            return getattr(obj, "mark", None)
        if isinstance(obj, Mapping):
            found: Mark | None = getattr(obj, "marks", {}).get(key)
            return found
        return marks(obj).get(str(key))

    def error(self, problem: str, obj: Any = None, key: Any = None) -> ProjectFileError:
        """A located error about this file, for checks a feature makes beyond the types."""
        return YamlError(self.origin, problem, self.where(obj, key) if obj is not None else None)

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """A path written in the project file: relative to the project root."""
        return (self.root / Path(path).expanduser()).resolve()


_cache: dict[str, tuple[tuple[int, int], Project]] = {}


def load_project(start: str | os.PathLike[str] | None = None) -> Project:
    """The project governing ``start`` (a notebook or a folder; default: the working
    directory), with its file validated; cached while the file is unchanged."""
    path = find_project_file(start)
    if path is None:
        folder = Path(start if start is not None else Path.cwd()).absolute()
        return Project(root=folder if folder.is_dir() else folder.parent, file=None)
    return project_at(path)


def project_at(path: Path) -> Project:
    """The project of the file at ``path`` (found already), validated; cached while the file
    is unchanged."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise YamlError(_shown(path), f"cannot read the project file: {exc.strerror}") from None
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _cache.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1]
    project = _read(path)
    _cache[str(path)] = (key, project)
    return project


def _read(path: Path) -> Project:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise YamlError(_shown(path), f"cannot read the project file: {exc.strerror}") from None
    return parse_project(path, data)


def parse_project(path: Path, data: bytes) -> Project:
    """The project whose file at ``path`` would hold ``data`` (validated, nothing read)."""
    origin = _shown(path)
    value = load_yaml(data, origin=origin, max_bytes=MAX_PROJECT_FILE, word_keys=True)
    config = Reader(origin).dataclass(value, ProjectConfig, "", (1, 1))
    return Project(root=path.parent.resolve(), file=path, config=config)


def run_defaults(project: Project, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run options set by the environment (``KILN_TIMEOUT=10m``, ...) over the project file's
    ``run`` section; explicit arguments and flags go over both."""
    from kiln.options import OPTIONS, OptionError, environment_defaults, normalize

    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    section = project.config.run
    if section is not None:
        for f in OPTIONS:
            value = getattr(section, f.name, None)
            if value is None:
                continue
            try:
                values[f.name] = normalize(f.name, value)
            except OptionError as exc:
                raise project.error(f"run.{f.name}: {exc.problem}", section, f.name) from None
            if f.name == "cwd":
                values["cwd"] = project.resolve(values["cwd"])
    tracking = project.config.tracking
    if tracking is not None and tracking.mlflow is not None:
        values["mlflow_uri"] = mlflow_uri_from(project, tracking.mlflow.uri)
    from_env = environment_defaults(env)
    if "tags" in from_env and section is not None and section.tags:
        # tags add up: the project's, then the environment's (which win per key)
        from_env["tags"] = {**normalize("tags", section.tags), **from_env["tags"]}
    values.update(from_env)
    return values


def mlflow_uri_from(project: Project, uri: str) -> str:
    """An MLflow tracking URI as written in the project file, with a local path (``mlruns``,
    ``file:mlruns``, ``sqlite:///mlflow.db``) made absolute from the project root."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(project.resolve(uri[len("sqlite:///") :]))
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return "file:" + str(project.resolve(uri[len("file:") :]))
    if "://" not in uri and not uri.startswith(("file:", "databricks")):
        return str(project.resolve(uri))
    return uri


def project_inputs(project: Project, notebook: str | os.PathLike[str]) -> list[Path]:
    """The files ``kiln.yaml``'s ``inputs`` declares for this notebook (globs expanded, from
    the project root); a declared path that matches nothing is kept, to be reported missing."""
    declared = project.config.inputs
    if not declared:
        return []
    patterns: list[str] = []
    if isinstance(declared, list):
        patterns = list(declared)
    else:
        import fnmatch

        try:
            relative = Path(notebook).resolve().relative_to(project.root).as_posix()
        except ValueError:
            relative = Path(notebook).name
        for key, value in declared.items():
            if fnmatch.fnmatch(relative, key) or relative == key or Path(notebook).name == key:
                patterns += [value] if isinstance(value, str) else list(value)
    found: dict[Path, None] = {}
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matches = sorted(p for p in project.root.glob(pattern) if p.is_file())
            found.update(dict.fromkeys(matches))
        else:
            found[project.resolve(pattern)] = None
    return list(found)


def json_schema() -> dict[str, Any]:
    """JSON Schema of ``kiln.yaml``, for editors (the YAML language server) and checks."""
    builder = SchemaBuilder()
    root = builder.dataclass(ProjectConfig, inline=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kiln.dev/schemas/kiln.yaml.json",
        "title": "kiln.yaml",
        **root,
        "$defs": builder.defs,
    }


def _shown(path: Path) -> str:
    try:
        relative = path.absolute().relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(relative)
