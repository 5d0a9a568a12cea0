"""Schedules in `kiln serve`: its scheduler process fires a due slot that its workers run;
the API lists schedules with next fire times, runs one now, pauses and resumes (runners
only), each change audited."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from server_util import admin_client, make_user, running, wait_state, write_notebook

from kiln.store import RunStore
from kiln.store import slots as store_slots

from kilntest import wait_for

pytestmark = pytest.mark.kernel


def test_serve_fires_schedules_and_the_api_drives_them(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write_notebook(project / "nb.ipynb", [("day = ''", ["parameters"]), "print(day)"])
    (project / "kiln.yaml").write_text(
        "schedules:\n"
        "  every-minute:\n    notebook: nb.ipynb\n    cron: '* * * * *'\n"
        "    parameters: {day: '{{ today }}'}\n"
        "  nightly:\n    notebook: nb.ipynb\n    cron: '@daily'\n    timezone: Asia/Tokyo\n"
    )
    home = tmp_path / "home"
    with RunStore(home) as store:  # known for two minutes: its latest slot is due at once
        store_slots.ensure_states(
            store,
            {"every-minute": False, "nightly": False},
            now=datetime.now(timezone.utc) - timedelta(minutes=2),
        )
    with running(project, home, "--workers", "1") as server:
        admin = admin_client(server)
        viewer = server.client(make_user(admin, "vera", "viewer"))
        runner = server.client(make_user(admin, "rita", "runner"))

        def fired() -> list[store_slots.Slot] | None:
            with RunStore(home) as store:
                done = [s for s in store_slots.slots(store, schedule="every-minute")
                        if s.state == "succeeded"]  # fmt: skip
            return done or None

        wait_for(fired, timeout=120, what="the scheduler in kiln serve to fire a slot")
        listed = viewer.get("/api/v1/schedules", params={"count": 2})
        assert listed.status_code == 200, listed.text
        shown = {s["name"]: s for s in listed.json()}
        assert shown["nightly"]["next"][0].endswith("T00:00:00+09:00")
        assert len(shown["nightly"]["next"]) == 2
        # a slot of a later minute may have come meanwhile: waiting, queued, or skipped while
        # the one before still ran (its overlap policy); none fails
        assert shown["every-minute"]["last"]["state"] in {"succeeded", "queued", "waiting",
                                                          "skipped"}  # fmt: skip
        assert viewer.post("/api/v1/schedules/nightly/run-now").status_code == 403
        queued = runner.post("/api/v1/schedules/nightly/run-now")
        assert queued.status_code == 202, queued.text
        wait_state(runner, queued.json()["run_id"], {"succeeded"})
        assert runner.post("/api/v1/schedules/nightly/pause").json()["paused"] is True
        assert viewer.get("/api/v1/schedules").json()[1]["paused"] is True
        assert runner.post("/api/v1/schedules/nightly/resume").json()["paused"] is False
        missing = runner.post("/api/v1/schedules/nope/pause")
        assert missing.status_code == 404 and "no schedule named 'nope'" in missing.text
        slots = viewer.get("/api/v1/schedules/nightly/slots").json()
        assert slots[0]["manual"] is True and slots[0]["run_id"] == queued.json()["run_id"]
        actions = [e["action"] for e in admin.get("/api/v1/audit").json()["items"]]
        assert {"schedule.run-now", "schedule.pause", "schedule.resume"} <= set(actions)
