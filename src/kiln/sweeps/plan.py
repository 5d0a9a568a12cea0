"""Before anything runs: the parameter sets of a grid, each validated, with its output path.

A mapping grid gives the cartesian product of its lists, a list grid its sets as they are.
:func:`plan_sweep` checks every set the way a run is checked (``kiln.runner.prepare``) and
refuses the whole sweep at the first bad one, naming the set and the parameter.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kiln.errors import ParameterError, UsageError
from kiln.runner import RunRequest, prepare
from kiln.store.paths import new_run_id
from kiln.store.records import Run

__all__ = [
    "MAX_SETS",
    "ParameterSet",
    "SweepItem",
    "SweepPlan",
    "load_grid",
    "parameter_sets",
    "plan_sweep",
]

#: more sets than this is a mistake in the grid (and would not fit in memory), not a sweep
MAX_SETS = 100_000
#: the tag every run of one sweep carries (its value names the sweep)
SWEEP_TAG = "sweep"

ParameterSet = dict[str, Any]


# -- the grid -----------------------------------------------------------------------------------


def parameter_sets(grid: Any, *, origin: str = "grid") -> list[ParameterSet]:
    """The parameter sets a grid describes, in a stable order.

    A mapping of name -> list of values gives their cartesian product, the first name varying
    slowest: ``{"x": [1, 2], "region": ["EU", "US"]}`` gives x=1 EU, x=1 US, x=2 EU, x=2 US.
    A value that is not a list is a single value; to sweep a list-typed parameter, give a list
    of lists. A list of mappings gives those sets as they are. ``origin`` names the grid in
    error messages.
    """
    if isinstance(grid, Mapping):
        return _product(grid, origin)
    if isinstance(grid, (list, tuple)):
        return _explicit(grid, origin)
    raise UsageError(
        f"{origin}: a sweep grid is a mapping of parameter names to lists of values, or a list "
        f"of parameter sets (mappings of name: value); got {_kind(grid)}"
    )


def _product(grid: Mapping[Any, Any], origin: str) -> list[ParameterSet]:
    if not grid:
        raise UsageError(f"{origin}: the sweep grid is empty; give at least one parameter")
    names = [_name(key, origin) for key in grid]
    axes: list[list[Any]] = []
    for name, values in zip(names, grid.values(), strict=True):
        options = list(values) if isinstance(values, (list, tuple)) else [values]
        if not options:
            raise UsageError(
                f"{origin}: parameter {name!r} has an empty list of values, so the sweep has "
                "no parameter sets"
            )
        axes.append([_plain(value, name, origin) for value in options])
    size = math.prod(len(axis) for axis in axes)
    if size > MAX_SETS:
        raise UsageError(f"{origin}: the grid gives {size:,} parameter sets (at most {MAX_SETS:,})")
    return [dict(zip(names, combination, strict=True)) for combination in itertools.product(*axes)]


def _explicit(sets: Sequence[Any], origin: str) -> list[ParameterSet]:
    if not sets:
        raise UsageError(f"{origin}: the list of parameter sets is empty")
    if len(sets) > MAX_SETS:
        raise UsageError(f"{origin}: {len(sets):,} parameter sets (at most {MAX_SETS:,})")
    out: list[ParameterSet] = []
    for index, item in enumerate(sets):
        if item is None:  # a bare "-" in YAML: the shared values alone
            item = {}
        if not isinstance(item, Mapping):
            raise UsageError(
                f"{origin}: set {index} is {_kind(item)}; each set is a mapping of name: value"
            )
        out.append({_name(key, origin): _plain(value, key, origin) for key, value in item.items()})
    return out


def _name(key: Any, origin: str) -> str:
    from kiln.parameters.values import yaml_key

    return yaml_key(key, origin)


def _plain(value: Any, name: str, origin: str) -> Any:
    from kiln.parameters.values import check_plain_data

    return check_plain_data(value, name=name, notebook=origin)


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__} ({value!r})"[:80]


def load_grid(path: str | os.PathLike[str]) -> list[ParameterSet]:
    """Read a sweep grid from a YAML file (see :func:`parameter_sets`).

    Values are typed YAML, read as ``-y``/``-f`` read them (a date stays a string), and are
    checked against the notebook's schema by :func:`plan_sweep`.
    """
    from kiln.yamlio import load_yaml, plain

    origin = os.fspath(path)
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read sweep grid {origin}: {exc.strerror}") from None
    data = plain(load_yaml(text, origin=origin))
    if data is None:
        raise UsageError(f"{origin}: the sweep grid is empty")
    return parameter_sets(data, origin=origin)


# -- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepItem:
    """One parameter set of a sweep and, once the sweep ran, what became of it."""

    #: position of the set in the grid's order (0-based)
    index: int
    #: the set as given in the grid
    values: ParameterSet
    #: what the run receives: the shared values updated by the set, typed by the schema
    parameters: dict[str, Any]
    #: the request this set runs as
    request: RunRequest
    #: the recorded run (``None``: never recorded, see ``reason``)
    run: Run | None = None
    #: why there is no run: never started (the sweep was cancelled) or refused as it started
    reason: str | None = None

    @property
    def state(self) -> str:
        """The run's state, or ``not_run``."""
        return self.run.state.value if self.run is not None else "not_run"

    @property
    def ok(self) -> bool:
        """The set ran and its run succeeded (or was prepared, for ``prepare_only``)."""
        return self.run is not None and self.run.state.ok

    def to_json(self) -> dict[str, Any]:
        """The run's record (``Run.to_json()``) with a ``sweep`` key: the set and its index."""
        sweep = {"index": self.index, "set": self.values}
        if self.run is not None:
            return {**self.run.to_json(), "sweep": sweep}
        return {
            "id": None,
            "state": "not_run",
            "parameters": self.parameters,
            "reason": self.reason,
            "sweep": sweep,
        }


