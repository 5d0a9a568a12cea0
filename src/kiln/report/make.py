"""Reports of runs as files: ``report.html`` and ``report.pdf`` beside the run's output
(``kiln report``, and after every scheduled run), written atomically with the history's
file mode."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.store.records import Run

FORMATS = ("html", "pdf")


def executed_notebook(run: Run) -> Any:
    """The run's output notebook, or an empty one when the run wrote none (refused before
    it started): the report then is its header, state and reason."""
    import nbformat

    if run.output_path and Path(run.output_path).is_file():
        return nbformat.read(run.output_path, as_version=4)
    return nbformat.v4.new_notebook()


def run_report_html(run: Run, *, hide_code: bool, mask: Callable[[str], str] | None = None) -> str:
    from kiln.report.render import render_report

    return render_report(executed_notebook(run), run=run, hide_code=hide_code, mask=mask)


def write_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    """``data`` into ``path`` atomically (a temporary file renamed), with ``mode``."""
    from kiln.notebook.io import atomic_write

    atomic_write(path, (data,), mode=mode)
    return path


def write_run_reports(
    run: Run,
    formats: Iterable[str],
    *,
    hide_code: bool,
    folder: Path | None = None,
    mask: Callable[[str], str] | None = None,
    mode: int = 0o600,
) -> dict[str, Path]:
    """Write the run's report in each of ``formats`` (html, pdf) into ``folder`` (default:
    the run's folder); returns the files by format."""
    wanted = list(dict.fromkeys(formats))
    target = Path(folder or run.run_dir or ".")
    page = run_report_html(run, hide_code=hide_code, mask=mask)
    written: dict[str, Path] = {}
    if "html" in wanted:
        written["html"] = write_file(target / "report.html", page.encode("utf-8"), mode)
    if "pdf" in wanted:
        from kiln.report.pdf import html_to_pdf

        written["pdf"] = write_file(target / "report.pdf", html_to_pdf(page), mode)
    return written
