"""Kiln in Prefect: the :data:`run_notebook` task and :func:`pipeline_flow`, a ``kiln.yaml``
pipeline as a flow (``pip install 'kiln-notebooks[prefect]'``).

::

    from prefect import flow
    from kiln.integrations.prefect import pipeline_flow, run_notebook

    @flow
    def daily(day: str) -> None:
        records = run_notebook("daily_sales.ipynb", parameters={"day": day}, timeout="10m")

    sales = pipeline_flow("sales", project="/srv/project")
    sales()                      # every task, in dependency order

Each Prefect task run is one Kiln run through :func:`kiln.run` or :func:`kiln.run_task` (the
one run path), recorded with the tags ``prefect.flow_run_id``, ``prefect.flow_name``,
``prefect.task_run_id`` and ``prefect.task_run_name``; its records (as JSON) are the task's
result. A failure raises Kiln's error with Kiln's message. Prefect's retries follow Kiln's run
states: a run that failed, timed out or crashed is retried (when the task has retries); a
refusal before the run (a bad parameter) or a cancelled run never is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import Task, flow, task
from prefect.futures import wait

from kiln.errors import KilnError, UsageError
from kiln.integrations.common import json_records, plain_failure, retryable, text_tags

__all__ = ["pipeline_flow", "prefect_tags", "run_notebook", "run_pipeline_task"]

PathLike = str | os.PathLike[str]


def prefect_tags() -> dict[str, str]:
    """The ids of the flow run and task run this code runs in (empty outside Prefect)."""
    from prefect.runtime import flow_run, task_run

    return text_tags(
        {
            "prefect.flow_run_id": flow_run.id,
            "prefect.flow_name": flow_run.flow_name,
            "prefect.task_run_id": task_run.id,
            "prefect.task_run_name": task_run.name,
            "prefect.attempt": task_run.run_count or None,
        }
    )


def _retry_on_run_state(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: only a recorded run that failed, timed out or crashed."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # a result that cannot be read is no reason to retry
        return False
    return isinstance(error, BaseException) and retryable(error)


def _notebook(
    notebook: PathLike,
    parameters: Mapping[str, Any] | None = None,
    output: PathLike | None = None,
    *,
    engine: str | None = None,
    timeout: str | float | None = None,
    tags: Mapping[str, str] | None = None,
    home: PathLike | None = None,
    run_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    from kiln.api import run
    from kiln.project import find_home

    path = Path(notebook)
    options: dict[str, Any] = dict(run_options or {})
    if engine is not None:
        options["engine"] = engine
    if timeout is not None:
        options["timeout"] = timeout
    options["tags"] = {**(tags or {}), **prefect_tags()}
    where = home if home is not None else find_home(path.absolute().parent)
    try:
        result = run(path, output, parameters=parameters, home=where, **options)
    except KilnError as exc:
        raise plain_failure(exc) from None
    return json_records(result)


#: Run one notebook with Kiln (a Prefect task): ``parameters`` are checked before anything
#: starts; ``engine``, ``timeout`` and ``run_options`` are Kiln's run options; ``home`` the
#: history (default: ``.kiln`` beside the ``kiln.yaml`` above the notebook). Returns the
#: run's records as JSON. ``run_notebook.with_options(retries=2)`` retries a failed run.
run_notebook: Task[..., dict[str, Any]] = task(
    _notebook, name="kiln-run-notebook", retry_condition_fn=_retry_on_run_state
)


def _pipeline_task(
    kiln_task: str,
    *,
    pipeline: str,
    project: PathLike,
    parameters: Mapping[str, Any] | None = None,
    home: PathLike | None = None,
) -> dict[str, Any]:
    from kiln.api import run_task

    try:
        result = run_task(
            kiln_task,
            pipeline=pipeline,
            parameters=parameters,
            tags=prefect_tags(),
            project=project,
            home=home,
        )
    except KilnError as exc:
        raise plain_failure(exc) from None
    return json_records(result)


#: One task of a ``kiln.yaml`` pipeline as ``kiln build`` runs it (:func:`kiln.run_task`);
#: returns its records as JSON. :func:`pipeline_flow` makes one per Kiln task.
run_pipeline_task: Task[..., dict[str, Any]] = task(
    _pipeline_task, name="kiln-pipeline-task", retry_condition_fn=_retry_on_run_state
)


def pipeline_flow(
    pipeline: str | None = None,
    *,
    project: PathLike | None = None,
    home: PathLike | None = None,
    name: str | None = None,
) -> Any:
    """A Prefect flow that runs a pipeline of ``kiln.yaml``: one Prefect task run per Kiln
    task (named after it), each started when its upstream tasks succeeded, products passed
    as ``kiln build`` passes them, a task's ``retries`` and ``retry_delay`` of kiln.yaml as
    Prefect's (``retry_delay`` doubling, as in ``kiln build``).

    The flow takes ``parameters`` (Kiln task name -> values replacing kiln.yaml's) and
    returns each task's records; a task that fails fails the flow with Kiln's message, after
    the tasks that do not depend on it ended. The pipeline is loaded and checked here, so a
    mistake in kiln.yaml shows before any flow runs."""
    from kiln.pipeline import load_pipeline
    from kiln.project import load_project

    start = Path(project) if project is not None else None
    if start is not None and start.is_file():
        start = start.parent
    found = load_project(start)
    loaded = load_pipeline(pipeline, project=found)
    root = str(found.root)

    def kiln_pipeline(
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(parameters or {}) - set(loaded.tasks))
        if unknown:
            raise UsageError(
                f"parameters for unknown task(s) {', '.join(map(repr, unknown))} of pipeline "
                f"{loaded.name} (tasks: {', '.join(loaded.tasks)})"
            )
        futures: dict[str, Any] = {}
        for task_name, spec in loaded.tasks.items():
            options: dict[str, Any] = {"name": task_name, "task_run_name": task_name}
            if spec.retries:
                options["retries"] = spec.retries
                options["retry_delay_seconds"] = [
                    spec.retry_delay * 2**i for i in range(spec.retries)
                ]
            futures[task_name] = run_pipeline_task.with_options(**options).submit(
                task_name,
                pipeline=loaded.name,
                project=root,
                parameters=(parameters or {}).get(task_name),
                home=os.fspath(home) if home is not None else None,
                wait_for=[futures[up] for up in spec.upstream_tasks],
            )
        wait(list(futures.values()))
        return {task_name: future.result() for task_name, future in futures.items()}

    return flow(kiln_pipeline, name=name or f"kiln-{loaded.name}", validate_parameters=False)
