"""The Python API, mirroring the CLI: ``kiln.run``, ``kiln.sweep``, ``kiln.read_run``,
``kiln.list_runs``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.store.records import Run

if TYPE_CHECKING:
    from kiln.request import RunRequest
    from kiln.sweeps import SweepEvent, SweepResult

PathLike = str | os.PathLike[str]


def run(
    notebook: PathLike,
    output: PathLike | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    kernel: str | None = None,
    engine: str = "auto",
    memory_limit: int | None = None,
    lint: bool = False,
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
    from kiln.runner import Observer, RunEvent, Runner

    observers: list[Observer] = []
    if log_output:

        def echo(event: RunEvent) -> None:
            _echo_stream(event)

        observers.append(echo)
    request = _request(
        notebook,
        parameters,
        output,
        cwd,
        kernel=kernel,
        engine=engine,
        cell_timeout=cell_timeout,
        timeout=timeout,
        allow_errors=allow_errors,
        allow_unknown=allow_unknown,
        report_mode=report_mode,
        prepare_only=prepare_only,
        env=env,
        memory_limit=memory_limit,
        lint=lint,
    )
    with Runner(home=Path(home) if home is not None else None, observers=observers) as runner:
        return runner.run(request, check=check)


def sweep(
    notebook: PathLike,
    grid: Mapping[str, Any] | Sequence[Mapping[str, Any]] | PathLike,
    *,
    jobs: int = 1,
    parameters: Mapping[str, Any] | None = None,
    output: PathLike | None = None,
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
    check: bool = False,
) -> SweepResult:
    """Run a notebook once per parameter set, ``jobs`` runs at a time; each is a normal
    recorded run. Returns a :class:`kiln.sweeps.SweepResult` (runs in set order).

    ``grid`` is a mapping of name -> list of values (their cartesian product, the first name
    varying slowest; a value that is not a list is a single value), a list of parameter sets,
    or the path of a YAML file holding either. ``parameters`` are shared values that every set
    updates. Every set is validated before anything starts (``kiln.errors.ParameterError``
    naming the set). ``output`` is a path template such as ``"out/{region}-{x}.ipynb"``
    (fields: parameter names and ``{index}``); without it each run writes ``output.ipynb`` in
    its run folder. ``timeout`` and the other options apply to each run, as in :func:`run`.

    A failed run does not stop the others and raises nothing, unless ``check`` is true: then,
    once every run has ended, the error of the first set that did not succeed is raised.
    SIGINT/SIGTERM cancel the running runs; the sets not started are never run
    (``result.cancelled``, ``result.not_run``).

    >>> result = kiln.sweep("report.ipynb", {"region": ["EU", "US"], "n": [1, 2]}, jobs=2)
    >>> [(run.parameters, run.records["total"]) for run in result.succeeded]
    >>> print(result.table())
    """
    from kiln.runner import Runner
    from kiln.sweeps import SetEvent, load_grid, parameter_sets, plan_sweep, run_sweep

    sets = load_grid(grid) if isinstance(grid, (str, os.PathLike)) else parameter_sets(grid)
    request = _request(
        notebook,
        parameters,
        None,
        cwd,
        kernel=kernel,
        engine=engine,
        memory_limit=memory_limit,
        cell_timeout=cell_timeout,
        timeout=timeout,
        allow_errors=allow_errors,
        allow_unknown=allow_unknown,
        report_mode=report_mode,
        prepare_only=prepare_only,
        env=env,
    )
    plan = plan_sweep(request, sets, output=output)

    def echo(event: SweepEvent) -> None:
        if isinstance(event, SetEvent):
            _echo_stream(event.event, prefix=f"[{event.index}] ")

    home_dir = Path(home) if home is not None else None
    with Runner(home=home_dir) as runner:  # one runner: its warm engines serve every run
        result = run_sweep(plan, runner=runner, jobs=jobs, observer=echo if log_output else None)
    if check:
        result.check()
    return result


def _request(
    notebook: PathLike,
    parameters: Mapping[str, Any] | None,
    output: PathLike | None,
    cwd: PathLike | None,
    **options: Any,
) -> RunRequest:
    """The RunRequest behind :func:`run` and :func:`sweep` (paths made ``Path``)."""
    from kiln.request import RunRequest

    return RunRequest(
        notebook=Path(notebook),
        parameters=dict(parameters or {}),
        output=Path(output) if output is not None else None,
        cwd=Path(cwd) if cwd is not None else None,
        **options,
    )


def _echo_stream(event: Any, *, prefix: str = "") -> None:
    """Write a cell's stdout/stderr to ours (``log_output``), each line after ``prefix``."""
    from kiln.engines.base import CellOutput

    if not isinstance(event, CellOutput) or event.output.get("output_type") != "stream":
        return
    text = str(event.output.get("text", ""))
    if prefix:
        text = "".join(prefix + line for line in text.splitlines(keepends=True))
    stream = sys.stderr if event.output.get("name") == "stderr" else sys.stdout
    stream.write(text)
    stream.flush()


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
