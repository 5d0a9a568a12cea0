"""RunStore as its callers use it: create, read, filter, update and finish runs."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import kiln.store
from kiln.errors import RunNotFound, StoreError
from kiln.store import (
    STATES,
    TERMINAL_STATES,
    Record,
    Run,
    RunStore,
    default_home,
    new_run_id,
)

MakeRun = Callable[..., Run]


# -- public surface ------------------------------------------------------------------------


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = kiln.store.NoSuchThing


def test_importing_the_records_does_not_import_sqlalchemy(
    run_python: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    code = "import sys, kiln.store; from kiln.store import Run; print('sqlalchemy' in sys.modules)"
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_new_run_id_is_sortable_unique_and_filename_safe() -> None:
    ids = [new_run_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for run_id in ids[:50]:
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{8}", run_id)
    stamped = datetime.strptime(ids[-1][:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - stamped) < timedelta(seconds=60)
    assert [i[:15] for i in ids] == sorted(i[:15] for i in ids)


def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KILN_HOME", raising=False)
    assert default_home(tmp_path) == tmp_path / ".kiln"
    monkeypatch.chdir(tmp_path)
    assert default_home() == tmp_path / ".kiln"
    monkeypatch.setenv("KILN_HOME", str(tmp_path / "elsewhere"))
    assert default_home(tmp_path) == tmp_path / "elsewhere"


def test_store_opens_in_kiln_home_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KILN_HOME", str(tmp_path / "h"))
    with RunStore() as store:
        assert store.home == tmp_path / "h"
    assert (tmp_path / "h" / "kiln.db").is_file()
    assert (tmp_path / "h" / "runs").is_dir()


# -- create and get ------------------------------------------------------------------------


def test_create_run_commits_row_and_folder(store: RunStore, home: Path) -> None:
    run = Run(id=new_run_id(), notebook_path="nb.ipynb", notebook_sha256="ab" * 32, state="queued")
    stored = store.create_run(run)
    assert stored.run_dir == str(home / "runs" / run.id)
    assert Path(stored.run_dir).is_dir()
    assert stored.created_at is not None
    assert abs(stored.created_at - datetime.now(timezone.utc)) < timedelta(seconds=10)
    # A second store (another connection) sees the committed row.
    with RunStore(home) as other:
        assert other.get_run(run.id) == stored


def test_create_run_keeps_given_run_dir_and_created_at(store: RunStore, tmp_path: Path) -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    run = Run(
        id="custom-1",
        notebook_path="nb.ipynb",
        notebook_sha256="x",
        state="running",
        run_dir=str(tmp_path / "mine"),
        created_at=when,
    )
    stored = store.create_run(run)
    assert stored.run_dir == str(tmp_path / "mine")
    assert stored.created_at == when
    assert not store.run_folder("custom-1").exists()


def test_create_run_refuses_duplicates_bad_ids_and_states(make_run: MakeRun) -> None:
    run = make_run(id="dup")
    with pytest.raises(StoreError, match="dup already exists"):
        make_run(id=run.id)
    for bad in ["", "../escape", "a/b", "last", "-x", "a b"]:
        with pytest.raises(ValueError, match="invalid run id"):
            make_run(id=bad)
    with pytest.raises(ValueError, match="unknown run state 'paused'"):
        make_run(state="paused")


def test_get_run_by_exact_id_and_unique_prefix(make_run: MakeRun, store: RunStore) -> None:
    a = make_run(id="20240101-000000-aaaaaa")
    b = make_run(id="20240101-000000-abbbbb")
    assert store.get_run(a.id) == a
    assert store.get_run("20240101-000000-aa") == a
    assert store.get_run("20240101-000000-ab").id == b.id


def test_get_run_exact_id_wins_over_longer_ids(make_run: MakeRun, store: RunStore) -> None:
    make_run(id="run1")
    make_run(id="run10")
    assert store.get_run("run1").id == "run1"


def test_get_run_ambiguous_prefix_lists_candidates(make_run: MakeRun, store: RunStore) -> None:
    make_run(id="20240101-000000-aaaaaa")
    make_run(id="20240101-000000-abbbbb")
    with pytest.raises(RunNotFound) as info:
        store.get_run("20240101-000000-a")
    message = str(info.value)
    assert "ambiguous" in message
    assert "20240101-000000-aaaaaa" in message
    assert "20240101-000000-abbbbb" in message
    assert info.value.exit_code == 2


def test_get_run_prefix_is_case_sensitive_and_literal(make_run: MakeRun, store: RunStore) -> None:
    make_run(id="abc-1")
    with pytest.raises(RunNotFound):
        store.get_run("ABC")
    with pytest.raises(RunNotFound):
        store.get_run("a_c")  # '_' is not a wildcard
    with pytest.raises(RunNotFound):
        store.get_run("%")


def test_get_run_not_found_names_the_id(store: RunStore, make_run: MakeRun) -> None:
    make_run()
    with pytest.raises(RunNotFound, match="'nope-123'"):
        store.get_run("nope-123")
    with pytest.raises(RunNotFound, match="no run id given"):
        store.get_run("  ")


def test_get_last_is_the_newest_run(make_run: MakeRun, store: RunStore) -> None:
    with pytest.raises(RunNotFound, match="no runs are recorded"):
        store.get_run("last")
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    make_run(id="b-older", created_at=base)
    make_run(id="a-newer", created_at=base + timedelta(seconds=1))
    make_run(id="c-oldest", created_at=base - timedelta(days=1))
    assert store.get_run("last").id == "a-newer"


# -- list ----------------------------------------------------------------------------------


def test_list_runs_newest_first_with_limit_and_since(make_run: MakeRun, store: RunStore) -> None:
    base = datetime(2024, 3, 1, tzinfo=timezone.utc)
    for i in range(5):
        make_run(id=f"r{i}", created_at=base + timedelta(hours=i))
    assert [r.id for r in store.list_runs()] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r.id for r in store.list_runs(limit=2)] == ["r4", "r3"]
    assert store.list_runs(limit=0) == []
    assert len(store.list_runs(limit=None)) == 5
    since = base + timedelta(hours=3)
    assert [r.id for r in store.list_runs(since=since)] == ["r4", "r3"]
    # The same instant in another time zone selects the same runs.
    plus_two = since.astimezone(timezone(timedelta(hours=2)))
    assert [r.id for r in store.list_runs(since=plus_two)] == ["r4", "r3"]
    with pytest.raises(ValueError, match="limit"):
        store.list_runs(limit=-1)


def test_list_runs_by_state(make_run: MakeRun, store: RunStore) -> None:
    make_run(id="q", state="queued")
    make_run(id="r", state="running")
    make_run(id="f", state="failed")
    assert {r.id for r in store.list_runs(state="queued")} == {"q"}
    assert {r.id for r in store.list_runs(state=["running", "failed"])} == {"r", "f"}
    with pytest.raises(ValueError, match="unknown run state 'done'"):
        store.list_runs(state="done")


def test_list_runs_by_notebook(
    make_run: MakeRun, store: RunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "reports").mkdir(parents=True)
    absolute = str(project / "reports" / "daily.ipynb")
    make_run(id="abs", notebook_path=absolute)
    make_run(id="rel", notebook_path="daily.ipynb")
    make_run(id="other-folder", notebook_path="/elsewhere/daily.ipynb")
    make_run(id="different", notebook_path=str(project / "reports" / "weekly.ipynb"))

    assert {r.id for r in store.list_runs(notebook=absolute)} == {"abs"}
    # A bare file name matches that file in any folder.
    assert {r.id for r in store.list_runs(notebook="daily.ipynb")} == {
        "abs",
        "rel",
        "other-folder",
    }
    # A relative path matches by its resolved absolute path, not by file name alone.
    monkeypatch.chdir(project)
    assert {r.id for r in store.list_runs(notebook="reports/daily.ipynb")} == {"abs"}
    assert store.list_runs(notebook="Daily.ipynb") == []
    # Moving a run's notebook moves it between file-name filters too.
    store.update_run("rel", notebook_path="weekly.ipynb")
    assert {r.id for r in store.list_runs(notebook="weekly.ipynb")} == {"rel", "different"}


# -- update and finish ---------------------------------------------------------------------


def test_update_run_sets_fields(make_run: MakeRun, store: RunStore) -> None:
    run = make_run()
    started = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    store.update_run(
        run.id,
        state="running",
        started_at=started,
        kernel_name="python3",
        cell_durations=[0.5, None, 1.25],
        records_list=[Record("n", "json", 3, cell_index=1)],
    )
    got = store.get_run(run.id)
    assert got.state == "running"
    assert got.started_at == started
    assert got.kernel_name == "python3"
    assert got.cell_durations == [0.5, None, 1.25]
    assert got.records == {"n": 3}
    # "records" is accepted as the column's name, with Record objects or plain dicts.
    store.update_run(run.id, records=[{"name": "m", "kind": "json", "value": [1]}])
    assert store.get_run(run.id).records_list == [Record("m", "json", [1], None)]


def test_update_run_refuses_unknown_fields(make_run: MakeRun, store: RunStore) -> None:
    run = make_run()
    with pytest.raises(ValueError, match="unknown run field colour"):
        store.update_run(run.id, colour="blue")
    with pytest.raises(ValueError, match="notebook_name"):
        store.update_run(run.id, notebook_name="x")
    with pytest.raises(ValueError, match="id cannot change"):
        store.update_run(run.id, id="other")
    with pytest.raises(ValueError, match="unknown run state None"):
        store.update_run(run.id, state=None)
    with pytest.raises(ValueError, match="notebook_path cannot be None"):
        store.update_run(run.id, notebook_path=None)
    assert store.get_run(run.id) == run


def test_update_run_missing_run(store: RunStore) -> None:
    with pytest.raises(RunNotFound, match="'ghost'"):
        store.update_run("ghost", state="running")
    with pytest.raises(RunNotFound, match="'ghost'"):
        store.update_run("ghost", reason="x")
    with pytest.raises(RunNotFound, match="'ghost'"):
        store.update_run("ghost")


def test_update_run_cannot_end_or_reopen_a_run(make_run: MakeRun, store: RunStore) -> None:
    run = make_run(state="running")
    with pytest.raises(ValueError, match="finish_run"):
        store.update_run(run.id, state="succeeded")
    assert store.finish_run(run.id, "cancelled", reason="user asked")
    with pytest.raises(StoreError, match="already finished \\(cancelled\\)"):
        store.update_run(run.id, state="running")
    # Other fields of a finished run may still be filled in (e.g. the report path).
    store.update_run(run.id, output_path="/tmp/out.ipynb")
    got = store.get_run(run.id)
    assert (got.state, got.output_path) == ("cancelled", "/tmp/out.ipynb")


def test_finish_run_sets_exactly_one_terminal_state(make_run: MakeRun, store: RunStore) -> None:
    run = make_run(state="running")
    error = {"ename": "ValueError", "evalue": "bad", "cell_index": 3, "traceback": ["a", "b"]}
    assert store.finish_run(run.id, "failed", reason="cell 3 raised", error=error) is True
    first = store.get_run(run.id)
    assert first.state == "failed"
    assert first.finished
    assert first.error == error
    assert first.ended_at is not None
    assert store.finish_run(run.id, "succeeded", reason="late") is False
    assert store.finish_run(run.id, "crashed") is False
    assert store.get_run(run.id) == first


def test_finish_run_extra_fields_and_explicit_end(make_run: MakeRun, store: RunStore) -> None:
    run = make_run(state="running")
    ended = datetime(2024, 6, 1, 8, 0, tzinfo=timezone.utc)
    assert store.finish_run(run.id, "succeeded", ended_at=ended, output_path="out.ipynb")
    got = store.get_run(run.id)
    assert (got.ended_at, got.output_path, got.reason, got.error) == (
        ended,
        "out.ipynb",
        None,
        None,
    )


def test_finish_run_refusals(make_run: MakeRun, store: RunStore) -> None:
    run = make_run()
    with pytest.raises(ValueError, match="not a terminal state"):
        store.finish_run(run.id, "running")
    with pytest.raises(ValueError, match="unknown run state"):
        store.finish_run(run.id, "done")
    with pytest.raises(ValueError, match="unknown run field"):
        store.finish_run(run.id, "failed", colour="red")
    with pytest.raises(RunNotFound, match="'ghost'"):
        store.finish_run("ghost", "failed")
    assert store.get_run(run.id).state == "queued"


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_every_terminal_state_can_end_a_run(make_run: MakeRun, store: RunStore, state: str) -> None:
    run = make_run()
    assert store.finish_run(run.id, state)
    assert store.get_run(run.id).state == state
    assert set(STATES) >= TERMINAL_STATES


def test_delete_run_removes_a_finished_run_and_its_folder(
    make_run: MakeRun, store: RunStore, tmp_path: Path
) -> None:
    done = make_run(state="running")
    assert done.run_dir is not None
    (Path(done.run_dir) / "output.ipynb").write_text("{}")
    assert store.finish_run(done.id, "succeeded")
    active = make_run(state="running")
    elsewhere = make_run(run_dir=str(tmp_path / "not-in-home"))
    (tmp_path / "not-in-home").mkdir()
    assert store.finish_run(elsewhere.id, "failed")

    assert store.delete_run(done.id).id == done.id
    assert not Path(done.run_dir).exists()
    with pytest.raises(RunNotFound):
        store.get_run(done.id)
    with pytest.raises(StoreError, match="is running: only a finished run can be removed"):
        store.delete_run(active.id)
    assert store.get_run(active.id).state == "running"
    store.delete_run(elsewhere.id)
    assert (tmp_path / "not-in-home").is_dir()  # never outside this home's run folders
    with pytest.raises(RunNotFound):
        store.delete_run("ghost")
    assert [r.id for r in store.list_runs()] == [active.id]


# -- values --------------------------------------------------------------------------------


def test_json_values_round_trip(make_run: MakeRun, store: RunStore) -> None:
    parameters = {
        "alpha": 0.1,
        "n": 3,
        "flag": False,
        "name": "Zürich ✓",
        "nothing": None,
        "nested": {"list": [1, "two", [3.5]], "empty": {}},
    }
    records = [
        Record("score", "json", {"f1": 0.91, "labels": ["a", "b"]}, cell_index=4),
        Record("table", "dataframe", {"columns": ["x"], "index": [0, 1], "data": [[1], [2]]}),
        Record("plot", "image", {"mime": "image/png", "data": "iVBORw0KGgo="}, cell_index=7),
    ]
    error = {"ename": "KeyError", "evalue": "'x'", "traceback": ["line 1", "line 2"]}
    run = make_run(parameters=parameters, records_list=records, error=error)
    got = store.get_run(run.id)
    assert got.parameters == parameters
    assert got.records_list == records
    assert got.records["score"] == {"f1": 0.91, "labels": ["a", "b"]}
    assert got.records_list[2].image_bytes() == b"\x89PNG\r\n\x1a\n"
    assert got.error == error


def test_parameter_values_that_are_not_json_are_refused(make_run: MakeRun, store: RunStore) -> None:
    with pytest.raises(StoreError, match="cannot be stored as JSON"):
        make_run(id="bad", parameters={"x": object()})
    with pytest.raises(RunNotFound):
        store.get_run("bad")
    # Common non-JSON types are stored as their obvious JSON form.
    run = make_run(parameters={"day": datetime(2024, 1, 2).date(), "path": Path("/a/b")})
    assert store.get_run(run.id).parameters == {"day": "2024-01-02", "path": "/a/b"}


def test_timestamps_are_utc_aware(make_run: MakeRun, store: RunStore) -> None:
    paris_summer = timezone(timedelta(hours=2))
    created = datetime(2024, 7, 1, 14, 0, tzinfo=paris_summer)
    run = make_run(created_at=created)
    assert run.created_at is not None
    assert run.created_at.tzinfo is timezone.utc
    assert run.created_at == created  # the same instant
    assert run.created_at.hour == 12
    # A naive datetime is taken as UTC, never as local time.
    store.update_run(run.id, started_at=datetime(2024, 7, 1, 12, 0, 1))
    assert store.finish_run(run.id, "succeeded")
    got = store.get_run(run.id)
    for value in (got.created_at, got.started_at, got.ended_at):
        assert value is not None
        assert value.tzinfo is timezone.utc
    assert got.started_at == datetime(2024, 7, 1, 12, 0, 1, tzinfo=timezone.utc)
    assert got.duration is not None
    with pytest.raises(TypeError, match="expected a datetime"):
        store.update_run(run.id, started_at="2024-07-01")


def test_run_folder(store: RunStore, home: Path) -> None:
    assert store.run_folder("abc") == home / "runs" / "abc"
    with pytest.raises(ValueError, match="invalid run id"):
        store.run_folder("../../etc")


def test_bad_url_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="URL"):
        RunStore(tmp_path, url="not a url")


def test_in_memory_database(tmp_path: Path) -> None:
    with RunStore(tmp_path, url="sqlite://") as store:
        store.create_run(Run(id="m1", notebook_path="a.ipynb", notebook_sha256="x", state="queued"))
        assert store.get_run("m").id == "m1"
