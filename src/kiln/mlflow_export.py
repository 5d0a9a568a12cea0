"""Each run as an MLflow run: parameters, numeric records and metric series, tags, the output
notebook and the run's artefacts.

The runner calls :func:`export_and_mark` after a run has ended (its terminal state is already
committed) when the run has an ``mlflow_uri`` (``--mlflow-uri``, ``KILN_MLFLOW_URI`` or
``kiln.yaml``'s ``tracking.mlflow``). MLflow being down never fails the run: the export is
marked ``failed`` with the reason, the run's log and its observers get a warning, and
``kiln runs sync-mlflow`` tries again. A retry replaces the MLflow run an earlier attempt left
half-written, so a run appears in MLflow once.

MLflow is an optional dependency (``pip install 'kiln-notebooks[mlflow]'``, on
``mlflow-skinny``) imported only here, on a worker thread, when a run is exported.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError
from kiln.store.exports import DONE, FAILED, PENDING, export_state, mark_export
from kiln.store.records import Run, RunState

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

INSTALL_HINT = "pip install 'kiln-notebooks[mlflow]'"
#: what MLflow accepts in a key; anything else becomes "_"
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
#: MLflow's limits per log_batch call
_BATCH_METRICS, _BATCH_PARAMS, _BATCH_TAGS = 1000, 100, 100
_PARAM_LIMIT = 6000

#: MLflow run status by Kiln state
_STATUS = {
    RunState.SUCCEEDED: "FINISHED",
    RunState.PREPARED: "FINISHED",
    RunState.CANCELLED: "KILLED",
}


class MlflowExportError(KilnError):
    """A run could not be recorded in MLflow (the run itself is not affected)."""


def experiment_for(notebook_label: str, start: str | os.PathLike[str] | None = None) -> str:
    """The MLflow experiment of a notebook's runs: ``tracking.mlflow.experiment`` in the
    governing ``kiln.yaml``, else the notebook's name without ``.ipynb``."""
    from kiln.project import load_project

    folder = start if start is not None else Path(notebook_label).parent
    try:
        project = load_project(folder)
    except KilnError:
        project = None
    tracking = project.config.tracking if project is not None else None
    if tracking is not None and tracking.mlflow is not None and tracking.mlflow.experiment:
        return tracking.mlflow.experiment
    name = Path(notebook_label).name
    return name[: -len(".ipynb")] if name.endswith(".ipynb") else (name or "kiln")


def export_and_mark(store: RunStore, run: Run, uri: str, experiment: str) -> str | None:
    """Export ``run`` and record how it went; returns why it failed (None when it did not)."""
    previous = export_state(store, run.id)
    mark_export(
        store,
        run.id,
        uri=uri,
        experiment=experiment,
        state=PENDING,
        mlflow_run_id=previous.mlflow_run_id if previous else None,
        attempt=True,
    )
    try:
        mlflow_id = export_run(
            run,
            uri=uri,
            experiment=experiment,
            replace=previous.mlflow_run_id if previous else None,
            on_created=lambda new_id: mark_export(
                store, run.id, uri=uri, experiment=experiment, state=PENDING, mlflow_run_id=new_id
            ),
        )
    except MlflowExportError as exc:
        current = export_state(store, run.id)
        mark_export(
            store,
            run.id,
            uri=uri,
            experiment=experiment,
            state=FAILED,
            mlflow_run_id=current.mlflow_run_id if current else None,
            error=exc.message,
        )
        return exc.message
    mark_export(store, run.id, uri=uri, experiment=experiment, state=DONE, mlflow_run_id=mlflow_id)
    return None


