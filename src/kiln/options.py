"""The run options: one typed definition that every way of starting a run derives from.

:class:`RunOptions` declares each option once, with its type, default and help text.
Everything that starts runs is built from it:

- :class:`kiln.request.RunRequest` *is* a ``RunOptions`` plus the notebook, its parameters and
  the output path;
- ``kiln.run`` / ``kiln.sweep`` take them as keyword arguments typed by :class:`RunOptionArgs`
  (so mypy catches a misspelled option), and their docstrings list them from here;
- ``kiln run``, ``kiln verify`` and the pytest plugin generate their flags from the ``cli``
  metadata here (:mod:`kiln.flags`), so the same text shows in ``--help``;
- errors about an option name it by its API name (:class:`OptionError`); the CLI translates
  that to its flag in one place.

A test enumerates the options and fails when an entry point lacks one or spells it differently;
an entry point that deliberately does without an option lists it in :data:`NOT_FOR`.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from kiln.errors import UsageError
from kiln.units import DURATION_HELP, SIZE_HELP, parse_duration, parse_size

EngineChoice = Literal["auto", "fork", "kernel"]
#: the engines a user may ask for (``fake`` exists for tests only)
ENGINE_CHOICES: tuple[EngineChoice, ...] = ("auto", "fork", "kernel")
#: other names accepted for an engine: papermill's engine name runs on a Jupyter kernel
ENGINE_ALIASES: Mapping[str, EngineChoice] = {"nbclient": "kernel"}
#: accepted, never offered: the in-process engine of Kiln's own unit tests
_TEST_ENGINES = frozenset({"fake"})

#: how a value of each kind is parsed from text (flags, environment, kiln.yaml)
Kind = Literal["text", "choice", "path", "duration", "size", "switch", "env", "tags"]

#: MLflow's own limits on a tag (kept for every tag, so any run can be exported)
TAG_KEY_LIMIT = 250
TAG_VALUE_LIMIT = 5000


def _option(
    default: Any,
    help: str,
    *,
    kind: Kind,
    flags: tuple[str, ...],
    metavar: str | None = None,
) -> Any:
    return field(
        default=default,
        metadata={"help": help, "kind": kind, "flags": flags, "metavar": metavar},
    )


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a notebook runs. Every field is an option of ``kiln run``, ``kiln.run`` and the
    other entry points, under the same name."""

    kernel: str | None = _option(
        None,
        "kernel to run the notebook on (default: the notebook's own kernelspec, else python3)",
        kind="text",
        flags=("-k", "--kernel"),
        metavar="NAME",
    )
    language: str | None = _option(
        None,
        "language of the notebook's kernel, which picks the parameter translator (default: "
        "the kernelspec's)",
        kind="text",
        flags=("-l", "--language"),
        metavar="LANGUAGE",
    )
    engine: EngineChoice = _option(
        "auto",
        "fork: a fresh child of a warm Python per run (no kernel start-up); kernel: a Jupyter "
        "kernel; auto: fork for Python notebooks on Linux, else kernel",
        kind="choice",
        flags=("--engine",),
    )
    cwd: Path | None = _option(
        None,
        "working directory of the run (default: the notebook's folder)",
        kind="path",
        flags=("--cwd",),
        metavar="DIR",
    )
    env: Mapping[str, str] | None = _option(
        None,
        "extra environment variables for the run",
        kind="env",
        flags=("--env",),
        metavar="NAME=VALUE",
    )
    cell_timeout: float | None = _option(
        None,
        "time limit for each cell",
        kind="duration",
        flags=("--cell-timeout", "--execution-timeout", "--execution_timeout"),
        metavar="DURATION",
    )
    timeout: float | None = _option(
        None,
        "time limit for the whole run, kernel start included",
        kind="duration",
        flags=("--timeout",),
        metavar="DURATION",
    )
    start_timeout: float | None = _option(
        None,
        "time limit for the kernel (or the fork engine's warm parent) to start (default 60s)",
        kind="duration",
        flags=("--start-timeout", "--start_timeout"),
        metavar="DURATION",
    )
    memory_limit: int | None = _option(
        None,
        "cap on the run's memory, e.g. 512M or 2G (fork engine)",
        kind="size",
        flags=("--memory-limit",),
        metavar="SIZE",
    )
    allow_errors: bool = _option(
        False,
        "keep running the next cells after a cell raises (the run still records the errors)",
        kind="switch",
        flags=("--allow-errors",),
    )
    allow_unknown: bool = _option(
        False,
        "accept parameters the notebook does not declare",
        kind="switch",
        flags=("--allow-unknown",),
    )
    lint: bool = _option(
        False,
        "refuse to run a notebook with lint errors (rules configured in kiln.yaml)",
        kind="switch",
        flags=("--lint",),
    )
    report_mode: bool = _option(
        False,
        "hide the input of every cell in the output notebook",
        kind="switch",
        flags=("--report-mode",),
    )
    prepare_only: bool = _option(
        False,
        "inject the parameters and save the output notebook without executing it",
        kind="switch",
        flags=("--prepare-only",),
    )
    tags: Mapping[str, str] | None = _option(
        None,
        "labels stored with the run, e.g. team=sales: shown, filterable (kiln runs list --tag), "
        "sent to MLflow; added to kiln.yaml's run.tags and KILN_TAGS (k=v,k2=v2)",
        kind="tags",
        flags=("--tag",),
        metavar="KEY=VALUE",
    )
    mlflow_uri: str | None = _option(
        None,
        "also record the run in this MLflow tracking store or server (default: kiln.yaml's "
        "tracking.mlflow.uri); MLflow being down never fails the run",
        kind="text",
        flags=("--mlflow-uri",),
        metavar="URI",
    )

    def __post_init__(self) -> None:
        check_options(self)

    def options(self) -> RunOptions:
        """Only the options (a :class:`RunRequest` is a ``RunOptions`` with more fields)."""
        return RunOptions(**{name: getattr(self, name) for name in OPTION_NAMES})


