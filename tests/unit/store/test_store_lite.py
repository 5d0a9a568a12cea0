"""A SQLite history already at the schema's head opens without SQLAlchemy (kiln.store.opening),
and what a run does there through ``sqlite3`` stores and reads what SQLAlchemy does.

SQLite only: PostgreSQL always opens through SQLAlchemy (its suite runs on both backends).
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kiln.errors import StoreError
from kiln.provenance import Environment
from kiln.store import Run, RunStore
from kiln.store.columns import ENVIRONMENTS, RUNS, Column
from kiln.store.environments import _stored, get_environments, save_environment
from kiln.store.hotrow import HotRows
from kiln.store.litedb import sqlite_read_only_url, sqlite_url
from kiln.store.recovery import owned_here
from kiln.store.schema import SCHEMA_HEAD, environments, runs

RunPython = Callable[..., subprocess.CompletedProcess[str]]
HOST = socket.gethostname()


@pytest.fixture
def database_url() -> None:
    return None


def _declared(column: sa.Column[Any]) -> Column:
    kind = column.type
    if isinstance(kind, sa.JSON):
        return Column("json_or_null" if kind.none_as_null else "json", column.nullable)
    if isinstance(kind, sa.DateTime):
        assert kind.timezone, column.name
        return Column("time", bool(column.nullable))
    if isinstance(kind, sa.Double):
        return Column("float", bool(column.nullable))
    if isinstance(kind, sa.Integer):
        return Column("int", bool(column.nullable))
    assert isinstance(kind, sa.String), (column.name, kind)
    return Column("text", bool(column.nullable), kind.length)


@pytest.mark.parametrize(("plain", "table"), [(RUNS, runs), (ENVIRONMENTS, environments)])
def test_the_plain_columns_are_the_schemas(plain: dict[str, Column], table: sa.Table) -> None:
    assert list(plain) == [column.name for column in table.c]
    assert plain == {column.name: _declared(column) for column in table.c}


def test_the_run_path_modules_do_not_import_sqlalchemy(run_python: RunPython) -> None:
    code = (
        "import sys\n"
        "import kiln.store.sql, kiln.store.environments, kiln.store.recovery\n"
        "import kiln.store.values, kiln.store.hotrow, kiln.store.opening, kiln.runner\n"
        "import kiln.capture, kiln.runrecord, kiln.sweeps.execute\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_up_to_date_history_opens_and_records_without_sqlalchemy(
    home: Path, run_python: RunPython
) -> None:
    RunStore(home).close()  # a new history: SQLAlchemy's path sets it up
    code = """
import sys
from kiln.errors import StoreError
from kiln.provenance import Environment
from kiln.store import Run, RunStore
from kiln.store.environments import save_environment
store = RunStore(sys.argv[1])
assert store.backend == "sqlite" and store._alchemy is None
store.recover_orphans()
store.create_run(Run(id="r1", notebook_path="a.ipynb", notebook_sha256="x", state="queued",
                     parameters={"x": 1}, owner_pid=1, owner_host="h"))
