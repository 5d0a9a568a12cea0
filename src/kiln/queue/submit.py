"""Submitting a run to the queue: validated like any run, committed ``queued``, nothing started."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

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
    prepared.complete()  # full nbformat validation too: a queued run must be runnable
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
    return data


def request_of(run: Run) -> RunRequest:
    """The request a queued run holds, with the exact bytes that were submitted."""
    from kiln.errors import StoreError

    if run.request is None or run.input_path is None:
        raise StoreError(f"run {run.id} was not submitted to the queue: it holds no request")
    try:
        source = Path(run.input_path).read_bytes()
    except OSError as exc:
        raise StoreError(
            f"the notebook submitted for run {run.id} is gone ({run.input_path}): {exc.strerror}"
        ) from None
    return RunRequest.from_json(run.request, parameters=run.parameters, source=source)
