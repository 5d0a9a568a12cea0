"""SIGINT/SIGTERM while runs execute: every active run of the event loop is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kiln.engines.base import EngineSession, Event, ExecutionOutcome


class _Cancellation:
    """SIGINT/SIGTERM while runs execute: every active run of this event loop is cancelled.

    Handlers are installed when the first run starts and removed when the last one ends, so
    concurrent runs (sweeps, ``-j N``) share one pair of handlers instead of replacing each
    other's. Only the main thread can install signal handlers; elsewhere runs are cancelled
    by cancelling their task.
    """

    #: handlers stay this long after the last run ends: back-to-back runs (the API in a
    #: loop, a pipeline) install them once instead of once per run (each install costs ~0.5 ms)
    LINGER = 0.5

    def __init__(self) -> None:
        self.active: dict[asyncio.Future[Any], list[str]] = {}
        self.installed: list[signal.Signals] = []
        self._removal: asyncio.TimerHandle | None = None

    def add(self, task: asyncio.Future[Any]) -> list[str]:
        if self._removal is not None:
            self._removal.cancel()
            self._removal = None
        if (
            not self.active
            and not self.installed
            and threading.current_thread() is threading.main_thread()
        ):
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, self._on_signal, signum)
                    self.installed.append(signum)
        received: list[str] = []
        self.active[task] = received
        return received

    def discard(self, task: asyncio.Future[Any]) -> None:
        self.active.pop(task, None)
        if not self.active and self.installed and self._removal is None:
            loop = asyncio.get_running_loop()
            self._removal = loop.call_later(self.LINGER, self.remove)

    def remove(self) -> None:
        """Give SIGINT/SIGTERM back (no run is active any more)."""
        self._removal = None
        if self.active:
            return
        loop = asyncio.get_running_loop()
        for signum in self.installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        self.installed.clear()
        if _cancellations.get(loop) is self:
            del _cancellations[loop]

    def _on_signal(self, signum: signal.Signals) -> None:
        if not self.active:  # between runs: the signal is not ours to handle
            self.remove()
            signal.raise_signal(signum)
            return
        for task, received in self.active.items():
            received.append(signum.name)
            task.cancel()


_cancellations: dict[asyncio.AbstractEventLoop, _Cancellation] = {}


@contextlib.contextmanager
def cancel_on_signals(future: asyncio.Future[Any]) -> Iterator[list[str]]:
    """While the block runs, SIGINT/SIGTERM cancel ``future`` (and every executing run of this
    event loop); the yielded list receives the names of the signals received.

    Runs use it for their own execution; a caller running many (a sweep, a worker) holds it
    for its whole duration so that a signal between two runs is not lost.
    """
    loop = asyncio.get_running_loop()
    guard = _cancellations.setdefault(loop, _Cancellation())
    received = guard.add(future)
    try:
        yield received
    finally:
        guard.discard(future)


class Cancellable:
    """One run's execution that can be cancelled with a reason (a user, a worker's drain)."""

    def __init__(self, task: asyncio.Future[Any]) -> None:
        self.task = task
        self.reasons: list[str] = []

    def cancel(self, reason: str) -> None:
        self.reasons.append(reason)
        self.task.cancel()


async def execute_cancellable(
    session: EngineSession,
    nb: Any,
    on_event: Callable[[Event], None],
    *,
    signals: bool = True,
    started: Callable[[Cancellable], None] | None = None,
) -> ExecutionOutcome:
    """Execute, turning SIGINT/SIGTERM (when ``signals``) or a :meth:`Cancellable.cancel`
    into a ``cancelled`` outcome that says why. ``started`` receives the handle."""
    task = asyncio.ensure_future(session.execute(nb, on_event))
    handle = Cancellable(task)
    if started is not None:
        started(handle)
    if not signals:
        return await _outcome_of(task, handle.reasons, [])
    with cancel_on_signals(task) as received:
        return await _outcome_of(task, handle.reasons, received)


async def _outcome_of(
    task: asyncio.Future[ExecutionOutcome], reasons: list[str], received: list[str]
) -> ExecutionOutcome:
    def why() -> str:
        return f"cancelled {reasons[0]}" if reasons else f"cancelled by {received[0]}"

    try:
        outcome = await task
        if reasons or received:
            # the engine may have turned the cancellation into another outcome (nbclient
            # reports a cancelled wait as a dead kernel): the cancellation is what happened
            return ExecutionOutcome("cancelled", why(), failed_cell=outcome.failed_cell)
        return outcome
    except asyncio.CancelledError:
        if not (reasons or received) and not task.cancelled():
            raise
        return ExecutionOutcome("cancelled", why() if reasons or received else "cancelled")
