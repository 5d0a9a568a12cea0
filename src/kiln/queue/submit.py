"""Submitting a run to the queue: validated like any run, committed ``queued``, nothing started."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.request import RunRequest, prepare
from kiln.store.files import file_modes, store_input
from kiln.store.paths import new_run_id
from kiln.store.records import Run, RunState

if TYPE_CHECKING:
    from kiln.store.sql import RunStore


def submit(
    request: RunRequest,
    *,
    store: RunStore | None = None,
    home: Path | None = None,
    retries: int = 0,
    submitted_by: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Run:
    """Validate ``request`` as a run would be and commit it as a ``queued`` run; returns it.

    Refusals raise as :func:`kiln.run` would (``ParameterError``, ``NotebookError``, ...),
    before anything is written. ``retries`` is how many times a run whose worker died is
    queued again (a run that fails in a cell is not retried: it ran and failed)."""
    own = store is None
    if store is None:
        from kiln.store.sql import RunStore

        store = RunStore(home)
    try:
        run = queued_run(request, store, retries=retries, submitted_by=submitted_by, tags=tags)
        return store.create_run(run)
    finally:
        if own:
            store.close()


def queued_run(
    request: RunRequest,
    store: RunStore,
    *,
    retries: int = 0,
    submitted_by: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Run:
    """The ``queued`` run that submitting ``request`` commits, checked and with its input
    stored, but not yet inserted: a caller that must insert it together with other rows
    (the scheduler's slot) does so in its own transaction."""
    if retries < 0:
        raise ValueError("retries must be 0 or more")
    prepared = prepare(request)  # every check a run makes before it starts
    given = [n for n in prepared.secret_names if n not in (request.secrets or {})]
    if given:
        from kiln.errors import UsageError

        # the queue stores what a worker runs; a secret's value is never stored, only where
        # to read it
        raise UsageError(
            f"{request.notebook_label}: parameter {given[0]!r} is declared Secret; a queued "
            "run does not carry a secret's value: give it a source instead (secrets: "
            f"{{{given[0]}: env:VARIABLE}} in a schedule, or run the notebook directly)"
        )
    prepared.complete()  # full nbformat validation too: a queued run must be runnable
    from kiln.store.artifacts import artifact_store

    objects = artifact_store()
    if objects is not None:  # workers on other machines read it there
        input_path: Path | str = objects.ensure_input(prepared.sha256, prepared.source_bytes)
    else:
        input_path = store_input(store.home, prepared.sha256, prepared.source_bytes, file_modes())
    return Run(
        id=new_run_id(),
        notebook_path=request.notebook_label,
        notebook_sha256=prepared.sha256,
        state=RunState.QUEUED,
        parameters=prepared.public_values,  # secrets are read again when the run starts
        created_at=datetime.now(timezone.utc),
        input_path=str(input_path),
        kernel_name=prepared.kernel_name,
        language=prepared.language,
        request=_request_json(request),
        attempt=1,
        max_retries=retries,
        submitted_by=submitted_by,
        tags={**(request.tags or {}), **(tags or {})},
        origin=dict(request.origin) if request.origin else None,
    )


def _request_json(request: RunRequest) -> dict[str, object]:
    """The request as stored: the worker runs the stored bytes, so the notebook is only named
    (by its absolute path) and the working directory is fixed now, as a direct run's would be
    (the notebook's folder, or ``cwd``); a relative output path is made absolute too."""
    data = request.to_json()
    data["notebook"] = request.notebook_label
    options = dict(request.to_json()["options"])
    options["cwd"] = str(request.run_cwd.resolve())
    data["options"] = options
    if request.output is not None:
        data["output"] = str(Path(request.output).resolve())
    project = _project_of(request)
    if project is not None:
        data["project"] = project
    return data


def _project_of(request: RunRequest) -> dict[str, str] | None:
    """Where the notebook and the working directory are within their project (the folder of
    the ``kiln.yaml`` above the notebook), for a worker to find them in its own checkout."""
    import socket

    from kiln.project import find_project_file

    if request.source is not None and not Path(request.notebook).is_file():
        return None
    notebook = Path(request.notebook).resolve()
    found = find_project_file(notebook.parent)
    if found is None:
        return None
    root = found.parent.resolve()
    cwd = request.run_cwd.resolve()
    try:
        relative = {
            "notebook": notebook.relative_to(root).as_posix(),
            "cwd": cwd.relative_to(root).as_posix(),
        }
    except ValueError:  # the working directory is outside the project
        return None
    return {"root": str(root), "host": socket.gethostname(), **relative}


def relocate(
    run: Run, data: dict[str, Any], checkout: Path | None
) -> tuple[dict[str, Any], list[str]]:
    """A stored request moved into this worker's ``checkout`` of the project (its notebook and
    working directory at the same places within it), and notes for the run's log: where it
    runs, and when the checkout's notebook is not the one submitted (the submitted one runs)."""
    where = data.get("project")
    if checkout is None or not isinstance(where, dict):
        return data, []
    from kiln.notebook import sha256_bytes

    root = checkout.resolve()
    notebook = root / str(where["notebook"])
    moved = dict(data, notebook=str(notebook))
    moved["options"] = dict(data.get("options") or {}, cwd=str(root / str(where["cwd"])))
    output = data.get("output")
    if output:
        with contextlib.suppress(ValueError):
            moved["output"] = str(root / Path(output).relative_to(str(where["root"])))
    notes = []
    if str(root) != str(where["root"]):
        notes.append(
            f"runs in this worker's checkout {root} (submitted from {where['root']} on "
            f"{where.get('host', 'another machine')})"
        )
    try:
        here = sha256_bytes(notebook.read_bytes())
    except OSError:
        notes.append(f"{notebook} is not in this checkout: the submitted notebook runs")
    else:
        if here != run.notebook_sha256:
            notes.append(
                f"{notebook} in this checkout differs from the submitted notebook "
                "(another version): the submitted notebook runs"
            )
    return moved, notes


def request_of(run: Run, checkout: Path | None = None) -> tuple[RunRequest, list[str]]:
    """The request a queued run holds, with the exact bytes that were submitted (from the
    artefact store when it is there), moved into ``checkout`` (this worker's copy of the
    project) when given; and notes about it for the run's log."""
    from kiln.errors import StoreError
    from kiln.store.artifacts import is_remote, read_bytes

    if run.request is None or run.input_path is None:
        raise StoreError(f"run {run.id} was not submitted to the queue: it holds no request")
    try:
        source = read_bytes(run.input_path)
    except OSError as exc:
        hint = ""
        if not is_remote(run.input_path):
            hint = (
                " (a worker on another machine reads submitted notebooks from the artefact "
                "store: set KILN_ARTIFACTS, or store.artifacts in kiln.yaml, where runs are "
                "submitted)"
            )
        raise StoreError(
            f"the notebook submitted for run {run.id} is gone ({run.input_path}): "
            f"{exc.strerror or exc}{hint}"
        ) from None
    data, notes = relocate(run, dict(run.request), checkout)
    return RunRequest.from_json(data, parameters=run.parameters, source=source), notes
