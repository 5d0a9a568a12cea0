"""The per-run log file: one timestamped line per event, cell output included."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunLog:
    """Append-only, line-buffered log of one run (``runs/<id>/run.log``)."""

    def __init__(self, path: Path, *, mode: int = 0o600) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
        os.fchmod(fd, mode)  # exact, whatever the umask
        self._fh: IO[str] | None = open(fd, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        #: why the log stopped being written (a full disk), if it did
        self.error: OSError | None = None

    def line(self, text: str) -> None:
        if self._fh is None:
            return
        stamp = _now()
        try:
            for part in text.splitlines() or [""]:
                self._fh.write(f"{stamp} {part}\n")
        except OSError as exc:  # a full disk stops the log, not the run's bookkeeping
            self.error = exc
            self.close()

    def output(self, cell: int, output: Any) -> None:
        kind = output.get("output_type")
        if kind == "stream":
            name = output.get("name", "stdout")
            for part in str(output.get("text", "")).splitlines():
                self.line(f"[cell {cell} {name}] {part}")
        elif kind == "error":
            self.line(f"[cell {cell} error] {output.get('ename')}: {output.get('evalue')}")
            from kiln.textutil import strip_ansi

            for tb in output.get("traceback", []):
                for part in strip_ansi(str(tb)).splitlines():
                    self.line(f"[cell {cell} traceback] {part}")
        elif kind in ("display_data", "execute_result"):
            mimes = ", ".join(sorted(output.get("data", {})))
            self.line(f"[cell {cell} {kind}] {mimes}")

    def fields(self, label: str, values: Any) -> None:
        self.line(f"{label} {json.dumps(values, default=str, ensure_ascii=False)}")

    @property
    def handle(self) -> IO[str] | None:
        return self._fh

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
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
