"""The history as a table: record columns for ``kiln runs list``, an export for pandas
(``kiln runs export``: CSV, JSON or Parquet) and a chart of one record over time or against a
parameter (``kiln runs plot``)."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from kiln.errors import UsageError
from kiln.store.records import Run

EXPORT_FORMATS = ("csv", "json", "parquet")


def record_cell(run: Run, name: str) -> Any:
    """A record's value for a table cell: the JSON value, or ``<dataframe>``/``<image>``;
    None when the run did not record it."""
    for record in reversed(run.records_list):
        if record.name == name:
            return record.value if record.kind == "json" else f"<{record.kind}>"
    return None


def numeric(value: Any) -> float | None:
    """A record value as a number for charts and deltas (None when it is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# -- export --------------------------------------------------------------------------------------


def history_rows(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """One flat row per run: its fields, ``param.<name>``, ``record.<name>`` (JSON records),
    ``metric.<name>`` (last point), ``tag.<name>``, timings."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "id": run.id,
            "notebook": run.notebook_path,
            "state": run.state.value,
            "created_at": _iso(run.created_at),
            "started_at": _iso(run.started_at),
            "ended_at": _iso(run.ended_at),
            "duration": run.duration,
            "engine": run.engine,
            "python": run.python_version,
            "environment": run.environment_hash,
            "git_commit": (run.git or {}).get("commit"),
            "git_dirty": (run.git or {}).get("dirty"),
            "rerun_of": (run.origin or {}).get("rerun_of"),
            "reason": run.reason,
            "cell_durations": list(run.cell_durations),
        }
        for name, value in run.parameters.items():
            row[f"param.{name}"] = value
        for record in run.records_list:
            row[f"record.{record.name}"] = record.value if record.kind == "json" else None
        for name, points in run.metric_series.items():
            row[f"metric.{name}"] = points[-1][1] if points else None
        for key, value in run.tags.items():
            row[f"tag.{key}"] = value
        rows.append(row)
    return rows


def export_history(runs: Sequence[Run], fmt: str, output: str | None) -> int:
    """Write the runs' rows as ``fmt`` to ``output`` (a file; ``-`` or None: standard output,
    except for Parquet); returns how many rows."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: choose {', '.join(EXPORT_FORMATS)}")
    rows = history_rows(runs)
    columns = _columns(rows)
    if fmt == "parquet":
        if output in (None, "-"):
            raise UsageError("Parquet is binary: give an output file (-o history.parquet)")
        _write_parquet(rows, columns, Path(str(output)))
        return len(rows)
    target = str(output) if output not in (None, "-") else None
    with _open(target) as handle:
        if fmt == "json":
            json.dump(rows, handle, indent=1, default=str)
            handle.write("\n")
        else:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return len(rows)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)


def _csv_value(value: Any) -> Any:
    """Nested values (lists, mappings) as JSON text; everything else as it is."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return value


def _write_parquet(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    try:
        import pandas as pd
    except ImportError:
        raise UsageError(
            "--format parquet needs pandas and pyarrow: pip install pandas pyarrow"
        ) from None
    flat = [{k: _csv_value(row.get(k)) for k in columns} for row in rows]
    frame = pd.DataFrame(flat, columns=columns)
    try:
        frame.to_parquet(path, index=False)
    except ImportError:
        raise UsageError("--format parquet needs pyarrow: pip install pyarrow") from None


class _open:
    """A text file to write (atomically, replaced at the end), or standard output."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.tmp: str | None = None
        self.handle: TextIO | None = None

    def __enter__(self) -> TextIO:
        if self.path is None:
            return sys.stdout
        self.tmp = f"{self.path}.{os.getpid()}.tmp"
        self.handle = open(self.tmp, "w", encoding="utf-8", newline="")
        return self.handle

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if self.handle is None or self.tmp is None or self.path is None:
            return
        self.handle.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


# -- plot ---------------------------------------------------------------------------------------


def plot_record(
    runs: Sequence[Run], record: str, output: str | os.PathLike[str], *, by: str | None = None
) -> int:
    """Draw ``record`` of ``runs`` over time (or against parameter ``by``) as a PNG; returns
    how many runs were drawn. Runs without the record as a number are left out."""
    points: list[tuple[Any, float]] = []
    for run in runs:
        value = numeric(record_cell(run, record))
        if value is None:
            continue
        if by is None:
            when = run.started_at or run.created_at
            if when is not None:
                points.append((when, value))
        elif by in run.parameters:
            points.append((run.parameters[by], value))
    if not points:
        against = f" with parameter {by!r}" if by else ""
        raise UsageError(f"no run{against} recorded {record!r} as a number: nothing to draw")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("kiln runs plot needs matplotlib: pip install matplotlib") from None
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if by is None:
        points.sort(key=lambda p: p[0])
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", linewidth=1)
        axes.set_xlabel("run start (UTC)")
        figure.autofmt_xdate()
    elif all(numeric(x) is not None for x, _ in points):
        points.sort(key=lambda p: float(p[0]))
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", linestyle="none")
        axes.set_xlabel(by)
    else:
        labels = sorted({json.dumps(x, default=str) for x, _ in points})
        where = {label: i for i, label in enumerate(labels)}
        xs = [where[json.dumps(x, default=str)] for x, _ in points]
        axes.plot(xs, [p[1] for p in points], marker="o", linestyle="none")
        axes.set_xticks(range(len(labels)), [label.strip('"') for label in labels])
        axes.set_xlabel(by)
    axes.set_ylabel(record)
    notebook = Path(runs[0].notebook_path).name if runs else ""
    axes.set_title(f"{record} of {notebook} ({len(points)} runs)")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(os.fspath(output), format="png")
    return len(points)
