"""The run record: what Kiln knows about one run, as stored and as returned by the API."""

from __future__ import annotations

import base64
import enum
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any


class RunState(str, enum.Enum):
    """The state of a run. A string, so it compares, prints and stores as its value.

    ``queued`` -> ``running`` -> exactly one terminal state. ``prepared`` is the terminal
    state of a ``prepare_only`` run (parameters injected, nothing executed)."""

    QUEUED = "queued"
    RUNNING = "running"
    PREPARED = "prepared"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    CANCELLED = "cancelled"

    __hash__ = str.__hash__  # "crashed" in {RunState.CRASHED} must hold on every Python

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def terminal(self) -> bool:
        return self not in (RunState.QUEUED, RunState.RUNNING)

    @property
    def ok(self) -> bool:
        """Ended the way it was asked to (succeeded, or prepared for a prepare-only run)."""
        return self in (RunState.SUCCEEDED, RunState.PREPARED)


STATES: tuple[str, ...] = tuple(state.value for state in RunState)
TERMINAL_STATES: frozenset[RunState] = frozenset(s for s in RunState if s.terminal)
ACTIVE_STATES: frozenset[RunState] = frozenset(s for s in RunState if not s.terminal)


@dataclass(frozen=True)
class Image:
    """A recorded figure: its bytes and their mime type. Displays itself in Jupyter."""

    mime: str
    data: bytes

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {self.mime: base64.b64encode(self.data).decode("ascii")}

    def save(self, path: str) -> None:
        """Write the image to a file (``chart.png``)."""
        with open(path, "wb") as handle:
            handle.write(self.data)


@dataclass
class Record:
    """One value recorded by ``kiln.record(name, value)`` inside a notebook.

    ``kind`` is ``json`` (any JSON value), ``dataframe`` (value is
    ``{"columns": [...], "index": [...], "data": [[...]]}``) or ``image`` (value is
    ``{"mime": "image/png", "data": "<base64>"}``).
    """

    name: str
    kind: str
    value: Any
    cell_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def python(self) -> Any:
        """The value as a Python object: a pandas DataFrame for a ``dataframe`` record (when
        pandas is installed, else the stored table), an :class:`Image` for an ``image``,
        the JSON value otherwise."""
        if self.kind == "image":
            return Image(str(self.value.get("mime", "image/png")), self.image_bytes())
        if self.kind == "dataframe":
            try:
                return self.to_dataframe()
            except ImportError:
                return self.value
        return self.value

    def image_bytes(self) -> bytes:
        if self.kind != "image":
            raise ValueError(f"record {self.name!r} is a {self.kind}, not an image")
        return base64.b64decode(self.value["data"])

    def to_dataframe(self) -> Any:
        if self.kind != "dataframe":
            raise ValueError(f"record {self.name!r} is a {self.kind}, not a dataframe")
        import pandas as pd

        v = self.value
        frame = pd.DataFrame(v["data"], columns=v["columns"], index=v["index"])
        if frame.shape[1] == 1 and v["columns"] == [0]:  # a recorded Series
            return frame[0]
        return frame


