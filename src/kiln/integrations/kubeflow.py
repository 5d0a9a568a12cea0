"""A ``kiln.yaml`` pipeline compiled to a Kubeflow Pipelines (KFP v2) spec with the ``kfp`` SDK:
``kiln build PIPELINE --to kfp pipeline.yaml --image IMAGE``
(``pip install 'kiln-notebooks[kubeflow]'``).

Each Kiln task becomes one container component that runs ``kiln run`` in ``IMAGE`` (which holds
Kiln, the notebooks' packages and the project at its working directory):

- the task's parameters are the component's inputs, and the pipeline's (``TASK__NAME``, such
  as ``clean_region_eu__region``), their kiln.yaml values the defaults, so a run started from
  KFP can change them (text as text, numbers and booleans typed, anything else as JSON text);
- each product that is a local path becomes an output artefact: the notebook gets the
  artefact's path in its ``product`` parameter, and downstream tasks get the upstream
  artefacts' paths in their ``upstream`` parameter, so files travel between pods as KFP
  artefacts; a product at a URL (``s3://``) stays that URL, its task an ordering edge only;
- ``timeout``, ``engine``, ``kernel`` and ``retries`` (with ``retry_delay`` doubling) of
  kiln.yaml carry over; KFP's result caching is off (a notebook run is not a pure function);
- the run is tagged ``kiln.pipeline``, ``kiln.task``, ``kfp.run_id`` (the pipeline job's
  uuid) and ``kfp.task_name`` in the Kiln history of the container (``KILN_HOME`` or
  ``KILN_DATABASE_URL`` in the image says where that is).

A notebook that must receive artefacts but declares no ``product`` or ``upstream``
parameter is refused at compile time: in separate pods the kiln.yaml paths do not exist.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError
from kiln.remote import is_url

if TYPE_CHECKING:
    from kiln.pipeline.model import Pipeline, Task

INSTALL_HINT = "pip install 'kiln-notebooks[kubeflow]'"
_NOT_IDENT = re.compile(r"\W+")


def _ident(*parts: str) -> str:
    """A Python identifier from the parts (KFP names inputs and outputs after arguments)."""
    text = "__".join(_NOT_IDENT.sub("_", p).strip("_") or "x" for p in parts)
    return text if text[0].isalpha() else f"x_{text}"


@dataclass
class _Plan:
    """One task's component: its inputs, its artefacts and how they reach the notebook."""

    task: Task
    #: parameter name -> (annotation, default) for the component's inputs
    parameters: dict[str, tuple[type, Any]] = field(default_factory=dict)
    #: product name -> output artefact name (local products only)
    outputs: dict[str, str] = field(default_factory=dict)
    #: (upstream task, product name) -> input artefact name
    inputs: dict[tuple[str, str], str] = field(default_factory=dict)
    #: upstream tasks that pass no artefact (ordering only)
    after: list[str] = field(default_factory=list)


def _kfp() -> tuple[Any, Any]:
    try:
        from kfp import compiler, dsl
    except ImportError:
        raise UsageError(
            f"compiling to Kubeflow Pipelines needs the kfp SDK: {INSTALL_HINT}"
        ) from None
    return compiler, dsl


def _annotation(value: Any) -> tuple[type, Any]:
    """The component input's type and default for a kiln.yaml value."""
    if isinstance(value, bool):
        return bool, value
    if isinstance(value, (int, float, str)):
        return type(value), value
    return str, json.dumps(value)


def plan(pipeline: Pipeline, names: Iterable[str] | None = None) -> dict[str, _Plan]:
    """What each task's component takes and gives; refuses what cannot work in pods."""
    from kiln.pipeline.fingerprint import shown
    from kiln.pipeline.taskrun import declared_parameters

    selected = list(names) if names is not None else list(pipeline.tasks)
    plans: dict[str, _Plan] = {}
    for name in selected:
        task = pipeline.tasks[name]
        declared = declared_parameters(task.notebook.read_bytes(), str(task.notebook))
        made = _Plan(task)
        for key, value in task.parameters.items():
            if key not in ("upstream", "product"):
                made.parameters[key] = _annotation(value)
        local = [p for p, where in task.products.items() if not is_url(where)]
        if local and "product" not in declared:
            raise UsageError(
                f"pipeline {pipeline.name}, task {name}: its notebook "
                f"{shown(str(task.notebook), pipeline.root)} declares no 'product' parameter, "
                f"so it cannot write its products ({', '.join(local)}) to Kubeflow artefacts; "
                "add `product = None` to its parameters cell and write to product[NAME]"
            )
        made.outputs = {p: _ident("product", p) for p in local}
        for upstream in task.upstream_tasks:
            if upstream not in plans:
                raise UsageError(
                    f"pipeline {pipeline.name}, task {name} needs {upstream}: select it too"
                )
            carried = plans[upstream].outputs
            if carried and "upstream" not in declared:
                raise UsageError(
                    f"pipeline {pipeline.name}, task {name}: its notebook "
                    f"{shown(str(task.notebook), pipeline.root)} declares no 'upstream' "
                    f"parameter, so it cannot read {upstream}'s products from Kubeflow "
                    "artefacts; add `upstream = None` to its parameters cell"
                )
            for product in carried:
                made.inputs[(upstream, product)] = _ident("upstream", upstream, product)
            if not carried:
                made.after.append(upstream)
        plans[name] = made
    return plans


def _upstream_json(pipeline: Pipeline, made: _Plan, paths: Mapping[str, str]) -> str | None:
    """The ``upstream`` value as JSON, as ``kiln build`` makes it, with the artefacts' paths
    in place of local products."""
    from kiln.pipeline.taskrun import upstream_value

    if not made.task.upstream:
        return None

    def products(of: str) -> dict[str, str]:
        out = dict(pipeline.tasks[of].products)
        for (up, product), arg in made.inputs.items():
            if up == of:
                out[product] = paths[arg]
        return out

    return json.dumps({"upstream": upstream_value(pipeline, made.task, products)})


