"""A run's book-keeping: its row when it is recorded, its end, its files and exports.

:class:`~kiln.runner.Runner` drives a run (engine, events, saves); what it writes to the
history and the artefact store at the start and at the end of a run is here, so that every
way a run ends (succeeded, failed, could not write its files, refused, prepared only) writes
exactly one terminal state the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import platform
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln import __version__
from kiln.capture import request_record
from kiln.engines.base import ExecutionOutcome, KernelReady
from kiln.errors import (
    CellExecutionError,
    CellFailure,
    KernelDied,
    KilnError,
    RunCancelled,
    RunFailed,
    RunTimedOut,
    StoreError,
)
from kiln.events import RunEnded, RunEvent, RunWarning
from kiln.notebook import save_notebook
from kiln.notebook.marks import add_failure_marks
from kiln.notebook.papermill_meta import papermill_finish, papermill_start
from kiln.runlog import RunLog, shrink_log
from kiln.store.files import FileModes, store_input
from kiln.store.records import Record, Run, RunState, changed_run

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from kiln.notebook.saver import NotebookSaver
    from kiln.request import Prepared, RunRequest
    from kiln.store.artifacts import ArtifactStore, RunUpload
    from kiln.store.sql import RunStore

#: what observers hear
Notify = Callable[[RunEvent], None]

STATE_BY_OUTCOME = {
    "ok": RunState.SUCCEEDED,
    "error": RunState.FAILED,
    "timeout": RunState.TIMED_OUT,
    "dead": RunState.CRASHED,
    "cancelled": RunState.CANCELLED,
}


def record_run(
    store: RunStore,
    prepared: Prepared,
    engine_name: str,
    run_id: str,
    run_dir: Path,
    modes: FileModes,
    *,
    claimed: Run | None = None,
    upload: RunUpload | None = None,
    environment_hash: str | None = None,
) -> Run:
    """Commit the run row (queued) and its input copy: durable before anything runs. A
    claimed run's row exists: it gets the details. ``environment_hash``: the environment
    the run will run in, when it is known already (else its end records it)."""
    from kiln.store import current_owner

    request = prepared.request
    pid, host, started = current_owner()
    folder = str(run_dir)
    paths: dict[str, Any] = {
        "run_dir": folder,
        "output_path": (
            str(Path(request.output).resolve())
            if request.output
            else os.path.join(_real_folder(os.path.dirname(folder)), run_dir.name, "output.ipynb")
        ),
        "log_path": os.path.join(folder, "run.log"),
    }
    if upload is None:
        paths["input_path"] = str(
            store_input(store.home, prepared.sha256, prepared.source_bytes, modes)
        )
    else:  # the files' objects, readable from every machine
        paths["input_path"] = upload.store.ensure_input(prepared.sha256, prepared.source_bytes)
        paths.update(upload.row_paths(output_chosen=request.output is not None))
    if claimed is not None:
        details: dict[str, Any] = {
            **paths,
            "engine": engine_name,
            "kernel_name": prepared.kernel_name,
            "language": prepared.language,
            "python_version": platform.python_version(),
            "kiln_version": __version__,
        }
        store.update_run(run_id, **details)
        return dataclasses.replace(claimed, **details)
    run: Run = store.create_run(
        Run(
            id=run_id,
            notebook_path=request.notebook_label,
            notebook_sha256=prepared.sha256,
            state=RunState.QUEUED,
            parameters=prepared.public_values,
            **paths,
            engine=engine_name,
            kernel_name=prepared.kernel_name,
            language=prepared.language,
            python_version=platform.python_version(),
            kiln_version=__version__,
            owner_pid=pid,
            owner_host=host,
            owner_started=started,
            build_id=request.build_id,
            request=request_record(request),
            tags=dict(request.tags or {}),
            origin=dict(request.origin) if request.origin else None,
            submitted_by=request.submitted_by,
            environment_hash=environment_hash,
        )
    )
    return run


def _real_folder(folder: str) -> str:
    """``folder`` with its symbolic links resolved, once per process: the home's ``runs``
    folder, where every run's folder is made (a plain folder: ``mkdir`` made it)."""
    real = _REAL_FOLDERS.get(folder)
    if real is None:
        real = _REAL_FOLDERS[folder] = os.path.realpath(folder)
    return real


_REAL_FOLDERS: dict[str, str] = {}


def stamp_start(nb: NotebookNode, prepared: Prepared, run: Run, started_at: datetime) -> None:
    """The output notebook's own record of the run (Kiln's and papermill's metadata)."""
    request = prepared.request
    record = {
        "run_id": run.id,
        "parameters": prepared.public_values,
        "input_path": request.notebook_label,
        "output_path": str(run.output_path),
        "kernel_name": prepared.kernel_name,
        "started_at": started_at.isoformat(),
        "state": RunState.RUNNING.value,
    }
    dict.__setitem__(nb["metadata"], "kiln", record)  # as is: no NotebookNode conversion
    papermill_start(
        nb,
        parameters=prepared.public_values,
        defaults=prepared.schema.defaults(),
        input_path=request.notebook_label,
        output_path=str(run.output_path),
        started=started_at,
    )


