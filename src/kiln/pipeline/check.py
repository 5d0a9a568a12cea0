"""Which tasks are up to date, and why the others are not: ``kiln status`` and the plan of a
build (``kiln build --dry-run``), without running anything.

A task is compared with its last good state (:mod:`kiln.pipeline.fingerprint`) in dependency
order: a task whose upstream task is outdated is outdated too ("upstream clean is outdated"),
since that task will run first and may change what this one reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError
from kiln.pipeline.fingerprint import Check, FileHasher, compare
from kiln.pipeline.result import DONE, Status, TaskStatus

if TYPE_CHECKING:
    from kiln.pipeline.model import Pipeline, Task
    from kiln.store.builds import BuildRow, BuildStore, TaskStateRow


@dataclass(frozen=True)
class BuildOptions:
    """What ``kiln build`` was asked to do (the CLI's flags, :func:`kiln.build`'s arguments)."""

    #: tasks to build (with everything they depend on); none: the whole pipeline
    targets: tuple[str, ...] = ()
    #: run the selected tasks even when up to date
    force: bool = False
    #: finish the last build: run only what failed or never ran in it
    resume: bool = False
    #: tasks running at once
    jobs: int = 1
    #: ``local`` (this machine) or ``dask``
    executor: str = "local"
    #: the Dask scheduler's address (``tcp://HOST:PORT``); none: a local Dask cluster
    scheduler: str | None = None
    #: tags every task's run carries (a scheduled build's schedule and slot)
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise UsageError(f"jobs must be at least 1, got {self.jobs}")
        if self.executor not in ("local", "dask"):
            raise UsageError(f"executor: expected local or dask; got {self.executor!r}")
        if self.scheduler is not None and self.executor != "dask":
            raise UsageError("a scheduler address is for the dask executor (executor='dask')")
        if self.resume and (self.force or self.targets):
            raise UsageError("resume repeats the last build's selection: drop force and targets")

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "force": self.force,
            "resume": self.resume,
            "jobs": self.jobs,
            "executor": self.executor,
            "scheduler": self.scheduler,
            **({"tags": dict(self.tags)} if self.tags else {}),
        }


class Checker:
    """Compares a pipeline's tasks with their last good states (one status check or build)."""

    def __init__(self, pipeline: Pipeline, builds: BuildStore | None) -> None:
        from kiln.project import run_defaults

        self.pipeline = pipeline
        self.builds = builds
        self.states: dict[str, TaskStateRow] = (
            builds.task_states(pipeline.key, pipeline.name) if builds is not None else {}
        )
        self.hasher = FileHasher(builds)
        self.engine_default = run_defaults(pipeline.project).get("engine")
        self.hasher.preload(
            location
            for task in pipeline.tasks.values()
            for location in (str(task.notebook), *task.products.values(), *task.inputs)
        )

    def recorded(self, name: str) -> dict[str, Any] | None:
        state = self.states.get(name)
        return state.fingerprint if state is not None else None

    def recorded_products(self, name: str) -> dict[str, str] | None:
        fingerprint = self.recorded(name)
        if fingerprint is None:
            return None
        return {k: v["sha256"] for k, v in dict(fingerprint.get("products", {})).items()}

    def check(
        self,
        task: Task,
        upstream_now: Mapping[str, Mapping[str, str] | None],
        ran: Iterable[str] = (),
    ) -> Check:
        return compare(
            task,
            self.recorded(task.name),
            hasher=self.hasher,
            root=self.pipeline.root,
            engine_default=self.engine_default,
            upstream_now=upstream_now,
            upstream_ran=ran,
        )


def selection(
    pipeline: Pipeline, options: BuildOptions, last: BuildRow | None
) -> tuple[list[str], dict[str, str]]:
    """The tasks a build runs or checks, in order, and (for ``resume``) the ones the last
    build finished, with why."""
    if not options.resume:
        return pipeline.select(options.targets), {}
    if last is None:
        raise UsageError(f"nothing to resume: pipeline {pipeline.name} was never built")
    names = [name for name in pipeline.tasks if name in last.tasks]
    if not names:
        raise UsageError(
            f"nothing to resume: build {last.id} ran none of pipeline {pipeline.name}'s "
            "current tasks"
        )
    # the last build's tasks and what they need (the pipeline may have grown since)
    names = pipeline.select(names)
    done = {
        name: f"done in build {last.id}"
        for name in names
        if name in last.tasks and last.tasks[name].state in DONE
    }
    return names, done


def resume_reason(last: BuildRow | None, name: str) -> str:
    if last is None or name not in last.tasks:
        return "not in the last build"
    row = last.tasks[name]
    state = row.state.replace("_", " ")
    return f"{state} in build {last.id}" + (f" ({row.reason})" if row.reason else "")


def plan(
    pipeline: Pipeline, builds: BuildStore | None, options: BuildOptions = BuildOptions()
) -> Status:
    """Each selected task: up to date or not, why, and what a build would do with it."""
    checker = Checker(pipeline, builds)
    last = (
        builds.last_build(pipeline.key, pipeline.name)
        if builds is not None and options.resume
        else None
    )
    names, done = selection(pipeline, options, last)
    now: dict[str, dict[str, str] | None] = {}
    out: list[TaskStatus] = []
    for name in names:
        task = pipeline.tasks[name]
        state = checker.states.get(name)
        status = TaskStatus(
            name,
            up_to_date=False,
            reasons=[],
            last_run_id=state.run_id if state is not None else None,
            last_success=state.updated_at if state is not None else None,
        )
        if name in done:
            status.up_to_date, status.action, status.reasons = True, "done", [done[name]]
            now[name] = checker.recorded_products(name)
        elif options.resume:
            status.reasons = [resume_reason(last, name)]
            now[name] = None
        else:
            check = checker.check(task, {u: now.get(u) for u in task.upstream_tasks})
            status.up_to_date = check.up_to_date
            if check.up_to_date and not options.force:
                status.action = "skip"
                now[name] = checker.recorded_products(name)
            else:
                status.reasons = check.reasons or ["forced"]
                now[name] = None
        out.append(status)
    checker.hasher.flush()  # a cache: the next check reads only what changed
    return Status(pipeline.name, out)


def task_list(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
