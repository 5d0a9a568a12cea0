"""papermill's Python API, run through Kiln: ``from kiln import papermill as pm``.

For scripts that call papermill: change the import and keep the call. Each call is a normal
Kiln run (validated, recorded in the history, saved atomically), with papermill's signature
and return value::

    import kiln.papermill as pm
    nb = pm.execute_notebook("in.ipynb", "out.ipynb", parameters={"alpha": 0.6})

A failed cell raises :class:`PapermillExecutionError` (a :class:`kiln.errors.CellExecutionError`
with papermill's attribute names) after the output notebook, with its error banner, is saved,
as papermill does. Where Kiln deliberately differs from papermill, it does here too: unknown
parameters and values of the wrong type are refused before anything runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import CellExecutionError, CellFailure, UsageError

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from kiln.events import Observer
    from kiln.store.records import Run

__all__ = ["PapermillExecutionError", "execute_notebook", "inspect_notebook"]

PathLike = str | os.PathLike[str]


class PapermillExecutionError(CellExecutionError):
    """A cell raised, with papermill's attribute names (``exec_count``, ``source``, ...)."""

    def __init__(self, failure: CellFailure, *, notebook: str, run: Run | None = None) -> None:
        super().__init__(failure, notebook=notebook, run=run)
        self.exec_count = failure.execution_count
        self.source = failure.source


def execute_notebook(
    input_path: PathLike,
    output_path: PathLike,
    parameters: Mapping[str, Any] | None = None,
    engine_name: str | None = None,
    request_save_on_cell_execute: bool = True,
    prepare_only: bool = False,
    kernel_name: str | None = None,
    language: str | None = None,
    progress_bar: bool = True,
    log_output: bool = False,
    stdout_file: Any = None,
    stderr_file: Any = None,
    start_timeout: float = 60,
    report_mode: bool = False,
    cwd: PathLike | None = None,
    **engine_kwargs: Any,
) -> NotebookNode:
    """Run ``input_path`` with ``parameters`` and write ``output_path``; return the output
    notebook. papermill's signature; ``execution_timeout`` (an engine keyword) is the cell
    timeout, ``inject_input_path``/``inject_output_path``/``inject_paths`` pass the paths as
    parameters. ``progress_bar`` and ``request_save_on_cell_execute`` are accepted: Kiln saves
    the output as cells finish and shows no bar from the API."""
    from kiln.liveoutput import LiveOutput, StreamFiles
    from kiln.parameters import Extra
    from kiln.request import RunRequest
    from kiln.runner import Runner, raise_for_state

    values: dict[str, Any] = dict(parameters or {})
    inject_all = bool(engine_kwargs.pop("inject_paths", False))
    if inject_all or engine_kwargs.pop("inject_input_path", False):
        values["PAPERMILL_INPUT_PATH"] = Extra(os.fspath(input_path))
    if inject_all or engine_kwargs.pop("inject_output_path", False):
        values["PAPERMILL_OUTPUT_PATH"] = Extra(os.fspath(output_path))
    cell_timeout = engine_kwargs.pop("execution_timeout", None)
    engine_kwargs.pop("autosave_cell_every", None)
    if engine_kwargs:
        raise UsageError(
            f"execute_notebook: unsupported engine keyword(s) {', '.join(sorted(engine_kwargs))}"
        )
    options: dict[str, Any] = {
        "kernel": kernel_name,
        "language": language,
        "start_timeout": start_timeout,
        "report_mode": report_mode,
        "prepare_only": prepare_only,
        "cwd": cwd,
        "cell_timeout": cell_timeout,
    }
    if engine_name not in (None, "nbclient"):
        options["engine"] = engine_name
    request = RunRequest.build(
        input_path,
        parameters=values,
        output=output_path,
        **{k: v for k, v in options.items() if v is not None},
    )
    observers: list[Observer] = []
    if log_output:
        observers.append(LiveOutput(given=dict(request.parameters)).observe)
    streams = StreamFiles(stdout_file, stderr_file, given=dict(request.parameters))
    if streams.active:
        observers.append(streams.observe)
    with Runner(observers=observers) as runner:
        run = runner.run(request, check=False)
    try:
        raise_for_state(run)
    except CellExecutionError as exc:
        raise PapermillExecutionError(exc.failure, notebook=exc.notebook, run=run) from None
    from kiln.notebook import load_notebook

    result: NotebookNode = load_notebook(Path(os.fspath(output_path)))
    return result


def inspect_notebook(
    notebook_path: PathLike, parameters: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The notebook's parameters as papermill describes them: ``{name: {name,
    inferred_type_name, default, help}}``."""
    from kiln.notebook import load_notebook
    from kiln.parameters import infer_schema

    schema = infer_schema(load_notebook(Path(os.fspath(notebook_path))))
    given = dict(parameters or {})
    out: dict[str, dict[str, Any]] = {}
    for p in schema.parameters:
        default = given.get(p.name, p.default_source or repr(p.default))
        out[p.name] = {
            "name": p.name,
            "inferred_type_name": p.annotation or p.type,
            "default": "None" if p.required and p.name not in given else default,
            "help": p.help,
        }
    return out