@dataclass(frozen=True)
class SweepPlan:
    """Every set validated, with its request; nothing has started."""

    items: tuple[SweepItem, ...]
    #: warnings about the notebook (each text once), e.g. no ``parameters`` cell
    warnings: tuple[str, ...] = ()


def plan_sweep(
    request: RunRequest,
    sets: Sequence[Mapping[str, Any]],
    *,
    output: str | os.PathLike[str] | None = None,
    engine_name: str | None = None,
    allow_outside: bool = False,
) -> SweepPlan:
    """Validate every set before anything runs; raise for the first bad one, naming it.

    ``request`` holds the options and the shared parameter values, which each set updates.
    ``output`` is a path template: ``out/{region}-{x}.ipynb`` takes each run's parameter values
    (given, else the notebook's default) and ``{index}`` (the set's index, unless a parameter is
    called ``index``); without it each run writes ``output.ipynb`` in its own run folder.
    ``engine_name`` is the engine of a runner built with a fixed one (``Runner(engine=...)``);
    by default each set's engine is chosen as the runner chooses it (``--engine auto``).
    A relative template whose paths leave the working directory (``../../etc/{x}.ipynb``) is
    refused unless ``allow_outside``; values never add folders (``/`` and ``..`` become ``_``).
    """
    if not sets:
        raise UsageError("a sweep needs at least one parameter set")
    template = (
        _OutputTemplate(os.fspath(output), len(sets), allow_outside=allow_outside)
        if output is not None
        else None
    )
    items: list[SweepItem] = []
    warnings: dict[str, None] = {}
    outputs: dict[Path, int] = {}
    # every run of the sweep carries its tag, so the sweep can be listed and compared
    tags = {**(request.tags or {}), SWEEP_TAG: new_run_id()}
    for index, values in enumerate(sets):
        merged = {**request.parameters, **values}
        set_request = replace(request, parameters=merged, output=None, tags=tags)
        try:
            prepared = prepare(set_request, engine_name=engine_name)
            if index == 0:  # the full nbformat validation, once: the same notebook for every set
                prepared.complete()
            if template is not None:
                path = template.render(index, {**prepared.schema.defaults(), **prepared.values})
                _check_output(path, request.notebook, index, outputs)
                set_request = replace(set_request, output=path)
        except ParameterError as exc:
            raise type(exc)(
                f"sweep set {index} ({short_values(values)}): {exc.message}",
                name=exc.name,
                expected=exc.expected,
                notebook=exc.notebook,
            ) from exc
        except UsageError as exc:
            raise UsageError(f"sweep set {index} ({short_values(values)}): {exc.message}") from exc
        warnings.update(dict.fromkeys(prepared.warnings))
        items.append(SweepItem(index, dict(values), dict(prepared.values), set_request))
    return SweepPlan(tuple(items), tuple(warnings))


