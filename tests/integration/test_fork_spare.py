"""The fork engine's spare child: forked ahead of the next run, claimed by exactly one run,
discarded when the warm parent changes, and never outliving the warm parent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kiln.engines.fork import ForkEngine, ForkPool
from kiln.events import RunStarted
from kiln.runner import Runner, RunRequest

from kilntest import children_of, process_state, read_nb, stream_text

pytestmark = pytest.mark.kernel


async def _wait_for(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {seconds:g}s: {check}")


def _gone(pid: int) -> bool:
    return process_state(pid) in (None, "Z", "X")


async def _spare(parent: int) -> int:
    """The warm parent's only child once its runs have ended: the spare."""

    def one() -> int | None:
        children = [c for c in children_of(parent) if not _gone(c)]
        return children[0] if len(children) == 1 else None

    spare: int = await _wait_for(one)
    return spare


def _pool_test(tmp_path: Path, body: Callable[[Runner, ForkPool], Awaitable[Any]]) -> Any:
    pool = ForkPool(max_children=2)

    async def main() -> Any:
        # engines, not engine: a fixed engine gets no imports to pre-load
        runner = Runner(home=tmp_path / "home", engines={"fork": ForkEngine(pool)})
        try:
            return await body(runner, pool)
        finally:
            await pool.close()
            runner.close()

    return asyncio.run(main())


def _parent(pool: ForkPool) -> int:
    server = next(iter(pool._servers.values()))
    assert server.pid is not None
    return server.pid


def test_the_next_run_is_the_spare_forked_after_the_last_one(tmp_path, make_nb):
    nb = make_nb(["x = 1"])

    async def body(runner: Runner, pool: ForkPool) -> None:
        first = await runner.arun(RunRequest(engine="fork", notebook=nb))
        spare = await _spare(_parent(pool))
        assert spare != first.kernel_pid
        second = await runner.arun(RunRequest(engine="fork", notebook=nb))
        assert second.state == "succeeded" and second.kernel_pid == spare
        after = await _spare(_parent(pool))  # the next one is ready, and it is new
        assert after not in (spare, first.kernel_pid)
        return None

    _pool_test(tmp_path, body)


def test_the_spare_is_discarded_when_the_parent_pre_imports_a_module(tmp_path, make_nb):
    # a spare forked before the pre-import would run the notebook without the module
    # imported ahead: the run must get a child forked after it
    plain = make_nb(["x = 1"], name="plain.ipynb")
    importing = make_nb(
        ["import sys\nahead = 'xml.dom.minidom' in sys.modules", "import xml.dom.minidom", "ahead"],
        name="importing.ipynb",
    )

    async def body(runner: Runner, pool: ForkPool) -> None:
        await runner.arun(RunRequest(engine="fork", notebook=plain))
        stale = await _spare(_parent(pool))
        out = tmp_path / "out.ipynb"
        run = await runner.arun(RunRequest(engine="fork", notebook=importing, output=out))
        assert run.state == "succeeded" and run.kernel_pid != stale
        await _wait_for(lambda: _gone(stale))  # killed, not left waiting
        assert read_nb(out).cells[-1].outputs[0]["data"]["text/plain"] == "True"
        return None

    _pool_test(tmp_path, body)


def test_a_spare_dies_with_its_killed_warm_parent(tmp_path, make_nb):
    nb = make_nb(["x = 1"])

    async def body(runner: Runner, pool: ForkPool) -> None:
        await runner.arun(RunRequest(engine="fork", notebook=nb))
        parent = _parent(pool)
        spare = await _spare(parent)
        os.kill(parent, signal.SIGKILL)
        await _wait_for(lambda: _gone(spare))
        return None

    _pool_test(tmp_path, body)


def test_closing_the_pool_ends_the_spare(tmp_path, make_nb):
    nb = make_nb(["x = 1"])
    found: list[int] = []

    async def body(runner: Runner, pool: ForkPool) -> None:
        await runner.arun(RunRequest(engine="fork", notebook=nb))
        found.append(await _spare(_parent(pool)))
        return None

    _pool_test(tmp_path, body)
    end = time.monotonic() + 10
    while not _gone(found[0]) and time.monotonic() < end:
        time.sleep(0.02)
    assert _gone(found[0])


