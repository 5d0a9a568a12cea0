"""One build of a pipeline at a time, on both backends: a second holder waits (and is told),
another pipeline does not, and a holder killed by SIGKILL leaves no lock behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kiln.store import RunStore
from kiln.store.buildlock import pipeline_lock
from kiln.store.builds import BuildStore


def test_a_second_build_waits_for_the_first(store: RunStore) -> None:
    first, second = BuildStore(store), BuildStore(store)
    order: list[str] = []
    waited = threading.Event()
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pipeline_lock(first, "/p", "etl"):
            order.append("first in")
            held.set()
            release.wait(30)
            order.append("first out")

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)
    with pipeline_lock(first, "/p", "other"):  # another pipeline is not held up
        order.append("other")

    def wait_then_release() -> None:
        assert waited.wait(30)
        release.set()

    releaser = threading.Thread(target=wait_then_release)
    releaser.start()
    with pipeline_lock(second, "/p", "etl", on_wait=waited.set):
        order.append("second in")
    holder.join(30)
    releaser.join(30)
    assert order == ["first in", "other", "first out", "second in"]


HOLD = """
import sys, time
from pathlib import Path
from kiln.store.buildlock import pipeline_lock
from kiln.store.builds import BuildStore

with BuildStore.open(Path(sys.argv[1])) as builds, pipeline_lock(builds, "/p", "etl"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_holder_killed_by_sigkill_releases_the_lock(store: RunStore, home: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(home)], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        told: list[bool] = []

        def killed_when_waiting() -> None:
            told.append(True)
            os.kill(holder.pid, signal.SIGKILL)

        started = time.monotonic()
        with pipeline_lock(BuildStore(store), "/p", "etl", on_wait=killed_when_waiting):
            pass
        assert told == [True]
        assert time.monotonic() - started < 60  # taken once the holder died, not at its end
    finally:
        holder.kill()
        holder.wait(30)
        if holder.stdout is not None:
            holder.stdout.close()
