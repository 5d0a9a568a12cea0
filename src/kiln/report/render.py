"""One renderer for executed notebooks: nbconvert's HTML exporter, with Kiln's records shown.

The HTML keeps the notebook's own outputs as they are (its HTML and JavaScript included): it
is only safe to serve inside a sandbox that gives it no origin (the server sends it with
``Content-Security-Policy: sandbox allow-scripts``). Records (``kiln.record``) travel as a
mime type no frontend knows; nbconvert would drop them with a warning, so they are shown here
instead: a table as an HTML table, a figure as its image, any other value as its JSON.

::

    html = render_html(nbformat.read("output.ipynb", as_version=4))
"""

from __future__ import annotations

import copy
import functools
import html
import json
from typing import TYPE_CHECKING, Any

from kiln.recording import RECORD_MIME, record_from_output

if TYPE_CHECKING:
    from nbconvert import HTMLExporter
    from nbformat import NotebookNode

#: image types a record may hold that browsers show
_IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/gif", "image/svg+xml"})


@functools.lru_cache(maxsize=1)
def _exporter() -> HTMLExporter:
    try:
        from nbconvert import HTMLExporter
    except ImportError:  # pragma: no cover - the server extra is missing
        from kiln.errors import UsageError

        raise UsageError(
            "rendering notebooks needs nbconvert: pip install 'kiln-notebooks[server]'"
        ) from None
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = False
    return exporter


def render_html(nb: NotebookNode, *, title: str | None = None) -> str:
    """The notebook as one HTML document (records shown, nothing else changed)."""
    shown = copy.deepcopy(nb)
    for cell in shown.cells:
        if cell.get("cell_type") == "code":
            cell.outputs = [_with_record_shown(output) for output in cell.get("outputs", [])]
    if title:
        shown.metadata["title"] = title
    body, _resources = _exporter().from_notebook_node(shown)
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
