"""What a build did and what ``kiln status`` found, task by task; what a build tells observers.

:class:`Build` is what ``kiln build`` and :func:`kiln.build` return: the build's state and a
:class:`TaskResult` per selected task (state, reason, the recorded run(s)). :class:`Status` is
what ``kiln status``, :func:`kiln.status` and ``kiln build --dry-run`` return: each task up to
date or not, and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kiln.store.records import Run

#: task states that count as done
DONE = frozenset({"succeeded", "up_to_date"})


@dataclass
class TaskResult:
    """One task in a build: its state (``succeeded``, ``up_to_date``, ``failed``,
    ``blocked`` by a failed upstream task, ``cancelled``, ``crashed``), why, and its runs."""

    name: str
    state: str = "pending"
    reason: str = ""
    #: every attempt's recorded run, oldest first (retries add more)
    runs: list[Run] = field(default_factory=list)
    attempts: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def run(self) -> Run | None:
        """The last attempt's run (``None`` when the task did not run)."""
        return self.runs[-1] if self.runs else None

    @property
    def ok(self) -> bool:
        return self.state in DONE

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        run = self.run
        return {
            "task": self.name,
            "state": self.state,
            "reason": self.reason,
            "run_id": run.id if run is not None else None,
            "run_ids": [r.id for r in self.runs],
            "attempts": self.attempts,
            "duration": self.duration,
            "output_path": run.output_path if run is not None else None,
            "log_path": run.log_path if run is not None else None,
        }


@dataclass
class Build:
    """A recorded build of a pipeline.

    >>> build = kiln.build("daily", jobs=2)
    >>> build.ok, build.counts()
    >>> build.tasks["clean"].run.records
    """

    id: str
    pipeline: str
    state: str
    tasks: dict[str, TaskResult]
    reason: str | None = None
    created_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def ok(self) -> bool:
        """Every selected task is done (it ran and succeeded, or was up to date)."""
        return self.state == "succeeded"

    @property
    def cancelled(self) -> bool:
        return self.state == "cancelled"

    @property
    def runs(self) -> list[Run]:
        """Every run of the build, in task order."""
        return [run for result in self.tasks.values() for run in result.runs]

    def in_state(self, *states: str) -> list[str]:
        return [name for name, result in self.tasks.items() if result.state in states]

    @property
    def ran(self) -> list[str]:
        return self.in_state("succeeded")

    @property
    def up_to_date(self) -> list[str]:
        return self.in_state("up_to_date")

    @property
    def failed(self) -> list[str]:
        return self.in_state("failed", "crashed")

    @property
    def duration(self) -> float | None:
        if self.created_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.created_at).total_seconds()

    def counts(self) -> str:
        """``5 tasks: 2 ran, 2 up to date, 1 failed``."""
        names = {"succeeded": "ran", "up_to_date": "up to date"}
        by_state: dict[str, int] = {}
        for result in self.tasks.values():
            label = names.get(result.state, result.state.replace("_", " "))
            by_state[label] = by_state.get(label, 0) + 1
        parts = ", ".join(f"{count} {label}" for label, count in by_state.items())
        plural = "s" if len(self.tasks) != 1 else ""
        return f"{len(self.tasks)} task{plural}" + (f": {parts}" if parts else "")

    def check(self) -> None:
        """Raise :class:`~kiln.errors.BuildFailed` unless the build succeeded."""
        if self.ok:
            return
        from kiln.errors import BuildFailed

        raise BuildFailed(f"build {self.id} of {self.pipeline} {self.state}: {self.counts()}")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "state": self.state,
            "reason": self.reason,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration": self.duration,
            "counts": self.counts(),
            "tasks": [result.to_json() for result in self.tasks.values()],
        }

    #: the columns of :meth:`rows`
    COLUMNS = ("TASK", "STATE", "DURATION", "RUN", "REASON")

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        rows = []
        for result in self.tasks.values():
            duration = result.duration
            run = result.run
            shown = {"succeeded": "ran", "up_to_date": "up to date"}.get(
                result.state, result.state.replace("_", " ")
            )
            if result.attempts > 1:
                shown += f" ({result.attempts} attempts)"
            rows.append(
                (
                    result.name,
                    shown,
                    f"{duration:.2f}s" if duration is not None and run is not None else "-",
                    run.id if run is not None else "-",
                    result.reason or "-",
                )
            )
        return rows


@dataclass
class TaskStatus:
    """One task as ``kiln status`` sees it: up to date or not, and why."""

    name: str
    up_to_date: bool
    reasons: list[str]
    #: what a build would do: ``run``, ``skip`` (up to date) or ``done`` (``--resume``)
    action: str = "run"
    last_run_id: str | None = None
    last_success: datetime | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "up to date"

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "up_to_date": self.up_to_date,
            "action": self.action,
            "reason": self.reason,
            "reasons": self.reasons,
            "last_run_id": self.last_run_id,
            "last_success": self.last_success.isoformat() if self.last_success else None,
        }


@dataclass
class Status:
    """Every selected task of a pipeline, up to date or outdated, in dependency order."""

    pipeline: str
    tasks: list[TaskStatus]

    @property
    def outdated(self) -> list[str]:
        return [t.name for t in self.tasks if not t.up_to_date]

    def counts(self) -> str:
        outdated = len(self.outdated)
        fresh = len(self.tasks) - outdated
        return f"{len(self.tasks)} tasks: {fresh} up to date, {outdated} outdated"

    def to_json(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "tasks": [t.to_json() for t in self.tasks]}


# -- what observers hear ------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildStarted:
    """The build is recorded; these tasks are selected."""

    build_id: str
    pipeline: str
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class TaskStarted:
    """A task's run is starting (``attempt`` counts from 1)."""

    task: str
    attempt: int


@dataclass(frozen=True)
class TaskRetrying:
    """A task's attempt failed; it runs again after ``delay`` seconds."""

    task: str
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True)
class TaskEnded:
    """A task reached its state in this build."""

    result: TaskResult


@dataclass(frozen=True)
class BuildWarning:
    """Something to know that does not stop the build (one line)."""

    text: str


BuildEvent = BuildStarted | TaskStarted | TaskRetrying | TaskEnded | BuildWarning
BuildObserver = Callable[[BuildEvent], None]