def finish(
    store: RunStore,
    notify: Notify,
    prepared: Prepared,
    run: Run,
    nb: NotebookNode,
    saver: NotebookSaver,
    log: RunLog,
    outcome: ExecutionOutcome,
    durations: list[float | None],
    records: list[Record],
    tracked: dict[str, Any],
    upload: RunUpload | None = None,
) -> Run:
    state = STATE_BY_OUTCOME[outcome.status]
    error = _error_json(outcome.failure) if outcome.failure else None
    reason = _short_reason(outcome.message) or None
    if outcome.status != "ok":
        title, what = _describe(outcome)
        detail = ""
        if outcome.failure is not None:
            from kiln.textutil import strip_ansi

            detail = strip_ansi("\n".join(outcome.failure.traceback))[-4000:]
        add_failure_marks(nb, outcome.failed_cell, title=title, what=what, detail=detail)
        if error is None:
            error = {"cell_index": outcome.failed_cell, "ename": state, "evalue": what}
    elif outcome.allowed_errors:
        error = {"allowed": [_error_json(f) for f in outcome.allowed_errors]}
    ended_at = datetime.now(timezone.utc)
    meta = nb["metadata"]["kiln"]
    meta.update(state=state.value, ended_at=ended_at.isoformat())
    if outcome.status != "ok":
        meta["error"] = {"cell_index": outcome.failed_cell, "message": reason}
    papermill_finish(nb, ended_at, failed=not state.ok)
    if prepared.redactor is not None:
        # the last save also masks what the secret scanner finds in the outputs
        from kiln.redact import mask_outputs

        mask_outputs(nb, prepared.redactor)
        saver.forget()
        reason = prepared.redactor.mask(reason) if reason else reason
        if error is not None:
            error = prepared.redactor.mask_json(error)
    saver.save()
    log.line(f"run {state}: {outcome.message}" if outcome.message else f"run {state}")
    # the files are in the artefact store before the run says it ended
    log.flush()  # complete on disk before it is copied and the run's row says it ended
    where = upload.settle(log.line) if upload is not None else {}
    if upload is not None and not where:
        tracked["artifacts"] = upload.artifact_urls(tracked.get("artifacts") or [])
    written = tracked
    if run.environment_hash is not None and tracked.get("environment_hash") == run.environment_hash:
        # in the row since its insert: set again, its index entry would be written again
        written = {k: v for k, v in tracked.items() if k != "environment_hash"}
    store.finish_run(
        run.id,
        state,
        reason=reason,
        error=error,
        ended_at=ended_at,
        started_at=run.started_at,
        cell_durations=durations,
        records=records,
        kernel_pid=run.kernel_pid,
        kernel_started=run.kernel_started,
        kernel_version=run.kernel_version,
        **written,
        **where,
    )
    # what was just written, without reading it back
    final = changed_run(
        run,
        state=state,
        ended_at=ended_at,
        reason=reason,
        error=error,
        cell_durations=durations,
        records_list=records,
        **tracked,
        **where,
    )
    notify(RunEnded(final))
    return final


def end_prepared(
    store: RunStore,
    notify: Notify,
    prepared: Prepared,
    run: Run,
    nb: NotebookNode,
    log: RunLog,
    upload: RunUpload | None,
    *,
    output_path: Path,
    mode: int | None,
    started_at: datetime,
) -> Run:
    """A run asked only to be prepared: its notebook saved with the parameters, not run."""
    nb.metadata["kiln"]["state"] = RunState.PREPARED.value
    redactor = prepared.redactor
    if redactor is not None:
        from kiln.redact import masked_notebook

        save_notebook(masked_notebook(nb, redactor), output_path, mode=mode)
    else:
        save_notebook(nb, output_path, mode=mode)
    ended_at = datetime.now(timezone.utc)
    reason = "prepared only (not executed)"
    log.line("prepared only: parameters injected, not executed")
    log.flush()  # complete on disk before it is copied and the run's row says it ended
    where = upload.settle(log.line) if upload is not None else {}
    store.finish_run(
        run.id,
        RunState.PREPARED,
        reason=reason,
        started_at=started_at,
        ended_at=ended_at,
        **where,
    )
    final = dataclasses.replace(
        run,
        state=RunState.PREPARED,
        started_at=started_at,
        ended_at=ended_at,
        reason=reason,
        **where,
    )
    notify(RunEnded(final))
    return final


def refuse(store: RunStore, notify: Notify, claimed: Run, exc: KilnError, *, check: bool) -> Run:
    """A claimed run whose request cannot run (any more): it ends ``failed``, saying why."""
    ended = datetime.now(timezone.utc)
    reason = f"refused before it started: {exc.message}"
    if not store.finish_run(claimed.id, RunState.FAILED, reason=reason, ended_at=ended):
        final = store.get_run_exact(claimed.id)  # it ended already, as it said
        if check:
            raise exc
        return final
    final = dataclasses.replace(
        claimed, state=RunState.FAILED, reason=reason, ended_at=ended, lease_expires=None
    )
    notify(RunEnded(final))
    if check:
        raise exc
    return final


