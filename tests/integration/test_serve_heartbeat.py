"""`kiln serve` watches its scheduler process's heartbeat: a scheduler that is alive but
silent (here: stopped with SIGSTOP) past `alerts.heartbeat` is alerted about once (a real
HTTP server receives the webhook) and replaced by a new scheduler process, which beats."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import pytest
from server_util import running, write_notebook

from kiln.store import RunStore
from kiln.store.schema import scheduler_beats
from kilnsinks import webhook_sink

from kilntest import wait_for

pytestmark = pytest.mark.kernel


def _beating(home: Path) -> dict[int, float]:
    """pid -> last beat (epoch seconds) of this host's schedulers."""
    host = socket.gethostname()
    with RunStore(home) as store, store._read() as conn:
        rows = conn.execute(scheduler_beats.select()).all()
    return {int(r.pid): r.beat_at.timestamp() for r in rows if r.host == host}


def test_a_silent_scheduler_is_alerted_once_and_restarted(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write_notebook(project / "nb.ipynb", [("day = ''", ["parameters"])])
    home = tmp_path / "home"
    with webhook_sink() as hook:
        (project / "kiln.yaml").write_text(
            "schedules:\n  nightly:\n    notebook: nb.ipynb\n    cron: '@daily'\n"
            f"alerts:\n  heartbeat: 8s\n  webhook: {{url: '{hook.url}', on: always}}\n"
        )
        with running(project, home, "--workers", "1"):
            (first,) = wait_for(lambda: list(_beating(home)), timeout=60, what="a first beat")
            os.kill(first, signal.SIGSTOP)  # alive, silent
            try:

                def replaced() -> list[int]:
                    return [pid for pid in _beating(home) if pid != first]

                (second,) = wait_for(replaced, timeout=60, what="a new scheduler's beat")
                wait_for(lambda: hook.posts, timeout=30, what="the heartbeat alert")
                # the new one keeps beating (its outage is over): still one alert
                before = _beating(home)[second]
                wait_for(lambda: _beating(home)[second] > before, timeout=30, what="a beat")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(first, signal.SIGKILL)  # (killed by the server already)
        posts = [p["json"] for p in hook.posts]
    (alert,) = posts
    assert alert["alert"] == "heartbeat"
    assert f"scheduler process {first}" in alert["text"] and "restarted it" in alert["text"]
    assert alert["heartbeat_age_s"] > 8
