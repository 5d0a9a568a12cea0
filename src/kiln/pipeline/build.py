"""``run_build``: a build from start to end, without paying for what it does not need.

The plan comes first (:func:`kiln.pipeline.check.plan`, the standard library's ``sqlite3``
on the history): when every selected task is up to date, the build is recorded as such and
nothing else is loaded (no SQLAlchemy, no runner, no event loop), so checking a big pipeline
that needs nothing costs a fraction of a second. A build holds its pipeline's lock
(:mod:`kiln.store.buildlock`) from its plan to its end: a second build of the same pipeline
waits, then plans against what the first one built. Otherwise the build runs in an event loop
(:func:`kiln.pipeline.execute.abuild`), every task checked again as its upstream tasks end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.pipeline.check import BuildOptions, plan
from kiln.pipeline.result import (
    Build,
    BuildObserver,
    BuildStarted,
    BuildWarning,
    TaskEnded,
    TaskResult,
)

if TYPE_CHECKING:
    from kiln.pipeline.executors import Executor
    from kiln.pipeline.model import Pipeline
    from kiln.store.builds import BuildStore
    from kiln.store.sql import RunStore


def run_build(
    pipeline: Pipeline,
    *,
    store: RunStore | None = None,
    home: Path | None = None,
    options: BuildOptions | None = None,
    executor: Executor | None = None,
    observer: BuildObserver | None = None,
    claimed: str | None = None,
    on_start: Callable[[Callable[[], None]], None] | None = None,
) -> Build:
    """Build ``pipeline``, recording in ``store`` (or the history in ``home``, default: the
    project's); an ``executor`` given here is closed with the build.

    ``claimed``: a queued build this process claimed (a scheduled build), recorded into
    instead of a new one. ``on_start`` receives a function that cancels the build from any
    thread (the scheduler's stop, when the build runs in one of its threads)."""
    from kiln.store.buildlock import pipeline_lock
    from kiln.store.builds import BuildStore

    options = options if options is not None else BuildOptions()
    builds = BuildStore(store) if store is not None else BuildStore.open(home)

    def waiting() -> None:
        if observer is not None:
            observer(BuildWarning(f"another build of {pipeline.name} is running: waiting for it"))

    try:
        builds.recover_orphan_builds()
        # one build of a pipeline at a time, planned after the one before it ended
        with pipeline_lock(builds, pipeline.key, pipeline.name, on_wait=waiting):
            if not options.force and executor is None and claimed is None:
                done = _nothing_to_run(pipeline, builds, options, observer)
                if done is not None:
                    return done
            run = _Loop(builds, options, executor, observer, claimed, on_start)
            if store is not None:
                return run(pipeline, store)
            from kiln.store.sql import RunStore

            with RunStore(builds.home) as opened:
                return run(pipeline, opened)
    finally:
        builds.close()


class _Loop:
    """The build in an event loop of its own."""

    def __init__(
        self,
        builds: BuildStore,
        options: BuildOptions,
        executor: Executor | None,
        observer: BuildObserver | None,
        claimed: str | None,
        on_start: Callable[[Callable[[], None]], None] | None,
    ) -> None:
        self.builds, self.options, self.executor = builds, options, executor
        self.observer, self.claimed, self.on_start = observer, claimed, on_start

    def __call__(self, pipeline: Pipeline, store: RunStore) -> Build:
        import asyncio

        from kiln.pipeline.execute import abuild

        async def once() -> Build:
            if self.on_start is not None:
                loop, me = asyncio.get_running_loop(), asyncio.current_task()
                assert me is not None

                def cancel() -> None:
                    loop.call_soon_threadsafe(me.cancel)

                self.on_start(cancel)
            try:
                return await abuild(
                    pipeline,
                    store=store,
                    builds=self.builds,
                    options=self.options,
                    executor=self.executor,
                    observer=self.observer,
                    claimed=self.claimed,
                )
            finally:
                if self.executor is not None:
                    await self.executor.close()

        return asyncio.run(once())


def _nothing_to_run(
    pipeline: Pipeline,
    builds: BuildStore,
    options: BuildOptions,
    observer: BuildObserver | None,
) -> Build | None:
    """When the plan runs nothing: the build, recorded at once with every task up to date."""
    from kiln.store import new_run_id
    from kiln.store.builds import BuildTaskRow

    status = plan(pipeline, builds, options)
    if any(task.action == "run" for task in status.tasks):
        return None
    reasons = {t.name: (t.reasons[0] if t.action == "done" else "up to date") for t in status.tasks}
    build_id = new_run_id()
    row = builds.create_build(
        build_id,
        project=pipeline.key,
        pipeline=pipeline.name,
        options=options.to_json(),
        tasks=[BuildTaskRow(name, "up_to_date", reason) for name, reason in reasons.items()],
        state="succeeded",
    )
    results = {name: TaskResult(name, "up_to_date", reason) for name, reason in reasons.items()}
    if observer is not None:
        observer(BuildStarted(build_id, pipeline.name, tuple(results)))
        for result in results.values():
            observer(TaskEnded(result))
    return Build(
        id=build_id,
        pipeline=pipeline.name,
        state="succeeded",
        tasks=results,
        created_at=row.created_at,
        ended_at=row.ended_at,
    )
