"""Checking a notebook against nbformat's schema without compiling the schema in every process.

``nbformat.validate`` compiles nbformat's JSON schema with fastjsonschema the first time a
process validates: about 50 ms, paid by every ``kiln run`` (a cold run's whole budget is about
half a second). The compiled validator depends only on the schema, fastjsonschema's version and
the Python version, so Kiln compiles it once and keeps the code object in its cache folder
(``$XDG_CACHE_HOME/kiln``, else ``~/.cache/kiln``), the way Python keeps ``.pyc`` files.

Only the verdict "valid" comes from here: a notebook this check refuses goes to
``nbformat.validate``, whose error (and verdict) stands. Without a usable cache folder the
validator is compiled in memory, as nbformat would.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import marshal
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: minor version -> the compiled check, or None when nbformat must judge (once per process)
_checks: dict[int, Callable[[Any], Any] | None] = {}


def cache_folder() -> Path:
    """Where Kiln keeps what it can rebuild (compiled validators)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kiln"


def is_valid(nb: Any, minor: int) -> bool:
    """True when ``nb`` (nbformat 4, minor version ``minor``) passes nbformat's schema; False
    when it does not or this check cannot tell (the caller then asks nbformat)."""
    if minor not in _checks:
        _checks[minor] = _load(minor)
    check = _checks[minor]
    if check is None:
        return False
    try:
        check(nb)
    except Exception:  # fastjsonschema's JsonSchemaException, or anything odd: ask nbformat
        return False
    return True


def _load(minor: int) -> Callable[[Any], Any] | None:
    try:
        import fastjsonschema
        import nbformat.v4
    except ImportError:
        return None
    if minor != nbformat.v4.nbformat_minor:  # older schemas are rare; newer ones are relaxed
        return None
    name = nbformat.v4.nbformat_schema.get((4, minor))
    if name is None:
        return None
    try:
        schema_bytes = (Path(nbformat.v4.__file__).parent / name).read_bytes()
        schema = json.loads(schema_bytes)
    except (OSError, ValueError):
        return None
    key = hashlib.sha256(
        schema_bytes
        + fastjsonschema.VERSION.encode()
        + importlib.util.MAGIC_NUMBER
        + sys.implementation.cache_tag.encode()
    ).hexdigest()[:32]
    path = cache_folder() / "validators" / f"nbformat-{key}.marshal"
    code = _read_code(path)
    if code is None:
        try:
            source = fastjsonschema.compile_to_code(schema)
        except Exception:  # a schema fastjsonschema cannot compile: nbformat judges
            return None
        code = compile(source, f"<nbformat v4.{minor} schema>", "exec")
        _write_code(path, code)
    namespace: dict[str, Any] = {}
    try:
        exec(code, namespace)  # the code compiled from nbformat's own schema
    except Exception:
        return None
    check = namespace.get("validate")
    return check if callable(check) else None


def _read_code(path: Path) -> Any:
    """The kept code, if this user alone could have written it: a cache folder another user
    can write to (``XDG_CACHE_HOME=/tmp``) must not be a way to run code as this one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not (_private(os.fstat(fh.fileno())) and _private_folder(path.parent)):
            return None
        data = fh.read()
    try:
        return marshal.loads(data)
    except (EOFError, ValueError, TypeError):  # a truncated or foreign file: compile again
        return None


def _private(st: os.stat_result) -> bool:
    """Owned by this user, writable by nobody else."""
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _private_folder(folder: Path) -> bool:
    try:
        return _private(os.stat(folder))
    except OSError:
        return False


def _write_code(path: Path, code: Any) -> None:
    """Keep the compiled code for the next process; any failure only costs the next one the
    compilation (a read-only home, a full disk)."""
    from kiln.notebook.io import atomic_write

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _private_folder(path.parent):  # else it would never be read back
            atomic_write(path, (marshal.dumps(code),), mode=0o600)
    except OSError:
        pass
