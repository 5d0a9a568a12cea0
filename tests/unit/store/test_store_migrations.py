"""The schema is created and upgraded by Alembic, which is only imported when needed (a new
SQLite history is created at the newest schema without it).

Every test that takes ``store`` or ``database_url`` runs on SQLite and on PostgreSQL; the file
lock that serialises SQLite set-ups is SQLite's own (PostgreSQL uses an advisory lock, tested
here too).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kiln.errors import HomeNotFound, StoreError, StoreOutdated
from kiln.store import Run, RunStore
from kiln.store.migrate import ADVISORY_LOCK_KEY, alembic_config, script_head
from kiln.store.schema import SCHEMA_HEAD, metadata
from kiln.store.sql import migrate_store

from kilntest import KILN, start_barrier, wait_for

RunPython = Callable[..., subprocess.CompletedProcess[str]]
#: the schema version before this Kiln's newest migration
PREVIOUS = "0002"


def _url(home: Path, database_url: str | None) -> str:
    return database_url or f"sqlite:///{home / 'kiln.db'}"


@pytest.fixture
def raw(home: Path, database_url: str | None) -> Iterator[sa.Engine]:
    """A plain engine on the test's database (no Kiln in between)."""
    home.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(_url(home, database_url), poolclass=sa.NullPool)
    yield engine
    engine.dispose()


def _versions(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())


def _alembic(engine: sa.Engine, action: str, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def _add_old_run(engine: sa.Engine, run_id: str) -> None:
    """A run row as a Kiln at the previous schema version wrote it."""
    columns = "id, notebook_path, notebook_name, notebook_sha256, state, parameters, created_at,"
    columns += " cell_durations, records, request, attempt"
    values = ":id, '/p/report.ipynb', 'report.ipynb', 'x', 'succeeded', :parameters, :created,"
    values += " '[]', :records, NULL, 1"
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO runs ({columns}) VALUES ({values})"),
            {
                "id": run_id,
                "parameters": '{"b": 2, "a": "x"}',
                "created": datetime(2024, 5, 1, 12, tzinfo=timezone.utc),
                "records": '[{"name": "n", "kind": "json", "value": 7}]',
            },
        )


def test_schema_head_constant_matches_alembic_head() -> None:
    assert script_head() == SCHEMA_HEAD


def test_fresh_database_is_at_head(store: RunStore, raw: sa.Engine) -> None:
    assert _versions(raw) == [SCHEMA_HEAD]


