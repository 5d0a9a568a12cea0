"""Finding the runs a dead Kiln process left queued or running, and marking them crashed.

Every runner looks once, before its first run: on a SQLite file the look is a ``sqlite3``
query (:meth:`~kiln.store.hotrow.HotRows.select_runs`, no SQLAlchemy for a ``kiln run``);
marking an actual orphan, which is rare, goes through the queue's conditional write
(:func:`~kiln.store.queue.crash_and_retry`) and so through SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.errors import StoreError
from kiln.store.hotrow import HotRows
from kiln.store.process import current_owner, kill_leftover, pid_exists, same_process
from kiln.store.records import ACTIVE_STATES, Run, RunState
from kiln.store.values import mapping_to_run, row_to_run

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

_ACTIVE_STATES = tuple(state.value for state in RunState if state in ACTIVE_STATES)


def recover_orphans(store: RunStore) -> list[Run]:
    """:meth:`RunStore.recover_orphans <kiln.store.sql.RunStore.recover_orphans>` (on a
    writable store)."""
    me, host, _ = current_owner()
    recovered: list[Run] = []
    for run in owned_here(store, host):
        if run.owner_pid is None or same_process(run.owner_pid, run.owner_started) is not False:
            continue
        reason = f"Kiln process {run.owner_pid} on host {host} exited while the run was {run.state}"
        if pid_exists(run.owner_pid):
            reason += f"; pid {run.owner_pid} now belongs to another process"
        reason += f" (found by pid {me})"
        # Only if nothing moved meanwhile: the run may have finished, been recovered by
        # another process, or been claimed by a live worker since it was read. A queued
        # run whose policy allows it is retried (a new row), in the same transaction.
        from kiln.store.queue import crash_and_retry
        from kiln.store.schema import runs

        same_owner = (runs.c.owner_pid == run.owner_pid, runs.c.owner_host == host)
        try:
            if crash_and_retry(store, run, reason, *same_owner) is None:
                continue
        except StoreError:
            # the history cannot be written now (a full disk): it stays readable, and the
            # next command that can write marks the run
            return recovered
        if run.kernel_pid is not None:
            done = kill_leftover(
                run.kernel_pid, started=run.kernel_started, not_before=run.owner_started
            )
            if done is not None:
                store.update_run(run.id, reason=f"{reason}; {done}")
        recovered.append(store.get_run_exact(run.id))
    return recovered


def owned_here(store: RunStore, host: str) -> list[Run]:
    """The active runs that a process on ``host`` owns (recovery's candidates)."""
    hot = store._hot
    if isinstance(hot, HotRows):  # every runner's first look: no SQLAlchemy for it
        states = ", ".join("?" * len(_ACTIVE_STATES))
        condition = f"state IN ({states}) AND owner_host = ? AND owner_pid IS NOT NULL"
        return [mapping_to_run(row) for row in hot.select_runs(condition, (*_ACTIVE_STATES, host))]
    from kiln.store.schema import runs

    query = runs.select().where(
        runs.c.state.in_(_ACTIVE_STATES),
        runs.c.owner_host == host,
        runs.c.owner_pid.is_not(None),
    )
    with store._read() as conn:
        return [row_to_run(row) for row in conn.execute(query)]
