"""The run state machine on the fake engine: no kernel, a real SQLite store in tmp."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from kiln.engines.base import CellFinished, CellStarted
from kiln.engines.fake import FakeEngine
from kiln.errors import (
    CellExecutionError,
    KernelDied,
    MissingParameter,
    RunCancelled,
    RunTimedOut,
    UnknownParameter,
)
from kiln.parameters import CliValue
from kiln.runner import Runner, RunRequest
from kiln.store import RunStore

from kilntest import build_notebook, git, read_nb


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def runner(tmp_path: Path, engine: FakeEngine):
    with Runner(home=tmp_path / "home", engine=engine) as r:
        yield r


def _write(tmp_path: Path, cells, name: str = "nb.ipynb") -> Path:
    path = tmp_path / name
    nbformat.write(build_notebook(cells), path)
    return path


def test_success_records_everything(tmp_path, runner, engine):
    nb = _write(
        tmp_path,
        [
            ("n = 1", ["parameters"]),
            "import kiln\nkiln.record('double', n * 2)\nprint('hello', n)",
            "n + 40",
        ],
    )
    run = runner.run(RunRequest(notebook=nb, parameters={"n": CliValue("3")}))
    assert run.state == "succeeded"
    assert run.parameters == {"n": 3}
    assert run.records == {"double": 6}
    assert engine.calls == ["start", "execute", "close"]
    assert [d is not None for d in run.cell_durations] == [True, True, True, True]
    out = read_nb(run.output_path)
    assert out.cells[1].source == "# Parameters\nn = 3\n"
    assert out.cells[2].outputs[-1].text == "hello 3\n"
    assert out.cells[3].outputs[0].data["text/plain"] == "43"
    assert out.metadata.kiln.state == "succeeded"
    assert Path(run.input_path).read_bytes() == nb.read_bytes()
    log = Path(run.log_path).read_text()
    assert "cell 2 ok" in log and "[cell 2 stdout] hello 3" in log and "run succeeded" in log


def test_row_is_committed_before_cells_run(tmp_path, runner, engine):
    nb = _write(tmp_path, ["x = 1"])
    seen = []

    def look() -> None:
        with RunStore(tmp_path / "home") as other:  # a separate connection sees it
            seen.extend((r.state, r.owner_pid is not None) for r in other.list_runs())

    engine.on_execute = look
    runner.run(RunRequest(notebook=nb))
    # committed (queued, owned by this process) before the engine runs anything
    assert seen == [("queued", True)]


def test_cell_error_fails_with_banner_and_typed_error(tmp_path, runner):
    nb = _write(tmp_path, ["x = 1", "raise ValueError('bad value')", "y = 2"])
    with pytest.raises(CellExecutionError) as info:
        runner.run(RunRequest(notebook=nb))
    err = info.value
    assert (err.cell_index, err.ename, err.evalue) == (1, "ValueError", "bad value")
    assert "raise ValueError" in str(err) and err.run is not None
    assert err.run.state == "failed" and err.run.error["ename"] == "ValueError"
    out = read_nb(err.run.output_path)
    assert "kiln-error-banner" in out.cells[0].metadata.tags
    assert "kiln-error-marker" in out.cells[2].metadata.tags
    assert out.cells[4].outputs == []


def test_check_false_returns_the_failed_run(tmp_path, runner):
    nb = _write(tmp_path, ["1/0"])
    run = runner.run(RunRequest(notebook=nb), check=False)
    assert run.state == "failed" and run.error["ename"] == "ZeroDivisionError"


@pytest.mark.parametrize(
    ("magic", "state", "error"),
    [
        ("%%fake-die", "crashed", KernelDied),
        ("%%fake-hang", "timed_out", RunTimedOut),
        ("%%fake-cancel", "cancelled", RunCancelled),
    ],
    ids=["dead-kernel", "timeout", "cancel"],
)
def test_every_ending_is_one_terminal_state(tmp_path, runner, engine, magic, state, error):
    nb = _write(tmp_path, ["x = 1", magic, "y = 2"])
    with pytest.raises(error) as info:
        runner.run(RunRequest(notebook=nb))
    assert info.value.run.state == state
    assert engine.calls[-1] == "close"
    assert info.value.run.ended_at is not None


def test_allow_errors_succeeds_and_lists_the_errors(tmp_path, runner):
    nb = _write(tmp_path, ["1/0", "z = 3"])
    run = runner.run(RunRequest(notebook=nb, allow_errors=True))
    assert run.state == "succeeded"
    assert run.error["allowed"][0]["ename"] == "ZeroDivisionError"


def test_bad_parameters_start_nothing_and_record_nothing(tmp_path, runner, engine):
    nb = _write(tmp_path, [("region: str\nn = 1", ["parameters"]), "x = 1"])
    with pytest.raises(MissingParameter):
        runner.run(RunRequest(notebook=nb))
    with pytest.raises(UnknownParameter):
        runner.run(RunRequest(notebook=nb, parameters={"region": "EU", "m": 2}))
    assert engine.calls == []
    assert runner.store.list_runs() == []


def test_prepare_only_does_not_start_the_engine(tmp_path, runner, engine):
    nb = _write(tmp_path, [("n = 1", ["parameters"]), "raise SystemExit"])
    run = runner.run(RunRequest(notebook=nb, parameters={"n": 5}, prepare_only=True))
    assert run.state == "prepared" and "prepared" in run.reason
    assert "start" not in engine.calls and "execute" not in engine.calls


def test_observers_see_the_run_in_order(tmp_path, engine):
    nb = _write(tmp_path, ["print(1)"])
    events = []
    with Runner(home=tmp_path / "h", engine=engine, observers=[events.append]) as runner:
        runner.run(RunRequest(notebook=nb, parameters={"undeclared": 1}))
    kinds = [type(e).__name__ for e in events]
    # no parameters cell: a warning, then the value injected as cell 0
    assert kinds == [
        "RunWarning",
        "RunStarted",
        "KernelReady",
        "CellStarted",
        "CellFinished",
        "CellStarted",
        "CellOutput",
        "CellFinished",
        "RunEnded",
    ]
    assert [e.index for e in events if isinstance(e, (CellStarted, CellFinished))] == [0, 0, 1, 1]


def test_an_engine_bug_still_ends_the_run(tmp_path, runner, engine):
    nb = _write(tmp_path, ["x = 1"])

    def boom() -> None:
        raise RuntimeError("engine bug")

    engine.on_execute = boom
    with pytest.raises(RuntimeError):
        runner.run(RunRequest(notebook=nb))
    (run,) = runner.store.list_runs()
    assert run.state == "crashed" and "engine bug" in run.reason
    assert engine.calls[-1] == "close"


def test_rerun_of_failed_output_drops_old_banner(tmp_path, runner):
    nb = _write(tmp_path, [("ok = False", ["parameters"]), "assert ok"])
    failed = runner.run(RunRequest(notebook=nb), check=False)
    again = runner.run(
        RunRequest(
            notebook=Path(failed.output_path),
            parameters={"ok": True},
            output=tmp_path / "again.ipynb",
        )
    )
    cells = read_nb(again.output_path).cells
    tags = [t for c in cells for t in c.metadata.get("tags", [])]
    assert "kiln-error-banner" not in tags and "kiln-error-marker" not in tags
    assert tags.count("injected-parameters") == 1


@pytest.mark.parametrize(
    "stop", ["raise SystemExit", "import sys\nsys.exit(0)"], ids=["bare", "exit-0"]
)
def test_system_exit_zero_is_an_early_success(tmp_path, runner, engine, stop):
    nb = _write(tmp_path, ["x = 1", stop, "y = 2"])
    run = runner.run(RunRequest(notebook=nb))
    assert run.state == "succeeded" and "SystemExit" in run.reason
    assert engine.executed == [0, 1]


def test_system_exit_nonzero_fails(tmp_path, runner):
    nb = _write(tmp_path, ["raise SystemExit(3)"])
    assert runner.run(RunRequest(notebook=nb), check=False).state == "failed"


def test_invalid_notebook_found_after_kernel_launch_leaves_nothing(tmp_path, runner, engine):
    import json

    from kiln.errors import NotebookReadError

    path = tmp_path / "invalid.ipynb"
    # valid JSON with a supported nbformat, but a code cell without outputs: only the full
    # validation (done while the kernel boots) refuses it
    path.write_text(
        json.dumps(
            {
                "nbformat": 4,
                "nbformat_minor": 5,
                "metadata": {},
                "cells": [{"cell_type": "code", "source": "x", "metadata": {}, "id": "a"}],
            }
        )
    )
    with pytest.raises(NotebookReadError):
        runner.run(RunRequest(notebook=path))
    assert engine.calls == ["start", "close"]
    assert runner.store.list_runs() == []
    assert not list((tmp_path / "home" / "runs").iterdir())


def test_signal_handlers_are_installed_once_for_back_to_back_runs(tmp_path, runner, monkeypatch):
    import asyncio

    nb = _write(tmp_path, ["x = 1"])
    installs = []

    async def main():
        loop = asyncio.get_running_loop()
        real = loop.add_signal_handler

        def counting(signum, *args):
            installs.append(signum)
            return real(signum, *args)

        monkeypatch.setattr(loop, "add_signal_handler", counting)
        for _ in range(5):
            await runner.arun(RunRequest(notebook=nb))

    asyncio.run(main())
    assert len(installs) == 2  # SIGINT and SIGTERM, once for the five runs


def test_a_signal_between_runs_is_not_swallowed(tmp_path, runner):
    import asyncio
    import os
    import signal

    nb = _write(tmp_path, ["x = 1"])

    async def main():
        await runner.arun(RunRequest(notebook=nb))
        os.kill(os.getpid(), signal.SIGINT)  # no run active, handlers still lingering
        await asyncio.sleep(0.2)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())


def test_a_notebook_reached_through_a_symlink_runs_and_is_recorded_where_it_is(
    tmp_path: Path, runner: Runner
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    nb = _write(real, ["import os\nhere = os.getcwd()"])
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    request = RunRequest(notebook=tmp_path / "link" / "nb.ipynb")
    assert request.notebook_label == str(real.resolve() / "nb.ipynb")
    assert request.run_cwd == real.resolve() == request.run_cwd_resolved
    run = runner.run(request)
    assert run.notebook_path == str(real.resolve() / "nb.ipynb")
    assert run.request is not None and run.request["options"]["cwd"] == str(real.resolve())
    # a working directory given through the link is recorded resolved too
    linked = RunRequest(notebook=nb, cwd=tmp_path / "link")
    assert linked.run_cwd == tmp_path / "link"
    recorded = runner.run(linked)
    assert recorded.request is not None
    assert recorded.request["options"]["cwd"] == str(real.resolve())


def test_the_recorded_paths_are_the_run_folders_with_links_resolved(tmp_path, engine):
    real = tmp_path / "real-home"
    real.mkdir()
    (tmp_path / "linked-home").symlink_to(real)
    nb = _write(tmp_path, ["x = 1"])
    with Runner(home=tmp_path / "linked-home", engine=engine) as linked:
        runs = [linked.run(RunRequest(notebook=nb)) for _ in range(2)]
    for run in runs:
        folder = tmp_path / "linked-home" / "runs" / run.id
        assert run.run_dir == str(folder) and run.log_path == str(folder / "run.log")
        assert run.output_path == str(real / "runs" / run.id / "output.ipynb")
        assert Path(run.output_path).is_file()
        with RunStore(tmp_path / "linked-home") as store:
            assert store.get_run(run.id).output_path == run.output_path


def test_a_known_environment_is_in_the_row_from_its_insert(tmp_path, runner, engine, monkeypatch):
    from kiln.store import hotrow

    nb = _write(tmp_path, ["x = 1"])
    first = runner.run(RunRequest(notebook=nb))  # looks the environment up (a thread)
    assert first.environment_hash
    seen = []

    def look() -> None:
        with RunStore(tmp_path / "home") as other:
            seen.extend(r.environment_hash for r in other.list_runs() if r.state == "queued")

    ends: list[dict] = []
    real_update = hotrow.HotRows.update

    def update(self, run_id, values, *, only_active):
        if values.get("state") == "succeeded":
            ends.append(dict(values))
        return real_update(self, run_id, values, only_active=only_active)

    monkeypatch.setattr(hotrow.HotRows, "update", update)
    engine.on_execute = look
    second = runner.run(RunRequest(notebook=nb))
    # the second run's environment was at hand: recorded with the row, before it ran...
    assert seen == [first.environment_hash]
    # ...and not written again at its end (its index entry stays where it is)
    assert len(ends) == 1 and "environment_hash" not in ends[0] and "git" in ends[0]
    assert second.environment_hash == first.environment_hash
    with RunStore(tmp_path / "home") as store:
        assert store.get_run(second.id).environment_hash == first.environment_hash


def test_back_to_back_runs_reuse_their_provenance_lookups_but_see_a_commit_at_once(
    tmp_path, runner, monkeypatch
):
    from kiln import capture, provenance

    repo = tmp_path / "repo"
    repo.mkdir()
    nb = _write(repo, ["x = 1"])
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "nb.ipynb")
    git(repo, "commit", "-q", "-m", "one")
    monkeypatch.setattr(capture, "_recent", {})
    first = runner.run(RunRequest(notebook=nb))  # the lookups, then git itself
    second = runner.run(RunRequest(notebook=nb))  # found at once: remembered
    assert second.git == first.git and first.git["commit"]
    walks = []
    real_walk = provenance.find_repository
    monkeypatch.setattr(
        provenance, "find_repository", lambda start: walks.append(start) or real_walk(start)
    )
    third = runner.run(RunRequest(notebook=nb))
    assert walks == [] and third.git == first.git  # remembered: no walk up the folders
    nb.write_text(nb.read_text().replace("x = 1", "x = 2"))
    git(repo, "commit", "-qam", "two")
    fourth = runner.run(RunRequest(notebook=nb))  # the commit is seen at once
    assert fourth.git["commit"] != first.git["commit"] and not fourth.git["dirty"]
    # past the time to live, everything is looked up again
    for key, entry in capture._recent.items():
        capture._recent[key] = entry._replace(at=entry.at - capture.KNOWN_TTL - 1)
    walks.clear()
    fifth = runner.run(RunRequest(notebook=nb))
    assert walks and fifth.git == fourth.git
