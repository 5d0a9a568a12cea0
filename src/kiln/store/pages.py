"""Reading the runs table page by page, and counting it: what the server's lists and metrics need.

Pages are keyed on the list's own order (newest first: ``created_at``, then ``id``), so a page
is one indexed range query however deep it is, and runs added meanwhile neither shift nor
repeat entries. A cursor is the (time, id) of the last run of the previous page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kiln.store.records import Run, RunState
from kiln.store.schema import runs

if TYPE_CHECKING:
    from kiln.store.sql import RunStore


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def runs_page(
    store: RunStore,
    *,
    notebooks: Sequence[str] = (),
    notebook_name: str | None = None,
    states: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    submitted_by: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> tuple[list[Run], tuple[datetime, str] | None]:
    """A page of runs, newest first, and the cursor of the next page (None at the end).

    ``notebooks`` are exact stored paths; ``notebook_name`` a bare file name in any folder
    (either matches). ``tags`` keeps runs with these tag values; ``until`` runs created before
    it; ``submitted_by`` runs that user submitted. ``after`` is the cursor a previous page
    returned."""
    from kiln.store.filters import parameter_equals, tag_equals
    from kiln.store.values import row_to_run

    query = runs.select()
    matches: list[sa.ColumnElement[bool]] = []
    if notebooks:
        matches.append(runs.c.notebook_path.in_(list(notebooks)))
    if notebook_name is not None:
        matches.append(runs.c.notebook_name == notebook_name)
    if matches:
        query = query.where(sa.or_(*matches))
    if states:
        query = query.where(runs.c.state.in_([RunState(s).value for s in states]))
    if since is not None:
        query = query.where(runs.c.created_at >= _utc(since).astimezone(timezone.utc))
    if until is not None:
        query = query.where(runs.c.created_at < _utc(until).astimezone(timezone.utc))
    if submitted_by is not None:
        query = query.where(runs.c.submitted_by == submitted_by)
    for name, value in (parameters or {}).items():
        query = query.where(parameter_equals(name, value, store.backend))
    for key, text in (tags or {}).items():
        query = query.where(tag_equals(key, text, store.backend))
    if after is not None:
        when, run_id = _utc(after[0]).astimezone(timezone.utc), after[1]
        query = query.where(
            sa.or_(runs.c.created_at < when, sa.and_(runs.c.created_at == when, runs.c.id < run_id))
        )
    query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
    with store._read() as conn:
        found = [row_to_run(row) for row in conn.execute(query)]
    if len(found) <= limit:
        return found, None
    page = found[:limit]
    last = page[-1]
    assert last.created_at is not None
    return page, (last.created_at, last.id)


def counts_by_state_and_notebook(store: RunStore) -> list[tuple[str, str, int]]:
    """(state, notebook file name, number of runs) for every pair that has runs."""
    query = sa.select(runs.c.state, runs.c.notebook_name, sa.func.count()).group_by(
        runs.c.state, runs.c.notebook_name
    )
    with store._read() as conn:
        return [(str(s), str(n), int(c)) for s, n, c in conn.execute(query)]


def busy_workers(store: RunStore) -> int:
    """How many distinct workers hold a running run now."""
    query = sa.select(sa.func.count(sa.distinct(runs.c.lease_owner))).where(
        runs.c.state == RunState.RUNNING.value, runs.c.lease_owner.is_not(None)
    )
    with store._read() as conn:
        return int(conn.execute(query).scalar() or 0)


def ended_since(
    store: RunStore, since: datetime, *, limit: int = 10_000
) -> list[tuple[str, str, str, float | None, datetime]]:
    """(id, state, notebook name, duration in seconds, ended_at) of runs that ended at or
    after ``since``, oldest first (for duration histograms that follow the history)."""
    query = (
        sa.select(runs.c.id, runs.c.state, runs.c.notebook_name, runs.c.started_at, runs.c.ended_at)
        .where(runs.c.ended_at >= _utc(since).astimezone(timezone.utc))
        .order_by(runs.c.ended_at, runs.c.id)
        .limit(limit)
    )
    out = []
    with store._read() as conn:
        for run_id, state, name, started, ended in conn.execute(query):
            duration = (_utc(ended) - _utc(started)).total_seconds() if started else None
            out.append((str(run_id), str(state), str(name), duration, _utc(ended)))
    return out


def last_success(
    store: RunStore, notebook: str, parameters: Mapping[str, Any], since: datetime
) -> Run | None:
    """The newest run of ``notebook`` (its stored path) that succeeded with exactly these
    parameters and was created at or after ``since`` (an app's cached result), or None.

    The notebook, state and time narrow it through ``ix_runs_notebook_path_state``; the
    parameters are compared in Python on those few rows."""
    from kiln.store.values import row_to_run

    query = (
        runs.select()
        .where(
            runs.c.notebook_path == notebook,
            runs.c.state == RunState.SUCCEEDED.value,
            runs.c.created_at >= _utc(since).astimezone(timezone.utc),
        )
        .order_by(runs.c.created_at.desc(), runs.c.id.desc())
        .limit(200)
    )
    wanted = dict(parameters)
    with store._read() as conn:
        for row in conn.execute(query):
            run = row_to_run(row)
            if run.parameters == wanted:
                return run
    return None
