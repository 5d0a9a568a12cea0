"""Retention: delete old runs with their folders, and the stored inputs nothing refers to.

A queued or running run is never deleted: every delete re-checks, in its own transaction,
that the row is in a terminal state. The order of the deletes keeps the history consistent
whenever the process is killed (SIGKILL included): rows go first, in batches (one transaction
each), then the folders of the rows just deleted, and only at the end the input copies that no
remaining run refers to. So a row never points to a missing folder or input; what a killed
prune leaves behind is garbage (a folder without a row, an input nobody uses), which the next
prune removes. Garbage younger than :data:`GRACE` is left alone: a run that is starting has
made its folder and stored its input a moment before its row is committed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kiln.store.records import ACTIVE_STATES, TERMINAL_STATES, RunState
from kiln.store.schema import mlflow_exports, runs

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

#: seconds a folder or input copy without a row must have existed before it is garbage
GRACE = 300.0
#: rows deleted per transaction
BATCH = 200

_TERMINAL = tuple(s.value for s in TERMINAL_STATES)


@dataclass(frozen=True)
class Candidate:
    """A run the prune would delete (only the columns it needs)."""

    id: str
    notebook_path: str
    state: str
    created_at: datetime | None
    run_dir: str | None
    input_path: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "notebook": self.notebook_path,
            "state": self.state,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


@dataclass
class PruneResult:
    """What a prune deleted (or, for a dry run, would delete)."""

    runs: list[Candidate]
    folders: int = 0
    inputs: list[str] = field(default_factory=list)
    orphan_folders: int = 0
    environments: int = 0
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "runs": [c.to_json() for c in self.runs],
            "folders": self.folders,
            "inputs": self.inputs,
            "orphan_folders": self.orphan_folders,
            "environments": self.environments,
        }


def select_runs(
    store: RunStore,
    *,
    older_than: float | None = None,
    keep_last: int | None = None,
    states: Sequence[str] | None = None,
    notebook: str | None = None,
    now: datetime | None = None,
) -> list[Candidate]:
    """The finished runs to delete, oldest first: created more than ``older_than`` seconds
    ago, in ``states``, of ``notebook``, beyond the ``keep_last`` newest runs of each notebook
    (every criterion given must hold)."""
    from kiln.store.filters import notebook_filter
    from kiln.store.values import to_utc as _to_utc

    for state in states or ():
        if RunState(state) in ACTIVE_STATES:
            raise ValueError(f"a {state} run is never pruned: only finished runs are")
    columns = (
        runs.c.id,
        runs.c.notebook_path,
        runs.c.state,
        runs.c.created_at,
        runs.c.run_dir,
        runs.c.input_path,
    )
    query = sa.select(*columns)
    if notebook is not None:
        query = query.where(notebook_filter(notebook))
    query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc())
    with store._read() as conn:
        rows = conn.execute(query).all()
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(seconds=older_than or 0)
    seen: dict[str, int] = {}
    chosen = []
    for row in rows:
        rank = seen[row.notebook_path] = seen.get(row.notebook_path, 0) + 1
        if row.state not in _TERMINAL:
            continue
        if keep_last is not None and rank <= keep_last:
            continue
        if states and row.state not in states:
            continue
        created = _to_utc(row.created_at) if row.created_at is not None else None
        if older_than is not None and (created is None or created >= cutoff):
            continue
        chosen.append(
            Candidate(row.id, row.notebook_path, row.state, created, row.run_dir, row.input_path)
        )
    chosen.reverse()
    return chosen


def prune(
    store: RunStore,
    chosen: Sequence[Candidate],
    *,
    dry_run: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> PruneResult:
    """Delete ``chosen`` (rows, then folders, then unused inputs) and the garbage an earlier,
    interrupted prune left; a dry run only says what would go."""
    result = PruneResult(list(chosen), dry_run=dry_run)
    if dry_run:
        return result
    deleted: list[Candidate] = []
    for start in range(0, len(chosen), BATCH):
        batch = list(chosen[start : start + BATCH])
        ids = [c.id for c in batch]
        with store._write() as conn:
            conn.execute(mlflow_exports.delete().where(mlflow_exports.c.run_id.in_(ids)))
            gone = conn.execute(
                runs.delete().where(runs.c.id.in_(ids), runs.c.state.in_(_TERMINAL))
            ).rowcount
        if gone != len(ids):  # cannot happen for finished runs; be exact about what went
            left = _existing(store, ids)
            batch = [c for c in batch if c.id not in left]
        deleted += batch
        for candidate in batch:
            result.folders += _remove_folder(store, candidate.run_dir)
        if on_batch is not None:
            on_batch(len(deleted))
    result.runs = deleted
    result.orphan_folders = sweep_folders(store)
    result.inputs = sweep_inputs(store)
    from kiln.store.environments import prune_environments

    result.environments = prune_environments(store)
    return result


def _existing(store: RunStore, ids: list[str]) -> set[str]:
    with store._read() as conn:
        return set(conn.execute(sa.select(runs.c.id).where(runs.c.id.in_(ids))).scalars())


def _remove_folder(store: RunStore, run_dir: str | None) -> int:
    if not run_dir:
        return 0
    from kiln.store.artifacts import is_remote, remove_run_objects

    if is_remote(run_dir):  # the run's objects in the artefact store
        return 1 if remove_run_objects(run_dir) else 0
    folder = Path(run_dir)
    if folder.parent != store.runs_dir or not folder.is_dir():  # never outside this home
        return 0
    shutil.rmtree(folder, ignore_errors=True)
    return 1


def sweep_folders(store: RunStore, *, grace: float = GRACE) -> int:
    """Remove run folders that no row names (left by a killed prune), older than ``grace``."""
    try:
        entries = list(os.scandir(store.runs_dir))
    except OSError:
        return 0
    with store._read() as conn:
        known = set(conn.execute(sa.select(runs.c.id)).scalars())
    limit = time.time() - grace
    removed = 0
    for entry in entries:
        if entry.name in known or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime > limit:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


def sweep_inputs(store: RunStore, *, grace: float = GRACE) -> list[str]:
    """Remove stored input copies that no run refers to, older than ``grace``; returns their
    hashes."""
    folder = store.home / "inputs"
    with store._read() as conn:
        used = {
            os.path.basename(str(p))
            for p in conn.execute(sa.select(runs.c.input_path).distinct()).scalars()
            if p
        }
    limit = time.time() - grace
    removed = _sweep_stored_inputs(used, limit)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.endswith(".ipynb") or entry.name in used:
            continue
        try:
            if entry.stat().st_mtime > limit:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(entry.name[: -len(".ipynb")])
    return removed


def _sweep_stored_inputs(used: set[str], limit: float) -> list[str]:
    """Inputs in the artefact store that no run names, written before ``limit``."""
    from kiln.store.artifacts import artifact_store

    found = artifact_store()
    if found is None:
        return []
    removed = []
    for url, modified in found.inputs():
        name = url.rsplit("/", 1)[-1]
        if name in used or modified is None or modified > limit:
            continue
        found.remove(url)
        removed.append(name[: -len(".ipynb")])
    return removed
