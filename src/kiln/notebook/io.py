"""Reading and writing notebooks: clear errors on bad input, atomic saves.

Reading is strict about what it accepts (a missing, empty, non-JSON or invalid file is refused
with one paragraph naming the file and the problem) and tolerant about what it can repair
(nbformat v3 is upgraded, missing cell ids are added). The input file is never modified.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kiln.errors import NotebookNotFound, NotebookReadError

SUPPORTED_MAJOR = (3, 4)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a notebook file, translating OS errors into clear Kiln errors.

    Read through the descriptor (open, fstat, read, close: every run reads its notebook): a
    file object adds five system calls (a terminal check, two seeks, a second fstat, a
    read at the end) and its two layers of objects."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
            # a byte more than its size: a regular file is read whole, its end seen, at once
            parts = [os.read(fd, info.st_size + 1)]
            if len(parts[0]) != info.st_size or not stat.S_ISREG(info.st_mode):
                # it grew or shrank meanwhile, a file system answered in pieces, or a pipe
                while part := os.read(fd, 1 << 20):
                    parts.append(part)
            return b"".join(parts)
        finally:
            os.close(fd)
    except OSError as exc:
        p = Path(path)  # the path as the messages show it: made only for them
        if isinstance(exc, FileNotFoundError):
            raise NotebookNotFound(f"notebook not found: {p}", path=str(p)) from None
        if isinstance(exc, IsADirectoryError):
            raise NotebookReadError(
                f"{p} is a directory, not a notebook file (.ipynb)", path=str(p)
            ) from None
        why = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
        raise NotebookReadError(f"cannot read {p}: {why}", path=str(p)) from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_notebook(data: bytes, *, path: str) -> Any:
    """Parse, upgrade to nbformat 4.5 and validate notebook bytes; returns a NotebookNode."""
    return to_v4(load_json(data, path=path), path=path)


def load_json(data: bytes, *, path: str) -> dict[str, Any]:
    """The notebook's JSON, checked only as far as it can be without nbformat: not empty,
    UTF-8, JSON, an object with a supported ``nbformat``. Cheap: no nbformat import."""
    if not data.strip():
        raise NotebookReadError(
            f"{path} is empty ({len(data)} bytes): expected a Jupyter notebook (JSON)", path=path
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotebookReadError(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}): "
            "expected a Jupyter notebook (JSON)",
            path=path,
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookReadError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
            "Expected a Jupyter notebook (.ipynb).",
            path=path,
        ) from None
    except RecursionError:
        raise NotebookReadError(
            f"{path} is nested too deeply to be a notebook (JSON lists or objects inside each "
            "other thousands of levels deep)",
            path=path,
        ) from None
    if not isinstance(raw, dict) or "nbformat" not in raw:
        kind = type(raw).__name__ if not isinstance(raw, dict) else "a JSON object"
        raise NotebookReadError(
            f"{path} is not a Jupyter notebook: it is {kind} without an 'nbformat' field",
            path=path,
        )
    major = raw.get("nbformat")
    if not isinstance(major, int) or major not in SUPPORTED_MAJOR:
        raise NotebookReadError(
            f"{path} has nbformat {major!r}; Kiln reads nbformat 3 and 4 notebooks", path=path
        )
    if major == 4:
        _check_cells(raw.get("cells"), path)
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(raw, path)
    return raw


#: a JSON escape of a UTF-16 surrogate: ``\ud800``; a pair is fine, a lone one is not Unicode
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_cells(cells: Any, path: str) -> None:
    """The shape every reader relies on, checked before anything looks at a cell."""
    if not isinstance(cells, list):
        raise NotebookReadError(f"{path} is not a valid notebook: 'cells' is not a list", path=path)
    for index, cell in enumerate(cells):
        where = f"{path} is not a valid notebook: cells[{index}]"
        if not isinstance(cell, dict):
            kind = "null" if cell is None else type(cell).__name__
            raise NotebookReadError(f"{where} is {kind}, not a cell (a JSON object)", path=path)
        if not isinstance(cell.get("cell_type"), str):
            # a cell type from a newer nbformat minor is the validator's call, a missing or
            # non-text one is not a cell
            raise NotebookReadError(
                f"{where} has cell_type {cell.get('cell_type')!r}; expected code, markdown or raw",
                path=path,
            )
        source = cell.get("source", "")
        if not isinstance(source, str) and not (
            isinstance(source, list) and all(isinstance(line, str) for line in source)
        ):
            raise NotebookReadError(
                f"{where}.source is not text (a string or a list of strings)", path=path
            )
        if cell["cell_type"] == "code" and not isinstance(cell.get("outputs", []), list):
            raise NotebookReadError(f"{where}.outputs is not a list", path=path)


def _refuse_lone_surrogates(value: Any, path: str, where: str = "") -> None:
    """Strings with half of a UTF-16 pair cannot be written as UTF-8: refuse them here,
    naming where, rather than fail later while saving, diffing or exporting."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise NotebookReadError(
                    f"{path} is not a valid notebook: {at or 'a string'} holds a lone UTF-16 "
                    "surrogate (an escape such as \\ud800 that is not half of a pair), which is "
                    "not text",
                    path=path,
                )
        elif isinstance(item, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))


