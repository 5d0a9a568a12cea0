"""The run history database (SQLAlchemy Core) and each run's artefact folder.

Everything that starts a run records it here first, and every run ends here in exactly one
terminal state. The default database is SQLite in the Kiln home folder; a team points
``KILN_DATABASE_URL`` (or ``store: {url: ...}`` in ``kiln.yaml``) at PostgreSQL instead. Both
run the same statements and the same migrations, and give back the same values; a run row's
own writes (and the queue's claim on PostgreSQL) take a shorter path of their own, one round
trip each (:mod:`kiln.store.hotrow`, :mod:`kiln.store.pgrow`), tested to store the same rows.

Concurrency: SQLite writers take turns (``BEGIN IMMEDIATE``, :mod:`kiln.store.engine`); on
PostgreSQL, row locks under ``READ COMMITTED`` do the same job, and every conditional
``UPDATE`` here re-checks its condition on the row it locked. Values go in and come out the
same on both (:mod:`kiln.store.values`).

Processes and threads: connections are pooled (a small pool, checked before use on
PostgreSQL); a store used in a forked child drops the inherited pool before its first query,
never touching the parent's connections. Still, prefer opening the store after the fork, or
call :meth:`RunStore.close` before forking.

SQLAlchemy is imported when first needed: a SQLite file already at the schema's head is
opened through ``sqlite3`` and a run's own statements stay there (:mod:`kiln.store.hotrow`),
so a ``kiln run`` never loads it; any other query makes the engine on first use. A new,
outdated, read-only or in-memory SQLite database, and PostgreSQL, open through SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from kiln.errors import HomeNotFound, HomeNotWritable, RunNotFound, StoreError
from kiln.store.hotrow import HotRows, StateRow
from kiln.store.litedb import sqlite_read_only_url, sqlite_url
from kiln.store.opening import migrate_store, open_engine, open_lite
from kiln.store.paths import check_run_id, database_url, default_home
from kiln.store.records import TERMINAL_STATES, Run, RunState, changed_run
from kiln.store.values import (
    RUN_FIELDS,
    TERMINAL,
    NotJson,
    check_state,
    column_values,
    now,
    row_to_run,
    to_utc,
)

if TYPE_CHECKING:
    import sqlalchemy as sa

    from kiln.store.pgrow import PgRows

__all__ = ["RunStore", "migrate_store"]

_T = TypeVar("_T")
_log = logging.getLogger("kiln.store")

#: how long a run's write waits for an unreachable PostgreSQL server (seconds)
PATIENCE = 120.0


def _unreachable(exc: BaseException | None) -> bool:
    """The database could not be reached or the connection broke (not a refused statement)."""
    import sqlalchemy as sa

    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))


def _newest_first() -> tuple[sa.UnaryExpression[Any], ...]:
    from kiln.store.schema import runs

    return (runs.c.created_at.desc(), runs.c.id.desc())


class RunStore:
    """The history of every run: one row per run and one folder per run under ``runs/``.

    ::

        with RunStore() as store:              # $KILN_HOME, or ./.kiln
            run = store.create_run(Run(id=new_run_id(), notebook_path="report.ipynb",
                                       notebook_sha256=digest, state="queued"))
            store.update_run(run.id, state="running", started_at=now)
            store.finish_run(run.id, "succeeded")
            store.get_run("last").state        # 'succeeded'

    ``home`` holds ``kiln.db`` and ``runs/``. ``url`` puts the database elsewhere (SQLite or
    PostgreSQL; default: ``$KILN_DATABASE_URL``, else ``store.url`` of ``kiln.yaml``) while
    run folders stay under ``home``. Opening creates or upgrades a SQLite database as needed
    and sets up an empty PostgreSQL one; a PostgreSQL database that is behind is refused
    (:class:`~kiln.errors.StoreOutdated`) until ``kiln store migrate`` upgrades it. With
    ``create=False`` nothing is created: a missing history is :class:`HomeNotFound`.
    """

    def __init__(
        self, home: Path | str | None = None, *, url: str | None = None, create: bool = True
    ) -> None:
        self.home = (Path(home).expanduser() if home is not None else default_home()).absolute()
        self.runs_dir = self.home / "runs"
        if url is None:
            url = database_url()
        if not create and url is None and not (self.home / "kiln.db").is_file():
            raise HomeNotFound(
                f"no Kiln history in {self.home}: nothing has run here yet (runs are recorded "
                "in $KILN_HOME, else .kiln beside the nearest kiln.yaml, else ./.kiln)",
                home=self.home,
            )
        #: a history on a read-only file system (or folder) can be read, never written
        self.read_only = url is None and self.home.is_dir() and not os.access(self.home, os.W_OK)
        if self.read_only and create:
            raise HomeNotWritable(
                f"cannot record a run in {self.home}: it is read-only; set KILN_HOME or --home "
                "to a folder you can write",
                home=self.home,
            )
        if create or url is None:  # a read-only look at a shared database makes no folder
            try:
                self.runs_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the Kiln home folder {self.home}: {exc}") from exc
        if url is not None:
            self.url = url
        elif self.read_only:  # no -wal/-shm can be made: read the file as it is
            self.url = sqlite_read_only_url(self.home / "kiln.db")
        else:
            self.url = sqlite_url(self.home / "kiln.db")
        self._pid = os.getpid()
        #: SQLAlchemy's engine (:attr:`_engine`), made on first use when opened without it
        self._alchemy: sa.Engine | None = None
        self._engine_lock = threading.Lock()
        #: the run row's own writes (and PostgreSQL's claim), one round trip each
        self._hot: HotRows | PgRows | None = None
        #: how long a run's write waits for an unreachable PostgreSQL server (seconds)
        self.patience = PATIENCE
        hot = None if self.read_only else open_lite(self.url)
        if hot is not None:
            self._hot, self._where = hot, hot.where
        else:
            self._alchemy, self._where, self._hot = open_engine(
                self.url,
                self.home,
                create=create,
                read_only=self.read_only,
                live_engine=self._live_engine,
            )

    @property
    def _engine(self) -> sa.Engine:
        """SQLAlchemy's engine for the database, made (and SQLAlchemy imported) on first use
        when the store opened without it."""
        engine = self._alchemy
        if engine is None:
            with self._engine_lock:
                if self._alchemy is None:
                    from kiln.store.engine import make_engine

                    self._alchemy = make_engine(self.url)
                    self._pid = os.getpid()
                engine = self._alchemy
        return engine

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        if self._alchemy is None:  # opened without SQLAlchemy: only a SQLite file is
            return "sqlite"
        return str(self._alchemy.dialect.name)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release database connections. Call before ``fork`` when the child won't use them."""
        if self._hot is not None:
            self._hot.close()
        if self._alchemy is not None:
            self._alchemy.dispose()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.home)!r}, url={self._where!r})"

    # -- writing ---------------------------------------------------------------------------

    def create_run(self, run: Run) -> Run:
        """Commit a new run row and create its folder; return the run as stored.

        ``created_at`` defaults to now (UTC) and ``run_dir`` to ``<home>/runs/<id>``.
        """
        check_run_id(run.id)
        check_state(run.state)
        given = run.__dict__
        fields = {name: given[name] for name in RUN_FIELDS}
        if run.run_dir is None:
            folder = self.run_folder(run.id)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the run folder {folder}: {exc}") from exc
            fields["run_dir"] = str(folder)
        if run.created_at is None:
            fields["created_at"] = now()
        values = column_values(fields)
        if self._hot is not None:
            self._hot.insert(values)
        else:
            self._insert(run.id, values)
        # the run as stored, in one copy (a Run has ~45 fields: each copy is a cost per run)
        changed = {"run_dir": fields["run_dir"]} if run.run_dir is None else {}
        for name in ("created_at", "started_at", "ended_at"):
            when = fields[name]
            changed[name] = to_utc(when) if when else None
        return changed_run(run, **changed)

    def _insert(self, run_id: str, values: dict[str, Any]) -> None:
        import sqlalchemy as sa

        from kiln.store.schema import runs

        with self._write() as conn:
            try:
                # parameters, not .values(): one cached compiled INSERT for every run
                conn.execute(runs.insert(), values)
            except sa.exc.IntegrityError as exc:
                raise StoreError(f"run {run_id} already exists in {self._where}") from exc

    def update_run(self, run_id: str, **fields: Any) -> None:  # Any: values of Run's fields
        """Set some fields of a run (any :class:`Run` field but ``id``) and commit.

        ``state`` may only move between non-terminal states: a run ends through
        :meth:`finish_run`, and a finished run's state never changes again (``StoreError``).
        """
        if "id" in fields:
            raise ValueError("a run's id cannot change")
        state = fields.get("state")
        if "state" in fields:
            check_state(fields["state"])
            if state in TERMINAL_STATES:
                raise ValueError(f"state {state!r} is terminal: end the run with finish_run()")
        values = column_values(fields)
        if not values:
            self.get_run_exact(run_id)
            return

        def write() -> Any:  # the run's state, or None when it was written
            if self._hot is not None:
                done, state = self._hot.update(run_id, values, only_active="state" in values)
                return None if done else (False if state is None else StateRow(state))
            import sqlalchemy as sa

            from kiln.store.schema import runs

            statement = _update(tuple(values), only_active="state" in values)
            with self._write() as conn:
                if conn.execute(statement, {**_bound(values), "_run_id": run_id}).rowcount:
                    return None
                row = conn.execute(sa.select(runs.c.state).where(runs.c.id == run_id)).first()
                return row if row is not None else False

        current = self._patiently(write)
        if current is None:
            return
        if current is False:
            raise RunNotFound(f"no run {run_id!r} in {self._where}")
        raise StoreError(f"run {run_id} already finished ({current.state}); it cannot be {state}")

    def finish_run(
        self,
        run_id: str,
        state: RunState | str,
        *,
        reason: str | None = None,
        error: Mapping[str, Any] | None = None,
        ended_at: datetime | None = None,
        **fields: Any,  # Any: values of Run's fields
    ) -> bool:
        """Give a run its one terminal state; ``False`` (and no change) if it already has one.

        ``ended_at`` defaults to now; ``reason`` and ``error`` are only written when given.
        Other keyword arguments are fields to set in the same transaction.
        """
        check_state(state)
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state!r} is not a terminal state ({', '.join(TERMINAL)})")
        if "state" in fields:
            raise ValueError("pass the state as finish_run's second argument")
        fields["state"] = state
        fields["ended_at"] = ended_at if ended_at is not None else now()
        if reason is not None:
            fields["reason"] = reason
        if error is not None:
            fields["error"] = dict(error)
        values = column_values(fields)
        return self._patiently(lambda: self._end(run_id, values))

    def _patiently(self, write: Callable[[], _T]) -> _T:
        """Do a run's write; while a PostgreSQL server cannot be reached (a restart, the
        network), try again for up to :attr:`patience` seconds: a run that ends meanwhile
        still records its end when the database returns. Its writes are idempotent (a run's
        end is written once: a repeat finds it ended)."""
        deadline = None
        pause = 0.2
        while True:
            try:
                return write()
            except StoreError as exc:
                if self.backend != "postgresql" or not _unreachable(exc.__cause__):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.patience
                    _log.warning("%s; trying again for %gs", exc.message, self.patience)
                if now >= deadline:
                    raise
                time.sleep(min(pause, deadline - now))
                pause = min(pause * 2, 5.0)

    def _end(self, run_id: str, values: dict[str, Any], *only_if: sa.ColumnElement[bool]) -> bool:
        """Write a terminal state unless the run already has one (or ``only_if`` fails)."""
        if self._hot is not None and not only_if:  # every run's end
            ended, state = self._hot.update(run_id, values, only_active=True)
            if not ended and state is None:
                raise RunNotFound(f"no run {run_id!r} in {self._where}")
            return ended
        import sqlalchemy as sa

        from kiln.store.schema import runs

        with self._write() as conn:
            if only_if:  # recovery, rare: a statement of its own
                where = sa.and_(runs.c.id == run_id, runs.c.state.not_in(TERMINAL), *only_if)
                done = conn.execute(runs.update().where(where).values(values)).rowcount
            else:  # every run's end: a statement compiled once per set of columns
                statement = _update(tuple(values), only_active=True)
                done = conn.execute(statement, {**_bound(values), "_run_id": run_id}).rowcount
            if done:
                return True
            exists = conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first()
        if exists is None:
            raise RunNotFound(f"no run {run_id!r} in {self._where}")
        return False

    # -- reading ---------------------------------------------------------------------------

    def get_run_exact(self, run_id: str) -> Run:
        """The run with exactly this id (no prefixes, no ``last``)."""
        from kiln.store.schema import runs

        with self._read() as conn:
            row = conn.execute(runs.select().where(runs.c.id == run_id)).first()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self._where}")
        return row_to_run(row)

    def get_run(self, run_id_or_prefix: str) -> Run:
        """A run by id, by a prefix that only one run id starts with, or ``"last"`` (newest)."""
        key = run_id_or_prefix.strip()
        if not key:
            raise RunNotFound("no run id given")
        import sqlalchemy as sa

        from kiln.store.schema import runs

        with self._read() as conn:
            if key == "last":
                row = conn.execute(runs.select().order_by(*_newest_first()).limit(1)).first()
                if row is None:
                    raise RunNotFound(f"no run 'last': no runs are recorded in {self._where}")
                return row_to_run(row)
            row = conn.execute(runs.select().where(runs.c.id == key)).first()
            if row is not None:
                return row_to_run(row)
            # a range of the primary key, not LIKE: SQLite's LIKE ignores case and so cannot
            # use the index (a scan of every run: 10 ms per 100,000); ids are ASCII, so the
            # range holds exactly the ids that start with the key
            query = sa.select(runs.c.id).where(runs.c.id >= key, runs.c.id < key + "\uffff")
            matches = conn.execute(query.order_by(runs.c.id)).scalars()
            ids = [found for found in matches if found.startswith(key)]
            if len(ids) == 1:
                row = conn.execute(runs.select().where(runs.c.id == ids[0])).one()
                return row_to_run(row)
        if not ids:
            raise RunNotFound(f"no run with id or id prefix {key!r} in {self._where}")
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        raise RunNotFound(
            f"run id prefix {key!r} is ambiguous: it matches {len(ids)} runs ({shown}); "
            "give more characters"
        )

    def list_runs(
        self,
        *,
        notebook: str | None = None,
        state: RunState | str | Sequence[RunState | str] | None = None,
        limit: int | None = 50,
        since: datetime | None = None,
        parameters: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[Run]:
        """Runs, newest first.

        ``notebook`` matches the stored path as given, as an absolute path, or (for a bare file
        name such as ``report.ipynb``) the file name in any folder. ``state`` is one state or
        several; ``since`` keeps runs created at or after that time; ``parameters`` keeps runs
        whose parameters hold these values (JSON equality), ``tags`` runs with these tags;
        ``limit=None`` is all.
        """
        from kiln.store.filters import notebook_filter, parameter_equals, tag_equals
        from kiln.store.schema import runs

        query = runs.select()
        if notebook is not None:
            query = query.where(notebook_filter(notebook))
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            for one in states:
                check_state(one)
            query = query.where(runs.c.state.in_([RunState(one).value for one in states]))
        if since is not None:
            query = query.where(runs.c.created_at >= to_utc(since))
        for name, value in (parameters or {}).items():
            query = query.where(parameter_equals(name, value, self.backend))
        for key, text in (tags or {}).items():
            query = query.where(tag_equals(key, str(text), self.backend))
        query = query.order_by(*_newest_first())
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0 or None, not {limit}")
            query = query.limit(limit)
        with self._read() as conn:
            return [row_to_run(row) for row in conn.execute(query)]

    def delete_run(self, run_id: str) -> Run:
        """Remove a finished run: its row, then its folder (and the output notebook it wrote
        there). A queued or running run cannot be removed (``StoreError``)."""
        from kiln.store.schema import runs

        run = self.get_run_exact(run_id)
        with self._write() as conn:
            deleted = conn.execute(
                runs.delete().where(runs.c.id == run_id, runs.c.state.in_(TERMINAL))
            ).rowcount
        if not deleted:
            raise StoreError(f"run {run_id} is {run.state}: only a finished run can be removed")
        if run.run_dir:
            from kiln.store.artifacts import is_remote, remove_run_objects

            if is_remote(run.run_dir):  # its objects in the artefact store
                remove_run_objects(run.run_dir)
                return run
            folder = Path(run.run_dir)
            if folder.parent == self.runs_dir:  # never outside this home's run folders
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
        return run

    def run_folder(self, run_id: str) -> Path:
        """The artefact folder of a run: ``<home>/runs/<id>`` (not created here)."""
        return self.runs_dir / check_run_id(run_id)

    # -- recovery --------------------------------------------------------------------------

    def recover_orphans(self) -> list[Run]:
        """Mark ``crashed`` the queued/running runs whose Kiln process has died; return them.

        Only runs owned by a process on this host are judged. The owner counts as gone when its
        pid no longer exists, or now belongs to a process that started at another time (the pid
        was reused). A leftover kernel of such a run is killed. Runs with no recorded owner,
        owned elsewhere, or whose owner cannot be judged are left alone.
        """
        if self.read_only:
            return []  # nothing can be marked; the next writable open will
        from kiln.store.recovery import recover_orphans

        return recover_orphans(self)

    # -- plumbing --------------------------------------------------------------------------

    def _live_engine(self) -> sa.Engine:
        if os.getpid() != self._pid:
            # Inherited across fork: never touch the parent's pooled connections.
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        return self._engine

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        import sqlalchemy as sa

        from kiln.store.migrate import problem

        try:
            with self._live_engine().begin() as conn:
                yield conn
        except sa.exc.StatementError as exc:
            if isinstance(exc.orig, (TypeError, ValueError)):
                raise StoreError(f"cannot store the value: {exc.orig}") from exc
            raise StoreError(f"runs database {self._where}: {problem(exc)}") from exc
        except NotJson as exc:
            raise StoreError(f"cannot store the value: {exc}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"runs database {self._where}: {problem(exc)}") from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A read-only snapshot on SQLite (a deferred ``BEGIN``: it never waits for writers).
        On PostgreSQL, autocommit: each statement took a snapshot of its own under READ
        COMMITTED anyway; this saves ``BEGIN`` and ``ROLLBACK`` (two round trips, and psycopg
        drops its prepared statements at a ``ROLLBACK``)."""
        import sqlalchemy as sa

        from kiln.store.migrate import problem

        try:
            with self._live_engine().connect() as conn:
                conn.execution_options(kiln_read_only=True)
                if self.backend == "postgresql":
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"runs database {self._where}: {problem(exc)}") from exc


@functools.lru_cache(maxsize=64)
def _update(columns: tuple[str, ...], *, only_active: bool) -> sa.Update:
    """``UPDATE runs SET <columns> WHERE id = :_run_id [AND state is not terminal]``, built
    once per set of columns: SQLAlchemy then reuses its compiled form (a run's writes cost
    the database's time, not the statement building's, about a third as much)."""
    import sqlalchemy as sa

    from kiln.store.schema import runs

    where = runs.c.id == sa.bindparam("_run_id")
    if only_active:
        where = where & runs.c.state.not_in(TERMINAL)
    return runs.update().where(where).values({c: sa.bindparam(f"_v_{c}") for c in columns})


def _bound(values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"_v_{c}": v for c, v in values.items()}
