"""Kiln in Apache Airflow: :class:`KilnOperator` runs one notebook, :func:`kiln_pipeline_dag`
turns a ``kiln.yaml`` pipeline into a DAG (``pip install 'kiln-notebooks[airflow]'``).

::

    from kiln.integrations.airflow import KilnOperator, kiln_pipeline_dag

    with DAG("sales", schedule="@daily", start_date=...):
        KilnOperator(task_id="report", notebook="daily_sales.ipynb",
                     parameters={"day": "{{ ds }}"}, timeout="10m")

    dag = kiln_pipeline_dag("sales", project="/srv/project", schedule="@daily")

Each Airflow task is one Kiln run through :func:`kiln.run` or :func:`kiln.run_task` (the one
run path): validated before anything starts, recorded in the Kiln history with the tags
``airflow.dag_id``, ``airflow.task_id``, ``airflow.run_id`` and ``airflow.try_number``. Its
records are the task's XCom return value, its run id the XCom ``kiln_run_id``. A Kiln failure
fails the task with Kiln's message; a refusal before the run (a bad parameter) is not retried.

Airflow's Jinja renders ``parameters`` (and the notebook and output paths of
:class:`KilnOperator`); a pipeline's products, inputs and ``{{params.NAME}}`` templates are
Kiln's, resolved by Kiln and never shown to Airflow's templating.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kiln.errors import KilnError, RunFailed, UsageError
from kiln.integrations.common import failure_text, json_records, retryable, task_ids, text_tags

try:  # Airflow 3's public authoring interface; Airflow 2.x kept it elsewhere
    from airflow.sdk import DAG, BaseOperator
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # pragma: no cover - Airflow 2
    from airflow.exceptions import AirflowException, AirflowFailException
    from airflow.models import DAG, BaseOperator

if TYPE_CHECKING:
    from kiln.store.records import Run

__all__ = ["KilnOperator", "KilnTaskOperator", "kiln_pipeline_dag"]

PathLike = str | os.PathLike[str]


def airflow_tags(context: Mapping[str, Any]) -> dict[str, str]:
    """The ids that tie a Kiln run to the Airflow task instance that started it."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    tags: dict[str, Any] = {
        "airflow.dag_id": getattr(ti, "dag_id", None),
        "airflow.task_id": getattr(ti, "task_id", None),
        "airflow.run_id": context.get("run_id") or getattr(dag_run, "run_id", None),
        "airflow.try_number": getattr(ti, "try_number", None),
    }
    map_index = getattr(ti, "map_index", -1)
    if isinstance(map_index, int) and map_index >= 0:
        tags["airflow.map_index"] = map_index
    return text_tags(tags)


