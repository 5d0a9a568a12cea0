"""``kiln.record(name, value)``: values a notebook hands back to whoever ran it; and
``kiln.metric`` (series), ``kiln.artifact`` (files kept with the run) and ``kiln.input``
(files the run reads, by content hash).

Inside a kernel each is published as a display_data output with its own mime type
(``application/vnd.kiln.record+json``, ``...metric+json``, ``...artifact+json``,
``...input+json``), so it travels inside the output notebook (no side channel) and frontends
that do not know the type show nothing. The runner picks them up from the output stream as
they happen; ``extract_records`` reads records back from any saved output notebook. Outside
Kiln (a plain ``python`` script, a Jupyter kernel Kiln did not start) every call still works:
``kiln.input`` and ``kiln.artifact`` return the path they were given.

This module is imported inside user kernels: it must stay light (no pandas, no matplotlib, no
nbformat at import time).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

RECORD_MIME = "application/vnd.kiln.record+json"
METRIC_MIME = "application/vnd.kiln.metric+json"
ARTIFACT_MIME = "application/vnd.kiln.artifact+json"
INPUT_MIME = "application/vnd.kiln.input+json"
#: what each tracking mime type is called in :func:`tracking_from_output`
TRACKING_MIMES = {METRIC_MIME: "metric", ARTIFACT_MIME: "artifact", INPUT_MIME: "input"}
#: the folder of a run's kept artefacts, inside its run folder
ARTIFACTS_FOLDER = "artifacts"

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


def metric(name: str, value: float, step: int | None = None) -> None:
    """Log one point of a metric series from inside a notebook (a loss per epoch).

    ``value`` is a number (NaN and infinities are kept); ``step`` an optional int. The
    points are stored with the run in order; ``kiln.read_run(id).metric_series`` has them.

    >>> for epoch in range(3):
    ...     kiln.metric("loss", 1 / (epoch + 1), step=epoch)
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"kiln.metric: the name must be a non-empty string, got {name!r}")
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"kiln.metric: {name!r} must be a number, got {type(value).__name__}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        if hasattr(step, "item"):
            step = step.item()
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"kiln.metric: step must be an int or None, got {step!r}")
    number = float(value)
    stored: float | str = number if math.isfinite(number) else repr(number)
    entry = {"name": name, "value": stored, "step": step}
    _local_metrics.append(entry)
    _publish_entry(METRIC_MIME, entry)


def artifact(path: str | os.PathLike[str], name: str | None = None) -> str:
    """Keep a file (or folder) the run produced with the run, in its run folder's
    ``artifacts/`` (as ``name``, default its file name); returns where it is kept.

    Outside a Kiln run the file stays where it is and its path is returned.

    >>> fig.savefig("chart.png"); kiln.artifact("chart.png")
    """
    source = os.fspath(path)
    if not os.path.exists(source):
        raise FileNotFoundError(f"kiln.artifact: no file {source!r} (from {os.getcwd()})")
    kept_name = os.path.basename(os.path.normpath(name or source))
    if kept_name in ("", ".", "..") or (name is not None and os.path.basename(name) != name):
        raise ValueError(f"kiln.artifact: the name must be a plain file name, got {name!r}")
    folder = _artifact_folder()
    target = source
    if folder is not None:
        import shutil  # not at import time: kernels import this module

        os.makedirs(folder, mode=0o700, exist_ok=True)
        target = os.path.join(folder, kept_name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        if os.path.isdir(source):
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
    size, digest = _size_and_hash(target)
    entry = {"name": kept_name, "path": os.path.abspath(target), "size": size, "sha256": digest}
    _publish_entry(ARTIFACT_MIME, entry)
    return target


def input(path: str | os.PathLike[str]) -> Any:
    """Declare a file the notebook reads; returns ``path`` unchanged, so it reads as
    ``pd.read_csv(kiln.input("data/x.csv"))``. Its content hash is recorded with the run, so
    ``kiln rerun`` and ``kiln runs compare`` can tell when the data changed."""
    given = os.fspath(path)
    if not os.path.isfile(given):
        raise FileNotFoundError(f"kiln.input: no file {given!r} (from {os.getcwd()})")
    size, digest = _size_and_hash(given)
    entry = {"path": os.path.abspath(given), "sha256": digest, "size": size}
    _local_inputs.append(entry)
    _publish_entry(INPUT_MIME, entry)
    return path


#: a file's hash by (path, size, mtime, inode): a file read twice is hashed once
_file_hashes: dict[tuple[str, int, int, int], str] = {}


def _size_and_hash(path: str) -> tuple[int | None, str | None]:
    if os.path.isdir(path):
        total = 0
        for root, _dirs, files in os.walk(path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total, None
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    digest = _file_hashes.get(key)
    if digest is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
        digest = _file_hashes[key] = hasher.hexdigest()
    return stat.st_size, digest


def _artifact_folder() -> str | None:
    """The running run's artefact folder (set by Kiln for every run), if any."""
    run_id, home = os.environ.get("KILN_RUN_ID"), os.environ.get("KILN_HOME")
    if not run_id or not home or "/" in run_id or run_id.startswith("."):
        return None
    run_folder = os.path.join(home, "runs", run_id)
    if not os.path.isdir(run_folder):
        return None
    return os.path.join(run_folder, ARTIFACTS_FOLDER)


def _publish_entry(mime: str, entry: dict[str, Any]) -> None:
    bundle = {mime: entry}
    if _sink is not None:
        _sink(bundle)
        return
    shell = _shell()
    if shell is not None:
        from IPython.display import publish_display_data

        publish_display_data(data=bundle)


def _shell() -> Any:
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


#: metric points and inputs declared outside any kernel or engine
_local_metrics: list[dict[str, Any]] = []
_local_inputs: list[dict[str, Any]] = []


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


def tracking_from_output(output: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``("metric" | "artifact" | "input", entry)`` when one notebook output carries one."""
    if output.get("output_type") not in ("display_data", "execute_result"):
        return None
    data = output.get("data") or {}
    for mime, kind in TRACKING_MIMES.items():
        entry = data.get(mime)
        if isinstance(entry, str):
            try:
                entry = json.loads(entry)
            except ValueError:
                return None
        if isinstance(entry, Mapping):
            return kind, dict(entry)
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
