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
import dataclasses
import errno
import os
import platform
import shutil
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln import __version__
from kiln.cancel import Cancellable, cancel_on_signals, execute_cancellable
from kiln.capture import RunCapture, request_record
from kiln.engines.base import (
    CellFinished,
    CellOutput,
    CellStarted,
    Engine,
    EngineSession,
    EngineSwitched,
    Event,
    ExecuteOptions,
    ExecutionOutcome,
    KernelReady,
)
from kiln.errors import (
    CellExecutionError,
    CellFailure,
    KernelDied,
    KilnError,
    RunCancelled,
    RunFailed,
    RunTimedOut,
    StoreError,
)
from kiln.events import Observer, RunEnded, RunEvent, RunStarted, RunWarning
from kiln.notebook import save_notebook
from kiln.notebook.marks import add_failure_marks
from kiln.notebook.papermill_meta import (
    cell_finished,
    cell_started,
    papermill_finish,
    papermill_start,
)
from kiln.notebook.saver import NotebookSaver
from kiln.options import OptionError
from kiln.recording import record_from_output
from kiln.request import Prepared, RunRequest, prepare
from kiln.runlog import RunLog, shrink_log
from kiln.store.files import (
    FileModes,
    check_writable_output,
    file_modes,
    make_run_folder,
    store_input,
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


_STATE_BY_OUTCOME = {
    "ok": RunState.SUCCEEDED,
    "error": RunState.FAILED,
    "timeout": RunState.TIMED_OUT,
    "dead": RunState.CRASHED,
    "cancelled": RunState.CANCELLED,
}


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
        ended = datetime.now(timezone.utc)
        reason = f"refused before it started: {exc.message}"
        if not self.store.finish_run(claimed.id, RunState.FAILED, reason=reason, ended_at=ended):
            final = self.store.get_run_exact(claimed.id)  # it ended already, as it said
            if check:
                raise exc
            return final
        final = dataclasses.replace(
            claimed, state=RunState.FAILED, reason=reason, ended_at=ended, lease_expires=None
        )
        self._notify(RunEnded(final))
        if check:
            raise exc
        return final

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
        upload = self._upload(run_id, run_dir, request)
        graceful = False
        recorded = False
        try:
            if not request.prepare_only:
                # the kernel boots in its own process while the notebook is validated in full
                # and the run is recorded
                await session.start()
            prepared.complete()
            run = self._record(prepared, engine, run_id, run_dir, claimed=claimed, upload=upload)
            recorded = True
            capture = RunCapture(prepared, engine.name, self.store, run.id)
            capture.start()  # environment, git state, declared inputs: cached lookups
            try:
                final = await self._drive(prepared, session, run, log, capture, upload)
                if request.mlflow_uri and not request.prepare_only:
                    await self._export(request, final, log)
            except OSError as exc:  # the disk filled up, a folder went away: the run stops
                final = self._failed_to_write(run, exc, upload, log)
            except BaseException as exc:
                # whatever went wrong, the row gets exactly one terminal state
                state = (
                    RunState.CANCELLED
                    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
                    else RunState.CRASHED
                )
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

    async def _export(self, request: RunRequest, run: Run, log: RunLog) -> None:
        """Record the ended run in MLflow too (on a worker thread); a failure is a warning
        on the run, never its state (``kiln runs sync-mlflow`` tries again)."""
        from kiln.mlflow_export import experiment_for, export_and_mark

        assert request.mlflow_uri is not None
        experiment = experiment_for(request.notebook_label, request.run_cwd)
        failed = await asyncio.to_thread(
            export_and_mark, self.store, run, request.mlflow_uri, experiment
        )
        if failed:
            warning = f"MLflow: {failed}; `kiln runs sync-mlflow` tries again"
            log.line(f"warning: {warning}")
            self._notify(RunWarning(warning))

    def _output_mode(self, request: RunRequest) -> int | None:
        """The output notebook's permissions: private in the run folder; a path the user
        chose gets the usual ones (the umask decides)."""
        return None if request.output is not None else self._modes().file

    def _upload(self, run_id: str, run_dir: Path, request: RunRequest) -> RunUpload | None:
        """The copier of this run's files to the artefact store, if one is configured."""
        if not self._artifacts_known:
            from kiln.store.artifacts import artifact_store

            self._artifacts, self._artifacts_known = artifact_store(), True
        if self._artifacts is None:
            return None
        from kiln.store.artifacts import RunUpload

        output = Path(request.output).resolve() if request.output else None
        return RunUpload(self._artifacts, run_id, run_dir, output=output)

    def _modes(self) -> FileModes:
        if self._file_modes is None:
            self._file_modes = file_modes()
        return self._file_modes

    def _failed_to_write(
        self, run: Run, exc: OSError, upload: RunUpload | None, log: RunLog
    ) -> Run:
        """The run could not write its files: it ends ``failed``, saying why, and the history
        (which may live on another disk, or still have room for one row) records it."""
        where = f" while writing {exc.filename}" if exc.filename else ""
        reason = f"{exc.strerror or exc}{where}"
        if exc.errno == errno.ENOSPC:
            reason = f"no space left on the device{where}"
        ended_at = datetime.now(timezone.utc)
        kept = upload.settle(log.line) if upload is not None else {}
        try:
            self.store.finish_run(run.id, RunState.FAILED, reason=reason, ended_at=ended_at, **kept)
        except StoreError:
            # the history shares the full disk: make room from this run's own log (its tail
            # stays) and try once more
            shrink_log(log.path)
            self.store.finish_run(run.id, RunState.FAILED, reason=reason, ended_at=ended_at, **kept)
        final = dataclasses.replace(
            run, state=RunState.FAILED, reason=reason, ended_at=ended_at, **kept
        )
        self._notify(RunEnded(final))
        return final

    def _record(
        self,
        prepared: Prepared,
        engine: Engine,
        run_id: str,
        run_dir: Path,
        *,
        claimed: Run | None = None,
        upload: RunUpload | None = None,
    ) -> Run:
        """Commit the run row (queued) and its input copy: durable before anything runs. A
        claimed run's row exists: it gets the details."""
        from kiln.store import current_owner

        request = prepared.request
        store = self.store
        if not self._recovered:  # once per runner: a killed Kiln's runs can't appear later
            store.recover_orphans()
            self._recovered = True
        pid, host, started = current_owner()
        paths: dict[str, Any] = {
            "run_dir": str(run_dir),
            "output_path": str(
                (Path(request.output) if request.output else run_dir / "output.ipynb").resolve()
            ),
            "log_path": str(run_dir / "run.log"),
        }
        if upload is None:
            paths["input_path"] = str(
                store_input(store.home, prepared.sha256, prepared.source_bytes, self._modes())
            )
        else:  # the files' objects, readable from every machine
            paths["input_path"] = upload.store.ensure_input(prepared.sha256, prepared.source_bytes)
            paths.update(upload.row_paths(output_chosen=request.output is not None))
        if claimed is not None:
            details: dict[str, Any] = {
                **paths,
                "engine": engine.name,
                "kernel_name": prepared.kernel_name,
                "language": prepared.language,
                "python_version": platform.python_version(),
                "kiln_version": __version__,
            }
            store.update_run(run_id, **details)
            return dataclasses.replace(claimed, **details)
        run: Run = store.create_run(
            Run(
                id=run_id,
                notebook_path=request.notebook_label,
                notebook_sha256=prepared.sha256,
                state=RunState.QUEUED,
                parameters=prepared.public_values,
                **paths,
                engine=engine.name,
                kernel_name=prepared.kernel_name,
                language=prepared.language,
                python_version=platform.python_version(),
                kiln_version=__version__,
                owner_pid=pid,
                owner_host=host,
                owner_started=started,
                build_id=request.build_id,
                request=request_record(request),
                tags=dict(request.tags or {}),
                origin=dict(request.origin) if request.origin else None,
                submitted_by=request.submitted_by,
            )
        )
        return run

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
        nb.metadata["kiln"] = {
            "run_id": run.id,
            "parameters": prepared.public_values,
            "input_path": request.notebook_label,
            "output_path": str(run.output_path),
            "kernel_name": prepared.kernel_name,
            "started_at": started_at.isoformat(),
            "state": RunState.RUNNING.value,
        }
        papermill_start(
            nb,
            parameters=prepared.public_values,
            defaults=prepared.schema.defaults(),
            input_path=request.notebook_label,
            output_path=str(run.output_path),
            started=started_at,
        )
        log.fields(f"run {run.id} notebook", str(request.notebook))
        log.fields("parameters", prepared.public_values)
        for text in prepared.warnings:
            log.line(f"warning: {text}")
        if request.prepare_only:
            nb.metadata["kiln"]["state"] = RunState.PREPARED.value
            if redactor is not None:
                from kiln.redact import masked_notebook

                save_notebook(masked_notebook(nb, redactor), output_path,
                              mode=self._output_mode(request))  # fmt: skip
            else:
                save_notebook(nb, output_path, mode=self._output_mode(request))
            ended_at = datetime.now(timezone.utc)
            reason = "prepared only (not executed)"
            log.line("prepared only: parameters injected, not executed")
            where = upload.settle(log.line) if upload is not None else {}
            store.finish_run(
                run.id,
                RunState.PREPARED,
                reason=reason,
                started_at=started_at,
                ended_at=ended_at,
                **where,
            )
            final = dataclasses.replace(
                run,
                state=RunState.PREPARED,
                started_at=started_at,
                ended_at=ended_at,
                reason=reason,
                **where,
            )
            self._notify(RunEnded(final))
            return final
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
        code_cells = sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip())
        self._notify(RunStarted(run, len(nb.cells), code_cells))

        durations: list[float | None] = [None] * len(nb.cells)
        records: list[Record] = []

        def on_event(event: Event) -> None:
            if isinstance(event, CellStarted):
                saver.cell_started(event.index)
                log.line(f"cell {event.index} started")
                cell_started(nb.cells[event.index])
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
                cell_finished(nb.cells[event.index], event.duration, event.status == "error")
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
                run.kernel_pid, run.kernel_version = event.pid, _kernel_version(event)
                run.kernel_started = process_start_time(event.pid) if event.pid else None
                if run.engine == "fork":
                    # a forked run is ready at once and often done in milliseconds: it turns
                    # `running` in the history only if it lasts (its end writes everything)
                    loop = asyncio.get_running_loop()
                    pending.append(loop.call_later(RUNNING_WRITE_DELAY, mark_running))
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
        final = self._finish(
            prepared, run, nb, saver, log, outcome, durations, records, tracked, upload
        )
        return final

    def _finish(
        self,
        prepared: Prepared,
        run: Run,
        nb: NotebookNode,
        saver: NotebookSaver,
        log: RunLog,
        outcome: ExecutionOutcome,
        durations: list[float | None],
        records: list[Record],
        tracked: dict[str, Any],
        upload: RunUpload | None = None,
    ) -> Run:
        state = _STATE_BY_OUTCOME[outcome.status]
        error = _error_json(outcome.failure) if outcome.failure else None
        reason = _short_reason(outcome.message) or None
        if outcome.status != "ok":
            title, what = _describe(outcome)
            detail = ""
            if outcome.failure is not None:
                from kiln.textutil import strip_ansi

                detail = strip_ansi("\n".join(outcome.failure.traceback))[-4000:]
            add_failure_marks(nb, outcome.failed_cell, title=title, what=what, detail=detail)
            if error is None:
                error = {"cell_index": outcome.failed_cell, "ename": state, "evalue": what}
        elif outcome.allowed_errors:
            error = {"allowed": [_error_json(f) for f in outcome.allowed_errors]}
        ended_at = datetime.now(timezone.utc)
        meta = nb.metadata["kiln"]
        meta.update(state=state.value, ended_at=ended_at.isoformat())
        if outcome.status != "ok":
            meta["error"] = {"cell_index": outcome.failed_cell, "message": reason}
        papermill_finish(nb, ended_at, failed=not state.ok)
        if prepared.redactor is not None:
            # the last save also masks what the secret scanner finds in the outputs
            from kiln.redact import mask_outputs

            mask_outputs(nb, prepared.redactor)
            saver.forget()
            reason = prepared.redactor.mask(reason) if reason else reason
            if error is not None:
                error = prepared.redactor.mask_json(error)
        saver.save()
        log.line(f"run {state}: {outcome.message}" if outcome.message else f"run {state}")
        # the files are in the artefact store before the run says it ended
        where = upload.settle(log.line) if upload is not None else {}
        if upload is not None and not where:
            tracked["artifacts"] = upload.artifact_urls(tracked.get("artifacts") or [])
        self.store.finish_run(
            run.id,
            state,
            reason=reason,
            error=error,
            ended_at=ended_at,
            started_at=run.started_at,
            cell_durations=durations,
            records=records,
            kernel_pid=run.kernel_pid,
            kernel_started=run.kernel_started,
            kernel_version=run.kernel_version,
            **tracked,
            **where,
        )
        # what was just written, without reading it back
        final = dataclasses.replace(
            run,
            state=state,
            ended_at=ended_at,
            reason=reason,
            error=error,
            cell_durations=durations,
            records_list=records,
            **tracked,
            **where,
        )
        self._notify(RunEnded(final))
        return final


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