def failed_to_write(
    store: RunStore,
    notify: Notify,
    run: Run,
    exc: OSError,
    upload: RunUpload | None,
    log: RunLog,
) -> Run:
    """The run could not write its files: it ends ``failed``, saying why, and the history
    (which may live on another disk, or still have room for one row) records it."""
    where = f" while writing {exc.filename}" if exc.filename else ""
    reason = f"{exc.strerror or exc}{where}"
    if exc.errno == errno.ENOSPC:
        reason = f"no space left on the device{where}"
    ended_at = datetime.now(timezone.utc)
    log.flush()  # complete on disk before it is copied and the run's row says it ended
    kept = upload.settle(log.line) if upload is not None else {}
    try:
        store.finish_run(run.id, RunState.FAILED, reason=reason, ended_at=ended_at, **kept)
    except StoreError:
        # the history shares the full disk: make room from this run's own log (its tail
        # stays) and try once more
        shrink_log(log.path)
        store.finish_run(run.id, RunState.FAILED, reason=reason, ended_at=ended_at, **kept)
    final = dataclasses.replace(
        run, state=RunState.FAILED, reason=reason, ended_at=ended_at, **kept
    )
    notify(RunEnded(final))
    return final


def new_upload(
    artifacts: ArtifactStore | None, run_id: str, run_dir: Path, request: RunRequest
) -> RunUpload | None:
    """The copier of this run's files to the artefact store, if one is configured."""
    if artifacts is None:
        return None
    from kiln.store.artifacts import RunUpload

    output = Path(request.output).resolve() if request.output else None
    return RunUpload(artifacts, run_id, run_dir, output=output)


async def export(
    store: RunStore, notify: Notify, request: RunRequest, run: Run, log: RunLog
) -> None:
    """Record the ended run in MLflow too (on a worker thread); a failure is a warning
    on the run, never its state (``kiln runs sync-mlflow`` tries again)."""
    from kiln.mlflow_export import experiment_for, export_and_mark

    assert request.mlflow_uri is not None
    experiment = experiment_for(request.notebook_label, request.run_cwd)
    failed = await asyncio.to_thread(export_and_mark, store, run, request.mlflow_uri, experiment)
    if failed:
        warning = f"MLflow: {failed}; `kiln runs sync-mlflow` tries again"
        log.line(f"warning: {warning}")
        notify(RunWarning(warning))


#: a reason (``cell 3 raised ValueError: ...``) keeps this much of a long error value; the
#: whole value stays in the stored error and the traceback
REASON_LIMIT = 500


def _short_reason(message: str) -> str:
    from kiln.textutil import strip_ansi

    text = strip_ansi(message)
    if len(text) <= REASON_LIMIT:
        return text
    return f"{text[:REASON_LIMIT]}… ({len(text) - REASON_LIMIT} more characters in the error)"


def _error_json(failure: CellFailure) -> dict[str, Any]:
    """A cell failure as stored: without colour codes (they are for terminals, not JSON)."""
    from kiln.textutil import strip_ansi

    out = failure.to_json()
    out["ename"] = strip_ansi(str(out["ename"]))
    out["evalue"] = strip_ansi(str(out["evalue"]))
    out["traceback"] = [strip_ansi(str(line)) for line in out["traceback"]]
    return out


def kernel_version(event: KernelReady) -> str | None:
    parts = [
        p
        for p in (
            event.kernel_version,
            f"{event.language} {event.language_version}" if event.language_version else None,
        )
        if p
    ]
    return "; ".join(parts) or None


def _describe(outcome: ExecutionOutcome) -> tuple[str, str]:
    if outcome.status == "error" and outcome.failure is not None:
        return "failed", f"raised {outcome.failure.ename}: {outcome.failure.evalue}"
    if outcome.status == "timeout":
        return "timed out", outcome.message
    if outcome.status == "dead":
        return "crashed", outcome.message
    if outcome.status == "cancelled":
        return "was cancelled", outcome.message
    return "failed", outcome.message


def raise_for_state(run: Run) -> None:
    """Raise the RunFailed subclass matching a finished run's state (nothing on success)."""
    if run.state.ok:
        return
    reason = run.reason or run.state.value
    if (
        run.state is RunState.FAILED
        and run.error
        and "ename" in run.error
        and "traceback" in run.error
    ):
        from kiln.errors import CellFailure

        failure = CellFailure(
            **{
                k: run.error[k]
                for k in ("cell_index", "execution_count", "ename", "evalue", "traceback", "source")
            }
        )
        raise CellExecutionError(failure, notebook=run.notebook_path, run=run)
    cls: type[RunFailed] = {
        RunState.TIMED_OUT: RunTimedOut,
        RunState.CRASHED: KernelDied,
        RunState.CANCELLED: RunCancelled,
    }.get(run.state, RunFailed)
    raise cls(
        f"{os.path.basename(run.notebook_path)}: run {run.state.value.replace('_', ' ')}: {reason}",
        run=run,
    )
