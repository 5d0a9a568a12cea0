"""``kiln.record(name, value)``: values a notebook hands back to whoever ran it.

Inside a kernel a record is published as a display_data output with the
``application/vnd.kiln.record+json`` mime type, so it travels inside the output notebook (no
side channel, no extra files) and frontends that do not know the type show nothing. The
runner picks records up from the output stream as they happen; ``extract_records`` reads them
back from any saved output notebook.

This module is imported inside user kernels: it must stay light (no pandas, no matplotlib, no
nbformat at import time).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

RECORD_MIME = "application/vnd.kiln.record+json"

#: set by an engine that executes cells in-process (fake engine, fork engine) to receive bundles
_sink: Callable[[dict[str, Any]], None] | None = None
#: records made outside any kernel or engine (plain ``python script.py``)
_local: dict[str, Any] = {}


def record(name: str, value: Any, *, display: bool = False) -> None:
    """Record a named value from inside a notebook.

    ``value`` may be any JSON value (numbers, strings, lists, dicts, None), a pandas
    DataFrame or Series (stored as a table) or a matplotlib Figure (stored as PNG).
    With ``display=True`` the value is also shown in the notebook.

    >>> import kiln
    >>> kiln.record("total", 1234.5)
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"kiln.record: the name must be a non-empty string, got {name!r}")
    kind, payload, shown = encode_value(value)
    bundle: dict[str, Any] = {RECORD_MIME: {"name": name, "kind": kind, "value": payload}}
    if display:
        bundle.update(shown)
    _publish(name, bundle)


def encode_value(value: Any) -> tuple[str, Any, dict[str, Any]]:
    """Return (kind, JSON payload, displayable mime bundle) for a recorded value."""
    module = type(value).__module__ or ""
    if module.startswith("pandas") and hasattr(value, "to_json"):
        frame = value.to_frame() if hasattr(value, "to_frame") and value.ndim == 1 else value
        table = json.loads(frame.to_json(orient="split", date_format="iso", default_handler=str))
        shown = {"text/plain": str(frame), "text/html": frame.to_html()}
        return "dataframe", {k: table.get(k, []) for k in ("columns", "index", "data")}, shown
    if module.startswith("matplotlib") and hasattr(value, "savefig"):
        buf = io.BytesIO()
        value.savefig(buf, format="png", bbox_inches="tight")
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return "image", {"mime": "image/png", "data": data}, {"image/png": data}
    plain = _to_json_value(value)
    return "json", plain, {"text/plain": repr(value)}


def _to_json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        return _to_json_value(value.item())
    if hasattr(value, "tolist") and type(value).__module__.startswith("numpy"):
        return _to_json_value(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v) for v in value]
    raise TypeError(
        f"kiln.record: cannot record a value of type {type(value).__name__}; record a JSON "
        "value (number, string, bool, None, list, dict), a pandas DataFrame or a matplotlib "
        "Figure"
    )


def _publish(name: str, bundle: dict[str, Any]) -> None:
    if _sink is not None:
        _sink(bundle)
        return
    entry = bundle[RECORD_MIME]
    _local[name] = entry["value"]
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:  # a Jupyter kernel, Kiln's fork engine (or a terminal IPython)
        from IPython.display import publish_display_data

        publish_display_data(data=bundle)
        return
    path = os.environ.get("KILN_RECORDS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")


def local_records() -> dict[str, Any]:
    """Records made in this process outside a kernel (e.g. by an exported script)."""
    return dict(_local)


def record_from_output(output: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record entry carried by one notebook output, if any."""
    if output.get("output_type") not in ("display_data", "execute_result", "update_display_data"):
        return None
    data = output.get("data") or {}
    entry = data.get(RECORD_MIME)
    if isinstance(entry, str):  # some writers store JSON mime types as text
        try:
            entry = json.loads(entry)
        except ValueError:
            return None
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
        return dict(entry)
    return None


def extract_records(cells: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """All records in a notebook's cells, in execution order, with their cell index."""
    found = []
    for index, cell in enumerate(cells):
        for out in cell.get("outputs", []) or []:
            entry = record_from_output(out)
            if entry is not None:
                entry["cell_index"] = index
                found.append(entry)
    return found
