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
from kiln.cancel import cancel_on_signals, execute_cancellable
from kiln.engines.base import (
    CellFinished,
    CellOutput,
    CellStarted,
    Engine,
    EngineSession,
    Event,
    ExecuteOptions,
    ExecutionOutcome,
    KernelReady,
)
from kiln.errors import (
    CellExecutionError,
    CellFailure,
    KernelDied,
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

    async def arun(self, request: RunRequest, *, check: bool = True) -> Run:
        """Run inside a running event loop; concurrent calls share warm engines."""
        fixed = self._engine
        prepared = prepare(request, engine_name=fixed.name if fixed is not None else None)
        engine = fixed if fixed is not None else self._engine_named(prepared.engine_name)
        for text in prepared.warnings:
            self._notify(RunWarning(text))
        run = await self._execute(prepared, engine)
        if check:
            raise_for_state(run)
        return run

    def _home(self) -> Path:
        if self._store is not None:
            return Path(self._store.home)
        from kiln.store import default_home

        return Path(self._home_dir) if self._home_dir is not None else default_home()

    async def _execute(self, prepared: Prepared, engine: Engine) -> Run:
        """Start the engine, record the run while it boots, execute, close the engine."""
        from kiln.store import new_run_id

        request = prepared.request
        cwd = request.run_cwd
        if not cwd.is_dir():
            raise OptionError("cwd", f"{cwd} is not a directory")
        # everything that could fail for lack of a place to write fails now, before anything
        # runs: the history opens, the run folder is made, the output folder takes a file
        store = self.store
        modes = self._modes()
        if request.output is not None:
            check_writable_output(Path(request.output))
        run_id = new_run_id()
        home = Path(store.home)
        run_dir = make_run_folder(store.runs_dir, run_id, modes)
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
        )
        session = engine.session(options)
        graceful = False
        recorded = False
        try:
            if not request.prepare_only:
                # the kernel boots in its own process while the notebook is validated in full
                # and the run is recorded
                await session.start()
            prepared.complete()
            run = self._record(prepared, engine, run_id, run_dir)
            recorded = True
            try:
                final = await self._drive(prepared, session, run, log)
            except OSError as exc:  # the disk filled up, a folder went away: the run stops
                final = self._failed_to_write(run, exc)
            except BaseException as exc:
                # whatever went wrong, the row gets exactly one terminal state
                state = (
                    RunState.CANCELLED
                    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
                    else RunState.CRASHED
                )
                self.store.finish_run(run.id, state, reason=f"{type(exc).__name__}: {exc}"[:2000])
                raise
            graceful = final.state.ok
            return final
        finally:
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

    def _failed_to_write(self, run: Run, exc: OSError) -> Run:
        """The run could not write its files: it ends ``failed``, saying why, and the history
        (which may live on another disk, or still have room for one row) records it."""
        where = f" while writing {exc.filename}" if exc.filename else ""
        reason = f"{exc.strerror or exc}{where}"
        if exc.errno == errno.ENOSPC:
            reason = f"no space left on the device{where}"
        ended_at = datetime.now(timezone.utc)
        try:
            self.store.finish_run(run.id, RunState.FAILED, reason=reason, ended_at=ended_at)
        except StoreError:
            # the history shares the full disk: make room from this run's own log (its tail
            # stays) and try once more
            shrink_log(Path(str(run.log_path)))
            self.store.finish_run(run.id, RunState.FAILED, reason=reason, ended_at=ended_at)
        final = dataclasses.replace(run, state=RunState.FAILED, reason=reason, ended_at=ended_at)
        self._notify(RunEnded(final))
        return final

    def _record(self, prepared: Prepared, engine: Engine, run_id: str, run_dir: Path) -> Run:
        """Commit the run row (queued) and its input copy: durable before anything runs."""
        from kiln.store import current_owner

        request = prepared.request
        store = self.store
        if not self._recovered:  # once per runner: a killed Kiln's runs can't appear later
            store.recover_orphans()
            self._recovered = True
        pid, host, started = current_owner()
        input_path = store_input(store.home, prepared.sha256, prepared.source_bytes, self._modes())
        output_path = (
            Path(request.output) if request.output else run_dir / "output.ipynb"
        ).resolve()
        run: Run = store.create_run(
            Run(
                id=run_id,
                notebook_path=request.notebook_label,
                notebook_sha256=prepared.sha256,
                state=RunState.QUEUED,
                parameters=prepared.values,
                run_dir=str(run_dir),
                input_path=str(input_path),
                output_path=str(output_path),
                log_path=str(run_dir / "run.log"),
                engine=engine.name,
                kernel_name=prepared.kernel_name,
                language=prepared.language,
                python_version=platform.python_version(),
                kiln_version=__version__,
                owner_pid=pid,
                owner_host=host,
                owner_started=started,
                build_id=request.build_id,
            )
        )
        return run

    async def _drive(
        self, prepared: Prepared, session: EngineSession, run: Run, log: RunLog
    ) -> Run:
        request = prepared.request
        store = self.store
        nb = prepared.complete()
        output_path = Path(str(run.output_path))
        _reset_outputs(nb, skip_tag="skip-execution")
        if request.report_mode:
            for cell in nb.cells:
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
        started_at = datetime.now(timezone.utc)
        nb.metadata["kiln"] = {
            "run_id": run.id,
            "parameters": prepared.values,
            "input_path": request.notebook_label,
            "output_path": str(output_path),
            "kernel_name": prepared.kernel_name,
            "started_at": started_at.isoformat(),
            "state": RunState.RUNNING.value,
        }
        papermill_start(
            nb,
            parameters=prepared.values,
            defaults=prepared.schema.defaults(),
            input_path=request.notebook_label,
            output_path=str(output_path),
            started=started_at,
        )
        log.fields(f"run {run.id} notebook", str(request.notebook))
        log.fields("parameters", prepared.values)
        for text in prepared.warnings:
            log.line(f"warning: {text}")
        if request.prepare_only:
            nb.metadata["kiln"]["state"] = RunState.PREPARED.value
            save_notebook(nb, output_path, mode=self._output_mode(request))
            ended_at = datetime.now(timezone.utc)
            reason = "prepared only (not executed)"
            store.finish_run(
                run.id, RunState.PREPARED, reason=reason, started_at=started_at, ended_at=ended_at
            )
            log.line("prepared only: parameters injected, not executed")
            final = dataclasses.replace(
                run,
                state=RunState.PREPARED,
                started_at=started_at,
                ended_at=ended_at,
                reason=reason,
            )
            self._notify(RunEnded(final))
            return final
        # the injected notebook is on disk within 0.2 s (or when the run ends, if sooner)
        saver = _Saver(nb, output_path, mode=self._output_mode(request))
        saver.changed()
        # the row turns `running` when the engine is ready (one write with the kernel's
        # details); until then it says `queued`, which is what it is while a kernel boots
        run.state, run.started_at = RunState.RUNNING, started_at
        code_cells = sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip())
        self._notify(RunStarted(run, len(nb.cells), code_cells))

        durations: list[float | None] = [None] * len(nb.cells)
        records: list[Record] = []

        def on_event(event: Event) -> None:
            if isinstance(event, CellStarted):
                log.line(f"cell {event.index} started")
                cell_started(nb.cells[event.index])
            elif isinstance(event, CellOutput):
                log.output(event.index, event.output)
                entry = record_from_output(event.output)
                if entry is not None:
                    kind = str(entry.get("kind", "json"))
                    records.append(Record(entry["name"], kind, entry.get("value"), event.index))
            elif isinstance(event, CellFinished):
                durations[event.index] = round(event.duration, 6)
                cell_finished(nb.cells[event.index], event.duration, event.status == "error")
                log.line(f"cell {event.index} {event.status} in {event.duration:.3f}s")
                saver.changed()
            elif isinstance(event, KernelReady):
                log.line(
                    f"kernel {event.kernel_name} ready ({event.kernel_version}, "
                    f"{event.language} {event.language_version}, pid {event.pid})"
                )
                run.kernel_pid, run.kernel_version = event.pid, _kernel_version(event)
                run.kernel_started = process_start_time(event.pid) if event.pid else None
                store.update_run(
                    run.id,
                    state=RunState.RUNNING,
                    started_at=started_at,
                    kernel_pid=run.kernel_pid,
                    kernel_started=run.kernel_started,
                    kernel_version=run.kernel_version,
                )
            self._notify(event)

        try:
            outcome = await execute_cancellable(session, nb, on_event)
        finally:
            saver.stop()
        return self._finish(prepared, run, nb, output_path, log, outcome, durations, records)

    def _finish(
        self,
        prepared: Prepared,
        run: Run,
        nb: NotebookNode,
        output_path: Path,
        log: RunLog,
        outcome: ExecutionOutcome,
        durations: list[float | None],
        records: list[Record],
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
        save_notebook(nb, output_path, mode=self._output_mode(prepared.request))
        log.line(f"run {state}: {outcome.message}" if outcome.message else f"run {state}")
        self.store.finish_run(
            run.id,
            state,
            reason=reason,
            error=error,
            ended_at=ended_at,
            started_at=run.started_at,
            cell_durations=durations,
            records=records,
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
        )
        self._notify(RunEnded(final))
        return final


class _Saver:
    """Saves the output notebook as cells finish: at once, or, when the last save is under
    ``interval`` old, ``interval`` after it, so a burst of quick cells costs one write and
    any finished cell is on disk within ``interval`` seconds. Every save is atomic."""

    def __init__(
        self, nb: NotebookNode, path: Path, interval: float = 0.2, *, mode: int | None = None
    ) -> None:
        self.nb = nb
        self.path = path
        self.mode = mode
        self.error: OSError | None = None
        self.interval = interval
        self.last = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None

    def changed(self) -> None:
        if self.error is not None:  # a save failed (a full disk): the run cannot go on
            raise self.error
        wait = self.last + self.interval - time.monotonic()
        if wait <= 0:
            self.save()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(wait, self.save)

    def save(self) -> None:
        self.timer = None
        self.last = time.monotonic()
        try:
            save_notebook(self.nb, self.path, mode=self.mode)
        except OSError as exc:  # raised on the run's path by the next changed()
            self.error = exc

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


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
