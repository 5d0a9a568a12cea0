"""What a server serves and how: the project, its home, and ``kiln serve``'s settings.

Precedence as everywhere: a ``kiln serve`` flag over the ``server`` section of ``kiln.yaml``
over the default. The project is found as every command finds it (the nearest ``kiln.yaml``
above the working directory; without one, the working directory), the home likewise
(``$KILN_HOME``, else ``.kiln`` beside ``kiln.yaml``, else ``./.kiln``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError

if TYPE_CHECKING:
    from kiln.project.file import Project

_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True)
class Endpoint:
    name: str
    notebook: Path
    timeout: float
    concurrency: int


@dataclass(frozen=True)
class ServerSettings:
    root: Path
    home: Path
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    grace: float = 30.0
    root_path: str = ""
    metrics_public: bool = False
    trusted_user_header: str | None = None
    log_format: str = "text"
    max_body: int = 1024 * 1024
    session_lifetime: float = 12 * 3600.0
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    #: worker lease and poll (seconds): short leases find a dead worker sooner
    lease: float = 30.0
    poll: float = 0.2
    #: kiln.yaml has schedules: a scheduler process runs beside the workers
    schedules: bool = False


def load_settings(
    project: Project | None = None, home: Path | None = None, **flags: Any
) -> ServerSettings:
    """Settings from the project file, with ``flags`` (not None) over them."""
    from kiln.project import find_home, load_project

    project = project if project is not None else load_project()
    section = project.config.server
    values: dict[str, Any] = {}
    if section is not None:
        values = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    values.update({k: v for k, v in flags.items() if v is not None})
    values["root_path"] = _root_path(str(values.get("root_path") or ""))
    header = values.get("trusted_user_header")
    if header is not None and not _HEADER_NAME.fullmatch(header):
        raise UsageError(f"trusted_user_header: {header!r} is not an HTTP header name")
    if int(values.get("workers", 2)) < 0:
        raise UsageError("workers: expected 0 or more worker processes")
    endpoints = {}
    for name, spec in project.config.endpoints.items():
        if not _ENDPOINT_NAME.fullmatch(name):
            raise project.error(
                f"endpoints.{name}: an endpoint name is part of a URL: use letters, digits, "
                "'_', '.' and '-'",
                project.config.endpoints,
                name,
            )
        if spec.concurrency < 1:
            raise project.error(
                f"endpoints.{name}.concurrency: expected 1 or more", spec, "concurrency"
            )
        try:
            path = confine(project.root, spec.notebook)
        except UsageError as exc:
            raise project.error(
                f"endpoints.{name}.notebook: {exc.message}", spec, "notebook"
            ) from None
        if not path.is_file():
            raise project.error(
                f"endpoints.{name}.notebook: {spec.notebook} is not a file in {project.root}",
                spec,
                "notebook",
            )
        endpoints[name] = Endpoint(name, path, float(spec.timeout), int(spec.concurrency))
    if project.config.schedules:
        from kiln.scheduler.model import load_schedules

        load_schedules(project)  # a broken schedule stops the server's start, located
    return ServerSettings(
        schedules=bool(project.config.schedules),
        root=project.root.resolve(),
        home=(home or find_home(project.root)).resolve(),
        endpoints=endpoints,
        **values,
    )


def _root_path(text: str) -> str:
    text = text.strip()
    if not text or text == "/":
        return ""
    if not text.startswith("/") or any(c in text for c in "?#\\ "):
        raise UsageError(f"root_path: expected a URL path such as /kiln; got {text!r}")
    return text.rstrip("/")


def confine(root: Path, given: str) -> Path:
    """``given`` (a path from a request or the project file) inside ``root``: relative, no
    way out through ``..`` or a symbolic link; :class:`UsageError` otherwise."""
    if not isinstance(given, str) or not given or "\0" in given:
        raise UsageError("expected a path relative to the project root")
    candidate = Path(given)
    if candidate.is_absolute() or given.startswith(("/", "\\", "~")):
        raise UsageError(
            f"{given!r}: give a path relative to the project root, not an absolute one"
        )
    if ".." in candidate.parts or "\\" in given:
        raise UsageError(f"{given!r}: '..' and backslashes are not allowed in a path")
    base = root.resolve()
    resolved = (base / candidate).resolve()
    if resolved != base and base not in resolved.parents:
        raise UsageError(f"{given!r} leads outside the project root")
    return resolved
