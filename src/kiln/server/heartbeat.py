"""``kiln serve`` watching its scheduler process's heartbeat.

The scheduler process writes a heartbeat every few seconds (:mod:`kiln.scheduler.service`). A
process that is alive but silent (stuck on a lock, stopped, wedged in a library) fires nothing
and is not restarted by the exit watch, so the server also reads the beat: when it is older
than the limit (``alerts.heartbeat`` of kiln.yaml, default 5 minutes), the alerts section's
notification goes out (once per outage, not at every check) and the process is killed, so the
supervisor starts another. The outage ends when a scheduler beats again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.project import Project
    from kiln.store.sql import RunStore

log = logging.getLogger("kiln.server")

#: the limit without an alerts section (the section's own default)
DEFAULT_LIMIT = 300.0


class HeartbeatWatch:
    """Judges one scheduler process at a time by its heartbeat in the history."""

    def __init__(self, project: Project, store: RunStore) -> None:
        alerts = project.config.alerts
        self.project = project
        self.store = store
        self.limit = alerts.heartbeat if alerts is not None else DEFAULT_LIMIT
        self.outage = False
        self.alerts: list[asyncio.Future[Any]] = []

    def age(self, pid: int, started: float) -> float:
        """Seconds since the process ``pid`` last beat (since it started, before its first
        beat); ``started`` is its start in ``time.time()``."""
        from kiln.store import slots as store_slots

        beat = store_slots.beat_of(self.store, f"{socket.gethostname()}:{pid}")
        last = max(started, beat.timestamp()) if beat is not None else started
        return max(0.0, datetime.now(timezone.utc).timestamp() - last)

    async def check(self, pid: int, started: float) -> bool:
        """True when the process is silent past the limit: it was killed (the caller starts
        another) and, the first time in this outage, the alert was sent."""
        try:
            age = await asyncio.to_thread(self.age, pid, started)
        except Exception as exc:  # the database is away: the scheduler cannot beat either
            log.warning("reading the scheduler's heartbeat failed: %s", exc)
            return False
        if age <= self.limit:
            if self.outage:
                log.info("the scheduler beats again")
            self.outage = False
            return False
        log.warning(
            "the scheduler process %d has not beat for %.0fs (limit %gs): restarting it",
            pid,
            age,
            self.limit,
        )
        if not self.outage:
            self.outage = True
            self.alerts.append(asyncio.ensure_future(asyncio.to_thread(self._alert, pid, age)))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # silent, so maybe deaf to SIGTERM too
        return True

    def _alert(self, pid: int, age: float) -> None:
        from kiln.report.alerts import send_alert

        text = (
            f"kiln serve's scheduler process {pid} on {socket.gethostname()} has not beat for "
            f"{age:.0f}s (limit {self.limit:g}s); the server restarted it"
        )
        send_alert(self.project, "heartbeat", {"text": text, "heartbeat_age_s": round(age, 1)})


def project_of(root: Path) -> Project:
    from kiln.project import load_project

    return load_project(root)
