"""The schema is created and upgraded by Alembic, which is only imported when needed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.errors import StoreError
from kiln.store import RunStore
from kiln.store.migrate import script_head
from kiln.store.schema import SCHEMA_HEAD, metadata

from kilntest import start_barrier

RunPython = Callable[..., subprocess.CompletedProcess[str]]


def _versions(db: Path) -> list[str]:
    raw = sqlite3.connect(db)
    try:
        return [row[0] for row in raw.execute("SELECT version_num FROM alembic_version")]
    finally:
        raw.close()


def test_schema_head_constant_matches_alembic_head() -> None:
    assert script_head() == SCHEMA_HEAD


def test_fresh_database_is_at_head(store: RunStore, home: Path) -> None:
    assert _versions(home / "kiln.db") == [SCHEMA_HEAD]


def test_table_definition_matches_the_migrations(store: RunStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store._engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_reopening_an_existing_store_does_not_import_alembic(
    store: RunStore, home: Path, run_python: RunPython
) -> None:
    code = """
import sys
from kiln.store import Run, RunStore
store = RunStore(sys.argv[1])
store.create_run(Run(id="r1", notebook_path="a.ipynb", notebook_sha256="x", state="queued"))
store.get_run("last")
print("alembic" in sys.modules, "sqlalchemy.orm" in sys.modules)
"""
    done = run_python(code, str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_a_new_store_does_run_alembic(tmp_path: Path, run_python: RunPython) -> None:
    code = "import sys; from kiln.store import RunStore; RunStore(sys.argv[1]); "
    code += "print('alembic' in sys.modules)"
    done = run_python(code, str(tmp_path / "new"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert _versions(tmp_path / "new" / "kiln.db") == [SCHEMA_HEAD]


def test_a_database_from_a_newer_kiln_is_refused(store: RunStore, home: Path) -> None:
    raw = sqlite3.connect(home / "kiln.db")
    with raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    raw.close()
    with pytest.raises(StoreError, match=r"9999.*newer Kiln"):
        RunStore(home)


def test_processes_opening_a_new_home_at_once(tmp_path: Path) -> None:
    home = tmp_path / "race"
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
    assert _versions(home / "kiln.db") == [SCHEMA_HEAD]
    with RunStore(home) as store:
        assert sorted(r.id for r in store.list_runs()) == [f"run-{n}" for n in range(6)]


def _hold_lock(home: Path) -> int:
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "kiln.db.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_setting_up_a_new_database_waits_for_the_migration_lock(tmp_path: Path) -> None:
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
    assert _versions(home / "kiln.db") == [SCHEMA_HEAD]


@pytest.mark.timeout(30)  # taking the lock would block forever
def test_opening_a_database_at_head_takes_no_lock(store: RunStore, home: Path) -> None:
    fd = _hold_lock(home)
    try:
        started = time.perf_counter()
        RunStore(home).close()
        assert time.perf_counter() - started < 2.0
    finally:
        os.close(fd)