#: a fork-engine run is written as ``running`` only once it has lasted this long (seconds)
RUNNING_WRITE_DELAY = 0.25

#: a reason (``cell 3 raised ValueError: ...``) keeps this much of a long error value; the
#: whole value stays in the stored error and the traceback
REASON_LIMIT = 500


def _short_reason(message: str) -> str:
    from kiln.textutil import strip_ansi

    text = strip_ansi(message)
    if len(text) <= REASON_LIMIT:
        return text
    return f"{text[:REASON_LIMIT]}… ({len(text) - REASON_LIMIT} more characters in the error)"


def _error_json(failure: CellFailure) -> dict[str, Any]:
    """A cell failure as stored: without colour codes (they are for terminals, not JSON)."""
    from kiln.textutil import strip_ansi

    out = failure.to_json()
    out["ename"] = strip_ansi(str(out["ename"]))
    out["evalue"] = strip_ansi(str(out["evalue"]))
    out["traceback"] = [strip_ansi(str(line)) for line in out["traceback"]]
    return out


def _reset_outputs(nb: NotebookNode, *, skip_tag: str) -> None:
    """Clear outputs and counts of cells about to run (skipped cells keep theirs)."""
    for cell in nb.cells:
        if cell.cell_type != "code" or skip_tag in cell.metadata.get("tags", []):
            continue
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)


