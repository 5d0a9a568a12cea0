"""The columns of the tables a run writes through ``sqlite3`` (runs, environments), declared
without SQLAlchemy.

A ``kiln run`` on an up-to-date SQLite history never imports SQLAlchemy (~0.15 s of a cold
start): its statements (:mod:`kiln.store.hotrow`) and the value checks of
:mod:`kiln.store.values` take the columns' kinds from here. :mod:`kiln.store.schema` stays the
declaration queries and migrations are compared with; a test fails when this one drifts from
it (every column, in order, its kind, nullability and length).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

#: text (String, Text), int (Integer), float (Double), time (DateTime with a time zone: UTC
#: text on SQLite), json (a ``None`` is JSON ``null``), json_or_null (a ``None`` is SQL NULL)
Kind = Literal["text", "int", "float", "time", "json", "json_or_null"]


class Column(NamedTuple):
    kind: Kind
    nullable: bool = True
    length: int | None = None  # a bounded text column's limit


RUNS: dict[str, Column] = {
    "id": Column("text", False, 128),
    "notebook_path": Column("text", False),
    "notebook_name": Column("text", False),
    "notebook_sha256": Column("text", False, 64),
    "state": Column("text", False, 16),
    "parameters": Column("json", False),
    "created_at": Column("time", False),
    "started_at": Column("time"),
    "ended_at": Column("time"),
    "run_dir": Column("text"),
    "input_path": Column("text"),
    "output_path": Column("text"),
    "log_path": Column("text"),
    "engine": Column("text", length=64),
    "kernel_name": Column("text", length=255),
    "kernel_version": Column("text", length=64),
    "language": Column("text", length=64),
    "python_version": Column("text", length=64),
    "kiln_version": Column("text", length=64),
    "cell_durations": Column("json", False),
    "error": Column("json_or_null"),
    "reason": Column("text"),
    "records": Column("json", False),
    "owner_pid": Column("int"),
    "owner_host": Column("text", length=255),
    "owner_started": Column("float"),
    "kernel_pid": Column("int"),
    "kernel_started": Column("float"),
    "request": Column("json_or_null"),
    "lease_owner": Column("text", length=255),
    "lease_expires": Column("time"),
    "retry_of": Column("text", length=128),
    "attempt": Column("int"),
    "max_retries": Column("int"),
    "submitted_by": Column("text", length=255),
    "tags": Column("json_or_null"),
    "cancel_requested": Column("time"),
    "build_id": Column("text", length=128),
    "environment_hash": Column("text", length=64),
    "git": Column("json_or_null"),
    "inputs": Column("json_or_null"),
    "metrics": Column("json_or_null"),
    "artifacts": Column("json_or_null"),
    "origin": Column("json_or_null"),
}

ENVIRONMENTS: dict[str, Column] = {
    "hash": Column("text", False, 64),
    "created_at": Column("time", False),
    "language": Column("text", False, 64),
    "version": Column("text", False, 64),
    "implementation": Column("text", False, 64),
    "os": Column("text", False),
    "machine": Column("text", False, 64),
    "packages": Column("json", False),
}


def run_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    """``columns``, checked to be the runs table's (the hot paths build their statements from
    them; ``column_values`` only gives the table's columns, so another name is a mistake in
    Kiln)."""
    unknown = [name for name in columns if name not in RUNS]
    if unknown:
        raise ValueError(f"the runs table has no column {', '.join(unknown)}")
    return columns
