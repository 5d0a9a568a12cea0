"""One pipeline task's run request, made the one way ``kiln build`` makes it.

:func:`task_request` is what the build (:mod:`kiln.pipeline.execute`) and every orchestrator
integration (:mod:`kiln.integrations`) call, so a task run from Airflow or Prefect gets the
same parameters, ``upstream`` and ``product`` values, working directory, timeout, engine and
kernel as the same task run by ``kiln build``. :func:`missing_products` is the build's check
that a succeeded run wrote what it promised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.pipeline.model import Pipeline, Task
    from kiln.request import RunRequest


def declared_parameters(data: bytes, path: str) -> frozenset[str]:
    """The names the notebook's ``parameters`` cell declares (read, never run)."""
    from kiln.notebook.io import load_json
    from kiln.parameters import infer_schema

    return frozenset(infer_schema(load_json(data, path=path), notebook=path).names())


def upstream_value(
    pipeline: Pipeline,
    task: Task,
    products: Callable[[str], dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The ``upstream`` parameter: each upstream name -> its products (a grid task's name ->
    each member's products); ``products(task_name)`` says where a task's products are when
    not at kiln.yaml's locations (Kubeflow's artefacts)."""
    where = products or (lambda name: dict(pipeline.tasks[name].products))
    value: dict[str, Any] = {}
    for key, names in task.upstream.items():
        if names == (key,):
            value[key] = where(key)
        else:
            value[key] = {name: where(name) for name in names}
    return value


def task_request(
    pipeline: Pipeline,
    task: Task,
    data: bytes,
    *,
    declared: frozenset[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> RunRequest:
    """The run of ``task`` (its notebook's bytes in ``data``): its parameters (``parameters``
    override kiln.yaml's values), ``upstream`` and ``product`` when its parameters cell
    declares them, the project root as working directory, its timeout, engine and kernel;
    ``tags`` added to the run's tags with ``kiln.task``."""
    from kiln.project import run_defaults
    from kiln.request import RunRequest

    if declared is None:
        declared = declared_parameters(data, str(task.notebook))
    values: dict[str, Any] = {**task.parameters, **(parameters or {})}
    if "upstream" in declared:
        values["upstream"] = upstream_value(pipeline, task)
    if "product" in declared:
        values["product"] = dict(task.products)
    options: dict[str, Any] = {"cwd": pipeline.root}
    if task.timeout is not None:
        options["timeout"] = task.timeout
    if task.engine is not None:
        options["engine"] = task.engine
    if task.kernel is not None:
        options["kernel"] = task.kernel
    request = RunRequest.build(
        task.notebook,
        parameters=values,
        source=data,
        defaults=run_defaults(pipeline.project),
        **options,
    )
    # filterable like any tag (kiln runs list --tag kiln.task=NAME) and sent to MLflow
    merged = {**(request.tags or {}), **(tags or {}), "kiln.task": task.name}
    from dataclasses import replace

    return replace(request, tags=merged)


def missing_products(task: Task) -> list[str]:
    """The products of ``task`` that are not there (after a run that succeeded)."""
    from kiln.store.artifacts import exists

    return [name for name, location in task.products.items() if not exists(location)]
