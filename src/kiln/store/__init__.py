"""Run history: the runs database and each run's artefact folder.

``RunStore`` is loaded on first use, so importing :class:`Run` or :func:`new_run_id` does not
import SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.store.paths import default_home, new_run_id
from kiln.store.process import current_owner, process_start_time
from kiln.store.records import STATES, TERMINAL_STATES, Record, Run

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

__all__ = [
    "STATES",
    "TERMINAL_STATES",
    "Record",
    "Run",
    "RunStore",
    "current_owner",
    "default_home",
    "new_run_id",
    "process_start_time",
]


def __getattr__(name: str) -> Any:
    if name == "RunStore":
        from kiln.store.sql import RunStore

        return RunStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
