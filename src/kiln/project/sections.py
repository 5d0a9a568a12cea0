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

    def __post_init__(self) -> None:
        parse_file_mode(self.file_mode)  # a bad mode is refused where it is written

    @property
    def mode(self) -> int:
        return parse_file_mode(self.file_mode)


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
        default=None, metadata=_help("the run history: file permissions")
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
