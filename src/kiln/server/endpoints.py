"""Notebook endpoints: ``POST /api/v1/endpoints/NAME`` runs a notebook with the body as its
parameters and answers with its records, synchronously.

The hot path. Each call is a fresh-state run forked from a warm parent that imported the
notebook's imports at start-up (one :class:`~kiln.engines.fork.ForkPool` in the API process),
through the one runner (:meth:`Runner.arun`), so it is validated and recorded like any run.
No queue polling: the call waits for its own run. Each endpoint takes ``concurrency`` calls at
once; one more is answered 429 at once (no waiting line that would hide overload), a run over
its ``timeout`` 504, a cell that raised 500 with the cell's error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError
from kiln.server.errors import HTTPProblem
from kiln.store.records import RunState

if TYPE_CHECKING:
    from kiln.engines.fork import ForkPool
    from kiln.runner import Runner
    from kiln.server.metrics import Metrics
    from kiln.server.settings import Endpoint, ServerSettings
    from kiln.store.records import Run
    from kiln.store.sql import RunStore

log = logging.getLogger("kiln.server")


class EndpointService:
    """The endpoints of one server: a warm fork pool, one runner, a bound per endpoint."""

    def __init__(self, settings: ServerSettings, store: RunStore, metrics: Metrics | None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.endpoints = settings.endpoints
        self.busy: dict[str, int] = {name: 0 for name in self.endpoints}
        self._defaults: dict[str, dict[str, Any]] = {}
        self._pool: ForkPool | None = None
        self._runner: Runner | None = None

    def _runner_for_calls(self) -> Runner:
        if self._runner is None:
            from kiln.engines.fork import ForkEngine, ForkPool
            from kiln.runner import Runner

            total = sum(e.concurrency for e in self.endpoints.values()) or 1
            self._pool = ForkPool(max_children=total)
            self._runner = Runner(
                store=self.store,
                engines={"fork": ForkEngine(self._pool)},
                handle_signals=False,
            )
        return self._runner

    def defaults(self, endpoint: Endpoint) -> dict[str, Any]:
        """The run options of the endpoint's notebook (kiln.yaml, environment), read once."""
        found = self._defaults.get(endpoint.name)
        if found is None:
            from kiln.project import load_project, run_defaults

            found = run_defaults(load_project(endpoint.notebook.parent))
            found["timeout"] = endpoint.timeout
            self._defaults[endpoint.name] = found
        return found

    async def warm(self) -> None:
        """Start the warm parent and pre-import every endpoint notebook's imports (called
        from the event loop's thread: the warm parent dies with the thread that started it)."""
        if not self.endpoints:
            return
        import sys

        from kiln.engines.imports import notebook_imports, preloadable
        from kiln.notebook.io import load_json

        self._runner_for_calls()
        assert self._pool is not None
        server = self._pool.server(sys.executable)
        try:
            await server.ready()
            for endpoint in self.endpoints.values():
                raw = load_json(endpoint.notebook.read_bytes(), path=str(endpoint.notebook))
                modules = preloadable(list(notebook_imports(raw.get("cells", []))))
                cwd = str(self.defaults(endpoint).get("cwd") or endpoint.notebook.parent)
                await self._pool.preload(server, modules, cwd)
                log.info(
                    "endpoint %s ready (pre-imported: %s)",
                    endpoint.name,
                    ", ".join(modules) or "nothing",
                )
        except (KilnError, OSError, Exception) as exc:  # a warm-up is an optimisation
            log.warning("could not warm the endpoints' fork parent: %s", exc)

    async def call(self, name: str, parameters: Mapping[str, Any], *, user: str) -> Run:
        """Run the endpoint once; the finished run (whatever its state)."""
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise HTTPProblem(404, f"no endpoint {name!r} (endpoints are declared in kiln.yaml)")
        if self.busy[name] >= endpoint.concurrency:
            raise HTTPProblem(
                429,
                f"endpoint {name} is running {endpoint.concurrency} calls already (its "
                "concurrency in kiln.yaml); try again shortly",
                headers={"Retry-After": "1"},
            )
        import dataclasses

        from kiln.request import RunRequest

        self.busy[name] += 1
        try:
            request = dataclasses.replace(
                RunRequest.build(
                    endpoint.notebook, parameters=parameters, defaults=self.defaults(endpoint)
                ),
                submitted_by=user,
                origin={"endpoint": name},
            )
            return await self._runner_for_calls().arun(request, check=False)
        finally:
            self.busy[name] -= 1

    async def answer(self, name: str, parameters: Mapping[str, Any], *, user: str) -> Any:
        """The HTTP answer of one call (JSON body and status), latency observed."""
        started = time.perf_counter()
        status = 500
        try:
            run = await self.call(name, parameters, user=user)
            status, body = outcome(run)
            return run, status, body
        except HTTPProblem as exc:
            status = exc.status
            raise
        except KilnError as exc:
            from kiln.server.errors import status_of

            status = status_of(exc)
            raise
        finally:
            if self.metrics is not None and name in self.endpoints:
                self.metrics.endpoint_latency.labels(name, str(status)).observe(
                    time.perf_counter() - started
                )

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.aclose_engines()
        if self._pool is not None:
            await self._pool.close()


def outcome(run: Run) -> tuple[int, dict[str, Any]]:
    """A finished endpoint run as (HTTP status, JSON body)."""
    if run.state is RunState.SUCCEEDED:
        return 200, {"run_id": run.id, "records": run.record_values}
    if run.state is RunState.TIMED_OUT:
        return 504, {
            "detail": f"the notebook did not finish in time: {run.reason}",
            "run_id": run.id,
        }
    error = run.error or {}
    if run.state is RunState.FAILED and "ename" in error:
        detail = (
            f"cell {error.get('cell_index')} raised {error['ename']}: {error.get('evalue', '')}"
        )
        shown = {k: error.get(k) for k in ("cell_index", "ename", "evalue", "traceback")}
        return 500, {"detail": detail, "run_id": run.id, "error": shown}
    return 500, {"detail": f"the run {run.state}: {run.reason or run.state}", "run_id": run.id}
