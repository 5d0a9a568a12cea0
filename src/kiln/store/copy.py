"""Moving a history between databases (``kiln store copy``): every table, row for row, then
checked.

The target is set up (or upgraded) to this Kiln's schema and must hold no rows: a copy is not
a merge. Tables go in dependency order, in batches; every value is read through the same
column types on both sides (datetimes as aware UTC, JSON as data), so a row reads back the same
from either backend. Each table's check is its row count and a checksum that does not depend
on row order (PostgreSQL and SQLite order text differently): the sum of the SHA-256 of each
row's canonical JSON, taken once while reading the source and once by reading the copy back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kiln.errors import StoreError
from kiln.store.schema import metadata
from kiln.store.values import to_utc

BATCH = 1000
_MOD = 2**256


@dataclass
class TableCopy:
    """One table's copy and its check."""

    name: str
    rows: int
    source_sum: str
    copy_rows: int = 0
    copy_sum: str = ""

    @property
    def ok(self) -> bool:
        return self.rows == self.copy_rows and self.source_sum == self.copy_sum


def copy_history(
    source: str,
    target: str,
    *,
    home: Path | None = None,
    on_table: Callable[[TableCopy], None] | None = None,
) -> list[TableCopy]:
    """Copy every table of the history at ``source`` into the empty one at ``target`` (both
    database URLs) and check the copy; returns each table's counts and checksums."""
    import tempfile

    from kiln.store.sql import RunStore

    if _same(source, target):
        raise StoreError("the source and the target of the copy are the same database")
    with (
        tempfile.TemporaryDirectory(prefix="kiln-copy-") as scratch,  # no home needed
        RunStore(home or scratch, url=source, create=False) as src,
        RunStore(home or scratch, url=target) as dst,
    ):
        tables = _tables()
        with dst._read() as conn:
            for table in tables:
                if conn.execute(sa.select(sa.func.count()).select_from(table)).scalar():
                    raise StoreError(
                        f"the target {dst._where} already holds {table.name}: copy into an "
                        "empty database (a copy is not a merge)"
                    )
        done = []
        for table in tables:
            copied = _copy_table(src, dst, table)
            copied.copy_rows, copied.copy_sum = _checksum(dst, table)
            done.append(copied)
            if on_table is not None:
                on_table(copied)
        if dst.backend == "postgresql":
            _advance_sequences(dst, tables)
    return done


def _same(a: str, b: str) -> bool:
    try:
        return sa.make_url(a) == sa.make_url(b)
    except sa.exc.ArgumentError:
        return a == b


def _tables() -> list[sa.Table]:
    """The tables as copied: JSON columns keep SQL NULL as NULL (not a JSON ``null``)."""
    shadow = sa.MetaData()
    out = []
    for table in metadata.sorted_tables:
        columns = [
            sa.Column(
                column.name,
                sa.JSON(none_as_null=True) if isinstance(column.type, sa.JSON) else column.type,
                primary_key=column.primary_key,
                autoincrement=False,
            )
            for column in table.columns
        ]
        out.append(sa.Table(table.name, shadow, *columns))
    return out


def _rows(store: Any, table: sa.Table) -> Iterator[list[dict[str, Any]]]:
    """The table's rows in batches, by primary key (keyset: constant memory)."""
    key = list(table.primary_key.columns)
    last: tuple[Any, ...] | None = None
    while True:
        query = sa.select(table).order_by(*key).limit(BATCH)
        if last is not None:
            query = query.where(sa.tuple_(*key) > sa.tuple_(*last))
        with store._read() as conn:
            batch = [dict(row._mapping) for row in conn.execute(query)]
        if not batch:
            return
        yield [_normal(row) for row in batch]
        last = tuple(batch[-1][column.name] for column in key)


def _normal(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: to_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _copy_table(src: Any, dst: Any, table: sa.Table) -> TableCopy:
    total, count = 0, 0
    for batch in _rows(src, table):
        with dst._write() as conn:
            conn.execute(table.insert(), batch)
        count += len(batch)
        total = (total + sum(_row_hash(row) for row in batch)) % _MOD
    return TableCopy(table.name, count, f"{total:064x}")


def _checksum(store: Any, table: sa.Table) -> tuple[int, str]:
    total, count = 0, 0
    for batch in _rows(store, table):
        count += len(batch)
        total = (total + sum(_row_hash(row) for row in batch)) % _MOD
    return count, f"{total:064x}"


def _row_hash(row: Mapping[str, Any]) -> int:
    text = json.dumps(row, sort_keys=True, default=_plain, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_utc(value).isoformat()
    return str(value)


def _advance_sequences(store: Any, tables: list[sa.Table]) -> None:
    """Ids copied as they were: the sequences behind them must start after the largest."""
    with store._write() as conn:
        for table in tables:
            for column in table.primary_key.columns:
                if not isinstance(column.type, sa.Integer):
                    continue
                sequence = conn.execute(
                    sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                    {"t": table.name, "c": column.name},
                ).scalar()
                if sequence:
                    conn.execute(
                        sa.text(
                            f"SELECT setval(:s, COALESCE((SELECT max({column.name}) FROM "
                            f"{table.name}), 0) + 1, false)"
                        ),
                        {"s": sequence},
                    )
