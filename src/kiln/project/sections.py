"""The sections of ``kiln.yaml``, declared as typed dataclasses (the schema *is* these types).

A feature that needs project settings adds its section here, once: a dataclass with a
docstring and ``help`` on each field, and a field on :class:`ProjectConfig`. The reader
(:mod:`kiln.project.typed`) checks the file against these types with located errors, and
``kiln config schema`` prints the JSON Schema built from the same types. Checks that need a
feature's own knowledge (a lint rule id exists, a glob matches a notebook) are done by the
feature, which can point at the place with :meth:`kiln.project.Project.where`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from kiln.options import ENGINE_CHOICES, OPTIONS
from kiln.project.typed import Duration, Size
from kiln.units import parse_file_mode


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


# -- run: defaults for the run options -------------------------------------------------------

#: run options that make no sense as a project-wide default
_NOT_DEFAULTS = frozenset({"prepare_only"})

_YAML_TYPE = {
    "text": str | None,
    "choice": Literal[ENGINE_CHOICES] | None,
    "path": str | None,
    "duration": Duration | None,
    "size": Size | None,
    "switch": bool | None,
    "env": dict[str, str] | None,
}


def _run_defaults_class() -> type:
    """``RunDefaults``: one optional field per run option (derived, so it never drifts)."""
    spec = [
        (
            f.name,
            _YAML_TYPE[f.metadata["kind"]],
            field(default=None, metadata=_help(f.metadata["help"])),
        )
        for f in OPTIONS
        if f.name not in _NOT_DEFAULTS
    ]
    cls = dataclasses.make_dataclass("RunDefaults", spec, frozen=True)
    cls.__doc__ = (
        "Defaults for every run of the project's notebooks; a command-line flag, a KILN_* "
        "environment variable or an API argument overrides them."
    )
    cls.__module__ = __name__
    return cls


RunDefaults: Any = _run_defaults_class()


# -- lint --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LintSection:
    """Settings of `kiln lint` and of the `--lint` run gate."""

    select: list[str] | str | None = field(
        default=None, metadata=_help("rule ids or prefixes to run (default: every rule)")
    )
    ignore: list[str] | str | None = field(
        default=None, metadata=_help("rule ids or prefixes not to run")
    )
    severity: dict[str, Literal["error", "warning", "info"]] = field(
        default_factory=dict, metadata=_help("severity per rule id, e.g. {KL202: error}")
    )
    rules: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata=_help("options per rule id, e.g. {KL201: {max_output_kb: 2000}}"),
    )
    require_parameters: bool = field(
        default=False, metadata=_help("every notebook must have a parameters cell (KL206)")
    )
    exclude: list[str] = field(
        default_factory=list, metadata=_help("globs of notebooks not to lint, from the root")
    )


# -- verify ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnorePattern:
    """A regex whose matches are replaced (by ``replace``) before outputs are compared."""

    regex: str = field(metadata=_help("a Python regular expression"))
    replace: str = field(default="", metadata=_help("what matches become (default: nothing)"))


@dataclass(frozen=True)
class VerifySection:
    """Settings of `kiln verify` and `pytest --kiln-compare`."""

    ignore: list[str | IgnorePattern] | str | IgnorePattern | None = field(
        default=None,
        metadata=_help("regexes whose matches become <IGNORED> on both sides before comparing"),
    )
    strict_images: bool = field(
        default=False, metadata=_help("compare image bytes, not only that an image is there")
    )


# -- tests -------------------------------------------------------------------------------------

#: notebook path or glob -> a list of parameter sets, or a mapping of set names to sets
TestsSection = dict[str, list[dict[str, Any] | None] | dict[str, dict[str, Any] | None]]


# -- store ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSection:
    """Where and how the run history is kept."""

    file_mode: str = field(
        default="0600",
        metadata=_help(
            "permissions of the history's files (octal; folders get the matching mode): 0600 "
            "keeps runs private to their owner, 0640 shares them with the group"
        ),
    )

    def __post_init__(self) -> None:
        parse_file_mode(self.file_mode)  # a bad mode is refused where it is written

    @property
    def mode(self) -> int:
        return parse_file_mode(self.file_mode)


# -- server and endpoints ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSection:
    """Settings of `kiln serve`; its command-line flags override them."""

    host: str = field(default="127.0.0.1", metadata=_help("address to listen on"))
    port: int = field(default=8000, metadata=_help("port to listen on (0: any free port)"))
    workers: int = field(
        default=2, metadata=_help("worker processes running queued runs (0: none beside the API)")
    )
    grace: Duration = field(
        default=30.0,
        metadata=_help("on SIGTERM, how long running runs may go on before they are cancelled"),
    )
    root_path: str = field(
        default="", metadata=_help("the sub-path the server is served under (a reverse proxy's)")
    )
    metrics_public: bool = field(
        default=False, metadata=_help("serve /metrics without authentication")
    )
    trusted_user_header: str | None = field(
        default=None,
        metadata=_help(
            "a header holding the user name a reverse proxy authenticated (e.g. "
            "X-Forwarded-User); only for a server that nothing but the proxy can reach"
        ),
    )
    log_format: Literal["text", "json"] = field(
        default="text", metadata=_help("text lines, or one JSON object per line")
    )
    max_body: Size = field(
        default=1024 * 1024, metadata=_help("largest request body accepted (413 above it)")
    )
    session_lifetime: Duration = field(
        default=12 * 3600.0, metadata=_help("how long a browser's login lasts")
    )


@dataclass(frozen=True)
class EndpointSection:
    """A notebook served as a synchronous API endpoint at POST /api/v1/endpoints/NAME: the
    JSON body is its parameters, the answer its records; every call is a fresh-state run."""

    notebook: str = field(metadata=_help("the notebook, relative to the project root"))
    timeout: Duration = field(
        default=10.0, metadata=_help("time limit of one call (504 when it is over)")
    )
    concurrency: int = field(
        default=4, metadata=_help("calls at once; one more is answered 429 at once")
    )


# -- the file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectConfig:
    """Kiln's project file, `kiln.yaml`, at the root of a project."""

    run: RunDefaults | None = field(
        default=None, metadata=_help("defaults for the run options of every run")
    )
    lint: LintSection = field(default_factory=LintSection, metadata=_help("kiln lint"))
    verify: VerifySection = field(
        default_factory=VerifySection, metadata=_help("kiln verify and pytest --kiln-compare")
    )
    tests: TestsSection = field(
        default_factory=dict,
        metadata=_help("parameter sets per notebook (path or glob) for pytest --kiln"),
    )
    store: StoreSection | None = field(
        default=None, metadata=_help("the run history: file permissions")
    )
    server: ServerSection | None = field(default=None, metadata=_help("kiln serve"))
    endpoints: dict[str, EndpointSection] = field(
        default_factory=dict,
        metadata=_help("notebooks served as API endpoints, by name (POST /api/v1/endpoints/NAME)"),
    )