store.update_run("r1", state="running")
env = Environment("python", "3", "CPython", "Linux", "x86_64", (("a", "1"),))
save_environment(store, env)
store.finish_run("r1", "succeeded", environment_hash=env.hash)
store.close()
print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'), repr(store))
"""
    done = run_python(code, str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(None, 1) == ["[]", f"RunStore({str(home)!r}, url={_shown(home)!r})\n"]
    with RunStore(home) as store:
        run = store.get_run("r1")  # SQLAlchemy, made on first use, reads it back
        assert store._alchemy is not None
        found = get_environments(store, [run.environment_hash])
    assert (run.state, run.parameters, run.owner_host) == ("succeeded", {"x": 1}, "h")
    assert [env.packages for env in found.values()] == [(("a", "1"),)]


def _shown(home: Path) -> str:
    from kiln.store.engine import make_engine
    from kiln.store.migrate import where

    engine = make_engine(sqlite_url(home / "kiln.db"))
    try:
        return where(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "name", ["plain", "with space", "a@b:c", "100%", "a%40b", "q?x", "x#y", "ünï"]
)
def test_the_database_is_named_as_sqlalchemy_names_it(tmp_path: Path, name: str) -> None:
    # and the hot path opens the file SQLAlchemy opens: it once opened the URL's
    # percent-encoded path (a home named a@b could record no run)
    home = tmp_path / name / ".kiln"
    with RunStore(home) as store:  # new: SQLAlchemy's path, with the hot rows
        assert store._alchemy is not None
        store.create_run(Run(id="r1", notebook_path="a.ipynb", notebook_sha256="x",
                             state="queued"))  # fmt: skip
    with RunStore(home) as store:
        assert store._alchemy is None
        assert store._where == _shown(home)
        store.finish_run("r1", "succeeded")
        assert store.get_run("r1").state == "succeeded"
    assert [p.name for p in (tmp_path / name).iterdir()] == [".kiln"]


def test_only_a_file_at_the_head_takes_the_lite_path(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with RunStore(home) as store:  # new: created through SQLAlchemy
        assert store._alchemy is not None and isinstance(store._hot, HotRows)
    with RunStore(home) as store:
        assert store._alchemy is None and isinstance(store._hot, HotRows)
    _downgrade(home / "kiln.db", "0009")  # behind: upgraded on open, as before
    with RunStore(home) as store:
        assert store._alchemy is not None
    assert _version(home / "kiln.db") == SCHEMA_HEAD
    with RunStore(home) as store:
        assert store._alchemy is None
    with sqlite3.connect(home / "kiln.db") as conn:  # a newer Kiln's: refused, as before
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()
    with pytest.raises(StoreError, match="newer Kiln"):
        RunStore(home)
    empty = tmp_path / "empty" / "kiln.db"
    empty.parent.mkdir()
    empty.touch()  # an empty file: SQLAlchemy's path creates the tables in it
    with RunStore(empty.parent) as store:
        assert store._alchemy is not None
    with RunStore(empty.parent) as store:
        assert store._alchemy is None
    with RunStore(tmp_path / "mem", url="sqlite://") as store:
        assert store._alchemy is not None and store._hot is None


def _downgrade(db: Path, revision: str) -> None:
    from alembic import command

    from kiln.store.migrate import alembic_config

    engine = sa.create_engine(f"sqlite:///{db}", poolclass=sa.NullPool)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
    finally:
        engine.dispose()
    assert _version(db) == revision


def _version(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    finally:
        conn.close()


def test_the_lite_store_keeps_the_engines_rules(home: Path) -> None:
    RunStore(home).close()
    with RunStore(home) as store:
        assert isinstance(store._hot, HotRows)
        conn = store._hot._connection()
        pragmas = [
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
        ]
    assert pragmas == ["wal", 30000, 1, 1]


def test_the_engine_is_made_on_first_use_and_dropped_in_a_forked_child(home: Path) -> None:
    RunStore(home).close()
    with RunStore(home) as store:
        run = store.create_run(Run(id="r1", notebook_path="a.ipynb", notebook_sha256="x",
                                   state="queued"))  # fmt: skip
        assert store._alchemy is None
        assert store.get_run_exact("r1") == run  # the engine, made now
        engine = store._alchemy
        assert engine is not None and store.backend == "sqlite"
        pid = os.fork()
        if pid == 0:
            try:
                ok = store.get_run_exact("r1").id == "r1" and store._pid == os.getpid()
                os._exit(0 if ok else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        store.finish_run("r1", "succeeded")
        assert store.get_run_exact("r1").state == "succeeded"
        assert store._alchemy is engine and store._pid == os.getpid()


def _active(store: RunStore, run_id: str, **fields: Any) -> Run:
    fields = {"owner_host": HOST, "owner_pid": 999_999_999, **fields}
    return store.create_run(
        Run(
            id=run_id,
            notebook_path="dir/report.ipynb",
            notebook_sha256="a" * 64,
            state="queued",
            **fields,
        )
    )


def test_the_orphan_look_reads_what_sqlalchemy_reads(home: Path) -> None:
    RunStore(home).close()
    with RunStore(home) as store:
        _active(
            store,
            "r1",
            parameters={"x": 1, "nan": math.nan, "text": "nul\x00here", "nested": [1.5, None]},
            created_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2))),
            owner_started=1714971234.25,
            request={"notebook": "report.ipynb", "options": {"b": 1, "a": 2}},
            tags={"team": "a"},
            lease_expires=datetime(2024, 5, 6, 5, 8, 10, tzinfo=timezone.utc),
            attempt=1,
        )
        _active(store, "r2", created_at=datetime(2024, 5, 6, 5, 8, 11, tzinfo=timezone.utc))
        store.update_run("r2", state="running", kernel_pid=4, kernel_started=17.5, error=None)
        _active(store, "r3")
        store.finish_run("r3", "succeeded")  # ended: not a candidate
        _active(store, "r4", owner_host="elsewhere")  # another host's: not a candidate
        assert isinstance(store._hot, HotRows)
        lite = sorted(owned_here(store, HOST), key=lambda run: run.id)
        hot, store._hot = store._hot, None  # the same look through SQLAlchemy
        alchemy = sorted(owned_here(store, HOST), key=lambda run: run.id)
        store._hot = hot
    assert [run.id for run in lite] == ["r1", "r2"]
    assert lite == alchemy
    assert lite[0].created_at == datetime(2024, 5, 6, 5, 8, 9, 123456, tzinfo=timezone.utc)
    assert lite[0].parameters["nan"] == "nan" and lite[1].error is None


def _environment_row(db: Path, digest: str) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        cursor = conn.execute("SELECT * FROM environments WHERE hash = ?", (digest,))
        names = [d[0] for d in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))
    finally:
        conn.close()


def test_the_environment_row_is_what_sqlalchemy_writes(home: Path) -> None:
    RunStore(home).close()
    packages = (("numpy", "2.0"), ("ünï", "1\ufffd"), ("z", ""))
    ours = Environment("python", "3.11.7", "CPython", "Linux-6", "x86_64", packages)
    theirs = dataclasses.replace(ours, version="3.11.8")
    with RunStore(home) as store:
        assert isinstance(store._hot, HotRows)
        _stored.clear()
        save_environment(store, ours)
        hot, store._hot = store._hot, None
        save_environment(store, theirs)  # through SQLAlchemy
        store._hot = hot
        _stored.clear()
        save_environment(store, ours)  # stored already: found, not written again
        back = get_environments(store, [ours.hash, theirs.hash])
    lite, alchemy = (_environment_row(home / "kiln.db", e.hash) for e in (ours, theirs))
    for row in (lite, alchemy):
        row.pop("hash"), row.pop("version")
        assert datetime.fromisoformat(row.pop("created_at")) <= datetime.now()  # naive UTC text
    assert lite == alchemy
    assert back[theirs.hash] == theirs
    assert back[ours.hash] == ours  # NUL stored as U+FFFD, like every JSON value


@pytest.mark.parametrize("name", ["plain", "a%40b", "q?x=1", "x#y", "50%"])
def test_a_history_read_as_it_is_is_the_one_in_the_home(tmp_path: Path, name: str) -> None:
    # the URL of a read-only home (SQLite's own URI inside SQLAlchemy's) names that very file
    import sqlalchemy as sa

    home = tmp_path / name / ".kiln"
    with RunStore(home) as store:
        store.create_run(Run(id="r1", notebook_path="a.ipynb", notebook_sha256="x",
                             state="queued"))  # fmt: skip
    engine = sa.create_engine(sqlite_read_only_url(home / "kiln.db"))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT id FROM runs")).scalars().all() == ["r1"]
    finally:
        engine.dispose()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing made under another name


@pytest.mark.parametrize("name", ["plain", "a%40b", "q?x=1", "x#y"])
def test_the_read_only_look_at_the_version_opens_the_file_in_the_home(
    tmp_path: Path, name: str
) -> None:
    # what `kiln build` checks before taking its sqlite3 path: SQLite's URI decodes escapes
    from kiln.store.litedb import schema_version

    home = tmp_path / name / ".kiln"
    RunStore(home).close()
    assert schema_version(home / "kiln.db") == SCHEMA_HEAD
