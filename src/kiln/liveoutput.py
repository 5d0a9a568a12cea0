"""Live cell output on the terminal: the one echo behind ``--log-output`` and ``log_output=True``.

Like papermill's ``--log-output``: a line when each cell starts (``Executing cell 3/7``), the
cells' stdout and stderr as they come, the ``text/plain`` of results and displays, and error
tracebacks (without colour codes). ``kiln run``, ``kiln run --sweep`` (each line prefixed with
its set's index) and ``kiln.run``/``kiln.sweep`` all use :class:`LiveOutput`; the CLI passes a
writer that goes through its progress bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kiln.engines.base import CellOutput, CellStarted
from kiln.events import RunEvent, RunStarted
from kiln.textutil import strip_ansi

if TYPE_CHECKING:
    from kiln.sweeps import SweepEvent

#: writes text (with its newlines) to ``"stdout"`` or ``"stderr"``
Writer = Callable[[str, str], None]


def write_std(text: str, stream: str) -> None:
    target = sys.stderr if stream == "stderr" else sys.stdout
    target.write(text)
    target.flush()


def secret_masker(
    given: Mapping[str, Any] | None, recorded: Mapping[str, Any]
) -> Callable[[str], str] | None:
    """Masks the values the caller gave (``given``) of the parameters the run recorded as
    secret (``***``: declared ``Secret`` in the notebook, or read from a secret source)."""
    if not given:
        return None
    from kiln.redact import MASK, Redactor

    values = [_plain(given[name]) for name, shown in recorded.items()
              if shown == MASK and name in given]  # fmt: skip
    if not values:
        return None
    return Redactor(values, scan=False).mask_values


def _plain(value: Any) -> Any:
    """A value as given: ``-p`` text (``CliValue``), a wrapped ``Extra``, or the value."""
    for attribute in ("text", "value"):
        if hasattr(value, attribute) and type(value).__module__.startswith("kiln."):
            return getattr(value, attribute)
    return value


class LiveOutput:
    """An observer that echoes a run's cells as they execute; ``given``: the parameter values
    the caller passed, so that those the run treats as secret are masked in the echo."""

    def __init__(
        self, write: Writer = write_std, *, given: Mapping[str, Any] | None = None
    ) -> None:
        self.write = write
        self.given = given
        self._masks: dict[int, Callable[[str], str] | None] = {}
        self._totals: dict[int, int] = {}
        self._done: dict[int, int] = {}

    def observe(self, event: RunEvent, *, key: int = 0, prefix: str = "") -> None:
        if isinstance(event, RunStarted):
            self._masks[key] = secret_masker(self.given, event.run.parameters)
            self._totals[key] = event.code_cells
            self._done[key] = 0
        elif isinstance(event, CellStarted):
            self._done[key] = self._done.get(key, 0) + 1
            total = self._totals.get(key)
            of = f"/{total}" if total else ""
            self._emit(
                f"Executing cell {self._done[key]}{of} (cell index {event.index})\n",
                "stderr",
                prefix,
            )
        elif isinstance(event, CellOutput):
            shown = output_text(event.output)
            if shown is not None:
                mask = self._masks.get(key)
                text = mask(shown[0]) if mask is not None else shown[0]
                self._emit(text, shown[1], prefix)

    def observe_sweep(self, event: SweepEvent) -> None:
        """The same for a sweep: each line prefixed with ``[set index]``."""
        from kiln.sweeps import SetEvent

        if isinstance(event, SetEvent):
            self.observe(event.event, key=event.index, prefix=f"[{event.index}] ")

    def _emit(self, text: str, stream: str, prefix: str) -> None:
        if prefix:
            text = "".join(prefix + line for line in text.splitlines(keepends=True))
        self.write(text, stream)


def output_text(output: Any) -> tuple[str, str] | None:
    """What a terminal shows of one output, and on which stream; None for nothing."""
    kind = output.get("output_type")
    if kind == "stream":
        text = str(output.get("text", ""))
        return text, "stderr" if output.get("name") == "stderr" else "stdout"
    if kind == "error":
        traceback = output.get("traceback") or [f"{output.get('ename')}: {output.get('evalue')}"]
        return strip_ansi("\n".join(str(t) for t in traceback)) + "\n", "stderr"
    if kind in ("execute_result", "display_data"):
        plain = output.get("data", {}).get("text/plain")
        if plain is None:
            return None
        text = "".join(plain) if isinstance(plain, list) else str(plain)
        return text + ("" if text.endswith("\n") else "\n"), "stdout"
    return None


class StreamFiles:
    """Copies the cells' stdout and stderr to open text files as they come (``--stdout-file``
    / ``--stderr-file``, papermill's ``stdout_file``/``stderr_file``)."""

    def __init__(
        self, stdout: Any = None, stderr: Any = None, *, given: Mapping[str, Any] | None = None
    ) -> None:
        self.files = {name: f for name, f in (("stdout", stdout), ("stderr", stderr)) if f}
        self.given = given
        self.mask: Callable[[str], str] | None = None

    @property
    def active(self) -> bool:
        return bool(self.files)

    def observe(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self.mask = secret_masker(self.given, event.run.parameters)
        if isinstance(event, CellOutput) and event.output.get("output_type") == "stream":
            handle = self.files.get(str(event.output.get("name")))
            if handle is not None:
                text = str(event.output.get("text", ""))
                handle.write(self.mask(text) if self.mask is not None else text)
                handle.flush()