@dataclass
class Run:
    """One run of one notebook, from the moment it was recorded to its terminal state."""

    id: str
    notebook_path: str
    notebook_sha256: str
    state: RunState
    parameters: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    run_dir: str | None = None
    input_path: str | None = None
    output_path: str | None = None
    log_path: str | None = None
    engine: str | None = None
    kernel_name: str | None = None
    kernel_version: str | None = None
    language: str | None = None
    python_version: str | None = None
    kiln_version: str | None = None
    cell_durations: list[float | None] = field(default_factory=list)
    error: dict[str, Any] | None = None
    reason: str | None = None
    records_list: list[Record] = field(default_factory=list)
    owner_pid: int | None = None
    owner_host: str | None = None
    owner_started: float | None = None
    kernel_pid: int | None = None
    #: Start time of ``kernel_pid`` (epoch seconds), so a recycled pid is never mistaken for
    #: the run's leftover kernel.
    kernel_started: float | None = None
    #: what to run, for a run submitted to the queue (options, output, notebook label)
    request: dict[str, Any] | None = None
    #: the worker holding the run, and until when (renewed while it runs)
    lease_owner: str | None = None
    lease_expires: datetime | None = None
    #: the run this one retries, its attempt number (1 for the first) and how many retries
    #: its policy allows
    retry_of: str | None = None
    attempt: int | None = None
    max_retries: int | None = None
    #: who asked for the run (a user of the server, a schedule, a pipeline build)
    submitted_by: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    #: when someone asked to cancel the run (its holder stops it)
    cancel_requested: datetime | None = None
    #: the pipeline build this run is a task of (``kiln build``), if any
    build_id: str | None = None
    #: the hash of the environment it ran in (its packages are stored once per hash)
    environment_hash: str | None = None
    #: the notebook's repository: ``{root, commit, branch, dirty, diff_sha256}``
    git: dict[str, Any] | None = None
    #: files it declared it reads: ``[{path, sha256, size, source}]``
    inputs: list[dict[str, Any]] = field(default_factory=list)
    #: ``kiln.metric`` points, in order: ``[{name, value, step}]``
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: ``kiln.artifact`` files kept in the run folder: ``[{name, path, size, sha256}]``
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    #: where the run came from beyond its trigger: ``{rerun_of, overrides}`` for a rerun
    origin: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("inputs", "metrics", "artifacts"):
            if getattr(self, name) is None:  # rows written before these existed
                setattr(self, name, [])
        if not isinstance(self.state, RunState):
            if self.state not in STATES:
                raise ValueError(
                    f"unknown run state {self.state!r}: expected one of {', '.join(STATES)}"
                )
            self.state = RunState(self.state)

    @property
    def records(self) -> dict[str, Any]:
        """Recorded values by name, as Python objects (the last value wins when a name is
        recorded twice): a DataFrame for a table, an :class:`Image` for a figure, else the
        JSON value. :attr:`record_values` has them as stored."""
        return {r.name: r.python() for r in self.records_list}

    @property
    def record_values(self) -> dict[str, Any]:
        """Recorded values by name as stored (JSON: a table is ``{columns, index, data}``, an
        image ``{mime, data (base64)}``)."""
        return {r.name: r.value for r in self.records_list}

    @property
    def metric_series(self) -> dict[str, list[tuple[int | None, float]]]:
        """Each metric's points in the order they were logged: ``{"loss": [(0, 0.9), (1,
        0.5)]}`` (the step is None when none was given)."""
        series: dict[str, list[tuple[int | None, float]]] = {}
        for point in self.metrics:
            series.setdefault(str(point["name"]), []).append((point.get("step"), point["value"]))
        return series

    @property
    def artifact_paths(self) -> dict[str, str]:
        """Where each kept artefact is, by name (in the run folder's ``artifacts/``)."""
        return {str(a["name"]): str(a["path"]) for a in self.artifacts}

    @property
    def succeeded(self) -> bool:
        return self.state is RunState.SUCCEEDED

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """The run as JSON data: its own copy (nothing shared with the run), times as ISO text.

        Built field by field rather than with ``dataclasses.asdict``, which copies through
        ``deepcopy`` and the discarded records too: a sweep's ``--json`` and the server's run
        lists call this once per run."""
        out: dict[str, Any] = {}
        for key in _RUN_JSON_FIELDS:
            value = getattr(self, key)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, RunState):
                value = value.value
            elif isinstance(value, (dict, list, tuple)):
                value = _copied(value)
            out[key] = value
        out["duration"] = self.duration
        out["records"] = self.record_values
        out["record_kinds"] = {r.name: r.kind for r in self.records_list}
        return out


_RUN_FIELDS = frozenset(f.name for f in fields(Run))


def changed_run(run: Run, **changes: Any) -> Run:
    """A copy of ``run`` with some fields changed, like :func:`dataclasses.replace` without
    building and checking the ~45 fields again (the values come from a run already, the
    changes from the store's own writes; a run ends with one or two such copies)."""
    if not _RUN_FIELDS.issuperset(changes):
        raise TypeError(f"not fields of a run: {', '.join(sorted(set(changes) - _RUN_FIELDS))}")
    if "state" in changes and not isinstance(changes["state"], RunState):
        changes["state"] = RunState(changes["state"])
    copy = object.__new__(Run)
    copy.__dict__.update(run.__dict__)
    copy.__dict__.update(changes)
    return copy


#: the fields :meth:`Run.to_json` writes, in declaration order (the records go separately)
_RUN_JSON_FIELDS = tuple(f.name for f in fields(Run) if f.name != "records_list")


def _copied(value: Any) -> Any:
    """A copy of JSON-like data: new dicts and lists (tuples as tuples), scalars shared."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copied(v) for v in value)
    return value