def to_v4(raw: dict[str, Any], *, path: str, validate: bool = True) -> Any:
    """Upgrade (v3, old v4) and validate raw notebook JSON; returns a NotebookNode.

    ``validate=False`` is for JSON already validated once (the same bytes run again)."""
    import nbformat
    from nbformat.validator import ValidationError

    from kiln.notebook.schemacheck import is_valid

    try:
        nb = nbformat.versions[raw["nbformat"]].to_notebook_json(
            raw, minor=raw.get("nbformat_minor", 0)
        )
        if nb.nbformat == 3:
            nb = nbformat.convert(nb, 4)
        minor = nb.get("nbformat_minor", 0)
        if minor < 5:
            nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=minor)
            nb.nbformat_minor = 5
    except (ValidationError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise NotebookReadError(
            f"{path} is not a valid notebook: {_short(exc)}", path=path
        ) from exc
    except RecursionError:
        raise _too_deep(path) from None
    _ensure_ids(nb)
    if not validate:
        return nb
    try:
        if not is_valid(nb, nb.get("nbformat_minor", 0)):  # nbformat judges what this refuses
            nbformat.validate(nb)
    except RecursionError:
        raise _too_deep(path) from None
    except ValidationError as exc:
        where = "/".join(str(p) for p in getattr(exc, "absolute_path", []) or [])
        at = f" (at {where})" if where else ""
        raise NotebookReadError(
            f"{path} is not a valid notebook: {_short(exc)}{at}", path=path
        ) from exc
    return nb


def _too_deep(path: str) -> NotebookReadError:
    return NotebookReadError(f"{path} is nested too deeply to be a notebook", path=path)


def _ensure_ids(nb: Any) -> None:
    import uuid

    seen: set[str] = set()
    for cell in nb.cells:
        cid = cell.get("id")
        if not isinstance(cid, str) or not cid or cid in seen:
            cell["id"] = uuid.uuid4().hex[:8]
        seen.add(cell["id"])


def _short(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    first = str(msg).strip().splitlines()[0] if str(msg).strip() else type(exc).__name__
    return first[:300]


def load_notebook(path: str | os.PathLike[str]) -> Any:
    """Load a notebook file as an nbformat 4.5 NotebookNode (v3 upgraded, ids added)."""
    return parse_notebook(read_bytes(path), path=str(path))


_SPLIT_MIMES = frozenset({"application/javascript", "image/svg+xml"})
_TRANSIENT_NB = frozenset({"orig_nbformat", "orig_nbformat_minor", "signature"})
#: the top-level ``cells`` entry of a notebook with no cells, as :func:`dumps` writes it
_NO_CELLS = '\n "cells": []'


def dumps(nb: Any) -> str:
    """Serialise a notebook byte for byte as nbformat writes it (1-space indent, sorted keys,
    multi-line text split into lines), without validating it and without nbformat's deep copy
    of the whole notebook: runs save after cells finish, so this is on the hot path.

    The text is :func:`notebook_frame` around the cells' :func:`cell_json`, which is how the
    saver of a running notebook rebuilds it from the cells that changed only."""
    head, tail = notebook_frame(nb)
    return join_cells(head, [cell_json(cell) for cell in nb.get("cells", [])], tail)


def notebook_frame(nb: Any) -> tuple[str, str]:
    """The notebook's text before and after its cells: ``head`` ends with ``"cells": [``,
    ``tail`` starts with the ``]`` that closes them (see :func:`join_cells`)."""
    out = {k: v for k, v in nb.items() if k != "cells"}
    out["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k not in _TRANSIENT_NB}
    out["cells"] = []
    text = _encode(out, 0) + "\n"
    # keys one level down are indented further: only the top-level entry matches
    cut = text.index(_NO_CELLS) + len(_NO_CELLS) - 1
    return text[:cut], text[cut + 1 :]


def join_cells(head: str, cells: list[str], tail: str) -> str:
    """A notebook's text from its frame and its cells' :func:`cell_json`."""
    if not cells:
        return f"{head}]{tail}"
    return head + "\n" + ",\n".join(cells) + "\n ]" + tail


def cell_json(cell: Any) -> str:
    """One cell as it appears in a saved notebook, indented for its place in the ``cells``
    list, without the separating comma."""
    return "  " + _encode(_cell_for_disk(cell), 2)


def _encode_bytes(value: Any) -> str:
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot write a {type(value).__name__} into a notebook")


def _split_bundle(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.splitlines(True)
        if isinstance(v, str) and (k.startswith("text/") or k in _SPLIT_MIMES)
        else v
        for k, v in data.items()
    }


def _cell_for_disk(cell: Any) -> dict[str, Any]:
    c = dict(cell)
    c["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k != "trusted"}
    if isinstance(c.get("source"), str):
        c["source"] = c["source"].splitlines(True)
    if "attachments" in c:
        c["attachments"] = {k: _split_bundle(v) for k, v in c["attachments"].items()}
    if c.get("cell_type") == "code" and c.get("outputs"):
        outputs = []
        for output in c["outputs"]:
            o = dict(output)
            kind = o.get("output_type")
            if kind in ("execute_result", "display_data") and "data" in o:
                o["data"] = _split_bundle(o["data"])
            elif kind == "stream" and isinstance(o.get("text"), str):
                o["text"] = o["text"].splitlines(True)
            outputs.append(o)
        c["outputs"] = outputs
    return c


# What json.dumps(value, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False)
# writes, built as a list of pieces joined once: json's own indenting encoder is pure Python
# and joins its pieces at every level, so the text of a 100 MB output is copied several
# times over; here a list of strings (the lines of a text) is one C-level join. Anything
# unusual (keys that are not strings, subclasses of scalars) goes through json itself, so
# the text is always exactly json's.
_encode_str: Callable[[str], str] = json.encoder.encode_basestring
_CONSTANTS: dict[Any, str] = {None: "null", True: "true", False: "false"}


def _encode(value: Any, depth: int) -> str:
    out: list[str] = []
    _write(value, depth, out)
    return "".join(out)


#: "\n" and the indent of each depth (a notebook's JSON is a few levels deep)
_BREAKS = ["\n" + " " * depth for depth in range(64)]


def _write(value: Any, depth: int, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(_encode_str(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        try:
            items = sorted(value.items())  # keys are unique: the values are never compared
        except TypeError:  # keys of several types: json's own rules (and its error)
            out.append(_by_json(value, depth))
            return
        mark = len(out)
        inner = _BREAKS[depth + 1] if depth < 62 else "\n" + " " * (depth + 1)
        between = "," + inner
        head = "{" + inner
        for key, item in items:
            if type(key) is not str:  # int keys and the like: json's own rules
                del out[mark:]
                out.append(_by_json(value, depth))
                return
            head += _encode_str(key) + ": "
            # a plain scalar value is written here, without a call per value
            kind = type(item)
            if kind is str:
                out.append(head + _encode_str(item))
            elif kind is int:
                out.append(head + int.__repr__(item))
            elif kind is bool or item is None:
                out.append(head + _CONSTANTS[item])
            elif kind is float and math.isfinite(item):
                out.append(head + float.__repr__(item))  # what json writes for a finite float
            else:
                out.append(head)
                _write(item, depth + 1, out)
            head = between
        out.append(_BREAKS[depth] + "}" if depth < 63 else "\n" + " " * depth + "}")
    elif kind is list or kind is tuple:
        if not value:
            out.append("[]")
            return
        inner = _BREAKS[depth + 1] if depth < 62 else "\n" + " " * (depth + 1)
        close = _BREAKS[depth] + "]" if depth < 63 else "\n" + " " * depth + "]"
        if type(value[0]) is str:  # the lines of a text: one join
            try:
                out.append("[" + inner + ("," + inner).join(map(_encode_str, value)) + close)
                return
            except TypeError:  # not all of them strings after all
                pass
        opening = "[" + inner
        between = "," + inner
        for item in value:
            out.append(opening)
            _write(item, depth + 1, out)
            opening = between
        out.append(close)
    elif kind is bool or value is None:
        out.append(_CONSTANTS[value])
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is float and math.isfinite(value):
        out.append(float.__repr__(value))  # what json writes for a finite float
    else:  # NaN, Infinity, bytes, subclasses: json's own rules
        out.append(_by_json(value, depth))


def _by_json(value: Any, depth: int) -> str:
    text = json.dumps(
        value,
        indent=1,
        sort_keys=True,
        separators=(",", ": "),
        ensure_ascii=False,
        default=_encode_bytes,
    )
    # JSON text has no raw newline inside a string: every newline is a line break
    return text.replace("\n", "\n" + " " * depth) if depth else text


_tmp_counter = itertools.count()


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, durable: bool = False, mode: int | None = None
) -> None:
    """Write text to path via a temporary file in the same folder and a rename.

    A reader, or a crash of any process, sees either the previous complete file or the new
    complete file, never a truncated one. ``durable`` also fsyncs the data before the rename,
    to survive a power cut too; runs don't ask for it (an fsync costs milliseconds per save
    here, and the runs database commits with ``synchronous=NORMAL``, the same promise).
    ``mode`` sets the file's permissions exactly; by default they are 0666 less the umask.
    """
    atomic_write(path, (text.encode("utf-8"),), durable=durable, mode=mode)


def atomic_write(
    path: str | os.PathLike[str],
    parts: Iterable[bytes],
    *,
    durable: bool = False,
    mode: int | None = None,
) -> None:
    """:func:`atomic_write_text` for a file given as a sequence of byte strings (written one
    after the other); an exception raised while ``parts`` is iterated abandons the write
    and leaves the previous file in place.

    Written through the descriptor, in pieces of about :data:`WRITE_CHUNK` (a notebook
    saved while it runs is often one ``write``): a file object would add its own set-up
    calls (``fstat``, ``lseek``) and a copy of every byte into its buffer."""
    target = os.fspath(path)
    folder, name = os.path.split(target)
    # a name unique to this process and write: cheaper than mkstemp's random probing
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o666 if mode is None else mode)
    except FileNotFoundError:
        Path(folder or ".").mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o666 if mode is None else mode)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)  # exact, whatever the umask
            _write_parts(fd, parts)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: bytes gathered before a ``write`` of :func:`atomic_write`
WRITE_CHUNK = 1 << 20


def _write_parts(fd: int, parts: Iterable[bytes]) -> None:
    gathered: list[bytes] = []
    size = 0
    for part in parts:
        gathered.append(part)
        size += len(part)
        if size >= WRITE_CHUNK:
            write_all(fd, b"".join(gathered))
            gathered.clear()
            size = 0
    if gathered:
        write_all(fd, gathered[0] if len(gathered) == 1 else b"".join(gathered))


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to the descriptor ``fd`` (a short write goes on where it stopped)."""
    view = memoryview(data)
    while view:  # a regular file takes it all at once; a short write goes on
        view = view[os.write(fd, view) :]


def save_notebook(
    nb: Any, path: str | os.PathLike[str], *, durable: bool = False, mode: int | None = None
) -> None:
    """Save a notebook atomically (``mode``: exact permissions; default: the umask's)."""
    atomic_write_text(path, dumps(nb), durable=durable, mode=mode)
