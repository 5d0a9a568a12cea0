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
import contextlib
import dataclasses
import os
import platform
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kiln import __version__
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
from kiln.notebook import read_bytes, save_notebook, sha256_bytes
from kiln.notebook.io import atomic_write_text
from kiln.notebook.marks import add_failure_marks, remove_marks
from kiln.recording import record_from_output
from kiln.runlog import RunLog
from kiln.store.process import process_start_time
from kiln.store.records import Record, Run


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """Everything that defines one run. Options are keyword-only and documented here."""

    #: the notebook file to run (never modified)
    notebook: Path
    #: parameter values: plain data, or ``CliValue`` text to be coerced by the schema
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: where to write the output notebook (default: ``$KILN_HOME/runs/<id>/output.ipynb``)
    output: Path | None = None
    #: kernel name (default: the notebook's kernelspec, else ``python3``)
    kernel: str | None = None
    #: engine: ``auto`` (fork for Python notebooks on Linux, else kernel), ``fork``, ``kernel``
    engine: str = "auto"
    #: cap on the run's memory in bytes (fork engine)
    memory_limit: int | None = None
    #: refuse to run a notebook with lint errors (rules configured in kiln.yaml)
    lint: bool = False
    #: working directory of the kernel (default: the notebook's folder)
    cwd: Path | None = None
    #: seconds one cell may run
    cell_timeout: float | None = None
    #: seconds the whole run may take, kernel start included
    timeout: float | None = None
    #: keep going after a cell raises
    allow_errors: bool = False
    #: accept parameters the notebook does not declare
    allow_unknown: bool = False
    #: hide the input of every cell in the output notebook
    report_mode: bool = False
    #: inject parameters and save the output notebook without executing it
    prepare_only: bool = False
    #: extra environment variables for the kernel
    env: Mapping[str, str] | None = None


@dataclass
class Prepared:
    """A validated request: everything decided about it before anything starts.

    The notebook's JSON, parameters and kernel are checked first (cheap: no nbformat), so the
    kernel can be launched at once; :meth:`complete` then does the full nbformat upgrade,
    validation and injection while the kernel boots.
    """

    request: RunRequest
    source_bytes: bytes
    sha256: str
    raw: dict[str, Any]
    schema: Any
    values: dict[str, Any]
    kernel_name: str
    language: str
    warnings: list[str]
    engine_name: str = "kernel"
    imports: tuple[str, ...] = ()
    notebook: Any = None

    def complete(self) -> Any:
        """The notebook to execute: upgraded, validated, parameters injected, old marks gone."""
        if self.notebook is None:
            from kiln.notebook.io import to_v4
            from kiln.parameters import inject_parameters

            parsed = _PARSED.get(self.sha256)
            valid = parsed is not None and parsed.valid
            nb = to_v4(self.raw, path=str(self.request.notebook), validate=not valid)
            if parsed is not None:
                parsed.valid = True
            if self.values:  # like papermill: no values, no injected cell (an old one stays)
                nb = inject_parameters(
                    nb, self.values, schema=self.schema, language=self.language
                ).notebook
            remove_marks(nb)
            self.notebook = nb
        return self.notebook


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