class RunOptionArgs(TypedDict, total=False):
    """:class:`RunOptions` as keyword arguments (``**options: Unpack[RunOptionArgs]``).

    The same names and types as the dataclass; a test keeps the two equal."""

    kernel: str | None
    language: str | None
    engine: EngineChoice
    cwd: str | Path | None
    env: Mapping[str, str] | None
    cell_timeout: float | str | None
    timeout: float | str | None
    start_timeout: float | str | None
    memory_limit: int | str | None
    allow_errors: bool
    allow_unknown: bool
    lint: bool
    report_mode: bool
    prepare_only: bool
    tags: Mapping[str, str] | None
    mlflow_uri: str | None


OPTIONS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(RunOptions)
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in OPTIONS)

#: options an entry point deliberately does without, and why (a test reads this)
NOT_FOR: Mapping[str, Mapping[str, str]] = {
    "verify": {
        "prepare_only": "verify must execute the notebook to compare its outputs",
        "report_mode": "verify compares outputs; hiding inputs changes nothing it checks",
        "allow_unknown": "verify runs the notebook's own defaults: no parameters are passed",
    },
    "pytest": {
        "prepare_only": "a test must execute the notebook",
        "lint": "--kiln-lint adds a lint item per notebook instead of a run gate",
    },
    "server": {
        "env": "a caller of the REST API could change how the run's Python loads code "
        "(PYTHONPATH, LD_PRELOAD); a run's environment is set in kiln.yaml (run: {env: ...})",
        "mlflow_uri": "a caller of the REST API could make the server send run data to any "
        "address; the MLflow server is set in kiln.yaml (tracking: {mlflow: {uri: ...}})",
    },
}


class OptionError(UsageError):
    """A run option has a value that cannot be used; names the option by its API name.

    The CLI shows it under the flag's name instead (``--cwd`` for ``cwd``)."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option}: {problem}")

    def renamed(self, name: str) -> OptionError:
        """The same error, naming the option ``name`` (a flag) instead."""
        error = OptionError(self.option, self.problem)
        error.message = f"{name}: {self.problem}"
        error.args = (error.message,)
        return error


def environment_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Run options set by ``KILN_<OPTION>`` variables (``KILN_TIMEOUT=10m``), normalised;
    :class:`OptionError` names the variable. Under flags and arguments, over ``kiln.yaml``
    (:func:`kiln.project.run_defaults` puts them together)."""
    values: dict[str, Any] = {}
    for f in OPTIONS:
        variable = f"KILN_{f.name.upper()}"
        text = environ.get(variable)
        if text is None or f.metadata["kind"] == "env" or f.name == "prepare_only":
            continue
        given: Any = _switch(text, variable) if f.metadata["kind"] == "switch" else text
        try:
            values[f.name] = normalize(f.name, given)
        except OptionError as exc:
            raise OptionError(variable, exc.problem) from None
    return values


