"""The worker side of the Dask executor: run a shipped request through the same runner code.

:func:`run_task` is what a Dask worker executes. It receives a complete
:class:`~kiln.request.RunRequest` (the notebook's bytes in ``source``, the resolved
parameters, the options), runs it through a :class:`~kiln.runner.Runner` that records in a
scratch history on the worker, and returns the run with its output notebook and log, which the
building process records in the real history. The worker needs the same packages as the
notebooks, not the project's files.

Each worker process keeps one event loop in a thread of its own and one runner, so the fork
engine's warm parent serves every task that worker runs.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.request import RunRequest
    from kiln.runner import Runner
    from kiln.store.records import Run


@dataclass
class TaskOutcome:
    """A finished run and its files, as sent back to the building process."""

    run: Run
    output: bytes | None
    log: bytes | None
    host: str
    notes: list[str]


class _Runtime:
    """One per worker process: a scratch history, an event loop thread, a runner."""

    def __init__(self) -> None:
        from kiln.runner import Runner

        self.home = Path(tempfile.mkdtemp(prefix="kiln-worker-"))
        self.scratch = self.home / "cwd"
        self.scratch.mkdir()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="kiln-worker-loop", daemon=True
        )
        self.thread.start()
        self.runner: Runner = Runner(home=self.home)

    def run(self, request: RunRequest) -> Run:
        future = asyncio.run_coroutine_threadsafe(self.runner.arun(request, check=False), self.loop)
        return future.result()


_runtime: _Runtime | None = None
_lock = threading.Lock()


def _get_runtime() -> _Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = _Runtime()
        return _runtime


def run_task(request: RunRequest) -> TaskOutcome:
    """Run one task's request on this worker and return the run and its files."""
    runtime = _get_runtime()
    notes = []
    cwd = request.cwd
    if cwd is not None and not Path(cwd).is_dir():
        # another machine: the project's folder is not here (products must be URLs or on a
        # folder every worker mounts); run in a scratch folder instead
        notes.append(f"{cwd} does not exist on {socket.gethostname()}: ran in a scratch folder")
        request = replace(request, cwd=runtime.scratch)
    run = runtime.run(request)
    output = _read(run.output_path)
    log = _read(run.log_path)
    if run.run_dir:
        shutil.rmtree(run.run_dir, ignore_errors=True)
    return TaskOutcome(run, output, log, socket.gethostname(), notes)


def _read(path: str | None) -> bytes | None:
    from kiln.store.artifacts import exists, read_bytes

    if not path or not exists(path):
        return None
    return read_bytes(path)
