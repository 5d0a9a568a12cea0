"""One build of a pipeline at a time: the lock a build holds from its plan to its end.

Two builds of the same pipeline at once (two terminals, a scheduled build meeting a manual
one) would run the same tasks side by side and write the same products over each other. The
second build waits for the first to end instead, then plans against what the first built (so
it usually finds its tasks up to date). The lock lives with the history, so every process
that shares the history honours it:

- a history in SQLite: an advisory ``flock`` on ``locks/build-<key>.lock`` in the home (the
  kernel drops it when the process dies, ``kill -9`` included);
- a history on PostgreSQL: a session-level ``pg_advisory_lock`` on a connection held for the
  build, so builds on different machines exclude each other too (dropped with the
  connection when the process dies).

Waiting polls a non-blocking attempt, so Ctrl-C stops a waiting build at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.store.litedb import Alchemy

if TYPE_CHECKING:
    from kiln.store.builds import BuildStore

#: how often a waiting build tries the lock again (seconds)
POLL_S = 0.2


@contextlib.contextmanager
def pipeline_lock(
    builds: BuildStore, project: str, pipeline: str, *, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold the build lock of ``pipeline`` of ``project``; ``on_wait`` is called once when
    another build holds it (and this one starts waiting)."""
    digest = hashlib.sha256(f"{project}\0{pipeline}".encode()).digest()
    db = builds._db
    if isinstance(db, Alchemy) and db.store.backend == "postgresql":
        with _advisory(db, int.from_bytes(digest[:8], "big", signed=True), on_wait):
            yield
        return
    home = builds.home if builds.home is not None else Path(getattr(db, "path", ".")).parent
    with _flock(home / "locks" / f"build-{digest.hex()[:24]}.lock", on_wait):
        yield


@contextlib.contextmanager
def _flock(path: Path, on_wait: Callable[[], None] | None) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _wait(lambda: _try_flock(fd), on_wait)
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _advisory(db: Alchemy, key: int, on_wait: Callable[[], None] | None) -> Iterator[None]:
    import sqlalchemy as sa

    with db.store._engine.connect() as conn:

        def attempt() -> bool:
            taken = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar()
            conn.commit()  # no transaction left open while waiting or building
            return bool(taken)

        _wait(attempt, on_wait)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # a lost connection has dropped it already
                conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                conn.commit()


def _wait(attempt: Callable[[], bool], on_wait: Callable[[], None] | None) -> None:
    told = False
    while not attempt():
        if not told and on_wait is not None:
            on_wait()
        told = True
        time.sleep(POLL_S)
