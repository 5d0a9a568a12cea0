"""Pipeline builds in the history: builds, each task's state in them, each task's last good
state, and file hashes cached on (path, size, modification time).

:class:`BuildStore` works on an open :class:`~kiln.store.sql.RunStore` (same database, same
transactions: ``BEGIN IMMEDIATE`` for every write). A build is recorded when it starts, each
task's row changes as the task moves, and the build ends in exactly one state; a build whose
``kiln build`` process died is found by the next one (its owner's pid is gone) and marked
``crashed``, like a run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from kiln.errors import StoreError
from kiln.store.process import current_owner, same_process
from kiln.store.records import Run
from kiln.store.schema import build_tasks, builds, file_hashes, runs, task_states
from kiln.store.sql import RunStore, _row_to_run, _to_utc

#: the states of a build
BUILD_STATES = ("running", "succeeded", "failed", "cancelled", "crashed")
#: the states of a task in a build; ``up_to_date`` and ``succeeded`` count as done
TASK_STATES = (
    "pending",
    "running",
    "succeeded",
    "up_to_date",
    "failed",
    "blocked",
    "cancelled",
    "crashed",
)
DONE_STATES = frozenset({"succeeded", "up_to_date"})

#: rows per statement when looking up many keys at once (SQLite's variable limit is 32766)
_CHUNK = 500


@dataclass
class BuildTaskRow:
    """One task's state in one build, and why."""

    task: str
    state: str
    reason: str | None = None
    run_id: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    position: int = 0

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass
class BuildRow:
    """One recorded build: which pipeline, its state, its options and its tasks."""

    id: str
    project: str
    pipeline: str
    state: str
    created_at: datetime
    ended_at: datetime | None = None
    options: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    owner_pid: int | None = None
    owner_host: str | None = None
    owner_started: float | None = None
    tasks: dict[str, BuildTaskRow] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskStateRow:
    """What a task's last successful run saw and wrote."""

    fingerprint: dict[str, Any]
    run_id: str | None
    build_id: str | None
    updated_at: datetime


