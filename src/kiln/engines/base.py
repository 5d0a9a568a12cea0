"""The engine protocol: how a notebook's cells get executed.

An engine executes the code cells of a notebook in order, filling in outputs and execution
counts in place, and tells the runner what happens through events. It never writes files,
never touches the store and never decides a run's state: the runner does. Normal outcomes
(a cell error, a timeout, a dead kernel) are returned as an :class:`ExecutionOutcome`, not
raised; only a failure to start at all raises :class:`kiln.errors.EngineError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from kiln.errors import CellFailure

if TYPE_CHECKING:
    from nbformat import NotebookNode

OutcomeStatus = Literal["ok", "error", "timeout", "dead", "cancelled"]


@dataclass(frozen=True)
class KernelReady:
    """The engine is ready to execute cells."""

    kernel_name: str
    language: str
    kernel_version: str | None = None
    language_version: str | None = None
    pid: int | None = None
    #: when process ``pid`` started (epoch seconds, as ``/proc`` says), if the engine knows
    started: float | None = None


@dataclass(frozen=True)
class CellStarted:
    index: int


@dataclass(frozen=True)
class CellOutput:
    """One output appended to a cell (stream text, display data, result or error)."""

    index: int
    output: Mapping[str, Any]


@dataclass(frozen=True)
class CellFinished:
    index: int
    duration: float
    status: Literal["ok", "error", "skipped"]


@dataclass(frozen=True)
class EngineSwitched:
    """The run moved to another engine before any cell ran (``engine="auto"``: the fork
    engine found it cannot run this notebook after all); ``notice`` says why, in one line."""

    engine: str
    notice: str


Event = KernelReady | CellStarted | CellOutput | CellFinished | EngineSwitched
EventSink = Callable[[Event], None]


@dataclass(frozen=True)
class ExecuteOptions:
    """What the runner asks of an engine for one run."""

    kernel_name: str
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    cell_timeout: float | None = None
    #: ``time.monotonic()`` value after which the whole run is over (``None``: no limit)
    deadline: float | None = None
    allow_errors: bool = False
    skip_tag: str = "skip-execution"
    startup_timeout: float = 60.0
    #: file that receives the kernel process's own stdout/stderr (appended), if any
    process_log: Path | None = None
    #: modules the notebook imports at the top level (a warm engine may import them first)
    preload: tuple[str, ...] = ()
    #: cap on the run's address space in bytes (fork engine)
    memory_limit: int | None = None
    #: ``sys.argv`` of the run (fork engine; a kernel has its own)
    argv: tuple[str, ...] = ()
    #: when the fork engine finds it cannot run the notebook after all (a pre-import hangs or
    #: starts a thread), run it on a kernel instead of failing (``engine="auto"``)
    kernel_fallback: bool = False


@dataclass
class ExecutionOutcome:
    status: OutcomeStatus
    message: str = ""
    failed_cell: int | None = None
    failure: CellFailure | None = None
    #: cells that raised but were allowed to (``allow_errors``)
    allowed_errors: list[CellFailure] = field(default_factory=list)
    timeout_kind: Literal["cell", "run"] | None = None


@runtime_checkable
class EngineSession(Protocol):
    """One run on one engine: start, execute, close.

    ``start`` only launches what the run needs (a kernel process) and returns at once, so the
    runner can record the run while the kernel boots; ``execute`` waits until the engine is
    ready and runs the cells; ``close`` stops everything the session started and is safe to
    call whatever happened before.
    """

    async def start(self) -> None: ...

    async def execute(self, nb: NotebookNode, emit: EventSink) -> ExecutionOutcome: ...

    async def close(self, *, graceful: bool) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """Executes notebooks; implementations: KernelEngine, ForkEngine, FakeEngine.

    An engine may keep processes warm between sessions (the fork engine's warm parents);
    ``aclose`` stops them, and is called once by whoever created the engine."""

    name: str

    def session(self, options: ExecuteOptions) -> EngineSession: ...

    async def aclose(self) -> None: ...


def is_clean_exit(failure: CellFailure) -> bool:
    """``sys.exit(0)`` / ``raise SystemExit``: the notebook chose to stop early, successfully
    (papermill treats it the same way)."""
    return failure.ename == "SystemExit" and failure.evalue.strip() in ("", "0", "None")


def failure_from_error_output(
    cell: Any, index: int, output: Mapping[str, Any] | None
) -> CellFailure:
    """Build a CellFailure from a cell and its error output (or execute_reply content)."""
    ename = str(output.get("ename", "Error")) if output else "Error"
    evalue = str(output.get("evalue", "")) if output else ""
    tb = list(output.get("traceback", [])) if output else []
    return CellFailure(
        cell_index=index,
        execution_count=cell.get("execution_count"),
        ename=ename,
        evalue=evalue,
        traceback=[str(t) for t in tb],
        source=str(cell.get("source", "")),
    )
