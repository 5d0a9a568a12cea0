"""The one path every run takes.

::

    RunRequest -> prepare (load, schema, validate parameters, kernel, inject)
               -> store: run row committed (queued)      before anything executes
               -> engine.execute(...)  events -> atomic saves, log, records, observers
               -> store: exactly one terminal state
               -> Run (or a RunFailed carrying it)

Whatever starts a run (CLI, Python API, later the server, schedules and pipelines) builds a
:class:`RunRequest` and calls :class:`Runner`, so every run is validated, recorded and logged
the same way.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from kiln import runrecord
from kiln.cancel import Cancellable, cancel_on_signals, execute_cancellable
from kiln.capture import RunCapture
from kiln.engines.base import (
    CellFinished,
    CellOutput,
    CellStarted,
    Engine,
    EngineSession,
    EngineSwitched,
    Event,
    ExecuteOptions,
    KernelReady,
)
from kiln.errors import KilnError, StoreError
from kiln.events import Observer, RunEnded, RunEvent, RunStarted, RunWarning
from kiln.notebook.papermill_meta import (
    cell_finished,
    cell_started,
)
from kiln.notebook.saver import NotebookSaver
from kiln.options import OptionError
from kiln.recording import record_from_output
from kiln.request import Prepared, RunRequest, prepare
from kiln.runlog import RunLog
from kiln.runrecord import raise_for_state
from kiln.store.files import (
    FileModes,
    check_writable_output,
    file_modes,
    make_run_folder,
)
from kiln.store.process import process_start_time
from kiln.store.records import Record, Run, RunState

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from kiln.store.artifacts import ArtifactStore, RunUpload
    from kiln.store.sql import RunStore

__all__ = [
    "Observer",
    "Prepared",
    "RunEnded",
    "RunEvent",
    "RunRequest",
    "RunStarted",
    "RunWarning",
    "Runner",
    "cancel_on_signals",
    "prepare",
    "raise_for_state",
]


class Runner:
    """Runs requests through the one path, recording them in a RunStore."""

    def __init__(
        self,
        *,
        home: Path | None = None,
        store: RunStore | None = None,
        engine: Engine | None = None,
        observers: Sequence[Observer] = (),
        engines: dict[str, Engine] | None = None,
        handle_signals: bool = True,
    ) -> None:
        self._home_dir = home
        self._store = store
        self._owns_store = store is None
        self._engine = engine
        #: engines created on first use, by name; pass a dict to share warm engines between
        #: runners (each with its own home), and close them yourself
        self._engines: dict[str, Engine] = engines if engines is not None else {}
        self._recovered = False
        self._file_modes: FileModes | None = None
        self.observers = list(observers)
        #: SIGINT/SIGTERM cancel the runs (a worker that drains on SIGTERM turns this off)
        self.handle_signals = handle_signals
        self._executing: dict[str, Cancellable] = {}
        self._artifacts: ArtifactStore | None = None
        self._artifacts_known = False  # the artefact store is looked up on the first run

    @property
    def store(self) -> RunStore:
        """The history this runner records in (opened on first use)."""
        if self._store is None:
            from kiln.store.sql import RunStore

            self._store = RunStore(self._home_dir)
        return self._store

    def close(self) -> None:
        """Close the store if this runner opened it."""
        if self._store is not None and self._owns_store:
            self._store.close()
            self._store = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _notify(self, event: RunEvent) -> None:
        for observer in self.observers:
            observer(event)

    def run(self, request: RunRequest, *, check: bool = True) -> Run:
        """Run synchronously (the CLI and ``kiln.run``); engines close with the event loop."""

        async def once() -> Run:
            try:
                return await self.arun(request, check=check)
            finally:
                await self.aclose_engines()

        return asyncio.run(once())

    async def aclose_engines(self) -> None:
        """Stop what the engines this runner created keep running (warm parents)."""
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await engine.aclose()

    def _engine_named(self, name: str) -> Engine:
        engine = self._engines.get(name)
        if engine is None:
            from kiln.engines import get_engine

            engine = self._engines[name] = get_engine(name)
        return engine

    async def arun(
        self,
        request: RunRequest,
        *,
        check: bool = True,
        claimed: Run | None = None,
        notes: Sequence[str] = (),
    ) -> Run:
        """Run inside a running event loop; concurrent calls share warm engines.

        ``claimed`` is a queued run a worker has claimed (its row exists, ``running``, leased
        to the worker): the run takes that row instead of adding one, and a request refused
        at this point ends the row ``failed`` with the reason instead of leaving it held.
        ``notes`` are warnings about the run from its caller (logged and reported)."""
        fixed = self._engine
        self.warm_up(request)
        try:
            prepared = prepare(request, engine_name=fixed.name if fixed is not None else None)
        except KilnError as exc:
            if claimed is None:
                raise
            return self.refuse(claimed, exc, check=check)
        engine = fixed if fixed is not None else self._engine_named(prepared.engine_name)
        prepared.warnings[:0] = notes
        for text in prepared.warnings:
            self._notify(RunWarning(text))
        try:
            run = await self._execute(prepared, engine, claimed=claimed)
        except KilnError as exc:  # e.g. the engine could not start: the claim must end
            if claimed is None:
                raise
            return self.refuse(claimed, exc, check=check)
        _freeze_once()
        if check:
            raise_for_state(run)
        return run

    def warm_up(self, request: RunRequest) -> None:
        """Start the fork engine's warm parent now if ``request`` may use it (inside the event
        loop the runs will use; :meth:`arun` does it for its request). Its start (Python and
        IPython, ~0.3 s) then overlaps what the caller does before the first run (a sweep
        checks its sets) instead of following it. A notebook the fork engine cannot run leaves
        it idle until the engines close."""
        from kiln.engines import may_fork

        if self._engine is None and may_fork(request.engine, prepare_only=request.prepare_only):
            self._launch_warm_parent()

    def _launch_warm_parent(self) -> None:
        """On a runner's first run, start the fork engine's warm parent before the request is
        prepared: its start then overlaps reading the notebook, the kernel spec lookup and
        opening the history instead of following them."""
        if "fork" in self._engines:
            return
        from kiln.engines.fork import ForkEngine

        engine = self._engine_named("fork")
        if isinstance(engine, ForkEngine):
            engine.pool.server(engine.python)

    def cancel(self, run_id: str, reason: str) -> bool:
        """Stop a run this runner is executing; it ends ``cancelled`` with ``reason`` (e.g.
        ``"by alice"``). False when the run is not executing here."""
        handle = self._executing.get(run_id)
        if handle is None:
            return False
        handle.cancel(reason)
        return True

    def refuse(self, claimed: Run, exc: KilnError, *, check: bool) -> Run:
        """A claimed run whose request cannot run (any more): it ends ``failed``, saying why."""
        return runrecord.refuse(self.store, self._notify, claimed, exc, check=check)

    def _home(self) -> Path:
        if self._store is not None:
            return Path(self._store.home)
        from kiln.store import default_home

        return Path(self._home_dir) if self._home_dir is not None else default_home()

    async def _execute(
        self, prepared: Prepared, engine: Engine, *, claimed: Run | None = None
    ) -> Run:
        """Start the engine, record the run while it boots, execute, close the engine."""
        from kiln.store import new_run_id

        request = prepared.request
        cwd = request.run_cwd
        if not cwd.is_dir():
            raise OptionError("cwd", f"{cwd} is not a directory")
        # everything that could fail for lack of a place to write fails now, before anything
        # starts: the run folder is made (a read-only or missing home is refused), the output
        # folder takes a file. The history itself (SQLAlchemy, ~0.1 s to import) opens while
        # the engine boots.
        modes = self._modes()
        if request.output is not None:
            check_writable_output(Path(request.output))
        run_id = claimed.id if claimed is not None else new_run_id()
        home = self._home()
        try:
            run_dir = make_run_folder(home / "runs", run_id, modes, exist_ok=claimed is not None)
        except KilnError as exc:
            if claimed is None:
                raise
            return self.refuse(claimed, exc, check=False)
        log = RunLog(run_dir / "run.log", mode=modes.file)
        deadline = time.monotonic() + request.timeout if request.timeout else None
        options = ExecuteOptions(
            kernel_name=prepared.kernel_name,
            cwd=cwd,
            env={"KILN_RUN_ID": run_id, "KILN_HOME": str(home)} | dict(request.env or {}),
            cell_timeout=request.cell_timeout,
            deadline=deadline,
            allow_errors=request.allow_errors,
            process_log=log.path,
            preload=prepared.imports,
            memory_limit=request.memory_limit,
            startup_timeout=request.start_timeout or ExecuteOptions.startup_timeout,
            argv=(request.notebook_label,),
            # under "auto" the fork engine may still move the run to a kernel (EngineSwitched)
            kernel_fallback=request.engine == "auto" and request.memory_limit is None,
        )
        session = engine.session(options)
        if not self._artifacts_known:
            from kiln.store.artifacts import artifact_store

            self._artifacts, self._artifacts_known = artifact_store(), True
        upload = runrecord.new_upload(self._artifacts, run_id, run_dir, request)
        graceful = False
        recorded = False
        try:
            if not request.prepare_only:
                # the kernel boots in its own process while the notebook is validated in full
                # and the run is recorded
                await session.start()
            prepared.complete()
            if not self._recovered:  # once per runner: a killed Kiln's runs can't appear later
                self.store.recover_orphans()
                self._recovered = True
            capture = RunCapture(prepared, engine.name, self.store, run_id)
            # environment, git state, declared inputs: cached lookups, at hand from a
            # process's second run; the environment's hash then goes into the row's insert
            # (its index is written once, not moved from NULL by the run's end)
            known = capture.known()
            run = runrecord.record_run(
                self.store,
                prepared,
                engine.name,
                run_id,
                run_dir,
                self._modes(),
                claimed=claimed,
                upload=upload,
                environment_hash=known["environment_hash"] if known is not None else None,
            )
            recorded = True
            capture.start(known)
            try:
                final = await self._drive(prepared, session, run, log, capture, upload)
                if request.mlflow_uri and not request.prepare_only:
                    await runrecord.export(self.store, self._notify, request, final, log)
            except OSError as exc:  # the disk filled up, a folder went away: the run stops
                final = runrecord.failed_to_write(self.store, self._notify, run, exc, upload, log)
            except BaseException as exc:
                # whatever went wrong, the row gets exactly one terminal state
                state = (
                    RunState.CANCELLED
                    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
                    else RunState.CRASHED
                )
                log.flush()
                where = upload.settle(log.line) if upload is not None else {}
                reason = f"{type(exc).__name__}: {exc}"[:2000]
                self.store.finish_run(run.id, state, reason=reason, **where)
                raise
            graceful = final.state.ok
            return final
        finally:
            if upload is not None:
                upload.stop()
            await session.close(graceful=graceful)
            log.close()
            if not recorded:  # refused before the run existed: leave nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)

    def _output_mode(self, request: RunRequest) -> int | None:
        """The output notebook's permissions: private in the run folder; a path the user
        chose gets the usual ones (the umask decides)."""
        return None if request.output is not None else self._modes().file

    def _modes(self) -> FileModes:
        if self._file_modes is None:
            self._file_modes = file_modes()
        return self._file_modes

    async def _drive(
        self,
        prepared: Prepared,
        session: EngineSession,
        run: Run,
        log: RunLog,
        capture: RunCapture,
        upload: RunUpload | None,
    ) -> Run:
        request = prepared.request
        store = self.store
        nb = prepared.complete()
        # written here (locally); with an artefact store, copied to run.output_path
        output_path = upload.output if upload is not None else Path(str(run.output_path))
        _reset_outputs(nb, skip_tag="skip-execution")
        if request.report_mode:
            for cell in nb.cells:
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
        started_at = datetime.now(timezone.utc)
        redactor = prepared.redactor
        if redactor is not None:
            log.mask = redactor.mask_values
        runrecord.stamp_start(nb, prepared, run, started_at)
        log.fields(f"run {run.id} notebook", str(request.notebook))
        log.fields("parameters", prepared.public_values)
        for text in prepared.warnings:
            log.line(f"warning: {text}")
        if request.prepare_only:
            return runrecord.end_prepared(
                store,
                self._notify,
                prepared,
                run,
                nb,
                log,
                upload,
                output_path=output_path,
                mode=self._output_mode(request),
                started_at=started_at,
            )
        # the injected notebook is on disk within 0.2 s (or when the run ends, if sooner)
        saver = NotebookSaver(
            nb,
            output_path,
            on_error=lambda e: log.line(f"warning: could not save yet: {e}"),
            mode=self._output_mode(request),
            mask=redactor.mask_values if redactor is not None else None,
        )
        saver.changed()
        log.set_output(output_path, nb)
        if upload is not None:
            upload.start()
        # the row turns `running` when the engine is ready (one write with the kernel's
        # details); until then it says `queued`, which is what it is while a kernel boots
        run.state, run.started_at = RunState.RUNNING, started_at
        cells = nb["cells"]
        code_cells = sum(1 for c in cells if c["cell_type"] == "code" and c["source"].strip())
        self._notify(RunStarted(run, len(nb.cells), code_cells))

        durations: list[float | None] = [None] * len(nb.cells)
        records: list[Record] = []

        def on_event(event: Event) -> None:
            if isinstance(event, CellStarted):
                saver.cell_started(event.index)
                log.line(f"cell {event.index} started")
                cell_started(cells[event.index])
            elif isinstance(event, CellOutput):
                log.output(event.index, event.output)
                entry = record_from_output(event.output)
                if entry is not None:
                    kind = str(entry.get("kind", "json"))
                    records.append(Record(entry["name"], kind, entry.get("value"), event.index))
                else:
                    capture.output(event.output)
            elif isinstance(event, CellFinished):
                durations[event.index] = round(event.duration, 6)
                cell_finished(cells[event.index], event.duration, event.status == "error")
                log.line(f"cell {event.index} {event.status} in {event.duration:.3f}s")
                saver.cell_finished(event.index)
            elif isinstance(event, EngineSwitched):
                # hook for the fork engine's fallback (engine "auto"): same run, another engine
                log.line(f"warning: {event.notice}")
                run.engine = event.engine
                store.update_run(run.id, engine=event.engine)
                self._notify(RunWarning(event.notice))
                return
            elif isinstance(event, KernelReady):
                log.line(
                    f"kernel {event.kernel_name} ready ({event.kernel_version}, "
                    f"{event.language} {event.language_version}, pid {event.pid})"
                )
                run.kernel_pid, run.kernel_version = event.pid, runrecord.kernel_version(event)
                run.kernel_started = event.started
                if run.kernel_started is None and event.pid:
                    run.kernel_started = process_start_time(event.pid)
                if run.engine == "fork":
                    # a forked run is ready at once and often done in milliseconds: it turns
                    # `running` in the history only if it lasts (its end writes everything)
                    loop = asyncio.get_running_loop()
                    pending.append(loop.call_later(RUNNING_WRITE_DELAY, mark_running_aside))
                else:
                    mark_running()
            self._notify(event)

        def mark_running() -> None:
            pending.clear()
            store.update_run(
                run.id,
                state=RunState.RUNNING,
                started_at=started_at,
                kernel_pid=run.kernel_pid,
                kernel_started=run.kernel_started,
                kernel_version=run.kernel_version,
            )

        def mark_running_aside() -> None:
            # off the event loop: a history that is away (a PostgreSQL restart) makes the
            # store wait patiently, and the run must go on meanwhile (its output, its log,
            # its end). The write is conditional on the run being active, so landing after
            # the run's end changes nothing.
            pending.clear()
            threading.Thread(target=_quietly, args=(mark_running,), daemon=True).start()

        pending: list[asyncio.TimerHandle] = []

        try:
            outcome = await execute_cancellable(
                session,
                nb,
                on_event,
                signals=self.handle_signals,
                started=lambda handle: self._executing.__setitem__(run.id, handle),
            )
        finally:
            self._executing.pop(run.id, None)
            for timer in pending:
                timer.cancel()
            saver.stop()
        await capture.wait()
        tracked = capture.fields(str(upload.folder) if upload is not None else run.run_dir)
        final = runrecord.finish(
            store,
            self._notify,
            prepared,
            run,
            nb,
            saver,
            log,
            outcome,
            durations,
            records,
            tracked,
            upload,
        )
        return final


def _quietly(write: Callable[[], None]) -> None:
    """A best-effort write on its own thread: a run that ended first refuses it."""
    try:
        write()
    except StoreError:
        pass  # the run ended before its `running` write landed
    except Exception as exc:  # a thread has nobody to raise to: say it in the log
        import logging

        logging.getLogger("kiln.runner").warning("could not mark a run running: %s", exc)


#: a fork-engine run is written as ``running`` only once it has lasted this long (seconds)
RUNNING_WRITE_DELAY = 0.25

_frozen = False


def _freeze_once() -> None:
    """After a process's first run, leave what it has loaded out of garbage collection.

    What is alive then (modules, SQLAlchemy's compiled statements, the engines) lives as long
    as the process; Python's full collections kept scanning it: ~85,000 objects, 100-150 ms a
    time, about 1.5 ms per run of a sweep or a server. ``gc.freeze`` is made for this.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        import gc

        gc.freeze()


def _reset_outputs(nb: NotebookNode, *, skip_tag: str) -> None:
    """Clear outputs and counts of cells about to run (skipped cells keep theirs)."""
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or skip_tag in cell["metadata"].get("tags", []):
            continue
        # dict's own __setitem__: a NotebookNode's would convert the values again
        dict.__setitem__(cell, "outputs", [])
        dict.__setitem__(cell, "execution_count", None)
        cell["metadata"].pop("execution", None)
