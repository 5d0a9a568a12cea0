"""Runs as experiments on the fake engine: metrics and inputs travel like records, the
environment is stored once, tags filter, compare, export, plot, retention."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import nbformat
import pytest

import kiln
from kiln import recording
from kiln.engines.fake import FakeEngine
from kiln.errors import UsageError
from kiln.options import OptionError
from kiln.runner import Runner, RunRequest
from kiln.store import Record, Run, RunStore
from kiln.store.environments import count_environments, get_environments
from kiln.store.retention import prune, select_runs, sweep_folders, sweep_inputs
from kiln.tracking.compare import compare_runs
from kiln.tracking.history import export_history, plot_record

from kilntest import build_notebook, git


@pytest.fixture
def runner(tmp_path: Path, database_url: str | None):
    """A runner on the fake engine, its history on SQLite and on PostgreSQL."""
    with Runner(home=tmp_path / "home", engine=FakeEngine()) as r:
        assert r.store.backend == ("sqlite" if database_url is None else "postgresql")
        yield r


def _nb(tmp_path: Path, cells: list[Any], name: str = "nb.ipynb") -> Path:
    path = tmp_path / name
    nbformat.write(build_notebook(cells), path)
    return path


def test_metrics_inputs_and_tags_are_recorded(
    tmp_path: Path, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the fake engine runs cells in this process
    (tmp_path / "data.csv").write_text("a\n1\n")
    nb = _nb(
        tmp_path,
        [
            ("n = 3", ["parameters"]),
            "import kiln\npath = kiln.input('data.csv')\n"
            "for i in range(n):\n    kiln.metric('loss', 1 / (i + 1), step=i)\n"
            "kiln.metric('nan', float('nan'))\nkiln.record('path', path)",
        ],
    )
    run = runner.run(RunRequest(notebook=nb, tags={"team": "sales"}))
    assert run.metric_series["loss"] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert run.records == {"path": "data.csv"}  # kiln.input returns the path as given
    [declared] = run.inputs
    assert declared["path"] == str(tmp_path / "data.csv") and declared["source"] == "notebook"
    assert len(declared["sha256"]) == 64
    stored = runner.store.get_run_exact(run.id)
    assert stored.metric_series == run.metric_series
    assert stored.tags == {"team": "sales"} and stored.inputs == run.inputs
    assert stored.environment_hash and stored.environment_hash == run.environment_hash
    assert stored.request and stored.request["options"]["tags"] == {"team": "sales"}
    assert str(stored.metric_series["nan"][0][1]) == "nan"
    read = kiln.read_run(run.id, home=runner.store.home)
    assert read.metric_series == stored.metric_series


def test_declared_inputs_from_kiln_yaml(tmp_path: Path, runner: Runner) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1")
    (tmp_path / "data" / "b.csv").write_text("2")
    (tmp_path / "kiln.yaml").write_text("inputs:\n  nb.ipynb: ['data/*.csv', missing.txt]\n")
    nb = _nb(tmp_path, ["x = 1"])
    run = runner.run(RunRequest(notebook=nb))
    paths = {Path(i["path"]).name: i for i in run.inputs}
    assert set(paths) == {"a.csv", "b.csv", "missing.txt"}
    assert paths["a.csv"]["sha256"] and paths["missing.txt"]["sha256"] is None
    assert paths["missing.txt"]["error"]


def test_declared_inputs_of_a_notebook_below_the_project_file_and_after_it_goes(
    tmp_path: Path, runner: Runner
) -> None:
    (tmp_path / "data.csv").write_text("1")
    (tmp_path / "kiln.yaml").write_text("inputs:\n  sub/nb.ipynb: [data.csv]\n")
    (tmp_path / "sub").mkdir()
    nb = _nb(tmp_path / "sub", ["x = 1"])
    first = runner.run(RunRequest(notebook=nb))
    assert [Path(i["path"]).name for i in first.inputs] == ["data.csv"]
    (tmp_path / "kiln.yaml").unlink()
    assert runner.run(RunRequest(notebook=nb)).inputs == []


def test_the_environment_is_stored_once_for_many_runs(tmp_path: Path, runner: Runner) -> None:
    nb = _nb(tmp_path, [("x = 1", ["parameters"])])
    runs = [runner.run(RunRequest(notebook=nb, parameters={"x": i})) for i in range(5)]
    assert len({r.environment_hash for r in runs}) == 1
    assert count_environments(runner.store) == 1
    env = get_environments(runner.store, [runs[0].environment_hash])[runs[0].environment_hash or ""]
    assert ("sqlalchemy", __import__("sqlalchemy").__version__) in env.packages


def test_tags_filter_the_history(tmp_path: Path, runner: Runner) -> None:
    nb = _nb(tmp_path, ["x = 1"])
    runner.run(RunRequest(notebook=nb, tags={"team": "sales", "year": "2026"}))
    runner.run(RunRequest(notebook=nb, tags={"team": "ops"}))
    store = runner.store
    assert [r.tags["team"] for r in store.list_runs(tags={"team": "sales"})] == ["sales"]
    assert len(store.list_runs(tags={"team": "ops"})) == 1
    assert store.list_runs(tags={"team": "hr"}) == []


def test_tags_add_up_from_project_environment_and_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kiln.yaml").write_text("run:\n  tags: {team: sales, year: 2026}\n")
    nb = _nb(tmp_path, ["x = 1"])
    monkeypatch.setenv("KILN_TAGS", "orchestrator=airflow,team=ops")
    request = RunRequest.build(nb, tags={"step": "load"})
    assert request.tags == {
        "team": "ops",
        "year": "2026",
        "orchestrator": "airflow",
        "step": "load",
    }
    with pytest.raises(OptionError, match="tags: invalid tag name 'bad=key'"):
        RunRequest.build(nb, tags={"bad=key": "x"})


def test_kiln_metric_input_and_artifact_work_outside_kiln(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KILN_RUN_ID", raising=False)
    (tmp_path / "x.csv").write_text("1")
    assert kiln.input("x.csv") == "x.csv"
    assert kiln.artifact("x.csv") == "x.csv"
    kiln.metric("loss", 0.5, step=1)
    assert recording._local_metrics[-1] == {"name": "loss", "value": 0.5, "step": 1}
    with pytest.raises(FileNotFoundError, match=r"kiln\.input: no file 'nope\.csv'"):
        kiln.input("nope.csv")
    with pytest.raises(TypeError, match="must be a number"):
        kiln.metric("loss", "high")
    with pytest.raises(ValueError, match="plain file name"):
        kiln.artifact("x.csv", name="../x.csv")


# -- compare -------------------------------------------------------------------------------------


def _run(run_id: str, **fields: Any) -> Run:
    fields.setdefault("notebook_path", "/p/report.ipynb")
    fields.setdefault("notebook_sha256", "a" * 64)
    fields.setdefault("state", "succeeded")
    return Run(id=run_id, **fields)


def test_compare_numeric_and_non_numeric_records() -> None:
    a = _run(
        "a",
        parameters={"region": "EU", "n": 3},
        records_list=[
            Record("total", "json", 100.0),
            Record("label", "json", "good"),
            Record("table", "dataframe", {"columns": ["x"], "index": [0], "data": [[1]]}),
            Record("flag", "json", True),
        ],
        metrics=[
            {"name": "loss", "value": 0.9, "step": 0},
            {"name": "loss", "value": 0.5, "step": 1},
        ],
        cell_durations=[0.1, 0.2],
        environment_hash="e1",
        tags={"team": "sales"},
    )
    b = _run(
        "b",
        parameters={"region": "US", "n": 3},
        records_list=[
            Record("total", "json", 112.5),
            Record("label", "json", "good"),
            Record("table", "dataframe", {"columns": ["x"], "index": [0], "data": [[2]]}),
            Record("flag", "json", False),
        ],
        metrics=[{"name": "loss", "value": 0.4, "step": 0}],
        cell_durations=[0.1, None],
        environment_hash="e2",
        state="failed",
    )
    e1 = kiln.provenance.Environment(
        "python", "3.11.7", "CPython", "L", "x86_64", (("numpy", "1.26"), ("old", "1"))
    )
    e2 = kiln.provenance.Environment(
        "python", "3.11.7", "CPython", "L", "x86_64", (("numpy", "2.0"), ("new", "1"))
    )
    result = compare_runs([a, b], {"e1": e1, "e2": e2})
    rows = {(r.section, r.name): r for r in result.rows}
    total = rows[("records", "total")]
    assert not total.same and total.deltas == [None, 12.5]
    assert rows[("records", "label")].same and rows[("records", "label")].deltas is None
    table = rows[("records", "table")]
    assert not table.same and table.values[0].startswith("<dataframe 1x1 ")
    assert rows[("records", "flag")].deltas is None and not rows[("records", "flag")].same
    assert rows[("parameters", "n")].same and not rows[("parameters", "region")].same
    assert rows[("metrics", "loss")].values == [0.5, 0.4]
    assert rows[("metrics", "loss")].deltas == pytest.approx([None, -0.1])
    assert rows[("metrics", "loss (points)")].values == [2, 1]
    assert not rows[("cells", "cell 1")].same and rows[("cells", "cell 0")].same
    assert not rows[("run", "state")].same and rows[("run", "started")].same
    assert result.packages[1] == {
        "added": ["new"],
        "removed": ["old"],
        "changed": [["numpy", "1.26", "2.0"]],
    }
    data = result.to_json()
    assert data["records"]["total"] == {
        "values": [100.0, 112.5],
        "same": False,
        "deltas": [None, 12.5],
    }
    assert "records.total" in data["differences"] and "records.label" not in data["differences"]
    json.dumps(data)
    with pytest.raises(ValueError):
        compare_runs([a], {})


# -- history -------------------------------------------------------------------------------------


def _history(tmp_path: Path, runner: Runner) -> list[Run]:
    nb = _nb(
        tmp_path,
        [
            ("n = 1", ["parameters"]),
            "import kiln\nkiln.record('total', n * 10)\nkiln.record('name', 'x')",
        ],
    )
    return [
        runner.run(RunRequest(notebook=nb, parameters={"n": n}, tags={"k": "v"})) for n in (1, 2, 3)
    ]


def test_export_csv_and_json(
    tmp_path: Path, runner: Runner, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _history(tmp_path, runner)
    assert export_history(runs, "csv", None) == 3
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["record.total"] for r in rows] == ["10", "20", "30"]
    assert [r["param.n"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["tag.k"] == "v" and json.loads(rows[0]["cell_durations"])
    target = tmp_path / "h.json"
    export_history(runs, "json", str(target))
    data = json.loads(target.read_text())
    assert data[2]["record.total"] == 30 and data[2]["param.n"] == 3
    assert not list(tmp_path.glob("h.json.*.tmp"))


def test_export_parquet_round_trips_or_says_what_is_missing(tmp_path: Path, runner: Runner) -> None:
    runs = _history(tmp_path, runner)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="pip install pyarrow"):
            export_history(runs, "parquet", str(tmp_path / "h.parquet"))
        return
    import pandas as pd

    export_history(runs, "parquet", str(tmp_path / "h.parquet"))
    frame = pd.read_parquet(tmp_path / "h.parquet")
    assert list(frame["record.total"]) == [10, 20, 30]


def test_plot_draws_a_png_over_time_and_by_parameter(tmp_path: Path, runner: Runner) -> None:
    runs = _history(tmp_path, runner)
    assert plot_record(runs, "total", tmp_path / "t.png") == 3
    assert plot_record(runs, "total", tmp_path / "n.png", by="n") == 3
    for name in ("t.png", "n.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UsageError, match="recorded 'name' as a number"):
        plot_record(runs, "name", tmp_path / "x.png")


# -- retention -----------------------------------------------------------------------------------


def _aged(store: RunStore, run: Run, days: float) -> None:
    store.update_run(run.id, created_at=datetime.now(timezone.utc) - timedelta(days=days))


def _age_files(path: Path, seconds: float = 3600) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_prune_never_touches_an_active_run_and_keeps_shared_inputs(
    tmp_path: Path, runner: Runner
) -> None:
    nb = _nb(tmp_path, [("n = 1", ["parameters"])])
    other = _nb(tmp_path, ["y = 2"], name="other.ipynb")
    old = [runner.run(RunRequest(notebook=nb, parameters={"n": i})) for i in range(3)]
    lone = runner.run(RunRequest(notebook=other))
    store = runner.store
    for run in [*old, lone]:
        _aged(store, run, 40)
    active = store.create_run(
        Run(
            id="20200101-000000-running",
            notebook_path=str(nb),
            notebook_sha256=old[0].notebook_sha256,
            state="running",
            input_path=old[0].input_path,
            created_at=datetime.now(timezone.utc) - timedelta(days=400),
        )
    )
    for path in (store.home / "inputs").iterdir():
        _age_files(path)
    with pytest.raises(ValueError, match="never pruned"):
        select_runs(store, states=["running"])
    chosen = select_runs(store, older_than=30 * 86400)
    assert {c.id for c in chosen} == {r.id for r in [*old, lone]}
    dry = prune(store, chosen, dry_run=True)
    assert len(dry.runs) == 4 and len(store.list_runs(limit=None)) == 5
    result = prune(store, chosen)
    assert [r.id for r in store.list_runs(limit=None)] == [active.id]
    assert Path(str(active.run_dir)).is_dir()
    assert all(not Path(str(r.run_dir)).exists() for r in old)
    # the running run still refers to the first notebook's input: kept; the other's is gone
    assert Path(str(old[0].input_path)).is_file()
    assert not Path(str(lone.input_path)).exists()
    assert result.inputs == [lone.notebook_sha256]


def test_keep_last_keeps_the_newest_of_each_notebook(tmp_path: Path, runner: Runner) -> None:
    a = _nb(tmp_path, ["x = 1"], name="a.ipynb")
    b = _nb(tmp_path, ["x = 2"], name="b.ipynb")
    runs_a = [runner.run(RunRequest(notebook=a)) for _ in range(3)]
    runs_b = [runner.run(RunRequest(notebook=b)) for _ in range(2)]
    for age, run in enumerate(reversed(runs_a + runs_b)):
        _aged(runner.store, run, age)
    chosen = select_runs(runner.store, keep_last=2)
    assert [c.id for c in chosen] == [runs_a[0].id]
    assert select_runs(runner.store, keep_last=1, states=["failed"]) == []


def test_garbage_of_an_interrupted_prune_goes_next_time(tmp_path: Path, runner: Runner) -> None:
    store = runner.store
    orphan = store.runs_dir / "20200101-000000-orphan"
    orphan.mkdir()
    fresh = store.runs_dir / "20200101-000000-starting"
    fresh.mkdir()  # a run that is starting: its row comes next
    unused = store.home / "inputs" / ("f" * 64 + ".ipynb")
    unused.parent.mkdir(exist_ok=True)
    unused.write_text("{}")
    _age_files(orphan)
    _age_files(unused)
    assert sweep_folders(store) == 1 and not orphan.exists() and fresh.exists()
    assert sweep_inputs(store) == ["f" * 64] and not unused.exists()


def test_mlflow_missing_is_a_warning_on_a_run_that_succeeds_and_sync_says_why(
    tmp_path: Path, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiln.events import RunWarning
    from kiln.store.exports import export_state
    from kiln.tracking.sync import sync_mlflow

    monkeypatch.setitem(sys.modules, "mlflow", None)  # not installed
    seen: list[Any] = []
    runner.observers.append(seen.append)
    nb = _nb(tmp_path, ["x = 1"])
    run = runner.run(RunRequest(notebook=nb, mlflow_uri="http://127.0.0.1:1"))
    assert run.succeeded
    state = export_state(runner.store, run.id)
    assert state is not None and state.state == "failed" and state.attempts == 1
    assert state.error == "MLflow is not installed; pip install 'kiln-notebooks[mlflow]'"
    [warning] = [e for e in seen if isinstance(e, RunWarning)]
    assert "kiln runs sync-mlflow` tries again" in warning.text
    assert "warning: MLflow: MLflow is not installed" in Path(str(run.log_path)).read_text()
    [result] = sync_mlflow(runner.store)
    assert (result.run_id, result.ok) == (run.id, False)
    assert result.message == state.error  # said once, without the advice to run sync again
    assert export_state(runner.store, run.id).attempts == 2  # type: ignore[union-attr]


def test_a_rerun_keeps_the_runs_own_tags_not_its_triggers(tmp_path: Path, runner: Runner) -> None:
    from kiln.tracking.rerun import plan_rerun

    nb = _nb(tmp_path, [("n = 1", ["parameters"])])
    tags = {"team": "x", "kiln.build": "b1", "kiln.user": "ann", "sweep": "s1"}
    original = runner.run(RunRequest(notebook=nb, parameters={"n": 2}, tags=tags))
    plan = plan_rerun(runner.store, original.id, parameters={"n": 5})
    assert plan.request.tags == {"team": "x"}
    assert plan.request.parameters == {"n": 5} and plan.overrides == {"n": 5}
    assert plan.request.origin == {"rerun_of": original.id, "overrides": {"n": 5}}
    assert plan.request.source == Path(str(original.input_path)).read_bytes()


def test_a_commit_between_two_quick_runs_is_recorded_on_the_second(
    tmp_path: Path, runner: Runner
) -> None:
    """The second run finds its environment and git state at once (cached, unchanged since
    the first run: no thread); a commit in between must still be seen."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    nb = _nb(repo, ["x = 1"])
    git(repo, "add", "nb.ipynb")
    git(repo, "commit", "-q", "-m", "one")
    first, again = (runner.run(RunRequest(notebook=nb)) for _ in range(2))
    assert first.git and again.git and again.git["commit"] == first.git["commit"]
    assert again.environment_hash == first.environment_hash
    (repo / "data.txt").write_text("2")
    git(repo, "add", "data.txt")
    git(repo, "commit", "-q", "-m", "two")
    third = runner.run(RunRequest(notebook=nb))
    assert third.git and third.git["commit"] != first.git["commit"]
    assert third.environment_hash == first.environment_hash
