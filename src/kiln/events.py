"""What a run tells its observers: the engine's cell events plus the run's own milestones.

Observers (the CLI's progress bar and live output, ``kiln.run(log_output=True)``, a sweep's
console, later the server's live log) receive these in order, synchronously, on the event
loop that drives the run; an observer must return quickly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kiln.engines.base import CellFinished, CellOutput, CellStarted, Event, KernelReady
from kiln.store.records import Run

__all__ = [
    "CellFinished",
    "CellOutput",
    "CellStarted",
    "KernelReady",
    "Observer",
    "RunEnded",
    "RunEvent",
    "RunStarted",
    "RunWarning",
]


@dataclass(frozen=True)
class RunStarted:
    """The run is recorded and its cells are about to execute."""

    run: Run
    cells: int
    code_cells: int


@dataclass(frozen=True)
class RunEnded:
    """The run reached its terminal state (``run`` is the final record)."""

    run: Run


@dataclass(frozen=True)
class RunWarning:
    """Something the user should know that does not stop the run (one line)."""

    text: str


RunEvent = Event | RunStarted | RunEnded | RunWarning
Observer = Callable[[RunEvent], None]
