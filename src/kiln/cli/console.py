"""What ``kiln run`` shows on the terminal: warnings, a progress bar, live output, a summary."""

from __future__ import annotations

import sys
from typing import Any

from kiln.engines.base import CellFinished, CellOutput, CellStarted
from kiln.runner import RunEnded, RunEvent, RunStarted, RunWarning
from kiln.store.records import Run


class Console:
    """Observer of run events; rich is imported only when a progress bar is shown."""

    def __init__(self, *, progress: bool, log_output: bool) -> None:
        self.show_progress = progress
        self.log_output = log_output
        self._progress: Any = None
        self._task: Any = None
        self._name = ""

    def observe(self, event: RunEvent) -> None:
        if isinstance(event, RunWarning):
            self._err(f"Warning: {event.text}")
        elif isinstance(event, RunStarted) and self.show_progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=True,
            )
            self._name = event.run.notebook_path.rsplit("/", 1)[-1]
            self._task = self._progress.add_task(self._name, total=event.code_cells)
            self._progress.start()
        elif isinstance(event, CellStarted) and self._progress is not None:
            self._progress.update(self._task, description=f"{self._name} cell {event.index}")
        elif isinstance(event, CellFinished) and self._progress is not None:
            self._progress.advance(self._task)
        elif isinstance(event, CellOutput) and self.log_output:
            self._echo(event)
        elif isinstance(event, RunEnded):
            self.close()

    def _echo(self, event: CellOutput) -> None:
        out = event.output
        kind = out.get("output_type")
        if kind == "stream":
            text = str(out.get("text", ""))
            stream = sys.stderr if out.get("name") == "stderr" else sys.stdout
        elif kind == "error":
            from kiln.textutil import strip_ansi

            text = strip_ansi("\n".join(out.get("traceback", []))) + "\n"
            stream = sys.stderr
        elif kind == "execute_result":
            text = str(out.get("data", {}).get("text/plain", "")) + "\n"
            stream = sys.stdout
        else:
            return
        if self._progress is not None:
            self._progress.console.print(text, end="", markup=False, highlight=False)
        else:
            stream.write(text)
            stream.flush()

    def _err(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def summary(self, run: Run) -> None:
        took = f" in {run.duration:.2f}s" if run.duration is not None else ""
        lines = [
            f"Run {run.id} {run.state}{took}",
            f"  output: {run.output_path}",
            f"  log:    {run.log_path}",
        ]
        if run.records:
            names = ", ".join(run.records)
            lines.append(f"  records: {names}")
        print("\n".join(lines), file=sys.stderr)