def _switch(text: str, variable: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise OptionError(variable, f"expected 1/true or 0/false; got {text!r}")


def normalize(name: str, value: Any) -> Any:
    """A value given for option ``name`` (text from a flag or kiln.yaml, or a Python value)
    in the option's own type; raises :class:`OptionError` naming the option."""
    meta = _FIELDS[name].metadata
    if value is None:
        return None
    kind = meta["kind"]
    try:
        if kind == "duration":
            return parse_duration(value)
        if kind == "size":
            return parse_size(value, minimum=16 * 1024**2)
        if kind == "path":
            return Path(value)
        if kind == "choice":
            value = ENGINE_ALIASES.get(value, value)
            if value not in ENGINE_CHOICES and value not in _TEST_ENGINES:
                raise ValueError(f"expected one of {', '.join(ENGINE_CHOICES)}; got {value!r}")
            return value
        if kind == "switch":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false; got {value!r}")
            return value
        if kind == "env":
            return _env(value)
        if kind == "tags":
            return parse_tags(value)
        if not isinstance(value, str):
            raise ValueError(f"expected text; got {type(value).__name__} {value!r}")
        return value
    except ValueError as exc:
        raise OptionError(name, str(exc)) from None


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping of environment variable names to strings")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ValueError(f"invalid environment variable name {key!r}")
        if not isinstance(item, str) or "\0" in item:
            raise ValueError(f"the value of environment variable {key} must be a string")
        out[key] = item
    return out


def parse_tags(value: Any) -> dict[str, str]:
    """Tags as a mapping of text to text: from a mapping (numbers and booleans become text)
    or from ``k=v,k2=v2`` (``KILN_TAGS``)."""
    if isinstance(value, str):
        pairs: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, text = part.partition("=")
            if not sep:
                raise ValueError(f"expected KEY=VALUE pairs separated by commas; got {part!r}")
            pairs[key.strip()] = text.strip()
        value = pairs
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping of tag names to values (team=sales)")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key.strip() or "=" in key or "\0" in key:
            raise ValueError(f"invalid tag name {key!r}: a non-empty name without '='")
        if len(key) > TAG_KEY_LIMIT:
            raise ValueError(f"tag name {key[:40]!r}... is longer than {TAG_KEY_LIMIT} characters")
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, (int, float)):
            item = str(item)
        if not isinstance(item, str) or "\0" in item:
            raise ValueError(f"the value of tag {key} must be text; got {item!r}")
        if len(item) > TAG_VALUE_LIMIT:
            raise ValueError(f"the value of tag {key} is longer than {TAG_VALUE_LIMIT} characters")
        out[key.strip()] = item
    return out


def make_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword options (``**RunOptionArgs``) checked and converted to their types; an unknown
    name is an :class:`OptionError` that suggests the nearest option."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in _FIELDS:
            import difflib

            near = difflib.get_close_matches(name, OPTION_NAMES, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise OptionError(name, f"not a run option{hint} (options: {', '.join(OPTION_NAMES)})")
        out[name] = normalize(name, value)
    return out


def check_options(options: RunOptions) -> None:
    """Types and ranges of a built :class:`RunOptions` (values already normalised)."""
    for name in ("cell_timeout", "timeout", "start_timeout"):
        value = getattr(options, name)
        if value is not None and (isinstance(value, bool) or not value > 0):
            raise OptionError(name, f"expected a positive number of seconds; got {value!r}")
    if options.engine not in ENGINE_CHOICES and options.engine not in _TEST_ENGINES:
        raise OptionError(
            "engine", f"expected one of {', '.join(ENGINE_CHOICES)}; got {options.engine!r}"
        )
    if options.memory_limit is not None and options.memory_limit < 16 * 1024**2:
        raise OptionError("memory_limit", "a memory limit under 16M cannot run Python")


def options_doc(*, exclude: frozenset[str] | set[str] = frozenset(), indent: int = 4) -> str:
    """The options' help, one entry each, for docstrings (``help(kiln.run)``)."""
    pad = " " * indent
    lines = []
    for f in OPTIONS:
        if f.name in exclude:
            continue
        kind = f.metadata["kind"]
        extra = {"duration": f" ({DURATION_HELP})", "size": f" ({SIZE_HELP})"}.get(kind, "")
        default = "" if f.default in (None, False) else f" Default: {f.default!r}."
        body = textwrap.fill(
            f"{f.metadata['help']}{extra}.{default}",
            width=92 - indent,
            initial_indent=pad + "    ",
            subsequent_indent=pad + "    ",
        )
        lines.append(f"{pad}``{f.name}``\n{body}")
    return "\n".join(lines)


def option_help(name: str) -> str:
    return str(_FIELDS[name].metadata["help"])


_FIELDS = {f.name: f for f in OPTIONS}
