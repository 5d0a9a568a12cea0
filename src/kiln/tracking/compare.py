"""Runs side by side: parameters, records, metrics, per-cell timings, environment, git state,
inputs, tags and state, with what differs marked and, for numbers, the delta from the first
run (``kiln runs compare A B [C ...]``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln.provenance import Environment, package_changes
from kiln.store.records import Record, Run

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

#: sections in the order they are shown
SECTIONS = (
    "run",
    "parameters",
    "records",
    "metrics",
    "cells",
    "environment",
    "git",
    "inputs",
    "tags",
)


@dataclass(frozen=True)
class Row:
    """One compared value: its section and name, its value in each run, whether they are all
    equal, and (numbers only) each run's difference from the first run."""

    section: str
    name: str
    values: list[Any]
    same: bool
    deltas: list[float | None] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"values": self.values, "same": self.same}
        if self.deltas is not None:
            out["deltas"] = self.deltas
        return out


@dataclass
class RunComparison:
    """What :func:`compare_runs` found."""

    runs: list[Run]
    rows: list[Row]
    #: each run's packages against the first run's: ``{added, removed, changed}``
    packages: list[dict[str, list[Any]] | None] = field(default_factory=list)

    @property
    def differences(self) -> list[Row]:
        return [row for row in self.rows if not row.same]

    def section(self, name: str) -> list[Row]:
        return [row for row in self.rows if row.section == name]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runs": [run.id for run in self.runs]}
        for section in SECTIONS:
            rows = self.section(section)
            out[section] = {row.name: row.to_json() for row in rows}
        out["environment"]["packages_changed"] = self.packages
        out["differences"] = [f"{row.section}.{row.name}" for row in self.differences]
        return out


def compare_runs(runs: Sequence[Run], environments: dict[str, Environment]) -> RunComparison:
    """Compare ``runs`` (two or more) cell by cell and value by value; ``environments`` are
    the stored environments by hash (:func:`kiln.store.environments.get_environments`)."""
    if len(runs) < 2:
        raise ValueError("compare at least two runs")
    rows: list[Row] = []
    rows += _run_rows(runs)
    rows += _mapping_rows("parameters", [run.parameters for run in runs])
    rows += _record_rows(runs)
    rows += _metric_rows(runs)
    rows += _cell_rows(runs)
    envs = [environments.get(run.environment_hash or "") for run in runs]
    rows += _environment_rows(runs, envs)
    rows += _git_rows(runs)
    rows += _mapping_rows(
        "inputs", [{i["path"]: _short(i.get("sha256")) for i in run.inputs} for run in runs]
    )
    rows += _mapping_rows("tags", [run.tags for run in runs])
    first = envs[0]
    packages: list[dict[str, list[Any]] | None] = [None]
    for env in envs[1:]:
        if first is None or env is None:
            packages.append(None)
        else:
            packages.append(package_changes(first.package_map, env.package_map))
    return RunComparison(list(runs), rows, packages)


def load_comparison(store: RunStore, keys: Iterable[str]) -> RunComparison:
    """Read the runs (ids, prefixes or ``last``) and their environments, and compare them."""
    from kiln.store.environments import get_environments

    runs = [store.get_run(key) for key in keys]
    return compare_runs(runs, get_environments(store, [r.environment_hash for r in runs]))


# -- sections ------------------------------------------------------------------------------------


def _row(section: str, name: str, values: list[Any], *, numeric: bool = True) -> Row:
    same = all(_canonical(v) == _canonical(values[0]) for v in values[1:])
    deltas = _deltas(values) if numeric else None
    return Row(section, name, values, same, deltas)


def _run_rows(runs: Sequence[Run]) -> list[Row]:
    def when(run: Run) -> str | None:
        moment = run.started_at or run.created_at
        return moment.isoformat() if moment else None

    rows = [
        _row("run", "notebook", [r.notebook_path for r in runs]),
        _row("run", "state", [r.state.value for r in runs]),
        _row("run", "started", [when(r) for r in runs], numeric=False),
        _row("run", "duration", [r.duration for r in runs]),
        _row("run", "engine", [r.engine for r in runs]),
        _row("run", "notebook_sha256", [_short(r.notebook_sha256) for r in runs]),
    ]
    if any(r.reason for r in runs):
        rows.append(_row("run", "reason", [r.reason for r in runs]))
    # the start time always differs; it is context, not a difference
    rows[2] = Row("run", "started", rows[2].values, True)
    return rows


