"""The runs table as a durable queue: submit, claim with a lease, renew, expire, retry.

A submitted run is a committed row in state ``queued`` (durable before anyone is told it
exists). A worker claims the oldest queued row atomically: on SQLite the claim is one
``BEGIN IMMEDIATE`` transaction (writers take turns), on PostgreSQL one statement, its own
transaction (:mod:`kiln.store.pgrow`), whose ``SELECT ... FOR UPDATE SKIP LOCKED`` lets
concurrent workers take different rows without waiting. Both read the head of a partial
index that holds the claimable rows alone (``ix_runs_claimable``). The claim sets the
row ``running`` with a lease (``lease_owner``, ``lease_expires``) that the worker renews while
the run goes on. A lease that expires means its worker died: the run is marked ``crashed``
and, when its retry policy allows, a new queued row linked to it (``retry_of``) is added, in
the same transaction. Nothing is run twice at once: only one transaction can move a row out
of ``queued``, and only the row's lease holder writes its end.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kiln.store.pgrow import PgRows
from kiln.store.records import Run, RunState
from kiln.store.schema import CLAIMABLE, runs
from kiln.store.values import TERMINAL, column_values, mapping_to_run, row_to_run

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

_ACTIVE = (RunState.QUEUED.value, RunState.RUNNING.value)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def claim(
    store: RunStore,
    owner: str,
    *,
    lease: float,
    pid: int | None = None,
    host: str | None = None,
    started: float | None = None,
) -> Run | None:
    """Take the oldest queued run for ``owner`` (``running``, leased for ``lease`` seconds);
    None when the queue is empty."""
    values = {
        "state": RunState.RUNNING.value,
        "lease_owner": owner,
        "lease_expires": _now() + timedelta(seconds=lease),
        "owner_pid": pid,
        "owner_host": host,
        "owner_started": started,
    }
    hot = store._hot
    if isinstance(hot, PgRows):  # one round trip, its own transaction (kiln.store.pgrow)
        taken = hot.claim(values)
        return None if taken is None else mapping_to_run(taken)
    queued = runs.c.state == RunState.QUEUED.value
    oldest = _oldest()
    # SQLite: the transaction holds the write lock (BEGIN IMMEDIATE), so nobody else can
    # take the row between these statements (and RETURNING needs SQLite 3.35)
    with store._write() as conn:
        found = conn.execute(oldest).scalar()
        if found is None:
            return None
        if not conn.execute(
            runs.update().where(runs.c.id == found, queued).values(values)
        ).rowcount:
            return None
        row = conn.execute(runs.select().where(runs.c.id == found)).one()
    return row_to_run(row)


@functools.lru_cache(maxsize=1)
def _oldest() -> sa.Select[tuple[str]]:
    """The oldest run the queue may take (SQLite; PostgreSQL's claim is kiln.store.pgrow's).

    A direct run (kiln run, an endpoint call) is also ``queued`` while its engine starts; it
    has an owner from the start (and may keep its request, for kiln rerun): it is not the
    queue's to take. A submitted run has a request and no owner until claimed. The condition
    is the partial index's own text (literals, not parameters), so the index serves it."""
    return (
        sa.select(runs.c.id)
        .where(sa.text(CLAIMABLE))
        .order_by(runs.c.created_at, runs.c.id)
        .limit(1)
    )


def renew(store: RunStore, owner: str, *, lease: float) -> int:
    """Extend every lease ``owner`` holds; returns how many runs it holds."""
    with store._write() as conn:
        held: int = conn.execute(
            runs.update()
            .where(runs.c.lease_owner == owner, runs.c.state.in_(_ACTIVE))
            .values(lease_expires=_now() + timedelta(seconds=lease))
        ).rowcount
    return held


def release(store: RunStore, run_id: str, owner: str) -> bool:
    """Give a claimed run back to the queue (a draining worker that never started it)."""
    with store._write() as conn:
        done: int = conn.execute(
            runs.update()
            .where(
                runs.c.id == run_id,
                runs.c.lease_owner == owner,
                runs.c.state == RunState.RUNNING.value,
                runs.c.started_at.is_(None),
            )
            .values(state=RunState.QUEUED.value, lease_owner=None, lease_expires=None)
        ).rowcount
    return bool(done)