class _KilnBase(BaseOperator):  # type: ignore[misc]  # Airflow ships no annotations we check
    """What both operators do around their run: tags, XCom, Kiln's message on failure."""

    ui_color = "#f4d7b5"

    def __init__(self, *, home: PathLike | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.home = os.fspath(home) if home is not None else None

    def _start(self, context: Mapping[str, Any]) -> Run:
        """The run of this task (each operator says which: a notebook or a pipeline task)."""
        raise NotImplementedError  # an abstract hook: KilnOperator and KilnTaskOperator define it

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        try:
            run = self._start(context)
        except RunFailed as exc:
            if exc.run is not None:
                self.log.error("Kiln run %s %s", exc.run.id, exc.run.state.value)
                ti.xcom_push(key="kiln_run_id", value=exc.run.id)
            error = AirflowException if retryable(exc) else AirflowFailException
            raise error(failure_text(exc)) from None
        except KilnError as exc:
            # refused before anything ran (a bad parameter, a missing notebook): a retry
            # would be refused the same way
            raise AirflowFailException(failure_text(exc)) from None
        self.log.info(
            "Kiln run %s %s in %s; output notebook %s",
            run.id,
            run.state.value,
            f"{run.duration:.2f}s" if run.duration is not None else "-",
            run.output_path,
        )
        ti.xcom_push(key="kiln_run_id", value=run.id)
        return json_records(run)


class KilnOperator(_KilnBase):
    """Run one notebook with Kiln: ``parameters`` (Airflow-templated, ``{{ ds }}``) are
    checked against the notebook's ``parameters`` cell before anything starts; ``engine`` and
    ``timeout`` are Kiln's run options (``"10m"``), ``run_options`` any other
    (``{"cell_timeout": "1m", "cwd": "/data"}``); ``home`` is the Kiln history (default:
    ``$KILN_HOME``, else ``.kiln`` beside the ``kiln.yaml`` above the notebook). A relative
    notebook or output path is taken from the DAG file's folder.

    Returns (XCom ``return_value``) the run's records as JSON; pushes ``kiln_run_id``."""

    # ``output`` is BaseOperator's own (this task's XComArg): the path is kept as output_path
    template_fields = ("notebook", "parameters", "output_path")
    template_fields_renderers: ClassVar[dict[str, str]] = {"parameters": "json"}

    def __init__(
        self,
        *,
        notebook: PathLike,
        parameters: Mapping[str, Any] | None = None,
        output: PathLike | None = None,
        engine: str | None = None,
        timeout: str | float | None = None,
        tags: Mapping[str, str] | None = None,
        run_options: Mapping[str, Any] | None = None,
        home: PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(home=home, **kwargs)
        self.notebook = os.fspath(notebook)
        self.parameters = dict(parameters or {})
        self.output_path = os.fspath(output) if output is not None else None
        self.engine = engine
        self.timeout = timeout
        self.tags = dict(tags or {})
        self.run_options = dict(run_options or {})

    def _place(self, path: str) -> Path:
        """A relative path from the DAG file's folder (Airflow's working directory is not
        the project's)."""
        found = Path(path).expanduser()
        fileloc = getattr(getattr(self, "dag", None), "fileloc", None)
        if not found.is_absolute() and fileloc:
            found = Path(fileloc).parent / found
        return Path(os.path.normpath(found))

    def _start(self, context: Mapping[str, Any]) -> Run:
        from kiln.api import run
        from kiln.project import find_home

        notebook = self._place(self.notebook)
        options: dict[str, Any] = dict(self.run_options)
        if self.engine is not None:
            options["engine"] = self.engine
        if self.timeout is not None:
            options["timeout"] = self.timeout
        options["tags"] = {**self.tags, **airflow_tags(context)}
        home = self.home if self.home is not None else find_home(notebook.parent)
        self.log.info("Kiln: running %s (history %s)", notebook, home)
        output = self._place(self.output_path) if self.output_path else None
        return run(notebook, output, parameters=self.parameters, home=home, **options)


class KilnTaskOperator(_KilnBase):
    """Run one task of a ``kiln.yaml`` pipeline as ``kiln build`` runs it
    (:func:`kiln.run_task`): its parameters from kiln.yaml, overridden by ``parameters``
    (Airflow-templated), ``upstream`` and ``product`` filled by Kiln. Made by
    :func:`kiln_pipeline_dag`, one per Kiln task."""

    template_fields = ("parameters",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"parameters": "json"}

    def __init__(
        self,
        *,
        kiln_task: str,
        pipeline: str,
        project: PathLike,
        parameters: Mapping[str, Any] | None = None,
        home: PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(home=home, **kwargs)
        self.kiln_task = kiln_task
        self.pipeline = pipeline
        self.project = os.fspath(project)
        self.parameters = dict(parameters or {})

    def _start(self, context: Mapping[str, Any]) -> Run:
        from kiln.api import run_task

        self.log.info("Kiln: task %s of pipeline %s", self.kiln_task, self.pipeline)
        return run_task(
            self.kiln_task,
            pipeline=self.pipeline,
            parameters=self.parameters,
            tags=airflow_tags(context),
            project=self.project,
            home=self.home,
        )


def kiln_pipeline_dag(
    pipeline: str | None = None,
    *,
    dag_id: str | None = None,
    schedule: Any = None,
    project: PathLike | None = None,
    home: PathLike | None = None,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    start_date: datetime | None = None,
    **dag_args: Any,
) -> Any:
    """An Airflow DAG from a pipeline of ``kiln.yaml``: one :class:`KilnTaskOperator` per Kiln
    task (a grid task's members each; ``clean[region=EU]`` becomes the task id
    ``clean.region-EU``), the same dependencies, products passed as ``kiln build`` passes them.

    ``project`` is the project's folder or ``kiln.yaml`` (default: the working directory's),
    ``home`` the Kiln history (default: ``.kiln`` beside ``kiln.yaml``). ``parameters`` maps a
    Kiln task's name to values that replace kiln.yaml's; every task's parameters are rendered
    by Airflow's Jinja (``{"report": {"day": "{{ ds }}"}}``). A task's ``retries`` and
    ``retry_delay`` of kiln.yaml become the Airflow task's (with exponential backoff, as in
    ``kiln build``). ``dag_args`` go to Airflow's ``DAG`` (``default_args``, ``tags``, ...).

    The pipeline is loaded and checked here, when Airflow parses the DAG file: a mistake in
    kiln.yaml is a DAG import error that names the place in the file.
    """
    from kiln.pipeline import load_pipeline
    from kiln.project import load_project

    start = Path(project) if project is not None else None
    if start is not None and start.is_file():
        start = start.parent
    found = load_project(start)
    loaded = load_pipeline(pipeline, project=found)
    unknown = sorted(set(parameters or {}) - set(loaded.tasks))
    if unknown:
        raise UsageError(
            f"parameters for unknown task(s) {', '.join(map(repr, unknown))} of pipeline "
            f"{loaded.name} (tasks: {', '.join(loaded.tasks)})"
        )
    dag_args.setdefault("tags", ["kiln"])
    if schedule is not None and start_date is None:
        start_date = datetime(2024, 1, 1, tzinfo=timezone.utc)
    if start_date is not None:
        dag_args["start_date"] = start_date
    ids = task_ids(loaded.tasks)
    dag = DAG(
        dag_id=dag_id or f"kiln_{loaded.name}",
        schedule=schedule,
        description=f"Kiln pipeline {loaded.name} of {found.origin}",
        **dag_args,
    )
    operators: dict[str, KilnTaskOperator] = {}
    with dag:
        for name, task in loaded.tasks.items():
            retry_args: dict[str, Any] = {}
            if task.retries:
                retry_args = {
                    "retries": task.retries,
                    "retry_delay": timedelta(seconds=task.retry_delay),
                    "retry_exponential_backoff": True,
                }
            operators[name] = KilnTaskOperator(
                task_id=ids[name],
                kiln_task=name,
                pipeline=loaded.name,
                project=found.root,
                parameters={**task.parameters, **(parameters or {}).get(name, {})},
                home=home,
                **retry_args,
            )
            for upstream in task.upstream_tasks:
                operators[upstream] >> operators[name]
    return dag
