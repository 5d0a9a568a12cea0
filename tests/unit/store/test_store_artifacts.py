"""Run artefacts in an artefact store (file:// here; S3 in tests/integration/test_team_scale),
the runner copying a run's files there, requests moved into a worker's checkout, a history
copied between databases, and writes that wait for an unreachable PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
import sqlalchemy as sa

from kiln.engines.fake import FakeEngine
from kiln.errors import StoreError
from kiln.runner import Runner, RunRequest
from kiln.store import Run, RunStore
from kiln.store.artifacts import ArtifactStore, RunUpload, read_bytes, read_range

from kilntest import build_notebook


@pytest.fixture
def objects(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path / 'bucket'}/kiln")


def test_objects_are_written_whole_and_read_back(objects: ArtifactStore, tmp_path: Path) -> None:
    url = objects.run_url("r1", "run.log")
    objects.put_bytes(url, b"one\ntwo\n")
    assert read_bytes(url) == b"one\ntwo\n"
    assert read_range(url, 4) == b"two\n" and read_range(url, 8) == b""
    folder = tmp_path / "bucket" / "kiln" / "runs" / "r1"
    assert [p.name for p in folder.iterdir()] == ["run.log"]  # no temporary file left
    live = tmp_path / "live.log"
    live.write_bytes(b"one\ntwo\nthree\n")  # the run goes on here: its local log is newer
    assert read_range(url, 8, live=live) == b"three\n"
    with pytest.raises(FileNotFoundError):
        read_range(objects.run_url("r2", "run.log"))


def test_an_input_is_stored_once(objects: ArtifactStore, tmp_path: Path) -> None:
    url = objects.ensure_input("ab" * 32, b"{}")
    path = tmp_path / "bucket" / "kiln" / "inputs" / f"{'ab' * 32}.ipynb"
    stamp = path.stat().st_mtime_ns
    again = ArtifactStore(objects.url)  # another process: finds it there
    assert again.ensure_input("ab" * 32, b"{}") == url
    assert path.stat().st_mtime_ns == stamp
    assert [name for name, _ in again.inputs()] == [url]


def test_a_run_prefix_is_removed_whole(objects: ArtifactStore) -> None:
    for name in ("output.ipynb", "run.log", "artifacts/plot.png"):
        objects.put_bytes(objects.run_url("r1", name), b"x")
    objects.put_bytes(objects.run_url("r10", "run.log"), b"x")
    assert objects.remove(objects.run_url("r1")) == 3
    assert objects.remove(objects.run_url("r1")) == 0
    assert read_bytes(objects.run_url("r10", "run.log")) == b"x"  # not a prefix of r10


def test_the_copier_sends_what_changed_and_the_end_removes_the_local_folder(
    objects: ArtifactStore, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    (folder / "artifacts").mkdir(parents=True)
    (folder / "run.log").write_text("a\n")
    (folder / "artifacts" / "t.csv").write_text("1,2\n")
    upload = RunUpload(objects, "r1", folder, every=3600)
    assert upload.sync() == 2
    assert upload.sync() == 0
    with (folder / "run.log").open("a") as log:
        log.write("b\n")
    assert upload.sync() == 1
    notes: list[str] = []
    assert upload.settle(notes.append) == {} and notes == []
    assert not folder.exists()
    assert read_bytes(objects.run_url("r1", "run.log")) == b"a\nb\n"
    found = upload.artifact_urls([{"name": "t.csv", "path": str(folder / "artifacts/t.csv")}])
    assert found == [{"name": "t.csv", "path": objects.run_url("r1", "artifacts/t.csv")}]


def test_a_store_that_fails_keeps_the_files_local_and_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's folder should be")
    objects = ArtifactStore(f"file://{blocker}/kiln")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.log").write_text("a\n")
    notes: list[str] = []
    kept = RunUpload(objects, "r1", folder).settle(notes.append)
    assert kept == {
        "run_dir": str(folder),
        "log_path": str(folder / "run.log"),
        "output_path": str(folder / "output.ipynb"),
    }
    assert (folder / "run.log").exists()
    assert len(notes) == 1 and f"stay in {folder}" in notes[0]


def test_an_artefact_store_must_be_a_url() -> None:
    with pytest.raises(StoreError, match="not a URL"):
        ArtifactStore("/shared/runs")


def _notebook(tmp_path: Path) -> Path:
    path = tmp_path / "nb.ipynb"
    nbformat.write(build_notebook([("n = 1", ["parameters"]), "print(n)"]), path)
    return path


def test_the_runner_writes_a_runs_files_to_the_store_before_its_end(
    tmp_path: Path, objects: ArtifactStore
) -> None:
    seen: list[tuple[str, bool]] = []
    with Runner(home=tmp_path / "home", engine=FakeEngine()) as runner:
        runner._artifacts, runner._artifacts_known = objects, True
        store = runner.store
        finish = store.finish_run

        def spying_finish(run_id: str, state: Any, **fields: Any) -> bool:
            # when the end is written, the output is in the store already
            seen.append((str(state), Path(objects.root, "runs", run_id, "output.ipynb").exists()))
            return finish(run_id, state, **fields)

        store.finish_run = spying_finish  # type: ignore[method-assign]
        run = runner.run(RunRequest(notebook=_notebook(tmp_path), parameters={"n": 3}))
        stored = store.get_run_exact(run.id)
    assert seen == [("succeeded", True)]
    assert stored.output_path == objects.run_url(run.id, "output.ipynb") == run.output_path
    assert stored.log_path == objects.run_url(run.id, "run.log")
    assert stored.run_dir == objects.run_url(run.id)
    assert str(stored.input_path).startswith(f"{objects.url}/inputs/")
    output = nbformat.reads(read_bytes(str(stored.output_path)).decode(), as_version=4)
    assert output.metadata["kiln"]["output_path"] == stored.output_path
    assert b"run succeeded" in read_bytes(str(stored.log_path))
    assert not (tmp_path / "home" / "runs" / run.id).exists()


def test_a_queued_request_moves_into_the_workers_checkout(tmp_path: Path) -> None:
    from kiln.notebook import sha256_bytes
    from kiln.queue.submit import relocate

    checkout = tmp_path / "checkout"
    (checkout / "reports").mkdir(parents=True)
    (checkout / "reports" / "nb.ipynb").write_bytes(b"same")
    run = Run(id="r", notebook_path="/src/p/reports/nb.ipynb",
              notebook_sha256=sha256_bytes(b"same"), state="running")  # fmt: skip
    stored = {
        "notebook": "/src/p/reports/nb.ipynb",
        "output": "/src/p/out/r.ipynb",
        "options": {"cwd": "/src/p/reports", "timeout": 5.0},
        "project": {"root": "/src/p", "host": "laptop", "notebook": "reports/nb.ipynb",
                    "cwd": "reports"},
    }  # fmt: skip
    moved, notes = relocate(run, stored, checkout)
    assert moved["notebook"] == str(checkout / "reports" / "nb.ipynb")
    assert moved["options"] == {"cwd": str(checkout / "reports"), "timeout": 5.0}
    assert moved["output"] == str(checkout / "out" / "r.ipynb")
    assert notes == [f"runs in this worker's checkout {checkout} (submitted from /src/p on laptop)"]
    (checkout / "reports" / "nb.ipynb").write_bytes(b"another version")
    _, notes = relocate(run, stored, checkout)
    assert "differs from the submitted notebook" in notes[-1]
    assert relocate(run, stored, None) == (stored, [])  # no checkout: the paths as submitted


def test_a_history_is_copied_and_checked(
    store: RunStore, make_run: Callable[..., Run], tmp_path: Path
) -> None:
    from kiln.store.accounts import add_user
    from kiln.store.audit import append, count
    from kiln.store.copy import copy_history

    for n in range(30):
        make_run(state="succeeded" if n % 2 else "queued", parameters={"n": n, "x": None})
    add_user(store, "ana", "admin", None)
    append(store, actor="ana", action="login", details=None)
    append(store, actor="ana", action="run.submit", details={"n": [1, 2]})
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    tables = copy_history(store.url, target)
    assert all(table.ok for table in tables)
    assert {t.name: t.rows for t in tables if t.rows} == {"runs": 30, "users": 1, "audit": 2}
    with RunStore(tmp_path / "h", url=target) as copy:
        assert copy.list_runs(limit=None) == store.list_runs(limit=None)
        append(copy, actor="ana", action="logout")
        assert count(copy) == 3
        with copy._read() as conn:  # a SQL NULL stays NULL (not a JSON null)
            nulls = conn.execute(sa.text("SELECT count(*) FROM audit WHERE details IS NULL"))
            assert nulls.scalar() == 2
    with pytest.raises(StoreError, match="copy into an empty database"):
        copy_history(store.url, target)
    with pytest.raises(StoreError, match="the same database"):
        copy_history(store.url, store.url)


def test_a_runs_write_waits_for_an_unreachable_postgresql(
    store: RunStore, make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(state="running")
    failures = []
    end = store._end

    def flaky(run_id: str, values: dict[str, Any], *only_if: Any) -> bool:
        if len(failures) < 2:  # the server is away for two attempts
            lost = sa.exc.OperationalError("UPDATE runs", {}, Exception("server closed"))
            failures.append(lost)
            raise StoreError("runs database: server closed the connection") from lost
        return end(run_id, values, *only_if)

    monkeypatch.setattr(store, "_end", flaky)
    monkeypatch.setattr("kiln.store.sql.time.sleep", lambda _s: None)
    if store.backend == "sqlite":  # a local file is never "unreachable": no waiting
        with pytest.raises(StoreError):
            store.finish_run(run.id, "succeeded")
        return
    assert store.finish_run(run.id, "succeeded")
    assert len(failures) == 2 and store.get_run_exact(run.id).state == "succeeded"
    failures.clear()
    store.patience = 0.0  # the database stays away longer than the patience: the error shows
    with pytest.raises(StoreError, match="server closed"):
        store.finish_run(make_run(state="running").id, "failed")


def test_a_refused_statement_is_not_tried_again(
    store: RunStore, make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def refused(*_args: Any) -> bool:
        calls.append(1)
        raise StoreError("bad value") from sa.exc.IntegrityError("UPDATE", {}, Exception("no"))

    monkeypatch.setattr(store, "_end", refused)
    with pytest.raises(StoreError, match="bad value"):
        store.finish_run(make_run(state="running").id, "succeeded")
    assert calls == [1]


def test_a_submitted_notebook_this_machine_cannot_see_says_what_to_set(tmp_path: Path) -> None:
    from kiln.queue.submit import request_of

    run = Run(id="r", notebook_path="/elsewhere/nb.ipynb", notebook_sha256="0" * 64,
              state="running", request={"notebook": "/elsewhere/nb.ipynb", "options": {}},
              input_path=str(tmp_path / "inputs" / "gone.ipynb"))  # fmt: skip
    with pytest.raises(StoreError, match="set KILN_ARTIFACTS"):
        request_of(run)


def test_a_running_runs_files_are_copied_every_few_seconds(
    objects: ArtifactStore, tmp_path: Path
) -> None:
    from kilntest import wait_for

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.log").write_text("first line\n")
    upload = RunUpload(objects, "r1", folder, every=0.05)
    upload.start()
    try:
        url = objects.run_url("r1", "run.log")
        wait_for(lambda: read_range(url) == b"first line\n" if _there(url) else None)
        with (folder / "run.log").open("a") as log:
            log.write("second line\n")
        wait_for(lambda: read_range(url, 11) == b"second line\n")
    finally:
        upload.stop()
    assert upload.error is None


def _there(url: str) -> bool:
    from kiln.store.artifacts import exists

    return exists(url)