def _component(pipeline: Pipeline, made: _Plan, image: str, dsl: Any, cid: str) -> Any:
    """The container component of one task (its signature built from the plan)."""
    from kiln.pipeline.taskrun import declared_parameters

    task = made.task
    declared = declared_parameters(task.notebook.read_bytes(), str(task.notebook))
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    # artefacts first: arguments without a default come before those with one
    params = [
        inspect.Parameter(arg, kind, annotation=dsl.Input[dsl.Artifact])
        for arg in made.inputs.values()
    ]
    params += [
        inspect.Parameter(arg, kind, annotation=dsl.Output[dsl.Artifact])
        for arg in made.outputs.values()
    ]
    params += [
        inspect.Parameter(arg, kind, annotation=ann, default=default)
        for arg, (ann, default) in made.parameters.items()
    ]
    ids = ["kiln_kfp_run_id", "kiln_kfp_task_name"]
    params += [inspect.Parameter(arg, kind, annotation=str, default="") for arg in ids]
    order = [p.name for p in params]
    notebook = os.path.relpath(task.notebook, pipeline.root)

    def body(*values: Any) -> Any:
        got = dict(zip(order, values, strict=True))
        args: list[Any] = [notebook, "--cwd", "."]
        for key, (ann, _) in made.parameters.items():
            if ann is str and not isinstance(task.parameters[key], str):
                args += ["-y", f'{{"{key}": {got[key]}}}']
            elif ann is str:
                args += ["-r", key, got[key]]
            else:
                args += ["-p", key, got[key]]
        if "product" in declared:
            products = dict(task.products)
            products.update({p: f"{got[arg].path}" for p, arg in made.outputs.items()})
            args += ["-y", json.dumps({"product": products})]
        if "upstream" in declared:
            paths = {arg: f"{got[arg].path}" for arg in made.inputs.values()}
            text = _upstream_json(pipeline, made, paths)
            if text is not None:
                args += ["-y", text]
        if task.timeout is not None:
            args += ["--timeout", str(task.timeout)]
        if task.engine is not None:
            args += ["--engine", task.engine]
        if task.kernel is not None:
            args += ["--kernel", task.kernel]
        args += ["--tag", f"kiln.pipeline={pipeline.name}", "--tag", f"kiln.task={task.name}"]
        args += ["--tag", f"kfp.run_id={got[ids[0]]}", "--tag", f"kfp.task_name={got[ids[1]]}"]
        return dsl.ContainerSpec(image=image, command=["kiln", "run"], args=args)

    body.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    body.__name__ = cid
    body.__doc__ = f"Kiln task {task.name}: runs {notebook}."
    return dsl.container_component(body)


def compile_pipeline(
    pipeline: Pipeline,
    output: str | os.PathLike[str],
    *,
    image: str,
    targets: Iterable[str] = (),
) -> Path:
    """Write ``pipeline`` (or the ``targets`` and what they need) as a KFP v2 pipeline spec
    (YAML) to ``output``, atomically; returns its path."""
    compiler, dsl = _kfp()
    if not image or not image.strip():
        raise UsageError("image: the container image that holds Kiln and the project")
    target = Path(output)
    if target.suffix not in (".yaml", ".yml", ".json"):
        raise UsageError(f"{target}: a KFP pipeline spec is a .yaml (or .json) file")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{target}: the folder {folder} does not exist")
    plans = plan(pipeline, pipeline.select(targets))
    from kiln.integrations.common import task_ids

    ids = {name: _ident(cid).lower() for name, cid in task_ids(plans).items()}
    components = {
        name: _component(pipeline, made, image, dsl, ids[name]) for name, made in plans.items()
    }
    # every task's parameters are the pipeline's inputs too (TASK__NAME, kiln.yaml's value
    # as the default), so a run started from KFP's UI or client can change them
    inputs = {
        (name, key): (f"{ids[name]}__{key}", ann, default)
        for name, made in plans.items()
        for key, (ann, default) in made.parameters.items()
    }
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter(arg, kind, annotation=a, default=d) for arg, a, d in inputs.values()]
    )
    order = [arg for arg, _, _ in inputs.values()]

    def graph(*values: Any) -> None:
        given = dict(zip(order, values, strict=True))
        made_tasks: dict[str, Any] = {}
        for name, made in plans.items():
            kwargs: dict[str, Any] = {
                "kiln_kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                "kiln_kfp_task_name": dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
            }
            for key in made.parameters:
                kwargs[key] = given[inputs[(name, key)][0]]
            for (upstream, product), arg in made.inputs.items():
                kwargs[arg] = made_tasks[upstream].outputs[plans[upstream].outputs[product]]
            step = components[name](**kwargs)
            step.set_display_name(name)
            step.set_caching_options(False)
            if made.task.retries:
                step.set_retry(
                    num_retries=made.task.retries,
                    backoff_duration=f"{made.task.retry_delay:g}s",
                    backoff_factor=2.0,
                )
            if made.after:
                step.after(*(made_tasks[u] for u in made.after))
            made_tasks[name] = step

    graph.__name__ = _ident(pipeline.name).lower()
    # set here: the annotations in this file are text, which KFP would misread
    graph.__signature__ = signature  # type: ignore[attr-defined]
    spec = dsl.pipeline(
        name=_ident(pipeline.name).lower().replace("_", "-"),
        description=f"Kiln pipeline {pipeline.name}",
    )(graph)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=folder)
    os.close(fd)
    try:
        compiler.Compiler().compile(spec, package_path=temp)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
