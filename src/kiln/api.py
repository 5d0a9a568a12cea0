"""The Python API, mirroring the CLI: ``kiln.run``, ``kiln.read_run``, ``kiln.list_runs``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kiln.store.records import Run

PathLike = str | os.PathLike[str]


def run(
    notebook: PathLike,
    output: PathLike | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    kernel: str | None = None,
    engine: str = "auto",
    memory_limit: int | None = None,
    cwd: PathLike | None = None,
    cell_timeout: float | None = None,
    timeout: float | None = None,
    allow_errors: bool = False,
    allow_unknown: bool = False,
    report_mode: bool = False,
    prepare_only: bool = False,
    env: Mapping[str, str] | None = None,
    home: PathLike | None = None,
    log_output: bool = False,
    check: bool = True,
) -> Run:
    """Run a notebook with parameters and return the recorded :class:`Run`.

    Parameters are validated against the notebook's ``parameters`` cell before anything
    starts (``kiln.errors.ParameterError``). When the run does not succeed and ``check`` is
    true, the matching ``kiln.errors.RunFailed`` subclass is raised; its ``.run`` holds the
    record, the output notebook (with its error banner) is saved either way.

    >>> result = kiln.run("report.ipynb", parameters={"region": "EU", "n": 3})
    >>> result.records["total"]
    """
    from kiln.runner import Observer, RunEvent, Runner, RunRequest

    observers: list[Observer] = []
    if log_output:
        from kiln.engines.base import CellOutput

        def echo(event: RunEvent) -> None:
            if isinstance(event, CellOutput) and event.output.get("output_type") == "stream":
                stream = sys.stderr if event.output.get("name") == "stderr" else sys.stdout
                stream.write(str(event.output.get("text", "")))
                stream.flush()

        observers.append(echo)
    request = RunRequest(
        notebook=Path(notebook),
        parameters=dict(parameters or {}),
        output=Path(output) if output is not None else None,
        kernel=kernel,
        engine=engine,
        cwd=Path(cwd) if cwd is not None else None,
        cell_timeout=cell_timeout,
        timeout=timeout,
        allow_errors=allow_errors,
        allow_unknown=allow_unknown,
        report_mode=report_mode,
        prepare_only=prepare_only,
        env=env,
        memory_limit=memory_limit,
    )
    with Runner(home=Path(home) if home is not None else None, observers=observers) as runner:
        return runner.run(request, check=check)


def read_run(id_or_path: PathLike, *, home: PathLike | None = None) -> Run:
    """Read a run back: by id (or unique id prefix, or ``last``) from the run history, or
    from an output notebook file written by Kiln."""
    text = os.fspath(id_or_path)
    if text.endswith(".ipynb") or os.path.sep in text or os.path.isfile(text):
        return run_from_notebook(Path(text))
    from kiln.store import RunStore

    with RunStore(Path(home) if home is not None else None) as store:
        found: Run = store.get_run(text)
        return found


def list_runs(
    *,
    notebook: PathLike | None = None,
    state: str | None = None,
    limit: int | None = 50,
    home: PathLike | None = None,
) -> list[Run]:
    """Runs from the history, newest first."""
    from kiln.store import RunStore

    with RunStore(Path(home) if home is not None else None) as store:
        store.recover_orphans()
        runs: list[Run] = store.list_runs(
            notebook=os.fspath(notebook) if notebook is not None else None,
            state=state,
            limit=limit,
        )
        return runs


def run_from_notebook(path: Path) -> Run:
    """Build a Run from an output notebook's ``kiln`` metadata and its record outputs."""
    from datetime import datetime

    from kiln.notebook import parse_notebook, read_bytes, sha256_bytes
    from kiln.recording import extract_records
    from kiln.store.records import Record

    data = read_bytes(path)
    nb = parse_notebook(data, path=str(path))
    meta = dict(nb.metadata.get("kiln", {}))

    def when(key: str) -> datetime | None:
        value = meta.get(key)
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    records = [
        Record(e["name"], str(e.get("kind", "json")), e.get("value"), e.get("cell_index"))
        for e in extract_records(nb.cells)
    ]
    return Run(
        id=str(meta.get("run_id", "")),
        notebook_path=str(meta.get("input_path", "")),
        notebook_sha256=sha256_bytes(data),
        state=str(meta.get("state", "unknown")),
        parameters=dict(meta.get("parameters", {})),
        started_at=when("started_at"),
        ended_at=when("ended_at"),
        output_path=str(path.resolve()),
        kernel_name=meta.get("kernel_name"),
        error=meta.get("error"),
        records_list=records,
    )