def _mapping_rows(section: str, maps: list[dict[str, Any]]) -> list[Row]:
    names: dict[str, None] = {}
    for mapping in maps:
        names.update(dict.fromkeys(mapping))
    return [_row(section, name, [m.get(name) for m in maps]) for name in names]


def _record_value(record: Record | None) -> Any:
    """A record as compared: its JSON value, or for a table or an image a short description
    with a digest of its content (so equal tables compare equal)."""
    if record is None:
        return None
    if record.kind == "json":
        return record.value
    digest = hashlib.sha256(
        json.dumps(record.value, sort_keys=True, default=str).encode("utf-8")
    ).hexdigest()[:12]
    if record.kind == "dataframe" and isinstance(record.value, dict):
        rows, cols = len(record.value.get("data") or []), len(record.value.get("columns") or [])
        return f"<dataframe {rows}x{cols} {digest}>"
    return f"<{record.kind} {digest}>"


def _record_rows(runs: Sequence[Run]) -> list[Row]:
    by_run = [{r.name: r for r in run.records_list} for run in runs]
    names: dict[str, None] = {}
    for records in by_run:
        names.update(dict.fromkeys(records))
    return [
        _row("records", name, [_record_value(records.get(name)) for records in by_run])
        for name in names
    ]


def _metric_rows(runs: Sequence[Run]) -> list[Row]:
    """Each metric's last value (and the delta), then how many points it has."""
    series = [run.metric_series for run in runs]
    names: dict[str, None] = {}
    for one in series:
        names.update(dict.fromkeys(one))
    rows = []
    for name in names:
        points = [one.get(name) or [] for one in series]
        rows.append(_row("metrics", name, [_float(p[-1][1]) if p else None for p in points]))
        rows.append(_row("metrics", f"{name} (points)", [len(p) for p in points], numeric=False))
    return rows


def _cell_rows(runs: Sequence[Run]) -> list[Row]:
    longest = max(len(run.cell_durations) for run in runs)
    rows = []
    for index in range(longest):
        values = [
            run.cell_durations[index] if index < len(run.cell_durations) else None for run in runs
        ]
        if all(v is None for v in values):
            continue
        row = _row("cells", f"cell {index}", values)
        # timings always differ a little: only a cell that ran in some runs and not in others
        # is a difference
        ran = {v is not None for v in values}
        rows.append(Row(row.section, row.name, row.values, len(ran) == 1, row.deltas))
    return rows


def _environment_rows(runs: Sequence[Run], envs: list[Environment | None]) -> list[Row]:
    rows = [
        _row("environment", "hash", [_short(r.environment_hash) for r in runs]),
        _row("environment", "python", [r.python_version for r in runs]),
        _row("environment", "kernel", [r.kernel_version for r in runs]),
        _row("environment", "os", [e.os if e else None for e in envs]),
        _row("environment", "machine", [e.machine if e else None for e in envs]),
        _row(
            "environment", "packages", [len(e.packages) if e else None for e in envs], numeric=False
        ),
    ]
    return rows


def _git_rows(runs: Sequence[Run]) -> list[Row]:
    gits = [run.git or {} for run in runs]
    return [
        _row("git", "commit", [_short(g.get("commit")) for g in gits]),
        _row("git", "dirty", [g.get("dirty") for g in gits]),
        _row("git", "diff", [_short(g.get("diff_sha256")) for g in gits]),
    ]


# -- values -------------------------------------------------------------------------------------


def _short(digest: Any) -> Any:
    return digest[:12] if isinstance(digest, str) else digest


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _deltas(values: list[Any]) -> list[float | None] | None:
    """Each value minus the first, when the first and it are numbers (None otherwise); None
    when no value but the first is a number."""
    base = _number(values[0])
    if base is None:
        return None
    out: list[float | None] = [None]
    for value in values[1:]:
        number = _number(value)
        out.append(None if number is None else number - base)
    return out if any(d is not None for d in out) else None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