class BuildStore:
    """Builds, task states and file hashes in ``store``'s database."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    # -- builds -----------------------------------------------------------------------------

    def create_build(
        self,
        build_id: str,
        *,
        project: str,
        pipeline: str,
        options: Mapping[str, Any],
        tasks: Sequence[str],
    ) -> BuildRow:
        """Record a running build and its tasks (``pending``), in one transaction."""
        pid, host, started = current_owner()
        now = _now()
        row = BuildRow(
            id=build_id,
            project=project,
            pipeline=pipeline,
            state="running",
            created_at=now,
            options=dict(options),
            owner_pid=pid,
            owner_host=host,
            owner_started=started,
            tasks={name: BuildTaskRow(name, "pending", position=i) for i, name in enumerate(tasks)},
        )
        with self.store._write() as conn:
            conn.execute(
                builds.insert(),
                {
                    "id": build_id,
                    "project": project,
                    "pipeline": pipeline,
                    "state": "running",
                    "created_at": now,
                    "options": row.options,
                    "owner_pid": pid,
                    "owner_host": host,
                    "owner_started": started,
                },
            )
            if tasks:
                conn.execute(
                    build_tasks.insert(),
                    [
                        {
                            "build_id": build_id,
                            "task": name,
                            "position": i,
                            "state": "pending",
                            "attempts": 0,
                        }
                        for i, name in enumerate(tasks)
                    ],
                )
        return row

    def update_tasks(self, build_id: str, rows: Iterable[BuildTaskRow]) -> None:
        """Write the current state of some tasks of a build (one statement for all)."""
        values = [
            {
                "_build": build_id,
                "_task": row.task,
                "_v_state": row.state,
                "_v_reason": row.reason,
                "_v_run_id": row.run_id,
                "_v_attempts": row.attempts,
                "_v_started_at": row.started_at,
                "_v_ended_at": row.ended_at,
            }
            for row in rows
        ]
        if not values:
            return
        with self.store._write() as conn:
            conn.execute(_task_update(), values)

    def finish_build(self, build_id: str, state: str, *, reason: str | None = None) -> bool:
        """Give a running build its one final state; ``False`` if it already has one."""
        if state not in BUILD_STATES or state == "running":
            raise ValueError(f"{state!r} is not a final build state")
        with self.store._write() as conn:
            done = conn.execute(
                builds.update()
                .where(builds.c.id == build_id, builds.c.state == "running")
                .values(state=state, reason=reason, ended_at=_now())
            ).rowcount
        return bool(done)

    def get_build(self, build_id: str) -> BuildRow:
        with self.store._read() as conn:
            row = conn.execute(builds.select().where(builds.c.id == build_id)).first()
            if row is None:
                from kiln.errors import RunNotFound

                raise RunNotFound(f"no build {build_id!r} in {self.store.home}")
            return self._with_tasks(conn, row)

    def last_build(self, project: str, pipeline: str) -> BuildRow | None:
        """The newest build of a pipeline, with its tasks (``None`` before the first)."""
        builds_ = self.list_builds(project, pipeline, limit=1)
        return builds_[0] if builds_ else None

    def list_builds(self, project: str, pipeline: str, *, limit: int | None = 20) -> list[BuildRow]:
        """Builds of a pipeline, newest first, with their tasks."""
        query = (
            builds.select()
            .where(builds.c.project == project, builds.c.pipeline == pipeline)
            .order_by(builds.c.created_at.desc(), builds.c.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        with self.store._read() as conn:
            return [self._with_tasks(conn, row) for row in conn.execute(query).all()]

    def _with_tasks(self, conn: sa.Connection, row: sa.Row[Any]) -> BuildRow:
        data = row._mapping
        build = BuildRow(
            id=data["id"],
            project=data["project"],
            pipeline=data["pipeline"],
            state=data["state"],
            created_at=_to_utc(data["created_at"]),
            ended_at=_to_utc(data["ended_at"]) if data["ended_at"] else None,
            options=dict(data["options"] or {}),
            reason=data["reason"],
            owner_pid=data["owner_pid"],
            owner_host=data["owner_host"],
            owner_started=data["owner_started"],
        )
        query = (
            build_tasks.select()
            .where(build_tasks.c.build_id == build.id)
            .order_by(build_tasks.c.position)
        )
        for task in conn.execute(query):
            t = task._mapping
            build.tasks[t["task"]] = BuildTaskRow(
                task=t["task"],
                state=t["state"],
                reason=t["reason"],
                run_id=t["run_id"],
                attempts=t["attempts"],
                started_at=_to_utc(t["started_at"]) if t["started_at"] else None,
                ended_at=_to_utc(t["ended_at"]) if t["ended_at"] else None,
                position=t["position"],
            )
        return build

    def runs(self, run_ids: Iterable[str]) -> dict[str, Run]:
        """Runs by id (those that exist)."""
        ids = sorted(set(run_ids))
        found: dict[str, Run] = {}
        with self.store._read() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                for row in conn.execute(runs.select().where(runs.c.id.in_(chunk))):
                    run = _row_to_run(row)
                    found[run.id] = run
        return found

    def recover_orphan_builds(self) -> list[str]:
        """Mark ``crashed`` the running builds whose ``kiln build`` process has died (on this
        host), and their unfinished tasks; return their ids."""
        if self.store.read_only:
            return []
        _, host, _ = current_owner()
        query = sa.select(builds.c.id, builds.c.owner_pid, builds.c.owner_started).where(
            builds.c.state == "running", builds.c.owner_host == host
        )
        with self.store._read() as conn:
            candidates = conn.execute(query).all()
        recovered = []
        for build_id, pid, started in candidates:
            if pid is None or same_process(pid, started) is not False:
                continue
            reason = f"the kiln build process {pid} on {host} exited before the build ended"
            with self.store._write() as conn:
                done = conn.execute(
                    builds.update()
                    .where(builds.c.id == build_id, builds.c.state == "running")
                    .values(state="crashed", reason=reason, ended_at=_now())
                ).rowcount
                if not done:
                    continue
                conn.execute(
                    build_tasks.update()
                    .where(
                        build_tasks.c.build_id == build_id,
                        build_tasks.c.state.in_(("pending", "running")),
                    )
                    .values(state="crashed", reason=reason)
                )
            recovered.append(build_id)
        return recovered

    # -- task states ------------------------------------------------------------------------

    def task_states(self, project: str, pipeline: str) -> dict[str, TaskStateRow]:
        """Every task's last good state in a pipeline, by task name."""
        query = task_states.select().where(
            task_states.c.project == project, task_states.c.pipeline == pipeline
        )
        with self.store._read() as conn:
            rows = conn.execute(query).all()
        return {
            row.task: TaskStateRow(
                fingerprint=dict(row.fingerprint or {}),
                run_id=row.run_id,
                build_id=row.build_id,
                updated_at=_to_utc(row.updated_at),
            )
            for row in rows
        }

    def save_task_state(
        self,
        project: str,
        pipeline: str,
        task: str,
        fingerprint: Mapping[str, Any],
        *,
        run_id: str | None,
        build_id: str | None,
    ) -> None:
        """Record what a task's successful run saw and wrote (replacing the previous)."""
        key = (
            task_states.c.project == project,
            task_states.c.pipeline == pipeline,
            task_states.c.task == task,
        )
        with self.store._write() as conn:
            conn.execute(task_states.delete().where(*key))
            conn.execute(
                task_states.insert(),
                {
                    "project": project,
                    "pipeline": pipeline,
                    "task": task,
                    "fingerprint": dict(fingerprint),
                    "run_id": run_id,
                    "build_id": build_id,
                    "updated_at": _now(),
                },
            )

    # -- file hashes ------------------------------------------------------------------------

    def file_hashes(self, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
        """``path -> (stamp, sha256)`` for the paths that have a cached hash."""
        keys = sorted(set(paths))
        found: dict[str, tuple[str, str]] = {}
        with self.store._read() as conn:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                query = sa.select(file_hashes).where(file_hashes.c.path.in_(chunk))
                for path, stamp, sha in conn.execute(query):
                    found[path] = (stamp, sha)
        return found

    def save_file_hashes(self, entries: Mapping[str, tuple[str, str]]) -> None:
        """Remember ``path -> (stamp, sha256)`` (replacing older entries)."""
        if not entries:
            return
        keys = sorted(entries)
        try:
            with self.store._write() as conn:
                for start in range(0, len(keys), _CHUNK):
                    chunk = keys[start : start + _CHUNK]
                    conn.execute(file_hashes.delete().where(file_hashes.c.path.in_(chunk)))
                conn.execute(
                    file_hashes.insert(),
                    [{"path": k, "stamp": entries[k][0], "sha256": entries[k][1]} for k in keys],
                )
        except StoreError:
            pass  # a cache: a full disk or a read-only history only costs hashing again


@functools.lru_cache(maxsize=1)
def _task_update() -> sa.Update:
    columns = ("state", "reason", "run_id", "attempts", "started_at", "ended_at")
    return (
        build_tasks.update()
        .where(
            build_tasks.c.build_id == sa.bindparam("_build"),
            build_tasks.c.task == sa.bindparam("_task"),
        )
        .values({c: sa.bindparam(f"_v_{c}") for c in columns})
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)
