"""The run row's writes through sqlite3 (kiln.store.hotrow) store exactly what SQLAlchemy does.

SQLite only: the hot path exists for SQLite files; PostgreSQL keeps SQLAlchemy.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from rowcases import lifecycle, refuses_what_sqlalchemy_refuses

from kiln.store import Run, RunStore


@pytest.fixture
def database_url() -> None:
    return None


def _rows(db: Path, run_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        cursor = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
    finally:
        conn.close()
    return dict(zip(names, row, strict=True))


def test_the_hot_path_writes_the_same_rows_as_sqlalchemy(tmp_path: Path) -> None:
    with RunStore(tmp_path / "home") as store:
        assert store._hot is not None
        lifecycle(store, "20240101-000000-hot")
        store._hot = None  # the same writes through SQLAlchemy
        lifecycle(store, "20240101-000000-sqla")
        hot, alchemy = (store.get_run_exact(f"20240101-000000-{k}") for k in ("hot", "sqla"))
    db = tmp_path / "home" / "kiln.db"
    raw_hot, raw_alchemy = _rows(db, hot.id), _rows(db, alchemy.id)
    raw_hot.pop("id"), raw_alchemy.pop("id")
    assert raw_hot == raw_alchemy
    assert raw_hot["created_at"] == "2024-05-06 05:08:09.123456"  # UTC text, as SQLAlchemy
    assert raw_hot["origin"] is None and raw_hot["error"] is not None
    assert hot == dataclasses.replace(alchemy, id=hot.id)


def test_the_hot_path_refuses_what_sqlalchemy_refuses(tmp_path: Path) -> None:
    with RunStore(tmp_path / "home") as store:
        refuses_what_sqlalchemy_refuses(store)


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    import os

    with RunStore(tmp_path / "home") as store:
        run = Run(id="20240101-000000-fork", notebook_path="a.ipynb", notebook_sha256="0" * 64,
                  state="queued")  # fmt: skip
        store.create_run(run)
        assert store._hot is not None
        parent_conn = store._hot._connection()
        pid = os.fork()
        if pid == 0:  # the child: writes on a connection of its own, leaves the parent's be
            try:
                store.update_run(run.id, reason="from the child")
                ok = store._hot._connection() is not parent_conn
                os._exit(0 if ok else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        store.finish_run(run.id, "succeeded")  # the parent's connection still works
        final = store.get_run_exact(run.id)
    assert (final.reason, final.state) == ("from the child", "succeeded")
