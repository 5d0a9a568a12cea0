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
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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
    KernelDied,
    RunCancelled,
    RunFailed,
    RunTimedOut,
    UsageError,
)
from kiln.notebook import save_notebook
from kiln.notebook.io import atomic_write_text
from kiln.notebook.marks import add_failure_marks
from kiln.notebook.saver import NotebookSaver
from kiln.recording import record_from_output
from kiln.request import Prepared, RunRequest, prepare
from kiln.runlog import RunLog
from kiln.store.process import process_start_time
from kiln.store.records import Record, Run

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


@dataclass(frozen=True)
class RunStarted:
    run: Run
    cells: int
    code_cells: int


@dataclass(frozen=True)
class RunEnded:
    run: Run


@dataclass(frozen=True)
class RunWarning:
    text: str


RunEvent = Event | RunStarted | RunEnded | RunWarning
Observer = Callable[[RunEvent], None]

_STATE_BY_OUTCOME = {
    "ok": "succeeded",
    "error": "failed",
    "timeout": "timed_out",
    "dead": "crashed",
    "cancelled": "cancelled",
}


class Runner:
    """Runs requests through the one path, recording them in a RunStore."""

    def __init__(
        self,
        *,
        home: Path | None = None,
        store: Any = None,
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
        self.observers = list(observers)

    @property
    def store(self) -> Any:
        if self._store is None:
            from kiln.store import RunStore

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
            closer = getattr(engine, "aclose", None)
            if closer is not None:
                await closer()

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
        cwd = Path(request.cwd) if request.cwd else Path(request.notebook).resolve().parent
        if not cwd.is_dir():
            raise UsageError(f"--cwd {cwd} is not a directory")
        run_id = new_run_id()
        home = self._home()
        run_dir = home / "runs" / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        log = RunLog(run_dir / "run.log")
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
            argv=(str(Path(request.notebook).resolve()),),
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
            except BaseException as exc:
                # whatever went wrong, the row gets exactly one terminal state
                state = (
                    "cancelled"
                    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
                    else "crashed"
                )
                self.store.finish_run(run.id, state, reason=f"{type(exc).__name__}: {exc}"[:2000])
                raise
            graceful = final.state == "succeeded"
            return final
        finally:
            await session.close(graceful=graceful)
            log.close()
            if not recorded:  # refused before the run existed: leave nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)

    def _record(self, prepared: Prepared, engine: Engine, run_id: str, run_dir: Path) -> Run:
        """Commit the run row (queued) and its input copy: durable before anything runs."""
        from kiln.store import current_owner

        request = prepared.request
        store = self.store
        if not self._recovered:  # once per runner: a killed Kiln's runs can't appear later
            store.recover_orphans()
            self._recovered = True
        pid, host, started = current_owner()
        input_path = run_dir / "input.ipynb"
        output_path = (
            Path(request.output) if request.output else run_dir / "output.ipynb"
        ).resolve()
        atomic_write_text(input_path, prepared.source_bytes.decode("utf-8-sig"))
        run: Run = store.create_run(
            Run(
                id=run_id,
                notebook_path=str(Path(request.notebook).resolve()),
                notebook_sha256=prepared.sha256,
                state="queued",
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
            )
        )
        return run

    async def _drive(
        self, prepared: Prepared, session: EngineSession, run: Run, log: RunLog
    ) -> Run:
        request = prepared.request
        store = self.store
        nb = prepared.notebook
        output_path = Path(str(run.output_path))
        _reset_outputs(nb, skip_tag="skip-execution")
        if request.report_mode:
            for cell in nb.cells:
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
        started_at = datetime.now(timezone.utc)
        nb.metadata["kiln"] = {
            "run_id": run.id,
            "parameters": prepared.values,
            "input_path": str(Path(request.notebook).resolve()),
            "output_path": str(output_path),
            "kernel_name": prepared.kernel_name,
            "started_at": started_at.isoformat(),
            "state": "running",
        }
        log.fields(f"run {run.id} notebook", str(request.notebook))
        log.fields("parameters", prepared.values)
        for text in prepared.warnings:
            log.line(f"warning: {text}")
        if request.prepare_only:
            nb.metadata["kiln"]["state"] = "prepared"
            save_notebook(nb, output_path)
            store.finish_run(
                run.id,
                "succeeded",
                reason="prepared only (not executed)",
                started_at=started_at,
                ended_at=datetime.now(timezone.utc),
            )
            log.line("prepared only: parameters injected, not executed")
            return store.get_run(run.id)  # type: ignore[no-any-return]
        # the injected notebook is on disk within 0.2 s (or when the run ends, if sooner)
        saver = NotebookSaver(
            nb, output_path, on_error=lambda e: log.line(f"warning: could not save yet: {e}")
        )
        saver.changed()
        log.set_output(output_path, nb)
        # the row turns `running` when the engine is ready (one write with the kernel's
        # details); until then it says `queued`, which is what it is while a kernel boots
        run.state, run.started_at = "running", started_at
        code_cells = sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip())
        self._notify(RunStarted(run, len(nb.cells), code_cells))

        durations: list[float | None] = [None] * len(nb.cells)
        records: list[Record] = []

        def on_event(event: Event) -> None:
            if isinstance(event, CellStarted):
                saver.cell_started(event.index)
                log.line(f"cell {event.index} started")
            elif isinstance(event, CellOutput):
                log.output(event.index, event.output)
                entry = record_from_output(event.output)
                if entry is not None:
                    kind = str(entry.get("kind", "json"))
                    records.append(Record(entry["name"], kind, entry.get("value"), event.index))
            elif isinstance(event, CellFinished):
                durations[event.index] = round(event.duration, 6)
                log.line(f"cell {event.index} {event.status} in {event.duration:.3f}s")
                saver.cell_finished(event.index)
            elif isinstance(event, KernelReady):
                log.line(
                    f"kernel {event.kernel_name} ready ({event.kernel_version}, "
                    f"{event.language} {event.language_version}, pid {event.pid})"
                )
                run.kernel_pid, run.kernel_version = event.pid, _kernel_version(event)
                run.kernel_started = process_start_time(event.pid) if event.pid else None
                store.update_run(
                    run.id,
                    state="running",
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
        return self._finish(prepared, run, nb, saver, log, outcome, durations, records)

    def _finish(
        self,
        prepared: Prepared,
        run: Run,
        nb: Any,
        saver: NotebookSaver,
        log: RunLog,
        outcome: ExecutionOutcome,
        durations: list[float | None],
        records: list[Record],
    ) -> Run:
        state = _STATE_BY_OUTCOME[outcome.status]
        error = outcome.failure.to_json() if outcome.failure else None
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
            error = {"allowed": [f.to_json() for f in outcome.allowed_errors]}
        ended_at = datetime.now(timezone.utc)
        meta = nb.metadata["kiln"]
        meta.update(state=state, ended_at=ended_at.isoformat())
        if outcome.status != "ok":
            meta["error"] = {"cell_index": outcome.failed_cell, "message": outcome.message}
        saver.save()
        log.line(f"run {state}: {outcome.message}" if outcome.message else f"run {state}")
        fields: dict[str, Any] = {
            "started_at": run.started_at,
            "cell_durations": durations,
            "records": records,
        }
        self.store.finish_run(
            run.id,
            state,
            reason=outcome.message or None,
            error=error,
            ended_at=ended_at,
            **fields,
        )
        # what was just written, without reading it back
        final = dataclasses.replace(
            run,
            state=state,
            ended_at=ended_at,
            reason=outcome.message or None,
            error=error,
            cell_durations=durations,
            records_list=records,
        )
        self._notify(RunEnded(final))
        return final


def _reset_outputs(nb: Any, *, skip_tag: str) -> None:
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
    if run.state == "succeeded":
        return
    reason = run.reason or run.state
    if run.state == "failed" and run.error and "ename" in run.error and "traceback" in run.error:
        from kiln.errors import CellFailure

        failure = CellFailure(
            **{
                k: run.error[k]
                for k in ("cell_index", "execution_count", "ename", "evalue", "traceback", "source")
            }
        )
        raise CellExecutionError(failure, notebook=run.notebook_path, run=run)
    cls: type[RunFailed] = {
        "timed_out": RunTimedOut,
        "crashed": KernelDied,
        "cancelled": RunCancelled,
    }.get(run.state, RunFailed)
    raise cls(
        f"{os.path.basename(run.notebook_path)}: run {run.state.replace('_', ' ')}: {reason}",
        run=run,
    )
