"""Pipeline builds in the history: builds, each task's state in them, each task's last good
state, and file hashes cached on (path, size, modification time).

A build is recorded when it starts, each task's row changes as the task moves, and the build
ends in exactly one state; a build whose ``kiln build`` process died is found by the next one
(its owner's pid is gone) and marked ``crashed``, like a run.

The statements are plain SQL with named parameters, run either through the standard
library's ``sqlite3`` on the home's ``kiln.db`` (:meth:`BuildStore.open`: no SQLAlchemy, so
checking a pipeline whose tasks are all up to date starts in a fraction of the time) or through
an open :class:`~kiln.store.sql.RunStore`'s SQLAlchemy engine (any database it supports). The
same rules hold either way: WAL, a busy timeout, every write a ``BEGIN IMMEDIATE``
transaction; a database that is new or behind is upgraded by opening a ``RunStore`` (Alembic).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import StoreError
from kiln.store.litedb import (
    Alchemy,
    Database,
    Params,
    Sqlite,
    chunks,
    from_json,
    schema_version,
    sqlite_file,
    when,
)
from kiln.store.process import current_owner, same_process

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

#: the states of a build; ``queued``: fired by a pipeline schedule, not yet claimed by a
#: scheduler (:meth:`BuildStore.claim_build`)
BUILD_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "crashed")
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

_BUILD_COLUMNS = (
    "id, project, pipeline, state, created_at, ended_at, options, reason, owner_pid, "
    "owner_host, owner_started"
)
_TASK_COLUMNS = "task, state, reason, run_id, attempts, started_at, ended_at, position"


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
    """Builds, task states and file hashes in a Kiln home's database.

    ``BuildStore(store)`` works in an open :class:`~kiln.store.sql.RunStore`'s database;
    :meth:`open` opens the home's SQLite file directly (upgrading it first if needed)."""

    def __init__(self, store: RunStore | None = None, *, _db: Database | None = None) -> None:
        if _db is None:
            if store is None:
                raise ValueError("give a RunStore")
            db_file = sqlite_file(store.url)
            _db = Sqlite(db_file) if db_file is not None else Alchemy(store)
        self._db = _db
        self.home: Path | None = Path(store.home) if store is not None else None

    @classmethod
    def open(cls, home: Path | None = None, *, create: bool = True) -> BuildStore:
        """The builds of the history in ``home`` (default: the project's, see ``find_home``).

        A history at the current schema opens with ``sqlite3`` alone; a new or older one is
        created or upgraded by a :class:`RunStore` first; a history on a database server
        (``KILN_DATABASE_URL`` or ``store: {url: …}``) is reached through a ``RunStore``.
        ``create=False`` raises :class:`~kiln.errors.HomeNotFound` when there is no history
        (nothing is created)."""
        from kiln.store.paths import database_url, default_home
        from kiln.store.version import SCHEMA_HEAD

        folder = (Path(home).expanduser() if home is not None else default_home()).absolute()
        if database_url() is not None:  # the history is on a server: reach it through SQLAlchemy
            from kiln.store.sql import RunStore

            store = cls(_db=Alchemy(RunStore(folder, create=create), owned=True))
            store.home = folder
            return store
        db_file = folder / "kiln.db"
        if db_file.is_file() and schema_version(db_file) == SCHEMA_HEAD:
            store = cls(_db=Sqlite(db_file))
            store.home = folder
            return store
        from kiln.store.sql import RunStore

        with RunStore(folder, create=create):  # creates or upgrades the schema (or refuses)
            pass
        store = cls(_db=Sqlite(db_file))
        store.home = folder
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BuildStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- builds -----------------------------------------------------------------------------

    def create_build(
        self,
        build_id: str,
        *,
        project: str,
        pipeline: str,
        options: Mapping[str, Any],
        tasks: Sequence[str] | Sequence[BuildTaskRow],
        state: str = "running",
        reason: str | None = None,
    ) -> BuildRow:
        """Record a build and its tasks (``pending`` unless rows are given), in one
        transaction. A build recorded in a final ``state`` is finished at once."""
        pid, host, started = current_owner()
        now = _now()
        rows = [t if isinstance(t, BuildTaskRow) else BuildTaskRow(t, "pending") for t in tasks]
        for position, row in enumerate(rows):
            row.position = position
        build = BuildRow(
            id=build_id,
            project=project,
            pipeline=pipeline,
            state=state,
            created_at=now,
            ended_at=now if state != "running" else None,
            options=dict(options),
            reason=reason,
            owner_pid=pid,
            owner_host=host,
            owner_started=started,
            tasks={row.task: row for row in rows},
        )
        insert_build = (
            f"INSERT INTO builds ({_BUILD_COLUMNS}) VALUES (:id, :project, :pipeline, :state, "
            ":created_at, :ended_at, :options, :reason, :owner_pid, :owner_host, :owner_started)"
        )
        insert_tasks = (
            "INSERT INTO build_tasks (build_id, task, position, state, reason, run_id, "
            "attempts, started_at, ended_at) VALUES (:build_id, :task, :position, :state, "
            ":reason, :run_id, :attempts, :started_at, :ended_at)"
        )
        values = {k: v for k, v in build.__dict__.items() if k != "tasks"}
        statements: list[tuple[str, Sequence[Params]]] = [(insert_build, [values])]
        if rows:
            statements.append(
                (insert_tasks, [{"build_id": build_id, **_task_values(row)} for row in rows])
            )
        self._db.write(statements)
        return build

    def claim_build(self, build_id: str) -> bool:
        """Take a ``queued`` build to run it in this process (it becomes ``running``, this
        process its owner, so :meth:`recover_orphan_builds` finds it if the process dies);
        ``False`` when another process took it first, or it is not queued."""
        pid, host, started = current_owner()
        done = self._db.write(
            [
                (
                    "UPDATE builds SET state = 'running', owner_pid = :pid, owner_host = :host, "
                    "owner_started = :started WHERE id = :id AND state = 'queued'",
                    [{"pid": pid, "host": host, "started": started, "id": build_id}],
                )
            ]
        )
        return bool(done)

    def add_tasks(self, build_id: str, tasks: Sequence[str]) -> dict[str, BuildTaskRow]:
        """Record the selected tasks (``pending``) of a claimed build."""
        rows = [BuildTaskRow(name, "pending", position=i) for i, name in enumerate(tasks)]
        if rows:
            self._db.write(
                [
                    (
                        "INSERT INTO build_tasks (build_id, task, position, state, reason, "
                        "run_id, attempts, started_at, ended_at) VALUES (:build_id, :task, "
                        ":position, :state, :reason, :run_id, :attempts, :started_at, :ended_at)",
                        [{"build_id": build_id, **_task_values(row)} for row in rows],
                    )
                ]
            )
        return {row.task: row for row in rows}

    def set_deliveries(self, build_id: str, deliveries: Sequence[Mapping[str, Any]]) -> None:
        """Record what was sent about a build (its failure alert), shown with the build."""
        self._db.write(
            [
                (
                    "UPDATE builds SET deliveries = :deliveries WHERE id = :id",
                    [{"deliveries": [dict(d) for d in deliveries], "id": build_id}],
                )
            ]
        )

    def deliveries(self, build_id: str) -> list[dict[str, Any]]:
        rows = self._db.read("SELECT deliveries FROM builds WHERE id = :id", {"id": build_id})
        found = from_json(rows[0][0]) if rows else None
        return list(found) if found else []

    def update_tasks(self, build_id: str, rows: Iterable[BuildTaskRow]) -> None:
        """Write the current state of some tasks of a build (one statement for all)."""
        statements = _task_statements(build_id, list(rows))
        if statements:
            self._db.write(statements)

    def save(
        self,
        build_id: str,
        rows: Iterable[BuildTaskRow] = (),
        *,
        states: Iterable[TaskState] = (),
        hashes: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """In one transaction: some tasks' rows of a build, new last good states of tasks,
        and file hashes to remember (what a task's end writes)."""
        statements = _task_statements(build_id, list(rows))
        for state in states:
            statements += _state_statements(state)
        statements += _hash_statements(hashes or {})
        if statements:
            self._db.write(statements)

    def finish_build(self, build_id: str, state: str, *, reason: str | None = None) -> bool:
        """Give a running build its one final state; ``False`` if it already has one."""
        if state not in BUILD_STATES or state == "running":
            raise ValueError(f"{state!r} is not a final build state")
        done = self._db.write(
            [
                (
                    "UPDATE builds SET state = :state, reason = :reason, ended_at = :now "
                    "WHERE id = :id AND state = 'running'",
                    [{"state": state, "reason": reason, "now": _now(), "id": build_id}],
                )
            ]
        )
        return bool(done)

    def get_build(self, build_id: str) -> BuildRow:
        rows = self._db.read(
            f"SELECT {_BUILD_COLUMNS} FROM builds WHERE id = :id", {"id": build_id}
        )
        if not rows:
            from kiln.errors import RunNotFound

            raise RunNotFound(f"no build {build_id!r} in {self.home}")
        return self._with_tasks(rows[0])

    def last_build(self, project: str, pipeline: str) -> BuildRow | None:
        """The newest build of a pipeline, with its tasks (``None`` before the first)."""
        found = self.list_builds(project, pipeline, limit=1)
        return found[0] if found else None

    def list_builds(self, project: str, pipeline: str, *, limit: int = 20) -> list[BuildRow]:
        """Builds of a pipeline, newest first, with their tasks."""
        rows = self._db.read(
            f"SELECT {_BUILD_COLUMNS} FROM builds WHERE project = :project AND "
            "pipeline = :pipeline ORDER BY created_at DESC, id DESC LIMIT :limit",
            {"project": project, "pipeline": pipeline, "limit": limit},
        )
        return [self._with_tasks(row) for row in rows]

    def _with_tasks(self, row: tuple[Any, ...]) -> BuildRow:
        (id_, project, pipeline, state, created, ended, options, reason, pid, host, started) = row
        build = BuildRow(
            id=id_,
            project=project,
            pipeline=pipeline,
            state=state,
            created_at=when(created) or _now(),
            ended_at=when(ended),
            options=from_json(options) or {},
            reason=reason,
            owner_pid=pid,
            owner_host=host,
            owner_started=started,
        )
        tasks = self._db.read(
            f"SELECT {_TASK_COLUMNS} FROM build_tasks WHERE build_id = :id ORDER BY position",
            {"id": id_},
        )
        for task, t_state, t_reason, run_id, attempts, t_started, t_ended, position in tasks:
            build.tasks[task] = BuildTaskRow(
                task,
                t_state,
                t_reason,
                run_id,
                attempts,
                when(t_started),
                when(t_ended),
                position,
            )
        return build

    def run_durations(self, run_ids: Iterable[str]) -> dict[str, float | None]:
        """How long each of these runs took (those that exist)."""
        out: dict[str, float | None] = {}
        for chunk in chunks(sorted(set(run_ids))):
            names = {f"r{i}": run_id for i, run_id in enumerate(chunk)}
            sql = (
                "SELECT id, started_at, ended_at FROM runs WHERE id IN "
                f"({', '.join(':' + k for k in names)})"
            )
            for run_id, started, ended in self._db.read(sql, names):
                begin, end = when(started), when(ended)
                out[run_id] = (end - begin).total_seconds() if begin and end else None
        return out

    def recover_orphan_builds(self) -> list[str]:
        """Mark ``crashed`` the running builds whose ``kiln build`` process has died (on this
        host), and their unfinished tasks; return their ids."""
        _, host, _ = current_owner()
        candidates = self._db.read(
            "SELECT id, owner_pid, owner_started FROM builds WHERE state = 'running' AND "
            "owner_host = :host",
            {"host": host},
        )
        recovered = []
        for build_id, pid, started in candidates:
            if pid is None or same_process(pid, started) is not False:
                continue
            reason = f"the kiln build process {pid} on {host} exited before the build ended"
            done = self._db.write(
                [
                    (
                        "UPDATE builds SET state = 'crashed', reason = :reason, ended_at = :now "
                        "WHERE id = :id AND state = 'running'",
                        [{"reason": reason, "now": _now(), "id": build_id}],
                    ),
                    (
                        "UPDATE build_tasks SET state = 'crashed', reason = :reason WHERE "
                        "build_id = :id AND state IN ('pending', 'running')",
                        [{"reason": reason, "id": build_id}],
                    ),
                ]
            )
            if done:
                recovered.append(build_id)
        return recovered

    # -- task states ------------------------------------------------------------------------

    def task_states(self, project: str, pipeline: str) -> dict[str, TaskStateRow]:
        """Every task's last good state in a pipeline, by task name."""
        rows = self._db.read(
            "SELECT task, fingerprint, run_id, build_id, updated_at FROM task_states "
            "WHERE project = :project AND pipeline = :pipeline",
            {"project": project, "pipeline": pipeline},
        )
        return {
            task: TaskStateRow(
                from_json(fingerprint) or {}, run_id, build_id, when(updated) or _now()
            )
            for task, fingerprint, run_id, build_id, updated in rows
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
        state = TaskState(project, pipeline, task, dict(fingerprint), run_id, build_id)
        self._db.write(_state_statements(state))

    # -- file hashes ------------------------------------------------------------------------

    def file_hashes(self, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
        """``path -> (stamp, sha256)`` for the paths that have a cached hash."""
        found: dict[str, tuple[str, str]] = {}
        for chunk in chunks(sorted(set(paths))):
            names = {f"p{i}": path for i, path in enumerate(chunk)}
            sql = (
                "SELECT path, stamp, sha256 FROM file_hashes WHERE path IN "
                f"({', '.join(':' + k for k in names)})"
            )
            for path, stamp, sha in self._db.read(sql, names):
                found[path] = (stamp, sha)
        return found

    def save_file_hashes(self, entries: Mapping[str, tuple[str, str]]) -> None:
        """Remember ``path -> (stamp, sha256)`` (replacing older entries)."""
        statements = _hash_statements(entries)
        if statements:
            # a cache: a full disk or a read-only history only costs hashing again
            with contextlib.suppress(StoreError):
                self._db.write(statements)


@dataclass(frozen=True)
class TaskState:
    """A task's new last good state, to be saved."""

    project: str
    pipeline: str
    task: str
    fingerprint: dict[str, Any]
    run_id: str | None
    build_id: str | None


Statements = list[tuple[str, Sequence[Params]]]


def _task_statements(build_id: str, rows: Sequence[BuildTaskRow]) -> Statements:
    if not rows:
        return []
    return [
        (
            "UPDATE build_tasks SET state = :state, reason = :reason, run_id = :run_id, "
            "attempts = :attempts, started_at = :started_at, ended_at = :ended_at "
            "WHERE build_id = :build_id AND task = :task",
            [{"build_id": build_id, **_task_values(row)} for row in rows],
        )
    ]


def _state_statements(state: TaskState) -> Statements:
    key = {"project": state.project, "pipeline": state.pipeline, "task": state.task}
    return [
        (
            "DELETE FROM task_states WHERE project = :project AND pipeline = :pipeline "
            "AND task = :task",
            [key],
        ),
        (
            "INSERT INTO task_states (project, pipeline, task, fingerprint, run_id, build_id, "
            "updated_at) VALUES (:project, :pipeline, :task, :fingerprint, :run_id, :build_id, "
            ":updated_at)",
            [
                {
                    **key,
                    "fingerprint": state.fingerprint,
                    "run_id": state.run_id,
                    "build_id": state.build_id,
                    "updated_at": _now(),
                }
            ],
        ),
    ]


def _hash_statements(entries: Mapping[str, tuple[str, str]]) -> Statements:
    if not entries:
        return []
    rows = [{"path": k, "stamp": v[0], "sha256": v[1]} for k, v in sorted(entries.items())]
    return [
        ("DELETE FROM file_hashes WHERE path = :path", [{"path": r["path"]} for r in rows]),
        ("INSERT INTO file_hashes (path, stamp, sha256) VALUES (:path, :stamp, :sha256)", rows),
    ]


def _task_values(row: BuildTaskRow) -> dict[str, Any]:
    return {
        "task": row.task,
        "position": row.position,
        "state": row.state,
        "reason": row.reason,
        "run_id": row.run_id,
        "attempts": row.attempts,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
    }


def _now() -> datetime:
    return datetime.now(timezone.utc)
