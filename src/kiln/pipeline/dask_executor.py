"""The Dask executor: task runs on a ``distributed`` cluster, the build and the history here.

``kiln build --executor dask --scheduler tcp://HOST:PORT`` connects to a running cluster;
without an address a ``distributed.LocalCluster`` is started for the build (one worker
process per ``-j``) and stopped after it. Each task's :class:`~kiln.request.RunRequest` is
shipped whole (the notebook's bytes in ``source``, the resolved parameters, the options) to
:func:`kiln.pipeline.worker.run_task`, which runs it through the same runner code; the run, its
output notebook and its log come back and are recorded in this process's history, so a build
on Dask has the same history as a build here.

A worker that dies mid-task makes that attempt ``crashed`` (recorded once, with the reason);
the task's ``retries`` decide whether it runs again. Kiln's own local cluster tells Dask not
to re-run such a task by itself, so a task is never running twice. Dask is an optional extra:
``pip install 'kiln-notebooks[dask]'``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError
from kiln.store.records import Run, RunState

if TYPE_CHECKING:
    from kiln.events import Observer
    from kiln.pipeline.model import Pipeline
    from kiln.pipeline.worker import TaskOutcome
    from kiln.request import RunRequest
    from kiln.store.sql import RunStore

INSTALL_HINT = "the dask executor needs dask.distributed: pip install 'kiln-notebooks[dask]'"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return distributed


class DaskExecutor:
    """Runs task requests on Dask workers and records them in ``store``."""

    name = "dask"
    cancels_on_signal = False

    def __init__(
        self,
        store: RunStore,
        *,
        scheduler: str | None,
        jobs: int,
        pipeline: Pipeline | None = None,
        processes: bool = True,
    ) -> None:
        self.distributed = _distributed()
        self.store = store
        self.scheduler = scheduler
        self.jobs = jobs
        self.pipeline = pipeline
        self.processes = processes
        self.observers: list[Observer] = []
        self.cluster: Any = None
        self.client: Any = None

    async def start(self) -> None:
        import dask

        distributed = self.distributed
        try:
            if self.scheduler is not None:
                self.client = await distributed.Client(
                    self.scheduler, asynchronous=True, timeout="20s"
                )
                return
            # a dead worker's task comes back to Kiln (a crashed attempt, then its retries)
            # instead of Dask running it again behind the build's back
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                self.cluster = await distributed.LocalCluster(
                    n_workers=self.jobs,
                    threads_per_worker=1,
                    processes=self.processes,
                    asynchronous=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            self.client = await distributed.Client(self.cluster, asynchronous=True)
        except (OSError, TimeoutError) as exc:
            await self.close()
            where = self.scheduler or "a local Dask cluster"
            raise UsageError(f"cannot reach {where}: {exc}") from None

    async def run(self, request: RunRequest) -> Run:
        from kiln.pipeline.worker import run_task

        assert self.client is not None
        future = self.client.submit(run_task, request, pure=False)
        try:
            outcome: TaskOutcome = await future
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self.client.cancel([future])
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) or not isinstance(exc, Exception):
                raise  # cancelled: the build records the task as cancelled
            from kiln.errors import KilnError

            if isinstance(exc, KilnError):
                raise  # refused on the worker before anything ran (a bad parameter)
            return self._crashed(request, exc)
        return self._record(request, outcome)

    def _record(self, request: RunRequest, outcome: TaskOutcome) -> Run:
        """Record the worker's run in this history: the row, its output, its log, its input."""
        from kiln.store.files import file_modes, make_run_folder, store_input

        modes = file_modes()
        run = outcome.run
        run_dir = make_run_folder(self.store.runs_dir, run.id, modes)
        output_path = log_path = None
        for name, data in (("output.ipynb", outcome.output), ("run.log", outcome.log)):
            if data is None:
                continue
            path = run_dir / name
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, modes.file)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            if name == "run.log":
                log_path = str(path)
            else:
                output_path = str(path)
        source = request.source if request.source is not None else b""
        input_path = store_input(self.store.home, run.notebook_sha256, source, modes)
        reason = run.reason
        if outcome.notes:
            reason = "; ".join([*([reason] if reason else []), *outcome.notes])
        recorded = dataclasses.replace(
            run,
            run_dir=str(run_dir),
            output_path=output_path,
            log_path=log_path,
            input_path=str(input_path),
            owner_host=outcome.host,
            reason=reason,
            build_id=request.build_id,
        )
        stored: Run = self.store.create_run(recorded)
        return stored

    def _crashed(self, request: RunRequest, exc: BaseException) -> Run:
        """An attempt whose worker died (or that Dask lost): recorded once, as crashed."""
        import hashlib

        from kiln.store import new_run_id

        kind = type(exc).__name__
        if kind == "KilledWorker":
            why = f"the Dask worker running it died ({exc})"
        else:
            why = f"Dask lost the task: {kind}: {exc}"
        now = datetime.now(timezone.utc)
        source = request.source or b""
        run = Run(
            id=new_run_id(),
            notebook_path=request.notebook_label,
            notebook_sha256=hashlib.sha256(source).hexdigest(),
            state=RunState.CRASHED,
            parameters=dict(request.parameters),
            created_at=now,
            started_at=now,
            ended_at=now,
            engine="dask",
            reason=why[:2000],
            build_id=request.build_id,
        )
        stored: Run = self.store.create_run(run)
        return stored

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
            self.client = None
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                await self.cluster.close()
            self.cluster = None

    def warnings(self) -> list[str]:
        """Products on this machine's disk cannot be reached by workers on other machines."""
        if self.scheduler is None or self.pipeline is None:
            return []
        from kiln.remote import is_url

        local = [
            location
            for task in self.pipeline.tasks.values()
            for location in (*task.products.values(), *task.inputs)
            if not is_url(location) or location.startswith("file://")
        ]
        if not local:
            return []
        return [
            f"{len(local)} product(s) or input(s) are local paths (such as "
            f"{Path(local[0]).name}): workers on other machines reach them only if "
            f"{self.pipeline.root} is a folder every worker mounts at the same path; else "
            "use fsspec URLs (s3://, gs://)"
        ]
