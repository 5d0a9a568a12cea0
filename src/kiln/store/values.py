"""Run fields to column values and back, the same on every backend.

Datetimes are aware UTC in and out (a naive one is taken to be UTC). JSON is written by
:func:`dumps`, which gives every backend text it stores as it is: PostgreSQL's ``json`` and
``text`` cannot hold NaN or NUL, so no backend gets them (NaN becomes ``"nan"``, as
``kiln.record`` stores it; NUL becomes U+FFFD). Bounded text columns refuse longer values
everywhere, not only where the database would. No SQLAlchemy here: a run on a SQLite history
writes its row through ``sqlite3`` (:mod:`kiln.store.hotrow`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import fields
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.store.columns import RUNS
from kiln.store.records import STATES, TERMINAL_STATES, Record, Run, RunState

if TYPE_CHECKING:
    import sqlalchemy as sa

_DATETIME_FIELDS = frozenset(
    {"created_at", "started_at", "ended_at", "lease_expires", "cancel_requested"}
)
RUN_FIELDS = tuple(f.name for f in fields(Run))
#: Fields ``update_run`` accepts: every Run field but the id; ``records`` means ``records_list``.
UPDATABLE = frozenset(RUN_FIELDS) - {"id"} | {"records"}
TERMINAL = tuple(state.value for state in RunState if state in TERMINAL_STATES)
#: Columns that cannot be NULL (the derived notebook_name aside).
_REQUIRED = frozenset({"notebook_path", "notebook_sha256", "state", "created_at"})
#: bounded text columns: a longer value is refused on every backend (PostgreSQL would refuse
#: it, SQLite would keep it), so both hold the same values
_MAX_LENGTH = {name: column.length for name, column in RUNS.items() if column.length}


def now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(timezone.utc)


def to_utc(value: datetime) -> datetime:
    """Aware UTC. A naive datetime is taken to be UTC already (the store's convention)."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def check_state(state: RunState | str) -> None:
    """``ValueError`` unless ``state`` is a run state."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}: expected one of {', '.join(STATES)}")


class NotJson(TypeError):
    """A value with no JSON form (the driver may raise it unwrapped: PostgreSQL's does)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    for convert in ("tolist", "item"):  # numpy arrays and scalars
        method = getattr(value, convert, None)
        if callable(method):
            return method()
    raise NotJson(f"{type(value).__name__} value {value!r} cannot be stored as JSON")


#: a \u0000 escape in JSON text (an odd number of backslashes before the u)
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


#: ``json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=False)``, its
#: encoder made once (a run stores a dozen JSON values twice: one encoder each was most of
#: the cost of the small ones)
_encode_json = json.JSONEncoder(default=_json_default, ensure_ascii=False, allow_nan=False).encode


def dumps(value: Any) -> str:
    """JSON text that every backend stores as it is: NaN and infinities become the text
    ``"nan"``, ``"inf"``, ``"-inf"`` (as ``kiln.record`` stores them) and NUL characters
    U+FFFD (PostgreSQL's JSON and text types cannot hold either)."""
    try:
        text = _encode_json(value)
    except ValueError as exc:
        if "float" not in str(exc):  # "Out of range float values are not JSON compliant"
            raise
        plain = json.loads(json.dumps(value, default=_json_default, ensure_ascii=False))
        text = json.dumps(_finite(plain), ensure_ascii=False, allow_nan=False)
    if "\\u0000" in text:
        text = _JSON_NUL.sub(r"\1\\ufffd", text)
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


_KNOWN = UPDATABLE | {"id"}
#: fields column_values converts (every other value is stored as it is)
_RECORDS = frozenset({"records", "records_list"})
_CONVERTED = _DATETIME_FIELDS | _RECORDS | {"state", "notebook_path"}


def column_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Run fields -> column values (records serialised, datetimes in UTC, derived columns)."""
    if not _KNOWN.issuperset(values):
        unknown = sorted(set(values) - _KNOWN)
        raise ValueError(
            f"unknown run field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
            f"expected some of {', '.join(sorted(UPDATABLE))}"
        )
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None and name not in _RECORDS:
            if name in _REQUIRED:
                raise ValueError(f"run field {name} cannot be None")
            if name == "parameters":
                value = {}
            elif name == "cell_durations":
                value = []
            out[name] = value
        elif name not in _CONVERTED:
            if isinstance(value, str):
                value = _text(name, value)
            out[name] = value
        elif name in _RECORDS:
            out["records"] = [r.to_json() if isinstance(r, Record) else dict(r) for r in value]
        elif name in _DATETIME_FIELDS:
            out[name] = to_utc(value)
        elif name == "state":
            out[name] = _text(name, RunState(value).value)
        else:  # notebook_path, and the name derived from it
            path = _text(name, str(value))
            out[name] = path
            out["notebook_name"] = _text("notebook_name", basename(path))
    return out


def _text(name: str, value: str) -> str:
    """A text column's value as every backend stores it: NUL replaced (PostgreSQL's text
    cannot hold it), a bounded column's length checked (PostgreSQL would refuse it)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    limit = _MAX_LENGTH.get(name)
    if limit is not None and len(value) > limit:
        raise ValueError(f"run field {name} is {len(value)} characters long: at most {limit} fit")
    return value


def row_to_run(row: sa.Row[Any]) -> Run:
    return mapping_to_run(row._mapping)


def mapping_to_run(data: Mapping[Any, Any]) -> Run:
    """A run from its row's columns by name (a SQLAlchemy row's mapping, or a dict)."""
    values: dict[str, Any] = {}
    for name in RUN_FIELDS:
        if name == "records_list":
            values[name] = [
                Record(r["name"], r["kind"], r.get("value"), r.get("cell_index"))
                for r in data["records"] or []
            ]
        elif name in _DATETIME_FIELDS:
            value = data[name]
            values[name] = None if value is None else to_utc(value)
        else:
            values[name] = data[name]
    values["parameters"] = values["parameters"] or {}
    values["cell_durations"] = values["cell_durations"] or []
    values["tags"] = values["tags"] or {}
    return Run(**values)


def basename(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