def test_runs_on_spares_draw_different_random_numbers(tmp_path, make_nb):
    nb = make_nb(
        ["import random, json\nprint(json.dumps([random.random(), random.getrandbits(64)]))"]
    )

    async def body(runner: Runner, pool: ForkPool) -> list[Any]:
        drawn, pids = [], []
        for i in range(3):
            out = tmp_path / f"out-{i}.ipynb"
            run = await runner.arun(RunRequest(engine="fork", notebook=nb, output=out))
            pids.append(run.kernel_pid)
            drawn.append(tuple(json.loads(stream_text(read_nb(out).cells[0]))))
            if i == 0:
                await _spare(_parent(pool))
        assert len(set(pids)) == 3
        return drawn

    drawn = _pool_test(tmp_path, body)
    assert len(set(drawn)) == 3, drawn


def test_a_spare_takes_the_environment_and_folder_of_its_own_run(tmp_path, make_nb, monkeypatch):
    get = "os.environ.get"
    nb = make_nb([f"import os\nprint(os.getcwd(), {get}('KILN_SPARE_T'), {get}('KILN_SPARE_K'))"])
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()

    async def body(runner: Runner, pool: ForkPool) -> list[str]:
        seen = []
        for i, folder in enumerate(folders):
            if i == 1:
                spare = await _spare(_parent(pool))
                # Kiln's own environment changes after the spare was forked: the run sees it
                monkeypatch.setenv("KILN_SPARE_K", "later")
            out = tmp_path / f"out-{i}.ipynb"
            run = await runner.arun(
                RunRequest(
                    engine="fork",
                    notebook=nb,
                    output=out,
                    cwd=folder,
                    env={"KILN_SPARE_T": f"t{i}"},
                )
            )
            if i == 1:
                assert run.kernel_pid == spare
            seen.append(stream_text(read_nb(out).cells[0]).strip())
        return seen

    seen = _pool_test(tmp_path, body)
    assert seen == [f"{folders[0]} t0 None", f"{folders[1]} t1 later"]


def test_a_run_on_a_spare_is_cancelled_and_its_process_killed(tmp_path, make_nb):
    started = tmp_path / "started"
    nb = make_nb([f"open({str(started)!r}, 'w').close()\nimport time\ntime.sleep(60)"])
    quick = make_nb(["import time"], name="quick.ipynb")  # pre-imports what the run needs
    ids: list[str] = []

    def observe(event: object) -> None:
        if isinstance(event, RunStarted):
            ids.append(event.run.id)

    async def body(runner: Runner, pool: ForkPool) -> Any:
        await runner.arun(RunRequest(engine="fork", notebook=quick))
        spare = await _spare(_parent(pool))
        runner.observers.append(observe)
        task = asyncio.ensure_future(
            runner.arun(RunRequest(engine="fork", notebook=nb), check=False)
        )
        await _wait_for(started.exists)
        assert runner.cancel(ids[-1], "by the test")
        run = await asyncio.wait_for(task, 30)
        assert run.kernel_pid == spare
        await _wait_for(lambda: _gone(spare))
        return run

    run = _pool_test(tmp_path, body)
    assert run.state == "cancelled"


def test_a_run_on_a_spare_keeps_its_memory_limit(tmp_path, make_nb):
    nb = make_nb(["import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0])"])

    async def body(runner: Runner, pool: ForkPool) -> str:
        await runner.arun(RunRequest(engine="fork", notebook=nb))
        spare = await _spare(_parent(pool))
        out = tmp_path / "out.ipynb"
        run = await runner.arun(
            RunRequest(engine="fork", notebook=nb, output=out, memory_limit=2**31)
        )
        assert run.kernel_pid == spare
        return stream_text(read_nb(out).cells[0]).strip()

    assert _pool_test(tmp_path, body) == str(2**31)


def test_a_spare_killed_from_outside_costs_the_next_run_nothing(tmp_path, make_nb):
    nb = make_nb(["x = 1"])

    async def body(runner: Runner, pool: ForkPool) -> None:
        await runner.arun(RunRequest(engine="fork", notebook=nb))
        parent = _parent(pool)
        spare = await _spare(parent)
        os.kill(spare, signal.SIGKILL)
        await _wait_for(lambda: spare not in children_of(parent))  # reaped
        run = await runner.arun(RunRequest(engine="fork", notebook=nb))
        assert run.state == "succeeded" and run.kernel_pid != spare
        # and once that run has had its child, a spare again
        again = await _spare(parent)
        third = await runner.arun(RunRequest(engine="fork", notebook=nb))
        assert third.kernel_pid == again
        return None

    _pool_test(tmp_path, body)