def _kernel_version(event: KernelReady) -> str | None:
    parts = [
        p
        for p in (
            event.kernel_version,
            f"{event.language} {event.language_version}" if event.language_version else None,
        )
        if p
    ]
    return "; ".join(parts) or None


def _describe(outcome: ExecutionOutcome) -> tuple[str, str]:
    if outcome.status == "error" and outcome.failure is not None:
        return "failed", f"raised {outcome.failure.ename}: {outcome.failure.evalue}"
    if outcome.status == "timeout":
        return "timed out", outcome.message
    if outcome.status == "dead":
        return "crashed", outcome.message
    if outcome.status == "cancelled":
        return "was cancelled", outcome.message
    return "failed", outcome.message


def raise_for_state(run: Run) -> None:
    """Raise the RunFailed subclass matching a finished run's state (nothing on success)."""
    if run.state.ok:
        return
    reason = run.reason or run.state.value
    if (
        run.state is RunState.FAILED
        and run.error
        and "ename" in run.error
        and "traceback" in run.error
    ):
        from kiln.errors import CellFailure

        failure = CellFailure(
            **{
                k: run.error[k]
                for k in ("cell_index", "execution_count", "ename", "evalue", "traceback", "source")
            }
        )
        raise CellExecutionError(failure, notebook=run.notebook_path, run=run)
    cls: type[RunFailed] = {
        RunState.TIMED_OUT: RunTimedOut,
        RunState.CRASHED: KernelDied,
        RunState.CANCELLED: RunCancelled,
    }.get(run.state, RunFailed)
    raise cls(
        f"{os.path.basename(run.notebook_path)}: run {run.state.value.replace('_', ' ')}: {reason}",
        run=run,
    )