def _check_output(path: Path, notebook: Path, index: int, seen: dict[Path, int]) -> None:
    resolved = path.resolve()
    if resolved == Path(notebook).resolve():
        raise UsageError(f"the output path {path} is the input notebook")
    if resolved in seen:
        raise UsageError(
            f"the output template gives {path} for sets {seen[resolved]} and {index}; "
            "add a field that tells them apart"
        )
    seen[resolved] = index


class _OutputTemplate:
    """``out/{region}-{x:03d}.ipynb``: fields are parameter names and ``index``."""

    def __init__(self, template: str, sets: int, *, allow_outside: bool = False) -> None:
        self.template = template
        self.inside = None if allow_outside or os.path.isabs(template) else Path.cwd().resolve()
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise UsageError(f"output template {template!r}: {exc}") from None
        fields = [(name, spec or "") for _, name, spec, _ in parsed if name is not None]
        for name, spec in fields:
            if not name.isidentifier() or "{" in spec:
                raise UsageError(
                    f"output template {template!r}: {{{name}}} is not a parameter name; "
                    "fields are parameter names or {index}, with an optional format such as "
                    "{x:03d}"
                )
        if not fields and sets > 1:
            raise UsageError(
                f"output path {template!r} is the same for every set; give a template such as "
                "'out/{region}-{x}.ipynb', or no output path (each run then writes "
                "output.ipynb in its run folder)"
            )

    def render(self, index: int, values: Mapping[str, Any]) -> Path:
        fields: dict[str, Any] = {"index": index}
        fields.update((name, _path_part(value)) for name, value in values.items())
        try:
            path = Path(self.template.format_map(fields))
        except KeyError as exc:
            raise UsageError(
                f"output template {self.template!r} uses {{{exc.args[0]}}}, which this set "
                f"does not give; fields: {', '.join(fields)}"
            ) from None
        except (ValueError, TypeError) as exc:
            raise UsageError(f"output template {self.template!r}: {exc}") from None
        if self.inside is not None and not path.resolve().is_relative_to(self.inside):
            raise UsageError(
                f"output template {self.template!r} gives {path}, outside the working "
                f"directory {self.inside}; use an absolute path, or allow it (--allow-outside)"
            )
        return path


def _path_part(value: Any) -> Any:
    """A value as it may appear in a file name: no path separators, containers as JSON."""
    if isinstance(value, (list, dict)):
        value = json.dumps(value, separators=(",", ":"), default=str)
    if isinstance(value, str):
        for bad in {"/", "\\", "\0", os.sep}:
            value = value.replace(bad, "_")
        if value in (".", ".."):
            value = "_"
    return value


def short_values(values: Mapping[str, Any], limit: int = 60) -> str:
    """``x=1, region="EU"``, cut at ``limit`` characters (messages and the summary table)."""
    text = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in values.items())
    if not text:
        return "shared values only"
    return text if len(text) <= limit else text[: limit - 1] + "…"