def test_table_definition_matches_the_migrations(store: RunStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store._engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_run_ids_sort_bytewise_on_every_backend(store: RunStore, raw: sa.Engine) -> None:
    # a linguistic collation (PostgreSQL's default) would put "a-2" before "a_1" and "B"
    # after "a"; Kiln's order must not depend on the server's locale
    for run_id in ("a_1", "a-2", "B", "a.3", "a0"):
        store.create_run(
            Run(id=run_id, notebook_path="n.ipynb", notebook_sha256="x", state="queued")
        )
    with raw.connect() as conn:
        ordered = list(conn.exec_driver_sql("SELECT id FROM runs ORDER BY id").scalars())
    assert ordered == sorted(["a_1", "a-2", "B", "a.3", "a0"])


def test_migrations_go_down_and_up_again(store: RunStore, raw: sa.Engine) -> None:
    _alembic(raw, "downgrade", "base")
    with raw.connect() as conn:
        assert not sa.inspect(conn).has_table("runs")
    _alembic(raw, "upgrade", "head")
    assert _versions(raw) == [SCHEMA_HEAD]


def test_reopening_an_existing_store_does_not_import_alembic(
    store: RunStore, home: Path, run_python: RunPython
) -> None:
    code = """
import sys
from kiln.store import Run, RunStore
store = RunStore(sys.argv[1])
store.create_run(Run(id="r1", notebook_path="a.ipynb", notebook_sha256="x", state="queued"))
store.get_run("last")
print("alembic" in sys.modules, "sqlalchemy.orm" in sys.modules, store.backend)
"""
    done = run_python(code, str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", store.backend]


def test_a_sqlite_history_never_imports_the_postgresql_dialect(
    home: Path, run_python: RunPython
) -> None:
    # ~25 ms of CPU in every process that opens a SQLite history, had the schema declared a
    # postgresql_ argument (it loads the dialect to check it); setting the history up (Alembic)
    # is another matter: it is done here first
    RunStore(home, url=f"sqlite:///{home}/kiln.db").close()
    code = """
import sys
from kiln.store import Run, RunStore
store = RunStore(sys.argv[1], url=f"sqlite:///{sys.argv[1]}/kiln.db")
store.create_run(Run(id="r1", notebook_path="a.ipynb", notebook_sha256="x", state="queued"))
store.finish_run("r1", "succeeded")
store.get_run("last")
store.recover_orphans()
print([m for m in sys.modules if m.startswith("sqlalchemy.dialects.postgresql")])
"""
    done = run_python(code, str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"]


def test_the_claimable_index_is_partial_on_every_backend(store: RunStore, raw: sa.Engine) -> None:
    # the condition lives in migration 0010 alone (see the table's definition)
    with raw.connect() as conn:
        if store.backend == "sqlite":
            sql = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_runs_claimable'"
            ).scalar_one()
        else:
            sql = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_runs_claimable'"
            ).scalar_one()
    assert "WHERE" in sql.upper() and "owner_pid IS NULL" in sql, sql


def test_a_new_store_runs_alembic_only_on_postgresql(
    home: Path, database_url: str | None, raw: sa.Engine, run_python: RunPython
) -> None:
    # a new SQLite file is created at the newest schema directly (~0.2 s less for the first
    # command in a new home); an empty PostgreSQL database is set up by the migrations
    code = "import sys; from kiln.store import RunStore; RunStore(sys.argv[1]); "
    code += "print('alembic' in sys.modules)"
    done = run_python(code, str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(database_url is not None)
    assert _versions(raw) == [SCHEMA_HEAD]


def _sqlite_schema(path: Path) -> dict[str, Any]:
    """Everything SQLite knows of a database's schema, in a comparable form: every table's
    columns (name, type, nullability, default, key position), foreign keys, every index's
    columns, uniqueness, condition, and the versions recorded."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        out: dict[str, Any] = {}
        objects = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        for kind, name, table, sql in objects:
            if kind == "table":
                out[name] = (
                    [row[1:] for row in conn.execute(f"PRAGMA table_xinfo('{name}')")],
                    sorted(conn.execute(f"PRAGMA foreign_key_list('{name}')").fetchall()),
                )
            elif kind == "index":
                where = " ".join(sql.split(" WHERE ", 1)[1].split()) if " WHERE " in sql else ""
                unique = sql.upper().startswith("CREATE UNIQUE")
                columns = conn.execute(f"PRAGMA index_xinfo('{name}')").fetchall()
                out[name] = (table, unique, where, columns)
        out["alembic_version rows"] = conn.execute("SELECT * FROM alembic_version").fetchall()
        return out
    finally:
        conn.close()


def test_a_new_sqlite_history_has_exactly_the_schema_the_migrations_build(
    tmp_path: Path,
) -> None:
    created = tmp_path / "created"
    RunStore(created).close()  # the direct set-up
    migrated = tmp_path / "migrated.db"
    engine = sa.create_engine(f"sqlite:///{migrated}", poolclass=sa.NullPool)
    try:
        _alembic(engine, "upgrade", "head")  # every migration, one after the other
    finally:
        engine.dispose()
    direct, replayed = _sqlite_schema(created / "kiln.db"), _sqlite_schema(migrated)
    assert sorted(direct) == sorted(replayed)
    for name in replayed:
        assert direct[name] == replayed[name], name
    assert direct["alembic_version rows"] == [(SCHEMA_HEAD,)]


def test_a_directly_created_history_upgrades_and_downgrades_like_a_migrated_one(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    RunStore(home).close()
    engine = sa.create_engine(f"sqlite:///{home / 'kiln.db'}", poolclass=sa.NullPool)
    try:
        _alembic(engine, "downgrade", PREVIOUS)
        assert _versions(engine) == [PREVIOUS]
        _alembic(engine, "upgrade", "head")
        assert _versions(engine) == [SCHEMA_HEAD]
    finally:
        engine.dispose()


def test_a_database_from_a_newer_kiln_is_refused(
    store: RunStore, home: Path, raw: sa.Engine
) -> None:
    with raw.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreError, match=r"9999.*newer Kiln"):
        RunStore(home)
    with pytest.raises(StoreError, match=r"9999.*newer Kiln"):
        migrate_store(home)


def test_a_database_one_version_behind(
    home: Path, database_url: str | None, raw: sa.Engine
) -> None:
    """SQLite (a private file) is upgraded on open; a shared PostgreSQL database is refused
    until `kiln store migrate`, and the runs written before come through unchanged."""
    _alembic(raw, "upgrade", PREVIOUS)
    _add_old_run(raw, "20240501-120000-0a0b0c0d")
    if database_url is not None:
        with pytest.raises(
            StoreOutdated, match=f"{PREVIOUS}.*needs {SCHEMA_HEAD}.*kiln store migrate"
        ):
            RunStore(home)
        with pytest.raises(StoreOutdated, match="kiln store migrate"):
            RunStore(home, create=False)
        assert _versions(raw) == [PREVIOUS]  # nothing changed by the refusals
        _, before, after = migrate_store(home)
        assert (before, after) == ({PREVIOUS}, {SCHEMA_HEAD})
    with RunStore(home) as store:
        run = store.get_run("20240501")  # a prefix lookup on the upgraded table
        assert run.parameters == {"b": 2, "a": "x"}
        assert list(run.parameters) == ["b", "a"]  # the order as written
        assert run.records == {"n": 7}
        assert run.created_at == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
        assert [r.id for r in store.list_runs(notebook="report.ipynb", state="succeeded")] == [
            run.id
        ]
    assert _versions(raw) == [SCHEMA_HEAD]
    assert migrate_store(home)[1:] == ({SCHEMA_HEAD}, {SCHEMA_HEAD})  # again: nothing to do


def test_kiln_store_migrate_command(
    home: Path, database_url: str | None, raw: sa.Engine, tmp_path: Path
) -> None:
    _alembic(raw, "upgrade", PREVIOUS)
    env = {k: v for k, v in os.environ.items() if k != "KILN_HOME"}

    def migrate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KILN, "--home", str(home), "store", "migrate"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip

    first = migrate()
    assert first.returncode == 0, first.stderr
    assert f"schema version {PREVIOUS} -> {SCHEMA_HEAD}" in first.stderr
    assert (database_url or "kiln.db").rsplit("/", 1)[-1] in first.stderr
    again = migrate()
    assert again.returncode == 0, again.stderr
    assert f"already at schema version {SCHEMA_HEAD}" in again.stderr
    assert _versions(raw) == [SCHEMA_HEAD]


def test_processes_opening_a_new_database_at_once(
    tmp_path: Path, home: Path, database_url: str | None, raw: sa.Engine
) -> None:
    go = tmp_path / "go"
    code = """
import sys, time
from pathlib import Path
from kiln.store import Run, RunStore
import alembic.command  # imported up front so that all processes reach the race together
home, go, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
(go.parent / f"ready-{n}").touch()
while not go.exists():
    time.sleep(0.001)
store = RunStore(home)
store.create_run(Run(id="run-" + n, notebook_path="a.ipynb", notebook_sha256="x", state="queued"))
print("ok")
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(home), str(go), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(6)
    ]
    start_barrier(go.parent, 6)
    results = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    assert _versions(raw) == [SCHEMA_HEAD]
    with RunStore(home) as store:
        assert sorted(r.id for r in store.list_runs()) == [f"run-{n}" for n in range(6)]


# -- PostgreSQL: an empty database, the advisory lock ---------------------------------------


def test_reading_an_empty_postgres_database_creates_nothing(
    home: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_DATABASE_URL", postgres_url)
    with pytest.raises(HomeNotFound, match=r"no Kiln tables yet.*kiln store migrate"):
        RunStore(home, create=False)
    engine = sa.create_engine(postgres_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    engine.dispose()
    assert not home.exists()  # a read-only look makes no folder either


def test_setting_up_postgres_waits_for_the_advisory_lock(
    home: Path, postgres_url: str, run_python: RunPython, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_DATABASE_URL", postgres_url)
    engine = sa.create_engine(postgres_url, poolclass=sa.NullPool)
    holder = engine.connect()
    holder.execute(sa.select(sa.func.pg_advisory_lock(ADVISORY_LOCK_KEY)))
    holder.commit()
    code = "import sys; from kiln.store import RunStore; RunStore(sys.argv[1]); print('ok')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )

        def blocked() -> bool:
            found = bool(holder.exec_driver_sql(waiting).scalar())
            holder.rollback()  # the activity view is a snapshot per transaction
            return found

        wait_for(blocked, what="the set-up to wait its turn")
        assert proc.poll() is None
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("runs")  # nothing half-made meanwhile
    finally:
        holder.execute(sa.select(sa.func.pg_advisory_unlock(ADVISORY_LOCK_KEY)))
        holder.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "ok"
    assert _versions(engine) == [SCHEMA_HEAD]
    engine.dispose()


# -- SQLite: the file lock -------------------------------------------------------------------


def _hold_lock(home: Path) -> int:
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "kiln.db.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_setting_up_a_new_sqlite_database_waits_for_the_file_lock(tmp_path: Path) -> None:
    home = tmp_path / "locked"
    fd = _hold_lock(home)
    code = "import sys; from kiln.store import RunStore; RunStore(sys.argv[1]); print('ok')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)
        assert proc.poll() is None, proc.communicate()
    finally:
        os.close(fd)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "ok"
    engine = sa.create_engine(f"sqlite:///{home / 'kiln.db'}")
    assert _versions(engine) == [SCHEMA_HEAD]
    engine.dispose()


@pytest.mark.timeout(30)  # taking the lock would block forever
def test_opening_a_sqlite_database_at_head_takes_no_lock(tmp_path: Path) -> None:
    home = tmp_path / "home"
    RunStore(home).close()
    fd = _hold_lock(home)
    try:
        started = time.perf_counter()
        RunStore(home).close()
        assert time.perf_counter() - started < 2.0
    finally:
        os.close(fd)
