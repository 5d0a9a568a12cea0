"""Changing ``kiln.yaml`` from a command (``kiln schedules add|remove``) without losing a word.

No YAML library that round-trips comments is installed, so the file is edited as text: an entry
is added as a block at the end of its section (or the section is appended), or its lines are
taken out; every comment, blank line and the order of everything else stay as written. The
result is parsed and checked as the loader does (and by the caller's own check) *before* it is
written; a result that does not load is refused with the located error and the file is left
untouched. The write is atomic (a temporary file beside it, then a rename), so no reader ever
sees half a file, and commands that edit hold the project folder's lock (:func:`editing`) from
reading the file to writing it, so two edits at once both land.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kiln.errors import UsageError
from kiln.project.file import Project, parse_project

#: a key written bare (anything else, and YAML's words, is written quoted)
_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})
#: text written bare as a value: a name or a path (no number, no YAML indicator first)
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


@contextmanager
def editing(start: Path) -> Iterator[None]:
    """Hold the edit lock of the project at ``start`` (an advisory ``flock`` on the folder of
    its kiln.yaml, or on ``start`` when it has none): read the file, check and write it inside,
    so a concurrent edit waits instead of writing over this one. A folder lock leaves no file
    behind and outlives the atomic rename that replaces kiln.yaml."""
    import fcntl

    from kiln.project import find_project_file

    found = find_project_file(start)
    folder = found.parent if found is not None else Path(start)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def add_entry(
    path: Path,
    section: str,
    name: str,
    body: Mapping[str, Any],
    *,
    check: Callable[[Project], None] | None = None,
) -> Project:
    """Add ``name: body`` to the top-level mapping ``section`` of the project file ``path``;
    the project as it loads now. Nothing is written when the result does not load or
    ``check`` raises."""
    text = _read(path)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    at = _section_line(lines, section)
    if at is None:
        lines += [f"{section}:\n", *_render(name, body, 2)]
    else:
        rest = _value_of(lines[at], section)
        if rest == "{}":
            lines[at] = f"{section}:\n"
            lines[at + 1 : at + 1] = _render(name, body, 2)
        elif rest:
            raise UsageError(
                f"{path.name}:{at + 1}: the {section} section is written on one line "
                f"({rest[:40]}); add {name} to it by hand, or write the section as a block"
            )
        else:
            last, indent = _section_end(lines, at)
            lines[last + 1 : last + 1] = _render(name, body, indent)
    return _replace(path, "".join(lines), check)


def remove_entry(
    path: Path,
    section: str,
    name: str,
    *,
    check: Callable[[Project], None] | None = None,
) -> Project:
    """Take the entry ``name`` (its lines, and the comments inside it) out of ``section``."""
    text = _read(path)
    lines = text.splitlines(keepends=True)
    at = _section_line(lines, section)
    if at is None or _value_of(lines[at], section):
        raise UsageError(f"{path.name}: no {section} section written as a block holds {name!r}")
    last, indent = _section_end(lines, at)
    start = None
    for i in range(at + 1, last + 1):
        if _indent(lines[i]) == indent and _key_of(lines[i]) == name:
            start = i
            break
    if start is None:
        raise UsageError(f"{path.name}: {section} has no entry {name!r}")
    end = start
    for i in range(start + 1, last + 1):
        if _content(lines[i]) and _indent(lines[i]) <= indent:
            break
        if _content(lines[i]) or lines[i].strip().startswith("#"):
            end = i
    # comment lines right above the entry, at its indentation, are about it
    while (
        start - 1 > at
        and lines[start - 1].strip().startswith("#")
        and _indent(lines[start - 1]) == indent
    ):
        start -= 1
    del lines[start : end + 1]
    if not any(_content(line) for line in lines[at + 1 : last + 1 - (end + 1 - start)]):
        lines[at] = f"{section}: {{}}\n"
    return _replace(path, "".join(lines), check)


# -- the text --------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _replace(path: Path, text: str, check: Callable[[Project], None] | None) -> Project:
    project = parse_project(path, text.encode("utf-8"))  # a located error when it does not load
    if check is not None:
        check(project)
    _write_atomic(path, text)
    return project


def _write_atomic(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o7777
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed over the file below
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, mode)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _section_line(lines: list[str], section: str) -> int | None:
    pattern = re.compile(rf"{re.escape(section)}\s*:(\s|$)")
    for i, line in enumerate(lines):
        if pattern.match(line):
            return i
    return None


def _value_of(line: str, section: str) -> str:
    """What follows ``section:`` on its line, without a trailing comment."""
    rest = line.split(":", 1)[1]
    return re.sub(r"\s+#.*$", "", rest).strip()


def _section_end(lines: list[str], at: int) -> tuple[int, int]:
    """(the last line holding the section's content, the indentation of its entries)."""
    last, indent = at, 0
    for i in range(at + 1, len(lines)):
        line = lines[i]
        if not _content(line):
            continue
        if _indent(line) == 0:
            break  # the next top-level key
        if indent == 0:
            indent = _indent(line)
        last = i
    return last, indent or 2


def _key_of(line: str) -> str | None:
    text = line.strip()
    if text.startswith(('"', "'")):
        quote = text[0]
        end = text.find(quote, 1)
        return text[1:end] if end > 0 else None
    key, sep, _ = text.partition(":")
    return key.strip() if sep else None


def _key(name: str) -> str:
    # the project file's keys are read with word_keys: a bare `on:` stays the word
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _scalar(value: Any) -> str:
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.lower() not in _WORDS:
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(str(k))}: {_scalar(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)  # JSON scalars are YAML scalars


def _render(name: str, body: Mapping[str, Any], indent: int) -> list[str]:
    """``name:`` and its body as a YAML block at ``indent`` (nested mappings as blocks)."""
    pad = " " * indent
    out = [f"{pad}{_key(name)}:\n"]
    for key, value in body.items():
        if isinstance(value, Mapping) and value:
            out += _render(str(key), value, indent + 2)
        else:
            out.append(f"{pad}  {_key(str(key))}: {_scalar(value)}\n")
    return out