def export_run(
    run: Run,
    *,
    uri: str,
    experiment: str,
    replace: str | None = None,
    on_created: Any = None,  # Callable[[str], None]: the new MLflow run's id, once created
) -> str:
    """Record ``run`` as an MLflow run in ``experiment`` at ``uri``; returns its MLflow id.

    ``replace`` is the MLflow run an earlier, unfinished attempt created: it is deleted."""
    # a server that is down must not hold the run's process for minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # MLflow prints each run's URL on standard output, where `kiln run NB -` writes the
    # notebook and `--json` its JSON
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError:
        raise MlflowExportError(f"MLflow is not installed; {INSTALL_HINT}") from None
    with _quiet_mlflow():
        return _export(run, uri, experiment, replace, on_created)


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's INFO lines (creating its database tables, ...) are not the run's business:
    only its warnings are shown while Kiln exports; the level is restored after."""
    import logging

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _export(
    run: Run,
    uri: str,
    experiment: str,
    replace: str | None,
    on_created: Any,
) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, experiment)
        if replace:
            with contextlib.suppress(Exception):
                client.delete_run(replace)
        started = _millis(run.started_at or run.created_at)
        created = client.create_run(
            experiment_id, start_time=started, tags=_tags(run), run_name=run.id
        )
        mlflow_id = str(created.info.run_id)
        if on_created is not None:
            on_created(mlflow_id)
        params = [Param(_key(k), _param_value(v)) for k, v in run.parameters.items()]
        stamp = _millis(run.ended_at) or started
        metrics = [Metric(_key(n), v, stamp, 0) for n, v in _numeric_records(run)]
        for index, point in enumerate(run.metrics):
            value = _number(point.get("value"))
            if value is None:
                continue
            step = point.get("step")
            metrics.append(
                Metric(
                    _key(str(point["name"])), value, stamp, int(step if step is not None else index)
                )
            )
        if run.duration is not None:
            metrics.append(Metric("kiln.duration_seconds", run.duration, stamp, 0))
        for chunk in _chunks(metrics, _BATCH_METRICS):
            client.log_batch(mlflow_id, metrics=chunk)
        for chunk in _chunks(params, _BATCH_PARAMS):
            client.log_batch(mlflow_id, params=chunk)
        from kiln.store.artifacts import exists, local_copy

        if run.output_path and exists(run.output_path):
            with local_copy(run.output_path) as output:  # in the artefact store, if one is set
                client.log_artifact(mlflow_id, str(output))
        for artefact in run.artifacts:
            path = Path(str(artefact.get("path", "")))
            if path.is_dir():
                client.log_artifacts(mlflow_id, str(path), artifact_path=f"artifacts/{path.name}")
            elif path.is_file():
                client.log_artifact(mlflow_id, str(path), artifact_path="artifacts")
        client.set_terminated(
            mlflow_id, status=_STATUS.get(run.state, "FAILED"), end_time=_millis(run.ended_at)
        )
    except MlflowExportError:
        raise
    except Exception as exc:  # anything MLflow raises: the run is not affected
        raise MlflowExportError(f"could not record run {run.id} at {uri}: {_reason(exc)}") from exc
    return mlflow_id


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if getattr(found, "lifecycle_stage", "active") == "deleted":
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:
        found = client.get_experiment_by_name(name)  # created meanwhile by another process
        if found is None:
            raise
        return str(found.experiment_id)


def _tags(run: Run) -> dict[str, str]:
    tags = {_key(k): str(v)[:5000] for k, v in run.tags.items()}
    tags.update(
        {
            "kiln.run_id": run.id,
            "kiln.notebook": run.notebook_path,
            "kiln.state": run.state.value,
            "mlflow.source.name": run.notebook_path,
            "mlflow.source.type": "NOTEBOOK",
        }
    )
    if run.engine:
        tags["kiln.engine"] = run.engine
    if run.environment_hash:
        tags["kiln.environment"] = run.environment_hash
    git = run.git or {}
    if git.get("commit"):
        tags["kiln.git_commit"] = str(git["commit"])
        tags["mlflow.source.git.commit"] = str(git["commit"])
        tags["kiln.git_dirty"] = "true" if git.get("dirty") else "false"
    if run.reason:
        tags["kiln.reason"] = run.reason[:5000]
    return tags


def _numeric_records(run: Run) -> Iterator[tuple[str, float]]:
    for record in run.records_list:
        if record.kind != "json":
            continue
        value = _number(record.value)
        if value is not None:
            yield record.name, value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return None


def _param_value(value: Any) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_PARAM_LIMIT]


def _key(name: str) -> str:
    return _KEY.sub("_", name)[:250] or "_"


def _millis(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _reason(exc: Exception) -> str:
    """One line saying why, without MLflow's long retry chains."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for marker in ("Connection refused", "Max retries exceeded", "timed out", "Name or service"):
        if marker in str(exc):
            text = f"{marker.lower()} ({text[:200]})"
            break
    return text[:500]
