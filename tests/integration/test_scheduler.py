"""`kiln scheduler` processes on one history (SQLite and PostgreSQL): two at once fire each
slot once, a scheduler killed with SIGKILL in the middle of a fire loses and doubles
nothing, and `kiln schedules` shows, pauses and runs schedules."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from kiln.store import RunStore
from kiln.store import slots as store_slots

from kilntest import KILN, build_notebook, wait_for, wait_for_file

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("database_url")]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    if os.environ.get("KILN_DATABASE_URL"):
        env["KILN_DATABASE_URL"] = os.environ["KILN_DATABASE_URL"]
    env.update(extra)
    return env


def _project(root: Path, count: int, cron: str = "* * * * *") -> Path:
    nbformat.write(
        build_notebook([("day = ''\nwho = ''", ["parameters"]), "print(who, day)"]),
        root / "nb.ipynb",
    )
    entries = "".join(
        f"  s{i}:\n    notebook: nb.ipynb\n    cron: '{cron}'\n"
        f"    parameters: {{day: '{{{{ today }}}}', who: s{i}}}\n"
        for i in range(count)
    )
    (root / "kiln.yaml").write_text("schedules:\n" + entries)
    return root


def _backdate(home: Path, names: list[str], minutes: int) -> None:
    """Make the schedules known since ``minutes`` ago, so slots are due at once."""
    with RunStore(home) as store:
        store_slots.ensure_states(
            store,
            dict.fromkeys(names, False),
            now=datetime.now(timezone.utc) - timedelta(minutes=minutes),
        )


@contextlib.contextmanager
def _schedulers(
    root: Path, home: Path, count: int, **env: str
) -> Iterator[list[subprocess.Popen[str]]]:
    logs = [(root / f"scheduler-{i}.log").open("w") for i in range(count)]
    procs = [
        subprocess.Popen(
            [KILN, "scheduler", "--workers", "1"],
            cwd=root,
            env=_env(home, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for log in logs
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


def _slots(home: Path) -> list[store_slots.Slot]:
    with RunStore(home) as store:
        return store_slots.slots(store)


def _runs(home: Path) -> list[object]:
    with RunStore(home) as store:
        return list(store.list_runs(limit=None))


def test_two_schedulers_fire_each_slot_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    names = [f"s{i}" for i in range(8)]
    # hourly, last due two minutes ago, known for three hours: each schedule has three due
    # slots (the latest fires, the two before are missed) and no new one comes during the
    # test (with a cron of every minute, a slot of the next minute could fire while the
    # schedulers stop, and its run stay queued)
    minute = (datetime.now(timezone.utc) - timedelta(minutes=2)).minute
    root = _project(tmp_path, len(names), cron=f"{minute} * * * *")
    _backdate(home, names, minutes=180)
    with _schedulers(root, home, 2) as procs:

        def all_done() -> bool:
            done = [s for s in _slots(home) if s.state == "succeeded"]
            return {s.schedule for s in done} == set(names)

        wait_for(all_done, timeout=120, what="a succeeded slot of every schedule")
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, (root / f"scheduler-{i}.log").read_text()
    slots = _slots(home)
    ran = [s for s in slots if s.run_id is not None]
    runs = _runs(home)
    # every schedule fired exactly its latest due slot; the earlier ones are recorded missed
    assert len({(s.schedule, s.slot) for s in slots}) == len(slots)
    assert sorted(r.id for r in runs) == sorted(s.run_id for s in ran)  # type: ignore[attr-defined]
    per_schedule = {name: [s for s in ran if s.schedule == name] for name in names}
    assert all(len(found) == 1 for found in per_schedule.values()), per_schedule
    states = [(r.id, r.state.value) for r in runs]  # type: ignore[attr-defined]
    assert all(state == "succeeded" for _, state in states), states
    assert {s.state for s in slots} == {"succeeded", "missed"}
    missed = [s for s in slots if s.state == "missed"]
    assert sorted(s.schedule for s in missed) == sorted(names * 2)


def test_a_scheduler_killed_in_the_middle_of_a_fire(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = _project(tmp_path, 1)
    _backdate(home, ["s0"], minutes=2)
    hold = tmp_path / "held"
    with _schedulers(root, home, 1, KILN_TEST_HOLD_FIRE=str(hold)) as (proc,):
        firing = wait_for_file(hold, timeout=60).split()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert firing[0] == "s0"
    slot = datetime.fromisoformat(firing[1])
    # the transaction died with the process: no slot row, no run
    assert all(s.slot != slot or s.state == "missed" for s in _slots(home))
    assert _runs(home) == []
    with _schedulers(root, home, 1):
        wait_for(
            lambda: any(s.state == "succeeded" for s in _slots(home)),
            timeout=120,
            what="the slot fired by the next scheduler",
        )
    fired = [s for s in _slots(home) if s.run_id is not None]
    runs = _runs(home)
    assert len(runs) == len(fired) >= 1
    assert slot in {s.slot for s in fired} or slot < max(s.slot for s in fired)


def test_schedules_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = _project(tmp_path, 2)

    def kiln(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KILN, *args], cwd=root, env=_env(home), capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    listed = kiln("schedules", "list", "--json", "-n", "2")
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout)
    assert [s["name"] for s in shown] == ["s0", "s1"]
    assert len(shown[0]["next"]) == 2 and shown[0]["last"] is None
    assert kiln("schedules", "pause", "s1").returncode == 0
    assert json.loads(kiln("schedules", "list", "--json").stdout)[1]["paused"] is True
    unknown = kiln("schedules", "pause", "nope")
    assert unknown.returncode == 2 and "no schedule named 'nope' (schedules: s0, s1)" in (
        unknown.stderr
    )
    queued = kiln("schedules", "run-now", "s0")
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip()
    worked = subprocess.run([KILN, "worker", "--until-empty"], cwd=root, env=_env(home),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert worked.returncode == 0, worked.stderr
    (run,) = _runs(home)
    assert run.id == run_id and run.state.value == "succeeded"  # type: ignore[attr-defined]
    history = kiln("schedules", "history", "s0", "--json")
    (entry,) = json.loads(history.stdout)
    assert entry["manual"] is True and entry["run_id"] == run_id
    (root / "kiln.yaml").write_text(
        "schedules:\n  bad:\n    notebook: nb.ipynb\n    cron: '0 25 * * *'\n"
    )
    broken = kiln("scheduler")
    assert broken.returncode == 2
    assert "kiln.yaml:3" in broken.stderr and "not a valid cron expression" in broken.stderr


def test_kiln_health_follows_the_scheduler_heartbeat(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = _project(tmp_path, 1)

    def health(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KILN, "health", "--json", *args], cwd=root, env=_env(home),
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    before = health()
    assert before.returncode == 1 and json.loads(before.stdout)["scheduler_alive"] is False
    with _schedulers(root, home, 1) as (proc,):
        wait_for(lambda: health().returncode == 0, timeout=60, what="a heartbeat")
        os.kill(proc.pid, signal.SIGKILL)  # a dead scheduler leaves its last beat behind
        proc.wait(timeout=30)
        stale = wait_for(
            lambda: (found := health("--max-age", "1s")).returncode == 1 and found,
            timeout=30,
            what="the heartbeat to age",
        )
    assert json.loads(stale.stdout)["heartbeat_age_s"] >= 1  # shown to 0.1 s: 1.04 is 1.0