def _first_and_spare_runs(tmp_path: Path, nb: Path) -> tuple[list[str], dict[str, int | str]]:
    """Run ``nb`` twice: in a child forked for it, then on the spare. The first cell's stdout
    of each, and the pids and ``comm`` names of the second run, the spare and the parent."""

    async def body(runner: Runner, pool: ForkPool) -> tuple[list[str], dict[str, int | str]]:
        seen: list[str] = []
        procs: dict[str, int | str] = {}
        for i in range(2):
            if i == 1:
                parent = _parent(pool)
                procs["spare"] = spare = await _spare(parent)
                procs["spare_comm"] = _comm(spare)
                procs["parent_comm"] = _comm(parent)
            out = tmp_path / f"out-{i}.ipynb"
            run = await runner.arun(RunRequest(engine="fork", notebook=nb, output=out))
            assert run.state == "succeeded", run.error
            procs[f"run{i}"] = run.kernel_pid or 0
            seen.append(stream_text(read_nb(out).cells[0]).strip())
        return seen, procs

    result: tuple[list[str], dict[str, int | str]] = _pool_test(tmp_path, body)
    return result


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
        return fh.read().strip()


def test_runs_and_spares_are_named_kiln_run_and_the_warm_parent_is_not(tmp_path, make_nb):
    # ps, top and perf tell a run's process (forked for it, or the spare) from the warm parent
    nb = make_nb(["print(open('/proc/self/comm').read().strip())"])
    seen, procs = _first_and_spare_runs(tmp_path, nb)
    assert seen == ["kiln-run", "kiln-run"]
    assert procs["run1"] == procs["spare"] and procs["spare_comm"] == "kiln-run"
    assert procs["parent_comm"] not in ("kiln-run", "")


def test_a_run_starts_with_a_kernels_signal_handlers(tmp_path, make_nb):
    # the child resets the warm parent's handlers (SIGCHLD's wake-up, SIGINT, SIGTERM) as a
    # kernel has them: Ctrl-C's KeyboardInterrupt, and the default for the others
    nb = make_nb(
        [
            "import signal\nprint([signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,"
            " signal.getsignal(signal.SIGCHLD) is signal.SIG_DFL,"
            " signal.getsignal(signal.SIGINT) is signal.default_int_handler])"
        ]
    )
    seen, _procs = _first_and_spare_runs(tmp_path, nb)
    assert seen == ["[True, True, True]"] * 2


def test_a_run_spec_longer_than_one_read_arrives_whole(tmp_path, make_nb):
    # the spec is read with recv until its newline: a cell of 300 kB takes several reads
    text = "".join(chr(ord("a") + i % 26) for i in range(300_000))
    nb = make_nb([f"s = {text!r}\nimport zlib\nprint(len(s), zlib.crc32(s.encode()))"])
    import zlib

    seen, _procs = _first_and_spare_runs(tmp_path, nb)
    assert seen == [f"300000 {zlib.crc32(text.encode())}"] * 2


def test_a_run_request_says_how_many_other_runs_are_going(tmp_path, make_nb, monkeypatch):
    # the warm parent warms the next spare up only after a lone run's request: overlapping
    # runs must say so, and a lone run (even right after others ended) must say it is alone
    from kiln.engines.forkcontrol import ForkServer

    sent: list[int] = []
    real_fork = ForkServer.fork

    async def spy(self: ForkServer, run_sock: Any, *, others: int = 0) -> Any:
        sent.append(others)
        return await real_fork(self, run_sock, others=others)

    monkeypatch.setattr(ForkServer, "fork", spy)
    nb = make_nb(["import time\ntime.sleep(0.3)"])

    async def main() -> None:
        runner = Runner(home=tmp_path / "home")
        try:
            first = await runner.arun(RunRequest(notebook=nb, engine="fork"))
            both = await asyncio.gather(
                *(runner.arun(RunRequest(notebook=nb, engine="fork")) for _ in range(2))
            )
            last = await runner.arun(RunRequest(notebook=nb, engine="fork"))
            assert all(r.state == "succeeded" for r in (first, *both, last))
        finally:
            await runner.aclose_engines()
            runner.close()

    asyncio.run(main())
    assert sent[0] == 0 and sorted(sent[1:3]) == [0, 1] and sent[3] == 0
