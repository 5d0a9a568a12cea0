"""The run list's filters as SQL conditions, the same on both backends: a parameter's value
(as JSON), a tag's value, and a notebook given by path or by file name."""

from __future__ import annotations

import contextlib
import json
from os.path import basename
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kiln.store.schema import runs
from kiln.store.values import dumps


def parameter_equals(name: str, value: Any, backend: str) -> sa.ColumnElement[bool]:
    """``parameters[name] == value`` as JSON values, the same on every backend: the same JSON
    type (numbers compare as numbers: 3 matches 3.0) and value; ``None`` matches a JSON null;
    a run without the parameter never matches."""
    if not name.isidentifier():
        return sa.false()  # parameters are Python names: no run has this one
    stored_as = dumps(value)  # what the value would be in the database (dates as text, ...)
    value = json.loads(stored_as)
    if backend == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        # jsonb compares by type and value (3 = 3.0, true != 1, "3" != 3) and never fails
        # on a value of another type, unlike a cast of the text
        field = sa.cast(runs.c.parameters, JSONB)[name]
        return field == sa.cast(sa.literal(stored_as, sa.Text), JSONB)
    path = f'$."{name}"'
    kind = sa.func.json_type(runs.c.parameters, path)
    found = sa.func.json_extract(runs.c.parameters, path)
    if isinstance(value, bool):
        return kind == ("true" if value else "false")
    if value is None:
        return kind == "null"
    if isinstance(value, (int, float)):
        return kind.in_(("integer", "real")) & (found == value)
    if isinstance(value, str):
        return (kind == "text") & (found == value)
    return kind.in_(("array", "object")) & (found == sa.func.json(stored_as))


def tag_equals(key: str, value: str, backend: str) -> sa.ColumnElement[bool]:
    """``tags[key] == value`` for any tag name, quotes and backslashes included (a JSON path
    built from the name would not find those on SQLite); a run without the tag never matches."""
    if backend == "postgresql":
        found: sa.ColumnElement[bool] = runs.c.tags[key].as_string() == value
        return found
    pairs = sa.func.json_each(runs.c.tags).table_valued("key", "value", "type").alias("tag")
    return sa.exists(
        sa.select(1)
        .select_from(pairs)
        .where(pairs.c.key == key, pairs.c.type == "text", pairs.c.value == value)
    )


def notebook_filter(notebook: str) -> sa.ColumnElement[bool]:
    """The stored path as given or resolved; a bare file name matches it in any folder.

    Written so that the common case is one indexed equality (``notebook_name``, or
    ``notebook_path IN (...)``), not an OR of both, which no index serves in order."""
    paths = {notebook}
    with contextlib.suppress(OSError, RuntimeError):
        paths.add(str(Path(notebook).expanduser().resolve()))
    name = basename(notebook)
    if name != notebook:
        return runs.c.notebook_path.in_(sorted(paths))
    condition: sa.ColumnElement[bool] = runs.c.notebook_name == name
    # a path whose file name differs (the name is a symlink) still matches as a path
    others = sorted(path for path in paths if basename(path) != name)
    if others:
        condition = condition | runs.c.notebook_path.in_(others)
    return condition
