"""``kiln report``: a run (or an executed notebook) as a self-contained HTML or PDF report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "report",
        parents=parents,
        help="render a run or an executed notebook as an HTML or PDF report",
        description="Render a run of the history (by id or id prefix) or an executed "
        "notebook file as a report: one self-contained HTML file (images embedded, no "
        "scripts at all, safe to mail) or a PDF printed from it. A header shows the "
        "notebook, parameters, run time and state; cells tagged hide, hide-input or "
        "hide-output are honoured.",
    )
    r.add_argument("target", metavar="RUN_ID|NOTEBOOK", help="a run id (prefix) or a .ipynb")
    r.add_argument("-f", "--format", choices=("html", "pdf"), default="html")
    r.add_argument("--no-input", action="store_true", help="leave out the code (outputs only)")
    r.add_argument(
        "-o", "--output", metavar="PATH",
        help="where to write it (default: report.FORMAT in the run's folder, or NOTEBOOK's "
        "name with .html/.pdf beside it); - for standard output",
    )  # fmt: skip
    r.set_defaults(handler=handle_report)


def handle_report(args: argparse.Namespace) -> int:
    from kiln.errors import UsageError
    from kiln.report.make import write_file

    target = Path(args.target)
    run = None
    if target.suffix == ".ipynb" or target.is_file():
        if not target.is_file():
            raise UsageError(f"{args.target}: no such notebook")
        from kiln.notebook.io import parse_notebook, read_bytes

        nb = parse_notebook(read_bytes(target), path=str(target))
        default = target.with_suffix(f".{args.format}")
        from kiln.report.render import render_report

        page = render_report(nb, hide_code=args.no_input, title=target.name)
    else:
        from kiln.cli.runs_cmd import open_store
        from kiln.report.make import run_report_html

        with open_store() as store:
            run = store.get_run(args.target)
        page = run_report_html(run, hide_code=args.no_input)
        default = Path(run.run_dir or ".") / f"report.{args.format}"
    data = page.encode("utf-8")
    if args.format == "pdf":
        from kiln.report.pdf import html_to_pdf

        data = html_to_pdf(page)
    if args.output == "-":
        sys.stdout.buffer.write(data)
        return 0
    path = Path(args.output) if args.output else default
    try:
        write_file(path, data, 0o600 if run is not None else 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {path}: {exc.strerror}") from None
    print(path)
    return 0
