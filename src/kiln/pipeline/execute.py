"""Running a build: the selected tasks in dependency order, ``jobs`` at a time, each task a
normal recorded run linked to one recorded build.

::

    record the build (running) and its tasks (pending)
    each task, once its upstream tasks are done:
        an upstream task failed        -> blocked (its own branch only; others go on)
        up to date (its fingerprint)   -> up_to_date, nothing runs
        else                           -> a run (RunRequest: cwd = project root, upstream
                                          and product injected when declared), retried
                                          with backoff; its products hashed, its new
                                          fingerprint saved at once
    the build ends succeeded, failed or cancelled (Ctrl-C: running tasks are cancelled)

The build's state lives in this process, whatever the executor; a ``kiln build`` killed
outright leaves its build ``running`` until the next build marks it ``crashed``, and every task
that finished before the kill keeps its new state (nothing complete is run again).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from kiln.cancel import cancel_on_signals
from kiln.errors import KilnError
from kiln.events import RunEnded, RunEvent, RunStarted, RunWarning
from kiln.pipeline.check import BuildOptions, Checker, resume_reason, selection
from kiln.pipeline.fingerprint import Fingerprint, NotebookCode, shown, task_engine, task_kernel
from kiln.pipeline.result import (
    Build,
    BuildObserver,
    BuildStarted,
    BuildWarning,
    TaskEnded,
    TaskResult,
    TaskRetrying,
    TaskStarted,
)
from kiln.store.builds import BuildStore, BuildTaskRow, TaskState
from kiln.store.records import Run, RunState

if TYPE_CHECKING:
    from kiln.pipeline.executors import Executor
    from kiln.pipeline.model import Pipeline, Task
    from kiln.request import RunRequest
    from kiln.store.sql import RunStore


@dataclass(eq=False)
class _Slot:
    """A task whose run is under way, and how far the run got."""

    build: _Build
    task: str
    phase: Literal["starting", "executing", "ending"] = "starting"
    run_id: str | None = None


#: the slot of the run the current asyncio task belongs to (the runner's tasks inherit it)
_current: ContextVar[_Slot | None] = ContextVar("kiln_build_slot", default=None)


class _Build:
    def __init__(
        self,
        pipeline: Pipeline,
        store: RunStore,
        builds: BuildStore,
        executor: Executor,
        options: BuildOptions,
        observer: BuildObserver | None,
        claimed: str | None = None,
    ) -> None:
        self.claimed = claimed
        self.pipeline = pipeline
        self.store = store
        self.builds = builds
        self.executor = executor
        self.options = options
        self.observer = observer
        self.results: dict[str, TaskResult] = {}
        self.rows: dict[str, BuildTaskRow] = {}
        self.dirty: set[str] = set()
        self.new_states: list[TaskState] = []
        #: the parameters each notebook declares, by the sha256 of its bytes
        self.declared: dict[str, frozenset[str]] = {}
        #: each finished task's current product hashes (what downstream tasks compare with)
        self.now: dict[str, dict[str, str] | None] = {}
        self.ran: set[str] = set()
        self.futures: dict[str, asyncio.Future[TaskResult]] = {}
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.slots: dict[str, _Slot] = {}
        self.stop_reason: str | None = None
        self.signals: list[str] = []
        self.build_id = ""

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None or bool(self.signals)

    # -- the build ------------------------------------------------------------------------------

    async def run(self) -> Build:
        from kiln.store import new_run_id

        self.store.recover_orphans()
        self.builds.recover_orphan_builds()
        pipeline, options = self.pipeline, self.options
        self.checker = Checker(pipeline, self.builds)
        self.last = self.builds.last_build(pipeline.key, pipeline.name) if options.resume else None
        names, self.done_before = selection(pipeline, options, self.last)
        # a cluster that cannot be reached fails the command before a build is recorded
        await self.executor.start()
        if self.claimed is not None:  # a scheduled build, queued and claimed by the caller
            self.build_id = self.claimed
            self.rows = self.builds.add_tasks(self.build_id, names)
        else:
            self.build_id = new_run_id()
            record = self.builds.create_build(
                self.build_id,
                project=pipeline.key,
                pipeline=pipeline.name,
                options=options.to_json(),
                tasks=names,
            )
            self.rows = record.tasks
        self.results = {name: TaskResult(name) for name in names}
        self._emit(BuildStarted(self.build_id, pipeline.name, tuple(names)))
        loop = asyncio.get_running_loop()
        self.futures = {name: loop.create_future() for name in names}
        self.limit = asyncio.Semaphore(options.jobs)
        stop: asyncio.Future[None] = loop.create_future()
        self.executor.observers.append(self._observe)
        try:
            for text in self.executor.warnings():
                self._emit(BuildWarning(text))
            with cancel_on_signals(stop) as signals:
                self.signals = signals
                stop.add_done_callback(lambda _: self._stop_on_signal())
                self.workers = {name: asyncio.ensure_future(self._task(name)) for name in names}
                try:
                    if self.workers:
                        await asyncio.wait(self.workers.values())
                except asyncio.CancelledError:
                    # the build itself was cancelled: end every run properly, then say so
                    self.stop("cancelled", executing=True)
                    await asyncio.wait(self.workers.values())
                    self._finish()
                    raise
            self._stop_on_signal()
            for worker in self.workers.values():
                worker.result()  # a bug in the build loop is not swallowed
        finally:
            self.executor.observers.remove(self._observe)
        return self._finish()

    def _finish(self) -> Build:
        failed = [r.name for r in self.results.values() if r.state in ("failed", "crashed")]
        if self.stop_reason is not None:
            state, reason = "cancelled", self.stop_reason
        elif failed or any(not r.ok for r in self.results.values()):
            state = "failed"
            from kiln.pipeline.check import task_list

            reason = f"failed: {task_list(failed)}" if failed else "not every task finished"
        else:
            state, reason = "succeeded", None
        self._flush()
        self.builds.finish_build(self.build_id, state, reason=reason)
        row = self.builds.get_build(self.build_id)
        return Build(
            id=self.build_id,
            pipeline=self.pipeline.name,
            state=state,
            tasks=self.results,
            reason=reason,
            created_at=row.created_at,
            ended_at=row.ended_at,
        )

    def _stop_on_signal(self) -> None:
        if self.signals and self.stop_reason is None:
            self.stop(
                f"cancelled by {self.signals[0]}",
                executing=not self.executor.cancels_on_signal,
            )

    def stop(self, reason: str, *, executing: bool = False) -> None:
        """Start no more tasks; cancel the ones waiting or starting (and executing ones if
        asked: a signal already cancelled those through the runner)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        for name, worker in self.workers.items():
            if worker.done():
                continue
            slot = self.slots.get(name)
            phase = slot.phase if slot is not None else "waiting"
            if phase in ("waiting", "starting") or (executing and phase == "executing"):
                worker.cancel()

    # -- one task -------------------------------------------------------------------------------

    async def _task(self, name: str) -> None:
        result = self.results[name]
        try:
            await self._decide(name, result)
        except asyncio.CancelledError:
            slot = self.slots.get(name)
            run_id = slot.run_id if slot is not None else None
            if run_id is not None and all(run.id != run_id for run in result.runs):
                result.runs.append(self.store.get_run_exact(run_id))
            why = self.stop_reason or "cancelled"
            result.state = "cancelled"
            result.reason = why if result.runs else f"not run: the build was {why}"
        except KilnError as exc:  # refused before it was recorded: a bad parameter, ...
            result.state, result.reason = "failed", exc.message
        except Exception as exc:  # a bug: this task fails, the build goes on and ends
            result.state, result.reason = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            self.slots.pop(name, None)
        if result.started_at is not None and result.ended_at is None:
            result.ended_at = _now()
        self._set_row(result)
        if result.attempts:  # a task that ran is on disk at once; the others with the next
            self._flush()
        self.futures[name].set_result(result)
        self._emit(TaskEnded(result))

    async def _decide(self, name: str, result: TaskResult) -> None:
        task = self.pipeline.tasks[name]
        upstream = [await asyncio.shield(self.futures[u]) for u in task.upstream_tasks]
        bad = next((r for r in upstream if not r.ok), None)
        if bad is not None:
            result.state = "blocked"
            result.reason = f"upstream {bad.name} {bad.state.replace('_', ' ')}"
            return
        if self.stopping:
            raise asyncio.CancelledError
        if name in self.done_before:
            result.state, result.reason = "up_to_date", self.done_before[name]
            self.now[name] = self.checker.recorded_products(name)
            return
        code: NotebookCode | None = None
        if self.options.resume:
            reason = resume_reason(self.last, name)
        else:
            upstream_now = {u: self.now[u] for u in task.upstream_tasks}
            check = self.checker.check(task, upstream_now, self.ran)
            if check.up_to_date and not self.options.force:
                result.state, result.reason = "up_to_date", "up to date"
                self.now[name] = self.checker.recorded_products(name)
                return
            reason = "; ".join(check.reasons) or "forced"
            code = check.code
        result.reason = reason
        async with self.limit:
            if self.stopping:
                raise asyncio.CancelledError
            await self._execute(task, result, code)

    async def _execute(self, task: Task, result: TaskResult, code: NotebookCode | None) -> None:
        data = task.notebook.read_bytes()
        if code is None or code.sha256 != _sha(data):
            code = NotebookCode.of(data, path=str(task.notebook))
        inputs = {location: self.checker.hasher.sha(location) for location in task.inputs}
        upstream = {u: dict(self.now[u] or {}) for u in task.upstream_tasks}
        request = self._request(task, data)
        why = result.reason
        for attempt in range(1, task.retries + 2):
            result.attempts = attempt
            result.state = "running"
            if result.started_at is None:
                result.started_at = _now()
            self._set_row(result)
            self._flush()
            self._emit(TaskStarted(task.name, attempt))
            slot = self.slots[task.name] = _Slot(self, task.name)
            token = _current.set(slot)
            try:
                run = await self.executor.run(request)
            finally:
                _current.reset(token)
            result.runs.append(run)
            self.slots.pop(task.name, None)
            if run.state.ok:
                self._succeeded(task, result, run, code, inputs, upstream, why)
                break
            failure = _failure(run)
            if run.state is RunState.CANCELLED or self.stopping:
                result.state, result.reason = "cancelled", failure
                break
            if attempt > task.retries:
                result.state = "failed"
                result.reason = failure + (f" (after {attempt} attempts)" if attempt > 1 else "")
                break
            delay = task.retry_delay * 2 ** (attempt - 1)
            self._emit(TaskRetrying(task.name, attempt, delay, failure))
            result.state, result.reason = "running", f"retrying: {failure}"
            self._set_row(result)
            await asyncio.sleep(delay)
        result.ended_at = _now()

    def _succeeded(
        self,
        task: Task,
        result: TaskResult,
        run: Run,
        code: NotebookCode,
        inputs: dict[str, str | None],
        upstream: dict[str, dict[str, str]],
        why: str,
    ) -> None:
        hasher = self.checker.hasher
        hasher.forget(task.products.values())
        products: dict[str, dict[str, str]] = {}
        for name, location in task.products.items():
            sha = hasher.sha(location)
            if sha is None:
                result.state = "failed"
                result.reason = (
                    f"the run succeeded but did not write product {name!r} "
                    f"({shown(location, self.pipeline.root)})"
                )
                return
            products[name] = {"location": location, "sha256": sha}
        fingerprint = Fingerprint(
            notebook=code.sha256,
            cells=list(code.cells),
            kernel=task_kernel(task, code.kernel),
            engine=task_engine(task, self.checker.engine_default),
            parameters=dict(task.parameters),
            upstream=upstream,
            inputs={k: v for k, v in inputs.items() if v is not None},
            products=products,
        )
        # saved with the task's row when the task ends (one transaction)
        self.new_states.append(
            TaskState(
                self.pipeline.key,
                self.pipeline.name,
                task.name,
                fingerprint.to_json(),
                run.id,
                self.build_id,
            )
        )
        self.now[task.name] = fingerprint.product_hashes()
        self.ran.add(task.name)
        result.state, result.reason = "succeeded", why

    def _request(self, task: Task, data: bytes) -> RunRequest:
        """The task's run, as :func:`~kiln.pipeline.taskrun.task_request` makes it for every
        caller, linked to this build."""
        from kiln.pipeline.taskrun import declared_parameters, task_request

        key = _sha(data)
        declared = self.declared.get(key)
        if declared is None:
            declared = self.declared[key] = declared_parameters(data, str(task.notebook))
        request = task_request(
            self.pipeline,
            task,
            data,
            declared=declared,
            # filterable like any tag (kiln runs list --tag kiln.build=ID) and sent to MLflow
            tags={**self.options.tags, "kiln.build": self.build_id},
        )
        return replace(request, build_id=self.build_id)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _set_row(self, result: TaskResult) -> None:
        row = self.rows[result.name]
        row.state, row.reason, row.attempts = result.state, result.reason, result.attempts
        row.run_id = result.run.id if result.run is not None else row.run_id
        row.started_at, row.ended_at = result.started_at, result.ended_at
        self.dirty.add(result.name)

    def _flush(self) -> None:
        """Rows that changed, new task states and new file hashes: one transaction."""
        rows = [self.rows[name] for name in self.dirty]
        states, self.new_states = self.new_states, []
        try:
            self.builds.save(
                self.build_id, rows, states=states, hashes=self.checker.hasher.take_new()
            )
        finally:
            self.dirty.clear()

    def _observe(self, event: RunEvent) -> None:
        slot = _current.get()
        if slot is None or slot.build is not self:
            return  # a run of someone else sharing this runner
        if isinstance(event, RunStarted):
            slot.run_id, slot.phase = event.run.id, "executing"
            self.rows[slot.task].run_id = event.run.id
            if self.stopping:
                # stopped while this run was starting: it is recorded now, so it ends cancelled
                current = asyncio.current_task()
                if current is not None:
                    current.cancel()
        elif isinstance(event, RunEnded):
            slot.phase = "ending"
        elif isinstance(event, RunWarning):
            self._emit(BuildWarning(f"{slot.task}: {event.text}"))

    def _emit(self, event: Any) -> None:
        if self.observer is not None:
            self.observer(event)


