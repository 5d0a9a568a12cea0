"""One renderer for executed notebooks: nbconvert's HTML exporter, with Kiln's records shown.

Two modes:

* **interactive** (:func:`render_html`): the notebook's own outputs as they are (its HTML and
  JavaScript included): only safe inside a sandbox that gives it no origin (the server sends
  it with ``Content-Security-Policy: sandbox allow-scripts``);
* **static** (:func:`render_report`): reports written to files, mailed and printed to PDF. The
  outputs are sanitised by nbconvert (an allow-list), then the whole document by
  :mod:`kiln.report.sanitize` (no scripts, handlers or fetched resources at all); a header
  tells the notebook, parameters, times and state; cells tagged ``hide`` (or ``remove-cell``)
  are left out, ``hide-input``/``hide-output`` (or ``remove-...``) lose that part, and
  ``hide_code`` leaves out every code cell's input.

Records (``kiln.record``) travel as a mime type no frontend knows; nbconvert would drop them
with a warning, so they are shown here instead: a table as an HTML table, a figure as its
image, any other value as its JSON.

::

    html = render_html(nbformat.read("output.ipynb", as_version=4))
    page = render_report(nb, run=run, hide_code=True)
"""

from __future__ import annotations

import copy
import functools
import html
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kiln.recording import RECORD_MIME, record_from_output

if TYPE_CHECKING:
    from nbconvert import HTMLExporter
    from nbformat import NotebookNode

    from kiln.store.records import Run

#: image types a record may hold that browsers show
_IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/gif", "image/svg+xml"})


@functools.lru_cache(maxsize=4)
def _exporter(static: bool = False, hide_code: bool = False) -> HTMLExporter:
    try:
        from nbconvert import HTMLExporter
    except ImportError:  # pragma: no cover - the server extra is missing
        from kiln.errors import UsageError

        raise UsageError(
            "rendering notebooks needs nbconvert: pip install 'kiln-notebooks[server]'"
        ) from None
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = False
    if static:  # outputs are cleaned by render_report, the page by sanitize.strip_active
        import logging

        # its advice on alt texts is for page authors, not for the readers of a report
        exporter.log = logging.getLogger("kiln.report.nbconvert")
        exporter.log.setLevel(logging.ERROR)
        exporter.exclude_output_prompt = True
        exporter.exclude_anchor_links = True
    if hide_code:
        exporter.exclude_input = True
        exporter.exclude_input_prompt = True
        exporter.exclude_output_prompt = True
    return exporter


#: tags that leave out a cell, its input or its output in a static report (Kiln's and
#: Jupyter Book's spellings)
HIDE_CELL = frozenset({"hide", "remove-cell", "remove_cell"})
HIDE_INPUT = frozenset({"hide-input", "hide_input", "remove-input", "remove_input"})
HIDE_OUTPUT = frozenset({"hide-output", "hide_output", "remove-output", "remove_output"})


def render_report(
    nb: NotebookNode,
    *,
    run: Run | None = None,
    hide_code: bool = False,
    title: str | None = None,
    mask: Callable[[str], str] | None = None,
) -> str:
    """The notebook as one self-contained, inert HTML document (see the module doc):
    images embedded, no scripts; ``mask`` (e.g. the run's secret redaction) is applied to
    every text of the notebook (and of the header) before rendering."""
    from kiln.report.sanitize import STATIC_CSP, strip_active

    shown = copy.deepcopy(nb)
    cells = []
    for cell in shown.cells:
        tags = set(cell.get("metadata", {}).get("tags") or ())
        if tags & HIDE_CELL:
            continue
        if cell.get("cell_type") == "code":
            if tags & HIDE_OUTPUT:
                cell.outputs = []
            else:
                cell.outputs = [_static(_with_record_shown(o)) for o in cell.get("outputs", [])]
            if tags & HIDE_INPUT:
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
                cell.metadata["transient"] = {"remove_source": True}
                cell.source = ""
        cells.append(cell)
    shown.cells = cells
    if mask is not None:
        shown = _masked(shown, mask)
    name = title or (run.notebook_path.rsplit("/", 1)[-1] if run is not None else "report")
    shown.metadata["title"] = name
    body, _resources = _exporter(True, hide_code).from_notebook_node(shown)
    page = strip_active(str(body))
    head = f'<meta http-equiv="Content-Security-Policy" content="{STATIC_CSP}">'
    page = page.replace("<head>", "<head>\n" + head, 1)
    header = report_header(run, name, mask=mask)
    at = page.find(">", page.find("<body")) + 1 if "<body" in page else 0
    return page[:at] + header + page[at:]


#: output types a static report never shows (they only run in a live frontend)
_ACTIVE_MIMES = frozenset(
    {
        "application/javascript",
        "text/javascript",
        "application/vnd.jupyter.widget-view+json",
        "application/vnd.jupyter.widget-state+json",
        "application/vnd.bokehjs_exec.v0+json",
        "application/vnd.bokehjs_load.v0+json",
        "application/vnd.holoviews_exec.v0+json",
        "application/vnd.holoviews_load.v0+json",
    }
)


