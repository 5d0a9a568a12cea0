"""Where a build's task runs execute: here (``local``) or on a Dask cluster (``dask``).

An executor takes a :class:`~kiln.request.RunRequest` and returns the recorded
:class:`~kiln.store.records.Run`; the build (its order, retries, states and the history)
stays in the process that runs ``kiln build``, whatever the executor.

- :class:`LocalExecutor`: one :class:`~kiln.runner.Runner` in the build's event loop; its fork
  engine's warm parent serves every task (``-j N`` children at once), so a small notebook's
  task costs tens of milliseconds, not a kernel start.
- :class:`DaskExecutor` (:mod:`kiln.pipeline.dask_executor`): ships each request, the
  notebook's bytes included, to a worker that runs it through the same runner code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kiln.engines.base import Engine
    from kiln.engines.fork import ForkPool
    from kiln.events import Observer
    from kiln.request import RunRequest
    from kiln.store.records import Run
    from kiln.store.sql import RunStore


class Executor(Protocol):
    """Runs task requests; a build starts it once, runs many requests, closes it once."""

    name: str
    #: SIGINT/SIGTERM already cancel this executor's executing runs (the local runner's own
    #: handler does); otherwise the build cancels them itself
    cancels_on_signal: bool
    #: hear the events of the runs executed here (runs elsewhere are not heard)
    observers: list[Observer]

    async def start(self) -> None: ...

    async def run(self, request: RunRequest) -> Run:
        """Run and record one request; raises a :class:`~kiln.errors.KilnError` when it is
        refused before it was recorded (a bad parameter, a missing kernel)."""
        ...

    async def close(self) -> None: ...

    def warnings(self) -> list[str]:
        """What the build should tell the user about where tasks run."""
        ...


class LocalExecutor:
    """Task runs in this process's event loop, through one Runner and its warm engines."""

    name = "local"
    cancels_on_signal = True

    def __init__(
        self,
        store: RunStore,
        *,
        jobs: int,
        engine: Engine | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        from kiln.runner import Runner

        engines: dict[str, Engine] = {}
        self.pool: ForkPool | None = None
        if engine is None:
            from kiln.engines.fork import ForkEngine, ForkPool

            # as many forked children at once as the build runs tasks
            self.pool = ForkPool(max_children=max(jobs, 1))
            engines["fork"] = ForkEngine(self.pool)
        self.runner = Runner(store=store, engine=engine, engines=engines, observers=observers)
        self.observers = self.runner.observers

    async def start(self) -> None:
        return None

    async def run(self, request: RunRequest) -> Run:
        return await self.runner.arun(request, check=False)

    async def close(self) -> None:
        await self.runner.aclose_engines()
        if self.pool is not None:  # the engine does not close a pool it was given
            await self.pool.close()
            self.pool = None

    def warnings(self) -> list[str]:
        return []
