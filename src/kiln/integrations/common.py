"""What the orchestrator integrations share: how a Kiln failure reads in the orchestrator,
which failures are worth a retry, records as plain JSON, task names the orchestrators accept.

Standard library and :mod:`kiln.errors` only: importing this loads no orchestrator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError, RunCancelled, RunFailed

if TYPE_CHECKING:
    from kiln.store.records import Run

#: run states a retry may turn into a success (a cell raised, a timeout, a dead kernel); a
#: refusal before the run (a bad parameter, a missing notebook) or a cancel is never retried
RETRYABLE_STATES = frozenset({"failed", "timed_out", "crashed"})

_NOT_ID = re.compile(r"[^\w.-]+")


def failure_text(exc: KilnError) -> str:
    """Kiln's own message for the orchestrator's task failure (no traceback), with the run,
    its output notebook and log when the run was recorded."""
    text = exc.message
    run = exc.run if isinstance(exc, RunFailed) else None
    if run is not None:
        text += f"\nKiln run {run.id} {run.state.value}: output notebook "
        text += f"{run.output_path or '-'}, log {run.log_path or '-'}"
    return text


def retryable(exc: BaseException) -> bool:
    """Whether running again may help: a recorded run that failed, timed out or crashed."""
    if not isinstance(exc, RunFailed) or isinstance(exc, RunCancelled):
        return False
    return exc.run is None or exc.run.state.value in RETRYABLE_STATES


def json_records(run: Run) -> dict[str, Any]:
    """The run's records as JSON values (a table is ``{columns, index, data}``, an image
    ``{mime, data}``): what XCom and result stores can hold whatever the record."""
    values: dict[str, Any] = json.loads(json.dumps(run.record_values, default=str))
    return values


def plain_failure(exc: KilnError) -> KilnError:
    """The error to raise where the orchestrator may pickle it (Prefect keeps a task's
    exception as its result, and some of Kiln's errors take more than a message): a
    :class:`RunFailed` holding the run, or a plain :class:`KilnError` for a refusal; either
    with :func:`failure_text` as its message."""
    if isinstance(exc, RunFailed):
        return RunFailed(failure_text(exc), run=exc.run)
    return KilnError(failure_text(exc))


def task_ids(names: Iterable[str]) -> dict[str, str]:
    """Kiln task name -> an id made of letters, digits, ``_ . -`` (what Airflow accepts):
    ``clean[region=EU]`` -> ``clean.region-EU``; unique (a suffix when two would clash)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        text = name.replace("[", ".").replace("]", "").replace("=", "-").replace(",", ".")
        base = _NOT_ID.sub("_", text).strip(".") or "task"
        candidate, n = base[:240], 2
        while candidate in used:
            candidate, n = f"{base[:236]}_{n}", n + 1
        used.add(candidate)
        out[name] = candidate
    return out


def text_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags with their values as text, leaving out the ones that are not known."""
    return {key: str(value) for key, value in tags.items() if value not in (None, "")}
