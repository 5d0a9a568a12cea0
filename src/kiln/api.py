"""The Python API, mirroring the CLI: ``kiln.run``, ``kiln.sweep``, ``kiln.read_run``,
``kiln.list_runs``, ``kiln.build``, ``kiln.run_task``, ``kiln.status``. Run options are
declared once, in :mod:`kiln.options`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from kiln.liveoutput import LiveOutput
from kiln.options import RunOptionArgs, options_doc
from kiln.store.records import Run, RunState
from kiln.units import parse_count

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from kiln.pipeline import Build, BuildObserver, Status
    from kiln.project import Project
    from kiln.store.builds import BuildStore
    from kiln.sweeps import SweepResult

PathLike = str | os.PathLike[str]


def run(
    notebook: PathLike,
    output: PathLike | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    home: PathLike | None = None,
    log_output: bool = False,
    check: bool = True,
    **options: Unpack[RunOptionArgs],
) -> Run:
    """Run a notebook with parameters and return the recorded :class:`Run`.

    Parameters are validated against the notebook's ``parameters`` cell before anything
    starts (``kiln.errors.ParameterError``). When the run does not succeed and ``check`` is
    true, the matching ``kiln.errors.RunFailed`` subclass is raised; its ``.run`` holds the
    record, the output notebook (with its error banner) is saved either way. ``home`` is the
    Kiln home that records the run (default: as for every command, see ``find_home``);
    ``log_output`` echoes the cells' output live, as ``kiln run --log-output`` does.

    >>> result = kiln.run("report.ipynb", parameters={"region": "EU", "n": 3}, timeout="10m")
    >>> result.records["total"]

    Run options (keyword arguments; the environment's ``KILN_*`` and ``kiln.yaml``'s ``run``
    section give their defaults):

    {options}
    """
    from kiln.request import RunRequest
    from kiln.runner import Runner

    request = RunRequest.build(notebook, parameters=parameters, output=output, **options)
    observers = [LiveOutput(given=dict(request.parameters)).observe] if log_output else []
    with Runner(home=Path(home) if home is not None else None, observers=observers) as runner:
        return runner.run(request, check=check)


def sweep(
    notebook: PathLike,
    grid: Mapping[str, Any] | Sequence[Mapping[str, Any]] | PathLike,
    *,
    jobs: int = 1,
    parameters: Mapping[str, Any] | None = None,
    output: PathLike | None = None,
    home: PathLike | None = None,
    log_output: bool = False,
    check: bool = False,
    allow_outside: bool = False,
    **options: Unpack[RunOptionArgs],
) -> SweepResult:
    """Run a notebook once per parameter set, ``jobs`` runs at a time; each is a normal
    recorded run. Returns a :class:`kiln.sweeps.SweepResult` (runs in set order).

    ``grid`` is a mapping of name -> list of values (their cartesian product, the first name
    varying slowest; a value that is not a list is a single value), a list of parameter sets,
    or the path of a YAML file holding either. ``parameters`` are shared values that every set
    updates. Every set is validated before anything starts (``kiln.errors.ParameterError``
    naming the set). ``output`` is a path template such as ``"out/{region}-{x}.ipynb"``
    (fields: parameter names and ``{index}``); without it each run writes ``output.ipynb`` in
    its run folder; a relative template may not leave the working directory unless
    ``allow_outside``. The run options apply to each run, as in :func:`run`.

    A failed run does not stop the others and raises nothing, unless ``check`` is true: then,
    once every run has ended, the error of the first set that did not succeed is raised.
    SIGINT/SIGTERM cancel the running runs; the sets not started are never run
    (``result.cancelled``, ``result.not_run``).

    >>> result = kiln.sweep("report.ipynb", {"region": ["EU", "US"], "n": [1, 2]}, jobs=2)
    >>> [(run.parameters, run.records["total"]) for run in result.succeeded]
    >>> print(result.table())

    Run options (as for :func:`run`):

    {options}
    """
    from kiln.request import RunRequest
    from kiln.runner import Runner
    from kiln.sweeps import load_grid, parameter_sets, plan_and_run_sweep

    jobs = parse_count(jobs)
    sets = load_grid(grid) if isinstance(grid, (str, os.PathLike)) else parameter_sets(grid)
    request = RunRequest.build(notebook, parameters=parameters, **options)
    echo = LiveOutput().observe_sweep if log_output else None
    home_dir = Path(home) if home is not None else None
    with Runner(home=home_dir) as runner:  # one runner: its warm engines serve every run
        # the warm parent starts first and boots while the sets are checked
        result = plan_and_run_sweep(
            request,
            sets,
            runner=runner,
            jobs=jobs,
            output=output,
            allow_outside=allow_outside,
            on_plan=lambda _plan: echo,
        )
    if check:
        result.check()
    return result


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
    tags: Mapping[str, str] | None = None,
    home: PathLike | None = None,
) -> list[Run]:
    """Runs from the history, newest first; ``tags`` keeps the runs with these tag values
    (``{"team": "sales"}``)."""
    from kiln.store import RunStore

    with RunStore(Path(home) if home is not None else None) as store:
        store.recover_orphans()
        runs: list[Run] = store.list_runs(
            notebook=os.fspath(notebook) if notebook is not None else None,
            state=state,
            limit=limit,
            tags=tags,
        )
        return runs


@overload
def build(
    pipeline: str | None = None,
    *,
    targets: str | Sequence[str] = (),
    force: bool = False,
    resume: bool = False,
    jobs: int = 1,
    executor: Literal["local", "dask"] = "local",
    scheduler: str | None = None,
    dry_run: Literal[False] = False,
    project: PathLike | None = None,
    home: PathLike | None = None,
    observer: BuildObserver | None = None,
    check: bool = False,
) -> Build: ...


@overload
def build(
    pipeline: str | None = None,
    *,
    targets: str | Sequence[str] = (),
    force: bool = False,
    resume: bool = False,
    jobs: int = 1,
    executor: Literal["local", "dask"] = "local",
    scheduler: str | None = None,
    dry_run: Literal[True],
    project: PathLike | None = None,
    home: PathLike | None = None,
    observer: BuildObserver | None = None,
    check: bool = False,
) -> Status: ...


def build(
    pipeline: str | None = None,
    *,
    targets: str | Sequence[str] = (),
    force: bool = False,
    resume: bool = False,
    jobs: int = 1,
    executor: Literal["local", "dask"] = "local",
    scheduler: str | None = None,
    dry_run: bool = False,
    project: PathLike | None = None,
    home: PathLike | None = None,
    observer: BuildObserver | None = None,
    check: bool = False,
) -> Build | Status:
    """Build a pipeline of ``kiln.yaml`` (``kiln build``): its tasks in dependency order,
    ``jobs`` at a time, skipping those that are up to date; returns the recorded
    :class:`~kiln.pipeline.Build` (each task's state, reason and runs).

    ``pipeline`` may be left out when the project has one. ``targets`` builds only those
    tasks (and what they need); ``force`` runs them even when up to date; ``resume`` runs
    only what failed or never ran in the last build. ``executor="dask"`` runs the tasks on
    the Dask cluster at ``scheduler`` (``tcp://HOST:PORT``), or on a local one when none is
    given. ``dry_run`` runs nothing and returns the plan (a :class:`~kiln.pipeline.Status`:
    what would run, and why). ``project`` is the project's folder or ``kiln.yaml`` (default:
    the working directory's); ``home`` the history (default: ``.kiln`` beside ``kiln.yaml``);
    ``observer`` hears the build's events. A failed task does not stop independent tasks; with
    ``check`` a build that did not succeed raises :class:`~kiln.errors.BuildFailed`. A build
    that failed sends the alert of ``alerts:`` in kiln.yaml (when it asks for build alerts),
    as ``kiln build`` does; the alert's outcome never changes the result.

    >>> build = kiln.build("daily", jobs=2)
    >>> build.ok, build.ran, build.up_to_date
    >>> build.tasks["clean"].run.records
    """
    from kiln.pipeline import BuildOptions, load_pipeline, plan, run_build

    if isinstance(targets, str):
        targets = (targets,)
    options = BuildOptions(
        targets=tuple(targets),
        force=force,
        resume=resume,
        jobs=parse_count(jobs),
        executor=executor,
        scheduler=scheduler,
    )
    found = _project(project)
    chosen = load_pipeline(pipeline, project=found)
    if dry_run:
        with _read_builds(found, home) as builds:
            return plan(chosen, builds, options)
    from kiln.project import find_home

    folder = Path(home) if home is not None else find_home(found.root)
    result = run_build(chosen, home=folder, options=options, observer=observer)
    from kiln.report.alerts import build_failed_alert

    # as `kiln build` does: the alerts section's alert of a failed build, recorded on it
    build_failed_alert(chosen.project, result, home=folder)
    if check:
        result.check()
    return result


def run_task(
    task: str,
    *,
    pipeline: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    project: PathLike | None = None,
    home: PathLike | None = None,
    log_output: bool = False,
    check: bool = True,
) -> Run:
    """Run one task of a pipeline of ``kiln.yaml`` exactly as ``kiln build`` runs it (its
    parameters, ``upstream`` and ``product`` values, working directory, timeout, engine and
    kernel), without its upstream tasks and without a build: what an orchestrator that owns
    the order of the tasks (Airflow, Prefect) calls for each task.

    ``task`` is a task's name (a grid member's full name, ``clean[region=EU]``);
    ``parameters`` override the values of kiln.yaml; ``tags`` are added to the run's tags
    (with ``kiln.pipeline`` and ``kiln.task``). ``project`` and ``home`` are as for
    :func:`build`. A run that succeeded without writing one of its products raises
    :class:`~kiln.errors.RunFailed`, as the build fails that task; the other failures are as
    for :func:`run` (``check=False`` returns the run instead).

    >>> run = kiln.run_task("clean[region=EU]", pipeline="daily", tags={"ci": "1"})
    """
    from kiln.errors import RunFailed, UsageError
    from kiln.pipeline import load_pipeline
    from kiln.pipeline.fingerprint import shown
    from kiln.pipeline.taskrun import missing_products, task_request
    from kiln.project import find_home
    from kiln.runner import Runner

    found = _project(project)
    chosen = load_pipeline(pipeline, project=found)
    if task not in chosen.tasks:
        names = chosen.resolve(task)  # an unknown name: the error suggests the nearest
        raise UsageError(
            f"{task!r} is a grid task of pipeline {chosen.name}: run one member at a time "
            f"({', '.join(names)})"
        )
    chosen_task = chosen.tasks[task]
    request = task_request(
        chosen,
        chosen_task,
        chosen_task.notebook.read_bytes(),
        parameters=parameters,
        tags={**(tags or {}), "kiln.pipeline": chosen.name},
    )
    folder = Path(home) if home is not None else find_home(found.root)
    observers = [LiveOutput().observe] if log_output else []
    with Runner(home=folder, observers=observers) as runner:
        result = runner.run(request, check=check)
    missing = missing_products(chosen_task) if result.state.ok else []
    if missing and check:
        where = ", ".join(
            f"{name} ({shown(chosen_task.products[name], chosen.root)})" for name in missing
        )
        raise RunFailed(f"task {task}: the run succeeded but did not write {where}", run=result)
    return result


def status(
    pipeline: str | None = None,
    *,
    targets: str | Sequence[str] = (),
    project: PathLike | None = None,
    home: PathLike | None = None,
) -> Status:
    """Each task of a pipeline up to date or outdated, with the reason (``kiln status``):
    "code changed in cell 3", "upstream clean re-ran", "product out/a.json missing".

    >>> [(t.name, t.reason) for t in kiln.status("daily").tasks if not t.up_to_date]
    """
    from kiln.pipeline import BuildOptions, load_pipeline, plan

    if isinstance(targets, str):
        targets = (targets,)
    found = _project(project)
    chosen = load_pipeline(pipeline, project=found)
    with _read_builds(found, home) as builds:
        return plan(chosen, builds, BuildOptions(targets=tuple(targets)))


def _project(where: PathLike | None) -> Project:
    from kiln.project import load_project

    start = Path(where) if where is not None else None
    if start is not None and start.is_file():
        start = start.parent
    return load_project(start)


@contextlib.contextmanager
def _read_builds(project: Project, home: PathLike | None) -> Iterator[BuildStore | None]:
    """The history's builds, or ``None`` when nothing was ever recorded (creates nothing)."""
    from kiln.errors import HomeNotFound
    from kiln.project import find_home
    from kiln.store.builds import BuildStore

    folder = Path(home) if home is not None else find_home(project.root)
    try:
        builds = BuildStore.open(folder, create=False)
    except HomeNotFound:
        yield None
        return
    with builds:
        yield builds


def _state_of(meta: Mapping[str, Any], path: Path) -> RunState:
    from kiln.errors import NotebookError

    state = meta.get("state")
    if state not in {s.value for s in RunState}:
        raise NotebookError(
            f"{path} was not written by a Kiln run (no kiln run state in its metadata)",
            path=str(path),
        )
    return RunState(state)


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
        state=_state_of(meta, path),
        parameters=dict(meta.get("parameters", {})),
        started_at=when("started_at"),
        ended_at=when("ended_at"),
        output_path=str(path.resolve()),
        kernel_name=meta.get("kernel_name"),
        error=meta.get("error"),
        records_list=records,
    )


# the options' help, written once in kiln.options, shows in help(kiln.run) and help(kiln.sweep)
run.__doc__ = (run.__doc__ or "").replace("{options}", options_doc(indent=4).strip())
sweep.__doc__ = (sweep.__doc__ or "").replace("{options}", options_doc(indent=4).strip())