def _static(output: Any) -> Any:
    """An output as a static report shows it: no script types, its HTML allow-listed."""
    from kiln.report.sanitize import clean_fragment

    data = output.get("data")
    if not isinstance(data, dict):
        return output
    kept = {key: value for key, value in data.items() if key not in _ACTIVE_MIMES}
    markup = kept.get("text/html")
    if markup is not None:
        text = "".join(markup) if isinstance(markup, list) else str(markup)
        kept["text/html"] = clean_fragment(text)
    if not kept:
        kept = {"text/plain": ""}
    output["data"] = kept
    return output


def _masked(nb: NotebookNode, mask: Callable[[str], str]) -> NotebookNode:
    import nbformat

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return mask(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    masked: NotebookNode = nbformat.from_dict(walk(nb))
    return masked


def report_header(run: Run | None, name: str, *, mask: Callable[[str], str] | None = None) -> str:
    """The block at the top of a report: notebook, state, times, parameters."""
    rows: list[tuple[str, str]] = [("Notebook", name)]
    if run is not None:
        rows.append(("State", run.state.value))
        if run.started_at is not None:
            rows.append(("Started", run.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")))
        if run.duration is not None:
            rows.append(("Duration", f"{run.duration:.2f} s"))
        rows.append(("Run", run.id))
        if run.tags.get("schedule"):
            rows.append(("Schedule", f"{run.tags['schedule']} (slot {run.tags.get('slot', '?')})"))
        if run.reason:
            rows.append(("Reason", run.reason))
        for key, value in run.parameters.items():
            rows.append((f"{key} =", json.dumps(value, ensure_ascii=False, default=str)))
    colour = "#1a7f37" if run is None or run.state.value == "succeeded" else "#cf222e"
    cells = "".join(
        f'<tr><th style="text-align:left;padding:2px 12px 2px 0">{html.escape(k)}</th>'
        f"<td>{html.escape(mask(v) if mask else v)}</td></tr>"
        for k, v in rows
    )
    return (
        '<header class="kiln-report-header" style="font-family:sans-serif;margin:16px;'
        f'padding:12px;border-left:6px solid {colour};background:#f6f8fa">'
        f'<table style="border-collapse:collapse;font-size:14px">{cells}</table></header>'
    )


def render_html(nb: NotebookNode, *, title: str | None = None, hide_code: bool = False) -> str:
    """The notebook as one HTML document (records shown, nothing else changed; with
    ``hide_code`` the outputs alone, as an app shows them)."""
    shown = copy.deepcopy(nb)
    for cell in shown.cells:
        if cell.get("cell_type") == "code":
            cell.outputs = [_with_record_shown(output) for output in cell.get("outputs", [])]
    if title:
        shown.metadata["title"] = title
    body, _resources = _exporter(False, hide_code).from_notebook_node(shown)
    return str(body)


def _with_record_shown(output: Any) -> Any:
    entry = record_from_output(output)
    if entry is None:
        return output
    data = dict(output.get("data") or {})
    data.pop(RECORD_MIME, None)
    if not any(key != "text/plain" for key in data):  # recorded without display=True
        data.update(record_bundle(entry))
    output["data"] = data
    return output


def record_bundle(entry: dict[str, Any]) -> dict[str, Any]:
    """A displayable mime bundle for one record: a table, an image, or its JSON."""
    name = str(entry.get("name", ""))
    kind = entry.get("kind")
    value = entry.get("value")
    caption = f'<div class="kiln-record-name"><b>{html.escape(name)}</b></div>'
    if kind == "image" and isinstance(value, dict) and value.get("mime") in _IMAGE_MIMES:
        return {str(value["mime"]): value.get("data", ""), "text/plain": f"<record {name}>"}
    if kind == "dataframe" and isinstance(value, dict):
        return {"text/html": caption + table_html(value), "text/plain": f"<record {name}>"}
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return {
        "text/html": f'{caption}<pre class="kiln-record">{html.escape(text)}</pre>',
        "text/plain": f"{name} = {text}",
    }


def table_html(table: dict[str, Any]) -> str:
    """A recorded table (``{columns, index, data}``) as an escaped HTML table."""

    def cell(value: Any, tag: str = "td") -> str:
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        return f"<{tag}>{html.escape(shown)}</{tag}>"

    columns = list(table.get("columns") or [])
    index = list(table.get("index") or [])
    rows = list(table.get("data") or [])
    head = "<tr><th></th>" + "".join(cell(c, "th") for c in columns) + "</tr>"
    body = "".join(
        "<tr>"
        + cell(index[i] if i < len(index) else i, "th")
        + "".join(cell(v) for v in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return (
        f'<table class="dataframe kiln-record"><thead>{head}</thead><tbody>{body}</tbody></table>'
    )
