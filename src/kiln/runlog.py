"""The per-run log file: one timestamped line per event, cell output included.

Large outputs are stored once, in the output notebook: of a cell's stream output (stdout and
stderr) the log keeps the first :data:`STREAM_HEAD` characters as they come and the last
:data:`STREAM_TAIL` when the cell ends, with a line saying how much was left out and where
the whole output is (the output notebook's path and the cell).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.notebook.io import write_all

#: characters of a cell's stream output logged as they come
STREAM_HEAD = 64 * 1024
#: characters logged from the end of a cell's stream output past STREAM_HEAD
STREAM_TAIL = 64 * 1024
#: seconds a line logged inside an event loop may wait for the lines that follow it
FLUSH_DELAY = 0.05


_stamp: tuple[int, str] = (-1, "")


def _now() -> str:
    """The time as each line starts (UTC, milliseconds): formatted once per millisecond (a
    run logs a dozen lines within a few)."""
    global _stamp
    ms = time.time_ns() // 1_000_000
    if _stamp[0] != ms:
        seconds, millis = divmod(ms, 1000)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
        _stamp = (ms, text)
    return _stamp[1]


class _Tail:
    """The end of a cell's stream output, past its head: at most STREAM_TAIL characters."""

    def __init__(self) -> None:
        self.parts: deque[tuple[str, str]] = deque()
        self.size = 0
        self.dropped = 0

    def add(self, name: str, text: str) -> None:
        self.parts.append((name, text))
        self.size += len(text)
        while self.size > STREAM_TAIL:
            first_name, first = self.parts[0]
            excess = self.size - STREAM_TAIL
            if len(first) <= excess:
                self.parts.popleft()
                self.size -= len(first)
                self.dropped += len(first)
            else:
                self.parts[0] = (first_name, first[excess:])
                self.size -= excess
                self.dropped += excess


