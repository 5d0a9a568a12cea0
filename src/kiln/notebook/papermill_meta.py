"""The metadata papermill writes into output notebooks, written by Kiln too.

Tools built on papermill's output read it: scrapbook's ``read_notebook(...).parameters``,
dashboards that show ``metadata.papermill.duration``, scripts that look for
``metadata.papermill.exception``. Kiln keeps its own record under ``metadata.kiln``; this is
the same information in papermill's shape:

- ``metadata.papermill``: ``parameters``, ``default_parameters``, ``input_path``,
  ``output_path``, ``environment_variables``, ``version``, ``start_time``, ``end_time``,
  ``duration``, ``exception``;
- each code cell's ``metadata.papermill``: ``status`` (``pending``, ``running``,
  ``completed``, ``failed``), ``start_time``, ``end_time``, ``duration``, ``exception``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbformat import NotebookNode

#: the papermill version whose output layout this follows
PAPERMILL_LAYOUT = "2.6.0"


def papermill_start(
    nb: NotebookNode,
    *,
    parameters: Mapping[str, Any],
    defaults: Mapping[str, Any],
    input_path: str,
    output_path: str,
    started: datetime,
    skip_tag: str = "skip-execution",
) -> None:
    # plain dicts, set with dict's own __setitem__: a NotebookNode's converts them again
    dict.__setitem__(
        nb["metadata"],
        "papermill",
        {
            "default_parameters": dict(defaults),
            "parameters": dict(parameters),
            "environment_variables": {},
            "version": PAPERMILL_LAYOUT,
            "input_path": input_path,
            "output_path": output_path,
            "start_time": started.isoformat(),
            "end_time": None,
            "duration": None,
            "exception": None,
        },
    )
    for cell in nb["cells"]:
        meta = cell["metadata"]
        if cell["cell_type"] == "code" and skip_tag not in meta.get("tags", []):
            dict.__setitem__(
                meta,
                "papermill",
                {
                    "exception": None,
                    "start_time": None,
                    "end_time": None,
                    "duration": None,
                    "status": "pending",
                },
            )


def cell_started(cell: NotebookNode) -> None:
    meta = cell["metadata"].get("papermill")
    if meta is not None:
        meta["start_time"] = datetime.now(timezone.utc).isoformat()
        meta["status"] = "running"


def cell_finished(cell: NotebookNode, duration: float, failed: bool) -> None:
    meta = cell["metadata"].get("papermill")
    if meta is not None:
        meta["end_time"] = datetime.now(timezone.utc).isoformat()
        meta["duration"] = round(duration, 6)
        meta["exception"] = failed
        meta["status"] = "failed" if failed else "completed"


def papermill_finish(nb: NotebookNode, ended: datetime, *, failed: bool) -> None:
    meta = nb["metadata"].get("papermill")
    if meta is None:
        return
    meta["end_time"] = ended.isoformat()
    started = meta.get("start_time")
    if started:
        meta["duration"] = (ended - datetime.fromisoformat(started)).total_seconds()
    meta["exception"] = failed
