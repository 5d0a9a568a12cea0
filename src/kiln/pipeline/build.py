"""``run_build``: a build from start to end, without paying for what it does not need.

The plan comes first (:func:`kiln.pipeline.check.plan`, the standard library's ``sqlite3``
on the history): when every selected task is up to date, the build is recorded as such and
nothing else is loaded (no SQLAlchemy, no runner, no event loop), so checking a big pipeline
that needs nothing costs a fraction of a second. Otherwise the build runs in an event loop
(:func:`kiln.pipeline.execute.abuild`), every task checked again as its upstream tasks end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kiln.pipeline.check import BuildOptions, plan
from kiln.pipeline.result import Build, BuildObserver, BuildStarted, TaskEnded, TaskResult

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
) -> Build:
    """Build ``pipeline``, recording in ``store`` (or the history in ``home``, default: the
    project's); an ``executor`` given here is closed with the build."""
    from kiln.store.builds import BuildStore

    options = options if options is not None else BuildOptions()
    builds = BuildStore(store) if store is not None else BuildStore.open(home)
    try:
        builds.recover_orphan_builds()
        if not options.force and executor is None:
            done = _nothing_to_run(pipeline, builds, options, observer)
            if done is not None:
                return done
        if store is not None:
            return _in_loop(pipeline, store, builds, options, executor, observer)
        from kiln.store.sql import RunStore

        with RunStore(builds.home) as opened:
            return _in_loop(pipeline, opened, builds, options, executor, observer)
    finally:
        builds.close()


def _in_loop(
    pipeline: Pipeline,
    store: RunStore,
    builds: BuildStore,
    options: BuildOptions,
    executor: Executor | None,
    observer: BuildObserver | None,
) -> Build:
    import asyncio

    from kiln.pipeline.execute import abuild

    async def once() -> Build:
        try:
            return await abuild(
                pipeline,
                store=store,
                builds=builds,
                options=options,
                executor=executor,
                observer=observer,
            )
        finally:
            if executor is not None:
                await executor.close()

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