class RunLog:
    """Append-only log of one run (``runs/<id>/run.log``).

    Inside an event loop, the lines logged within :data:`FLUSH_DELAY` reach the file
    together (a run logs a dozen lines over a few turns of the loop: a short run's log is
    then one write instead of one per turn; ``kiln runs logs -f`` reads every 0.2 s);
    outside one, each line is written at once. :meth:`flush` writes what is pending now
    (the runner does before it records the run's end).

    The file is written through its descriptor with one ``write`` per flush (``O_APPEND``:
    the engine's processes append their own lines to the same file); a text file object
    would cost four system calls to set up and a layer of buffering per line."""

    def __init__(self, path: Path, *, mode: int = 0o600) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:  # the run's folder exists (the runner made it): no mkdir to try first
            fd = os.open(path, flags, mode)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, mode)
        try:
            os.fchmod(fd, mode)  # exact, whatever the umask
        except BaseException:
            os.close(fd)
            raise
        #: the open log's descriptor (None once closed, or stopped by a write that failed)
        self.fd: int | None = fd
        self._pending: list[str] = []  # lines not written yet
        self._flush_due: Any = None  # the loop's handle of the pending flush
        #: why the log stopped being written (a full disk), if it did
        self.error: OSError | None = None
        self._logged: dict[int, int] = {}  # cell -> stream characters logged as they came
        self._tails: dict[int, _Tail] = {}
        self._notebook: Path | None = None
        self._cell_ids: list[str | None] = []
        #: masks the run's secret values in every line (set by the runner)
        self.mask: Callable[[str], str] | None = None

    def set_output(self, path: Path, nb: Any) -> None:
        """The output notebook, named where the log leaves a large output out."""
        self._notebook = path
        self._cell_ids = [cell.get("id") for cell in nb.get("cells", [])]

    def line(self, text: str) -> None:
        # a cell's tail is complete when anything else than its output is logged (its end)
        if self._tails:
            self._write_tails()
        self._write(text)

    def _write(self, text: str) -> None:
        if self.fd is None:
            return
        stamp = _now()
        if self.mask is not None:
            text = self.mask(text)
        for part in text.splitlines() or [""]:
            self._pending.append(f"{stamp} {part}\n")
        if self._flush_due is None:
            self._flush_soon()

    def _flush_soon(self) -> None:
        asyncio = sys.modules.get("asyncio")  # not imported: no loop can be running
        loop = None
        if asyncio is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if loop is None:
            self.flush()
        else:
            self._flush_due = loop.call_later(FLUSH_DELAY, self._flush_when_due)

    def _flush_when_due(self) -> None:
        self._flush_due = None
        self.flush()

    def flush(self) -> None:
        """Write the pending lines now."""
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        if self.fd is None or not self._pending:
            return
        # a character UTF-8 cannot encode (a lone surrogate) is written escaped, not fatal
        data = "".join(self._pending).encode("utf-8", "backslashreplace")
        self._pending.clear()
        try:
            write_all(self.fd, data)
        except OSError as exc:  # a full disk stops the log, not the run's bookkeeping
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self.error = self.error or exc
        fd, self.fd = self.fd, None
        self._pending.clear()  # what could not be written is dropped
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def output(self, cell: int, output: Any) -> None:
        kind = output.get("output_type")
        if kind == "stream":
            self._stream(cell, str(output.get("name", "stdout")), str(output.get("text", "")))
        elif kind == "error":
            self.line(f"[cell {cell} error] {output.get('ename')}: {output.get('evalue')}")
            from kiln.textutil import strip_ansi

            for tb in output.get("traceback", []):
                for part in strip_ansi(str(tb)).splitlines():
                    self.line(f"[cell {cell} traceback] {part}")
        elif kind in ("display_data", "execute_result"):
            mimes = ", ".join(sorted(output.get("data", {})))
            self.line(f"[cell {cell} {kind}] {mimes}")

    def _stream(self, cell: int, name: str, text: str) -> None:
        tail = self._tails.get(cell)
        if tail is None:
            room = STREAM_HEAD - self._logged.get(cell, 0)
            head = text
            if len(text) > room:
                # cut after a line where one ends in the room left, else at the room
                end = text.rfind("\n", 0, room) + 1 or room
                head, text = text[:end], text[end:]
                tail = self._tails[cell] = _Tail()
            self._logged[cell] = self._logged.get(cell, 0) + len(head)
            for part in head.splitlines():
                self._write(f"[cell {cell} {name}] {part}")
        if tail is not None and text:
            tail.add(name, text)

    def _write_tails(self) -> None:
        tails, self._tails = self._tails, {}
        for cell, tail in tails.items():
            if tail.dropped:
                where = "the output notebook"
                if self._notebook is not None:
                    cid = self._cell_ids[cell] if 0 <= cell < len(self._cell_ids) else None
                    which = f"cell {cell} (id {cid})" if cid else f"cell {cell}"
                    where = f"{which} of {self._notebook}"
                self._write(
                    f"[cell {cell}] ... {tail.dropped:,} characters of output not logged here: "
                    f"the whole output is in {where}"
                )
            for name, text in tail.parts:
                for part in text.splitlines():
                    self._write(f"[cell {cell} {name}] {part}")

    def fields(self, label: str, values: Any) -> None:
        self.line(f"{label} {json.dumps(values, default=str, ensure_ascii=False)}")

    def close(self) -> None:
        if self._tails:
            self._write_tails()
        self.flush()
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.close(fd)
            except OSError as exc:
                self.error = self.error or exc


def shrink_log(path: Path, keep: int = 64 * 1024) -> None:
    """Keep only the last ``keep`` bytes of a log (to free space on a full disk)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size <= keep:
                return
            handle.seek(size - keep)
            tail = handle.read()
        with open(path, "wb") as handle:  # truncating first frees the space
            handle.write(b"[... earlier lines removed: the disk was full ...]\n" + tail)
    except OSError:
        pass
