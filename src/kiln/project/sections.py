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
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from kiln.options import ENGINE_CHOICES, OPTIONS
from kiln.project.schedule_sections import (
    SCHEDULE_NAME,
    AlertsSection,
    ScheduleSection,
    SmtpSection,
)
from kiln.project.typed import Duration, Size
from kiln.project.typed import described as _help
from kiln.units import parse_file_mode

# -- run: defaults for the run options -------------------------------------------------------

#: run options that make no sense as a project-wide default
#: (``mlflow_uri`` is ``tracking.mlflow.uri``)
_NOT_DEFAULTS = frozenset({"prepare_only", "mlflow_uri"})

_YAML_TYPE = {
    "text": str | None,
    "choice": Literal[ENGINE_CHOICES] | None,
    "path": str | None,
    "duration": Duration | None,
    "size": Size | None,
    "switch": bool | None,
    "env": dict[str, str] | None,
    "tags": dict[str, str | int | float | bool] | None,
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
    url: str | None = field(
        default=None,
        metadata=_help(
            "the runs database as a SQLAlchemy URL, e.g. postgresql+psycopg://kiln@db/kiln "
            "(default: SQLite in the home folder; run folders stay in the home); "
            "KILN_DATABASE_URL overrides it. Keep passwords out of this file: libpq reads "
            "PGPASSWORD and ~/.pgpass"
        ),
    )

    artifacts: str | None = field(
        default=None,
        metadata=_help(
            "where runs' files go, as an fsspec URL (s3://bucket/prefix, gs://bucket/prefix, "
            "file:///shared/folder): each run's input, output notebook, log and artefacts are "
            "copied there while it runs and at its end, readable from every machine (default: "
            "the run folders in the home); KILN_ARTIFACTS overrides it"
        ),
    )

    def __post_init__(self) -> None:
        parse_file_mode(self.file_mode)  # a bad mode is refused where it is written
        if self.artifacts is not None and "://" not in self.artifacts:
            raise ValueError(
                f"{self.artifacts!r} is not a URL: expected e.g. s3://bucket/prefix or "
                "file:///shared/folder"
            )
        if self.url is not None and "://" not in self.url:
            raise ValueError(
                f"{self.url!r} is not a database URL: expected e.g. "
                "postgresql+psycopg://USER@HOST/DATABASE or sqlite:////path/to/kiln.db"
            )

    @property
    def mode(self) -> int:
        return parse_file_mode(self.file_mode)


# -- pipelines ---------------------------------------------------------------------------------

#: characters a task name may hold: ``[``, ``]``, ``=`` and ``,`` name the members of a grid
TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TaskSection:
    """One task of a pipeline: a notebook run with parameters, the files it reads and writes."""

    notebook: str = field(metadata=_help("the notebook to run, relative to the project root"))
    parameters: dict[str, Any] = field(
        default_factory=dict, metadata=_help("parameter values, checked against the notebook")
    )
    upstream: list[str] | None = field(
        default=None,
        metadata=_help(
            "tasks that run first (a grid task's name means all its members); tasks whose "
            "products this task lists in inputs are added"
        ),
    )
    products: dict[str, str] = field(
        default_factory=dict,
        metadata=_help(
            "named files the task writes: paths from the project root or fsspec URLs "
            "(s3://, gs://, file://); templates such as data/{{params.day}}/clean.parquet"
        ),
    )
    inputs: list[str] = field(
        default_factory=list,
        metadata=_help("files the task reads; another task's product here makes it upstream"),
    )
    grid: dict[str, Any] | list[dict[str, Any]] | None = field(
        default=None,
        metadata=_help(
            "fan out: a task per parameter set (name -> list of values, or a list of sets), "
            "named task[name=value]; a downstream task receives all of them"
        ),
    )
    retries: int = field(default=0, metadata=_help("runs again after a failure, this many times"))
    retry_delay: Duration = field(
        default=1.0, metadata=_help("the wait before the first retry; each next wait doubles")
    )
    timeout: Duration | None = field(
        default=None, metadata=_help("time limit for each run of the task")
    )
    engine: Literal["auto", "fork", "kernel"] | None = field(
        default=None, metadata=_help("fork, kernel or auto (default: the run section's, or auto)")
    )
    kernel: str | None = field(
        default=None, metadata=_help("kernel to run on (default: the notebook's kernelspec)")
    )

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries: expected 0 or more; got {self.retries}")


@dataclass(frozen=True)
class PipelineSection:
    """A pipeline of notebooks: ``kiln build NAME`` runs its tasks in dependency order."""

    tasks: dict[str, TaskSection] = field(
        metadata=_help("the tasks by name (letters, digits, _ . -)")
    )


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


@dataclass(frozen=True)
class NotebookSection:
    """How the web UI shows one notebook; with ``app: true`` it is also served as an app at
    /apps/PATH (the form and the outputs without code)."""

    title: str | None = field(default=None, metadata=_help("the name shown (default: the file)"))
    description: str | None = field(
        default=None, metadata=_help("shown under the title (default: its first Markdown cell)")
    )
    app: bool = field(default=False, metadata=_help("serve it as an app at /apps/PATH"))
    cache: Duration | None = field(
        default=None,
        metadata=_help(
            "an app's result for the same parameters is reused while the last successful "
            "run is younger than this (10m)"
        ),
    )
    parameters: dict[str, Any] = field(
        default_factory=dict, metadata=_help("the form's default values, over the cell's own")
    )


# -- tracking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowSection:
    """Record every run in MLflow too (needs ``pip install 'kiln-notebooks[mlflow]'``)."""

    uri: str = field(
        metadata=_help(
            "tracking URI: http(s)://host:5000 for a server, sqlite:///mlflow.db or a folder "
            "(./mlruns) for a local store; relative paths are from the project root"
        )
    )
    experiment: str | None = field(
        default=None,
        metadata=_help("MLflow experiment name (default: the notebook's name, without .ipynb)"),
    )


@dataclass(frozen=True)
class TrackingSection:
    """Runs as experiments: where else they are recorded."""

    mlflow: MlflowSection | None = field(
        default=None, metadata=_help("export each run (parameters, records, metrics, files)")
    )


#: files runs read, recorded by content hash: a list of paths or globs from the project root
#: (every notebook), or a mapping of notebook path or glob -> such a list
InputsSection = list[str] | dict[str, list[str] | str]


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
        default=None, metadata=_help("the run history: its database and file permissions")
    )
    pipelines: dict[str, PipelineSection] = field(
        default_factory=dict, metadata=_help("pipelines of notebooks, by name, for kiln build")
    )
    server: ServerSection | None = field(default=None, metadata=_help("kiln serve"))
    endpoints: dict[str, EndpointSection] = field(
        default_factory=dict,
        metadata=_help("notebooks served as API endpoints, by name (POST /api/v1/endpoints/NAME)"),
    )
    tracking: TrackingSection | None = field(
        default=None, metadata=_help("runs as experiments: MLflow export")
    )
    inputs: InputsSection = field(
        default_factory=list,
        metadata=_help(
            "files runs read (paths or globs from the project root), recorded by content hash "
            "with every run; or notebook path/glob -> such a list"
        ),
    )
    smtp: SmtpSection | None = field(
        default=None, metadata=_help("the mail server for reports and alerts")
    )
    alerts: AlertsSection | None = field(
        default=None,
        metadata=_help("alerts about missed slots, a silent scheduler and failed builds"),
    )
    schedules: dict[str, ScheduleSection] = field(
        default_factory=dict,
        metadata=_help(
            "notebooks and pipelines run on cron schedules, by name (kiln scheduler fires them)"
        ),
    )
    notebooks: dict[str, NotebookSection] = field(
        default_factory=dict,
        metadata=_help(
            "the web UI's notebooks, by path from the project root (title, description, app, "
            "cache, form defaults); without it every notebook is listed"
        ),
    )

    def __post_init__(self) -> None:
        for name in self.schedules:
            if not SCHEDULE_NAME.fullmatch(name):
                raise ValueError(
                    f"schedules: {name!r} is not a schedule name (letters, digits, _ . -)"
                )
