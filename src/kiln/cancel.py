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

    def __init__(self) -> None:
        self.active: dict[asyncio.Future[Any], list[str]] = {}
        self.installed: list[signal.Signals] = []

    def add(self, task: asyncio.Future[Any]) -> list[str]:
        if not self.active and threading.current_thread() is threading.main_thread():
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
        if not self.active and self.installed:
            loop = asyncio.get_running_loop()
            for signum in self.installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)
            self.installed.clear()

    def _on_signal(self, signum: signal.Signals) -> None:
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
        if not guard.active:
            _cancellations.pop(loop, None)


async def execute_cancellable(
    session: EngineSession, nb: Any, on_event: Callable[[Event], None]
) -> ExecutionOutcome:
    """Execute, turning SIGINT/SIGTERM into a cancelled outcome."""
    task = asyncio.ensure_future(session.execute(nb, on_event))
    with cancel_on_signals(task) as received:
        return await _outcome_of(task, received)


async def _outcome_of(
    task: asyncio.Future[ExecutionOutcome], received: list[str]
) -> ExecutionOutcome:
    try:
        outcome = await task
        if received:
            # the engine may have turned the cancellation into another outcome (nbclient
            # reports a cancelled wait as a dead kernel): the signal is what happened
            return ExecutionOutcome(
                "cancelled", f"cancelled by {received[0]}", failed_cell=outcome.failed_cell
            )
        return outcome
    except asyncio.CancelledError:
        if not received and not task.cancelled():
            raise
        why = f"cancelled by {received[0]}" if received else "cancelled"
        return ExecutionOutcome("cancelled", why)