def expire(store: RunStore, *, now: datetime | None = None) -> list[Run]:
    """Runs whose worker stopped renewing its lease: mark them ``crashed`` (and queue their
    retries). Returns the crashed runs."""
    when = now or _now()
    query = runs.select().where(
        runs.c.state.in_(_ACTIVE),
        runs.c.lease_expires.is_not(None),
        runs.c.lease_expires < when,
    )
    with store._read() as conn:
        stale = [row_to_run(row) for row in conn.execute(query)]
    crashed = []
    for run in stale:
        reason = (
            f"worker {run.lease_owner} stopped renewing its lease "
            f"(it expired at {run.lease_expires:%Y-%m-%d %H:%M:%S} UTC)"
        )
        ended = crash_and_retry(
            store,
            run,
            reason,
            runs.c.lease_owner == run.lease_owner,
            runs.c.lease_expires == run.lease_expires,
        )
        if ended is not None:
            crashed.append(ended)
    return crashed


def crash_and_retry(
    store: RunStore, run: Run, reason: str, *only_if: sa.ColumnElement[bool]
) -> Run | None:
    """Mark an abandoned run ``crashed`` and, in the same transaction, queue its retry when
    its policy allows; None when the run moved meanwhile (someone else handled it)."""
    ended = _now()
    values = column_values(
        {"state": RunState.CRASHED, "ended_at": ended, "reason": reason, "lease_expires": None}
    )
    where = sa.and_(
        runs.c.id == run.id, runs.c.state == run.state.value, runs.c.state.not_in(TERMINAL)
    )
    with store._write() as conn:
        if not conn.execute(runs.update().where(where, *only_if).values(values)).rowcount:
            return None
        retry = retry_of(run)
        if retry is not None:
            conn.execute(runs.insert(), column_values(_insert_fields(retry)))
    return replace(run, state=RunState.CRASHED, ended_at=ended, reason=reason)


def retry_of(run: Run) -> Run | None:
    """The queued run that repeats ``run``, if its retry policy has attempts left."""
    attempt = run.attempt or 1
    if run.request is None or not run.max_retries or attempt > run.max_retries:
        return None
    from kiln.store.paths import new_run_id

    return Run(
        id=new_run_id(),
        notebook_path=run.notebook_path,
        notebook_sha256=run.notebook_sha256,
        state=RunState.QUEUED,
        parameters=dict(run.parameters),
        created_at=_now(),
        input_path=run.input_path,
        request=dict(run.request),
        retry_of=run.id,
        attempt=attempt + 1,
        max_retries=run.max_retries,
        submitted_by=run.submitted_by,
        tags=dict(run.tags),
    )


def _insert_fields(run: Run) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(run, f.name) for f in fields(Run)}


def request_cancel(store: RunStore, run_id: str, *, reason: str) -> Run:
    """Cancel a run: a queued one ends ``cancelled`` at once; a running one is flagged for
    its holder, which stops it (within a heartbeat) and records it ``cancelled``. Returns the
    run as it is now; a finished run is left as it is."""
    now = _now()
    with store._write() as conn:
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id, runs.c.state == RunState.QUEUED.value)
            .values(column_values({"state": RunState.CANCELLED, "ended_at": now, "reason": reason}))
        )
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id, runs.c.state == RunState.RUNNING.value)
            .values(cancel_requested=now)
        )
    return store.get_run_exact(run_id)


def cancel_requests(store: RunStore, owner: str) -> list[str]:
    """The runs ``owner`` holds that someone asked to cancel."""
    query = sa.select(runs.c.id).where(
        runs.c.lease_owner == owner,
        runs.c.state == RunState.RUNNING.value,
        runs.c.cancel_requested.is_not(None),
    )
    with store._read() as conn:
        return [str(found) for found in conn.execute(query).scalars()]


def worker_id() -> str:
    """A name for a worker process, unique across machines (host, pid, random)."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
