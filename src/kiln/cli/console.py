"""What ``kiln run`` shows on the terminal: warnings, progress bars, live output, summaries.

:class:`Console` observes one run, :class:`SweepConsole` a sweep (one bar over the runs),
:class:`BuildConsole` a pipeline build (one bar over its tasks). They
echo cell output through :class:`kiln.liveoutput.LiveOutput` (the same echo ``kiln.run`` uses)
and print through the progress bar when one is shown, so lines never tear it. rich is
imported only when a bar is shown.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from kiln.engines.base import CellFinished, CellOutput, CellStarted
from kiln.events import RunEnded, RunEvent, RunStarted, RunWarning
from kiln.liveoutput import LiveOutput
from kiln.store.records import Run

if TYPE_CHECKING:
    from kiln.pipeline.result import BuildEvent
    from kiln.sweeps import SweepEvent


def _bar(*, failures: bool = False) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if failures:
        columns.append(TextColumn("[red]{task.fields[failures]}"))
    columns.append(TimeElapsedColumn())
    return Progress(*columns, transient=True, console=_stderr_console())


def _stderr_console() -> Any:
    from rich.console import Console as RichConsole

    return RichConsole(stderr=True)


class _Printer:
    """Writes lines to stdout/stderr, or through a live progress bar when one is shown."""

    def __init__(self, *, all_to_stderr: bool = False) -> None:
        self.progress: Any = None
        self.all_to_stderr = all_to_stderr

    def write(self, text: str, stream: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, end="", markup=False, highlight=False)
            return
        target: TextIO = sys.stderr if stream == "stderr" or self.all_to_stderr else sys.stdout
        target.write(text)
        target.flush()

    def line(self, text: str) -> None:
        self.write(text.rstrip("\n") + "\n", "stderr")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class Console:
    """Observer of one run: warnings, a progress bar over its cells, live output."""

    def __init__(
        self,
        *,
        progress: bool,
        log_output: bool,
        quiet: bool = False,
        output_to_stderr: bool = False,
        given: dict[str, Any] | None = None,
    ) -> None:
        self.show_progress = progress and not quiet
        self.quiet = quiet
        self.printer = _Printer(all_to_stderr=output_to_stderr)
        self.live = LiveOutput(self.printer.write, given=given) if log_output else None
        self._task: Any = None
        self._name = ""
        self.warnings: list[str] = []

    def observe(self, event: RunEvent) -> None:
        if isinstance(event, RunWarning):
            self.warnings.append(event.text)
            if not self.quiet:
                self.printer.line(f"Warning: {event.text}")
        elif isinstance(event, RunStarted) and self.show_progress:
            self.printer.progress = _bar()
            self._name = event.run.notebook_path.rsplit("/", 1)[-1]
            self._task = self.printer.progress.add_task(self._name, total=event.code_cells)
            self.printer.progress.start()
        elif isinstance(event, CellStarted) and self.printer.progress is not None:
            self.printer.progress.update(self._task, description=f"{self._name} cell {event.index}")
        elif isinstance(event, CellFinished) and self.printer.progress is not None:
            self.printer.progress.advance(self._task)
        elif isinstance(event, RunEnded):
            self.close()
        if self.live is not None and isinstance(event, (RunStarted, CellStarted, CellOutput)):
            self.live.observe(event)

    def close(self) -> None:
        self.printer.stop()

    def summary(self, run: Run) -> None:
        took = f" in {run.duration:.2f}s" if run.duration is not None else ""
        lines = [
            f"Run {run.id} {run.state}{took}",
            f"  output: {run.output_path}",
            f"  log:    {run.log_path}",
        ]
        if run.records:
            lines.append(f"  records: {', '.join(run.records)}")
        print("\n".join(lines), file=sys.stderr)


class SweepConsole:
    """One progress bar over a sweep's runs, each warning once, and ``--log-output`` lines
    prefixed with their set's index."""

    def __init__(self, name: str, total: int, *, progress: bool, log_output: bool) -> None:
        self.failures = 0
        self.seen: set[str] = set()
        self.printer = _Printer()
        self.live = LiveOutput(self.printer.write) if log_output else None
        self._task: Any = None
        if progress:
            self.printer.progress = _bar(failures=True)
            self._task = self.printer.progress.add_task(f"{name} sweep", total=total, failures="")
            self.printer.progress.start()

    def observe(self, event: SweepEvent) -> None:
        from kiln.sweeps import SetDone, SetEvent

        if isinstance(event, SetDone):
            if not event.item.ok:
                self.failures += 1
            if self.printer.progress is not None:
                failures = f"{self.failures} failed" if self.failures else ""
                self.printer.progress.update(self._task, advance=1, failures=failures)
        elif isinstance(event, SetEvent):
            if isinstance(event.event, RunWarning):
                self.warn(event.event.text)
            elif self.live is not None:
                self.live.observe_sweep(event)

    def warn(self, text: str) -> None:
        if text not in self.seen:
            self.seen.add(text)
            self.printer.line(f"Warning: {text}")

    def close(self) -> None:
        self.printer.stop()


class BuildConsole:
    """A build on the terminal: one progress bar over its tasks (done, running, failed), a
    line per retry, each warning once."""

    def __init__(self, *, progress: bool, quiet: bool = False) -> None:
        self.quiet = quiet
        self.show_progress = progress and not quiet
        self.printer = _Printer()
        self.running: list[str] = []
        self.failures = 0
        self.seen: set[str] = set()
        self._task: Any = None

    def observe(self, event: BuildEvent) -> None:
        from kiln.pipeline.result import (
            BuildStarted,
            BuildWarning,
            TaskEnded,
            TaskRetrying,
            TaskStarted,
        )

        if isinstance(event, BuildStarted) and self.show_progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.printer.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("[red]{task.fields[failures]}"),
                TextColumn("{task.fields[running]}"),
                transient=True,
                console=_stderr_console(),
            )
            from rich.markup import escape

            self._task = self.printer.progress.add_task(
                escape(event.pipeline), total=len(event.tasks), failures="", running=""
            )
            self.printer.progress.start()
        elif isinstance(event, TaskStarted):
            if event.task not in self.running:
                self.running.append(event.task)
            self._update()
        elif isinstance(event, TaskRetrying):
            if not self.quiet:
                self.printer.line(
                    f"{event.task}: attempt {event.attempt} failed ({event.reason}); "
                    f"retrying in {event.delay:g}s"
                )
        elif isinstance(event, TaskEnded):
            if event.result.name in self.running:
                self.running.remove(event.result.name)
            if event.result.state in ("failed", "crashed"):
                self.failures += 1
            self._update(advance=1)
        elif isinstance(event, BuildWarning) and event.text not in self.seen and not self.quiet:
            self.seen.add(event.text)
            self.printer.line(f"Warning: {event.text}")

    def _update(self, advance: int = 0) -> None:
        if self.printer.progress is None:
            return
        from rich.markup import escape

        shown = escape(", ".join(self.running[:3]) + (" …" if len(self.running) > 3 else ""))
        self.printer.progress.update(
            self._task,
            advance=advance,
            failures=f"{self.failures} failed" if self.failures else "",
            running=f"running: {shown}" if self.running else "",
        )

    def close(self) -> None:
        self.printer.stop()