def _failure(run: Run) -> str:
    """Why a run did not succeed, in one line."""
    error = run.error or {}
    if run.state is RunState.FAILED and "ename" in error and "cell_index" in error:
        return f"cell {error['cell_index']} raised {error['ename']}: {error.get('evalue', '')}"
    state = run.state.value.replace("_", " ")
    return f"{state}: {run.reason}" if run.reason else state


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


async def abuild(
    pipeline: Pipeline,
    *,
    store: RunStore,
    builds: BuildStore | None = None,
    options: BuildOptions | None = None,
    executor: Executor | None = None,
    observer: BuildObserver | None = None,
    claimed: str | None = None,
) -> Build:
    """Build ``pipeline`` in the running event loop (see the module docstring), recording the
    runs in ``store`` and the build in ``builds`` (default: ``store``'s database).

    ``executor`` defaults to the one ``options`` names; one given here is not closed.
    ``claimed``: the id of a queued build this process claimed
    (:meth:`~kiln.store.builds.BuildStore.claim_build`), recorded into instead of a new one."""
    options = options if options is not None else BuildOptions()
    builds = builds if builds is not None else BuildStore(store)
    owned = executor is None
    if executor is None:
        executor = make_executor(store, options, pipeline)
    try:
        return await _Build(pipeline, store, builds, executor, options, observer, claimed).run()
    finally:
        if owned:
            await executor.close()


def make_executor(
    store: RunStore, options: BuildOptions, pipeline: Pipeline | None = None
) -> Executor:
    """The executor ``options`` names (``local`` or ``dask``)."""
    if options.executor == "dask":
        from kiln.pipeline.dask_executor import DaskExecutor

        return DaskExecutor(
            store, scheduler=options.scheduler, jobs=options.jobs, pipeline=pipeline
        )
    from kiln.pipeline.executors import LocalExecutor

    return LocalExecutor(store, jobs=options.jobs)
