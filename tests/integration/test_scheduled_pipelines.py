"""Scheduled pipeline builds end to end with real parts: `kiln scheduler` fires a slot of a
pipeline schedule, claims the queued build and runs it (real kernels, each task a recorded
run tagged with the schedule and the slot), mails the summary with each task's report and
posts it; a failed build alerts (`alerts:`); a scheduler killed in the middle of a build
leaves a crashed build that the next scheduler finds, and the slot is retried, never run
twice at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kiln.store import RunStore
from kiln.store import slots as store_slots
from kiln.store.builds import BuildRow, BuildStore
from kilnsinks import smtp_sink, webhook_sink

from kilntest import KILN, build_notebook, pid_alive, wait_for, wait_gone

pytestmark = pytest.mark.kernel

CLEAN = [
    ("gate = ''\nfail = False", ["parameters"]),
    "import os, time\nwhile gate and not os.path.exists(gate):\n    time.sleep(0.05)",
    "open('clean.txt', 'w').write('cleaned')\nprint('CLEAN-RAN')",
    "assert not fail, 'the input was bad'",
]
REPORT = [("upstream = None", ["parameters"]), "print('REPORT-SAW', open('clean.txt').read())"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    env.update(extra)
    return env


def _project(root: Path, clean: str, extra: str = "", *, smtp: int = 1, hook: str = "") -> Path:
    nbformat.write(build_notebook(CLEAN), root / "clean.ipynb")
    nbformat.write(build_notebook(REPORT), root / "report.ipynb")
    (root / "kiln.yaml").write_text(
        f"""\
smtp: {{host: 127.0.0.1, port: {smtp}, from: kiln@example.com}}
pipelines:
  etl:
    tasks:
      clean: {{notebook: clean.ipynb, parameters: {clean}, products: {{data: clean.txt}}}}
      report: {{notebook: report.ipynb, inputs: [clean.txt]}}