def prepare(request: RunRequest, *, engine_name: str | None = None) -> Prepared:
    """Validate a request without starting anything: raises NotebookError/ParameterError/...

    For nbformat 4 the schema is read from the raw JSON; the full nbformat validation waits
    for :meth:`Prepared.complete` (which the runner calls while the kernel boots).
    """
    from kiln.notebook.io import load_json, to_v4
    from kiln.parameters import infer_schema, resolve_parameters

    path = str(request.notebook)
    if request.output is not None and _same_file(request.output, request.notebook):
        raise UsageError(
            f"the output path {request.output} is the input notebook; Kiln never overwrites "
            "its input: choose another output path"
        )
    data = read_bytes(request.notebook)
    sha = sha256_bytes(data)
    parsed = _PARSED.get(sha)
    if parsed is None or request.lint:
        raw = load_json(data, path=path)
        nb = to_v4(raw, path=path) if raw["nbformat"] != 4 or request.lint else None
        if request.lint:
            _lint_gate(nb, path)
        view = nb if nb is not None else raw
        schema = infer_schema(view, notebook=path)
        if nb is None:
            _remember(sha, _Parsed(raw, schema))
    else:  # the same bytes again (a sweep, a schedule): parsed and checked already
        raw, schema, nb, view = parsed.raw, parsed.schema, None, parsed.raw
    values = resolve_parameters(
        schema, request.parameters, allow_unknown=request.allow_unknown, notebook=path
    )
    meta = view.get("metadata", {})
    kernel_name = request.kernel or meta.get("kernelspec", {}).get("name") or "python3"
    warnings = []
    imports: list[str] = []
    if engine_name is None:
        from kiln.engines import choose_engine
        from kiln.engines.imports import notebook_imports
        from kiln.engines.kernel import kernel_spec

        spec = kernel_spec(kernel_name)
        language = str(spec.language or "python").lower()
        imports = notebook_imports(view.get("cells", []))
        sources = [
            "".join(c.get("source", ""))
            for c in view.get("cells", [])
            if c.get("cell_type") == "code"
        ]
        engine_name, notice = choose_engine(
            request.engine, spec, imports, sources=sources, memory_limit=request.memory_limit
        )
        if notice:
            warnings.append(notice)
    else:
        language = schema.language or "python"
    if values:
        from kiln.parameters import get_translator

        get_translator(language)  # refuse a language without a translator now
    if values and schema.cell_index is None:
        warnings.append(
            f"{path} has no cell tagged 'parameters': the parameters were injected at the top"
        )
    prepared = Prepared(
        request,
        data,
        sha,
        raw,
        schema,
        values,
        kernel_name,
        language,
        warnings,
        engine_name=engine_name,
        imports=tuple(imports),
    )
    if nb is not None:
        prepared.complete()
    return prepared


@dataclass
class _Parsed:
    """What prepare learnt from one notebook's bytes (valid: passed nbformat validation)."""

    raw: dict[str, Any]
    schema: Any
    valid: bool = False


#: by sha256 of the notebook bytes; a sweep prepares the same notebook once per set
_PARSED: dict[str, _Parsed] = {}


def _remember(sha: str, parsed: _Parsed) -> None:
    if len(_PARSED) >= 32:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[sha] = parsed


def _lint_gate(nb: Any, path: str) -> None:
    from kiln.errors import LintGateFailed
    from kiln.lint import errors_for_run_gate, load_lint_config

    config = load_lint_config(Path(path).resolve().parent)
    errors = errors_for_run_gate(nb, path, config)
    if errors:
        shown = "\n".join(f"  {f.location()}: {f.rule} {f.message}" for f in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise LintGateFailed(
            f"{path} has {len(errors)} lint error(s); not running it (--lint):\n{shown}{more}\n"
            "Fix them, or ignore a rule in kiln.yaml (lint: {ignore: [ID]}).",
            findings=errors,
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


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
        saver = _Saver(nb, output_path)
        saver.changed()
        # the row turns `running` when the engine is ready (one write with the kernel's
        # details); until then it says `queued`, which is what it is while a kernel boots
        run.state, run.started_at = "running", started_at
        code_cells = sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip())
        self._notify(RunStarted(run, len(nb.cells), code_cells))

        durations: list[float | None] = [None] * len(nb.cells)
        records: list[Record] = []

        def on_event(event: Event) -> None:
            if isinstance(event, CellStarted):
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
                    state="running",
                    started_at=started_at,
                    kernel_pid=run.kernel_pid,
                    kernel_started=run.kernel_started,
                    kernel_version=run.kernel_version,
                )
            self._notify(event)

        try:
            outcome = await _execute_cancellable(session, nb, on_event)
        finally:
            saver.stop()
        return self._finish(prepared, run, nb, output_path, log, outcome, durations, records)

    def _finish(
        self,
        prepared: Prepared,
        run: Run,
        nb: Any,
        output_path: Path,
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
        save_notebook(nb, output_path)
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


class _Saver:
    """Saves the output notebook as cells finish: at once, or, when the last save is under
    ``interval`` old, ``interval`` after it, so a burst of quick cells costs one write and
    any finished cell is on disk within ``interval`` seconds. Every save is atomic."""

    def __init__(self, nb: Any, path: Path, interval: float = 0.2) -> None:
        self.nb = nb
        self.path = path
        self.interval = interval
        self.last = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None

    def changed(self) -> None:
        wait = self.last + self.interval - time.monotonic()
        if wait <= 0:
            self.save()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(wait, self.save)

    def save(self) -> None:
        self.timer = None
        self.last = time.monotonic()
        save_notebook(self.nb, self.path)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


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


async def _execute_cancellable(
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