schedules:
  nightly:
    pipeline: etl
    cron: "* * * * *"
{extra}"""
    )
    return root


def _backdate(home: Path, minutes: int = 2) -> None:
    with RunStore(home) as store:
        store_slots.ensure_states(
            store,
            {"nightly": False},
            now=datetime.now(timezone.utc) - timedelta(minutes=minutes),
        )


@contextmanager
def _scheduler(root: Path, home: Path, name: str = "scheduler") -> Iterator[subprocess.Popen[str]]:
    log = (root / f"{name}.log").open("w")
    # a session of its own: a SIGKILL test ends its kernels with it (by process group)
    proc = subprocess.Popen(
        [KILN, "scheduler"],
        cwd=root,
        env=_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _slots(home: Path) -> list[store_slots.Slot]:
    with RunStore(home) as store:
        return store_slots.slots(store)


def _delivered(home: Path) -> list[store_slots.Slot]:
    return [s for s in _slots(home) if s.delivery == "done"]


def _builds(home: Path) -> list[BuildRow]:
    with BuildStore.open(home) as builds:
        return builds.list_builds(str(_root(home)), "etl", limit=50)


def _root(home: Path) -> Path:
    return home.parent


def test_a_scheduled_build_runs_its_tasks_and_mails_the_summary(tmp_path: Path) -> None:
    home = tmp_path / "home"
    notify = (
        "    report: {format: html, hide_code: true}\n"
        "    notify:\n"
        "      email: {to: [team@example.com], on: always}\n"
        "      webhook: {url: URL, on: always}\n"
    )
    with smtp_sink() as smtp, webhook_sink() as hook:
        _project(tmp_path, "{}", notify.replace("URL", hook.url), smtp=smtp.port)
        _backdate(home)
        with _scheduler(tmp_path, home):
            slot = wait_for(lambda: _delivered(home), timeout=180, what="a delivered slot")[0]
        recipients, message = smtp.messages[0]
        post = hook.posts[0]["json"]
    assert slot.state == "succeeded" and slot.build_id is not None and slot.run_id is None
    with BuildStore.open(home) as builds:
        build = builds.get_build(slot.build_id)
    assert build.state == "succeeded" and build.pipeline == "etl"
    assert [(t.task, t.state) for t in build.tasks.values()] == [
        ("clean", "succeeded"),
        ("report", "succeeded"),
    ]
    with RunStore(home) as store:
        runs = {r.tags["kiln.task"]: r for r in store.list_runs(limit=None)
                if r.tags.get("kiln.build") == build.id}  # fmt: skip
    # each task a run of the one runner, recorded as in kiln build, tagged with its slot
    assert set(runs) == {"clean", "report"}
    for run in runs.values():
        assert run.state.value == "succeeded" and run.build_id == build.id
        assert run.tags["schedule"] == "nightly"
        assert run.tags["slot"] == slot.slot.isoformat()
    assert recipients == ["team@example.com"]
    assert message["Subject"] == "[kiln] nightly succeeded: pipeline etl"
    plain = message.get_body(preferencelist=("plain",)).get_content()
    assert "task clean: succeeded in" in plain and "task report: succeeded in" in plain
    assert f"build_id: {build.id}" in plain
    files = {part.get_filename(): part for part in message.iter_attachments()}
    assert sorted(files) == ["nightly-clean-report.html", "nightly-report-report.html"]
    assert "REPORT-SAW cleaned" in files["nightly-report-report.html"].get_content()
    assert post["build_state"] == "succeeded" and post["pipeline"] == "etl"
    assert [(t["task"], t["state"]) for t in post["tasks"]] == [
        ("clean", "succeeded"),
        ("report", "succeeded"),
    ]
    assert all(t["duration"] is not None and t["run_id"] for t in post["tasks"])


def test_a_failed_scheduled_build_notifies_and_alerts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    extra = "    notify:\n      webhook: {url: URL, on: failure}\nalerts:\n  webhook: {url: URL}\n"
    with webhook_sink() as hook:
        _project(tmp_path, "{fail: true}", extra.replace("URL", hook.url))
        _backdate(home)
        with _scheduler(tmp_path, home):
            slot = wait_for(lambda: _delivered(home), timeout=180, what="a delivered slot")[0]
            wait_for(lambda: len(hook.posts) >= 2, timeout=60, what="the alert and the summary")
        posts = [p["json"] for p in hook.posts]
    assert slot.state == "failed" and slot.build_id is not None
    alert = next(p for p in posts if p.get("alert") == "build_failed")
    summary = next(p for p in posts if p.get("alert") is None)
    for said in (alert, summary):
        assert said["build_id"] == slot.build_id and said["build_state"] == "failed"
        assert said["failed_task"]["task"] == "clean"
        assert "the input was bad" in said["failed_task"]["error"]
        states = {t["task"]: t["state"] for t in said["tasks"]}
        assert states == {"clean": "failed", "report": "blocked"}
    assert "task clean failed" in alert["text"]
    # no report section: the summary only, no task reports
    assert [d["kind"] for d in slot.deliveries or []] == ["webhook"]
    with BuildStore.open(home) as builds:
        (recorded,) = builds.deliveries(slot.build_id)
    assert recorded["kind"] == "webhook" and recorded["ok"] is True


def test_a_scheduler_killed_during_a_build_is_followed_by_a_retry(tmp_path: Path) -> None:
    home = tmp_path / "home"
    gate = tmp_path / "gate"
    _project(tmp_path, f"{{gate: {json.dumps(str(gate))}}}", "    retries: 1\n    retry_delay: 1\n")
    _backdate(home)

    def running_build() -> list[BuildRow]:
        """The build, once its first task's run executes (it waits for the gate)."""
        with RunStore(home) as store:
            executing = {r.tags.get("kiln.build") for r in store.list_runs(limit=None)
                         if r.state.value == "running"}  # fmt: skip
        return [b for b in _builds(home) if b.state == "running" and b.id in executing]

    with _scheduler(tmp_path, home, "first") as first:
        (build,) = wait_for(running_build, timeout=120, what="a build with a running task")
        os.killpg(first.pid, signal.SIGKILL)  # the scheduler and the kernels it started
        first.wait(timeout=30)
    assert build.owner_pid == first.pid
    assert wait_gone(first.pid)
    with _scheduler(tmp_path, home, "second"):
        slot_time = next(s.slot for s in _slots(home) if s.build_id == build.id)

        def retried() -> Any:
            slot = store_slots.get_slot(RunStore(home), "nightly", slot_time)
            return slot if slot is not None and slot.build_id != build.id else None

        wait_for(retried, timeout=120, what="the slot's retry")
        gate.write_text("go")

        def ended() -> Any:
            slot = store_slots.get_slot(RunStore(home), "nightly", slot_time)
            return slot if slot is not None and slot.state == "succeeded" else None

        slot = wait_for(ended, timeout=180, what="the retried slot to succeed")
    builds = {b.id: b for b in _builds(home)}
    assert builds[build.id].state == "crashed"
    assert "exited before the build ended" in (builds[build.id].reason or "")
    assert slot.attempts == 2 and builds[str(slot.build_id)].state == "succeeded"
    # never two builds of the slot at once: the retry was created after the crash was found
    retry = builds[str(slot.build_id)]
    assert retry.created_at >= (builds[build.id].ended_at or retry.created_at)
    assert not pid_alive(first.pid)
