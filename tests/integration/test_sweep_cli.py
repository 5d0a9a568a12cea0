"""`kiln run NB --sweep grid.yaml -j N` end to end: real engines, the real command."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

import kiln

from kilntest import KILN, read_nb, wait_for, wait_gone

pytestmark = pytest.mark.kernel

PARAMS = ('x: int = 0\nregion: str = "EU"', ["parameters"])
RECORD = "import kiln, os\nkiln.record('key', f'{region}-{x}')\nkiln.record('pid', os.getpid())"
GRID = "x: [1, 2, 3]\nregion: [EU, US]\n"
ENGINES = pytest.mark.parametrize("engine", ["kernel", "fork"])


def _grid(tmp_path: Path, text: str = GRID) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return str(path)


def _history(kiln_cli) -> list[dict]:
    res = kiln_cli("runs", "list", "--json", "-n", "100")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@ENGINES
def test_a_six_set_grid_gives_six_recorded_runs(make_nb, kiln_cli, tmp_path, engine):
    nb = make_nb([PARAMS, RECORD])
    out = tmp_path / "out" / "{region}-{x}.ipynb"
    res = kiln_cli(
        "run", str(nb), str(out), "--sweep", _grid(tmp_path), "-j", "2", "--engine", engine
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["#", "STATE", "DURATION", "RUN", "PARAMETERS", "RECORDS"]
    assert lines[-1] == "6 sets: 6 succeeded"
    assert 'x=3, region="US"' in lines[6] and 'key="US-3"' in lines[6]
    runs = _history(kiln_cli)
    assert len(runs) == 6 and {r["state"] for r in runs} == {"succeeded"}
    assert {r["engine"] for r in runs} == {engine}
    got = sorted(  # x, region, record
        (r["parameters"]["x"], r["parameters"]["region"], r["records"]["key"]) for r in runs
    )
    assert got == [(x, g, f"{g}-{x}") for x in (1, 2, 3) for g in ("EU", "US")]
    assert len({r["records"]["pid"] for r in runs}) == 6  # a fresh process per run
    for run in runs:
        p = run["parameters"]
        assert run["output_path"] == str(tmp_path / "out" / f"{p['region']}-{p['x']}.ipynb")
        assert read_nb(run["output_path"]).metadata.kiln.parameters == p
        assert Path(run["log_path"]).is_file()


def test_one_failing_set_exits_1_and_the_others_succeed(make_nb, kiln_cli, tmp_path):
    nb = make_nb([PARAMS, RECORD, "assert x != 2, 'x is two'"])
    res = kiln_cli("run", str(nb), "--sweep", _grid(tmp_path, "x: [1, 2, 3]\n"), "-j", "2")
    assert res.returncode == 1
    assert res.stdout.splitlines()[-1] == "3 sets: 2 succeeded, 1 failed"
    assert "set 1 (x=2) failed" in res.stderr and "AssertionError: x is two" in res.stderr
    states = {r["parameters"]["x"]: r["state"] for r in _history(kiln_cli)}
    assert states == {1: "succeeded", 2: "failed", 3: "succeeded"}


def test_json_lists_each_run_with_its_set(make_nb, kiln_cli, tmp_path):
    nb = make_nb([PARAMS, RECORD])
    grid = _grid(tmp_path, "- {x: 5}\n- {x: 6, region: JP}\n")
    res = kiln_cli("run", str(nb), "--sweep", grid, "-p", "region", "US", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [d["sweep"] for d in data] == [
        {"index": 0, "set": {"x": 5}},
        {"index": 1, "set": {"x": 6, "region": "JP"}},
    ]
    assert [d["records"]["key"] for d in data] == ["US-5", "JP-6"]
    assert [d["state"] for d in data] == ["succeeded", "succeeded"]
    assert {d["id"] for d in data} == {r["id"] for r in _history(kiln_cli)}


def test_a_bad_set_refuses_the_sweep_before_anything_runs(make_nb, kiln_cli, tmp_path):
    nb = make_nb([PARAMS, RECORD])
    res = kiln_cli("run", str(nb), "--sweep", _grid(tmp_path, "x: [1, two, 3]\n"))
    assert res.returncode == 2
    assert 'sweep set 1 (x="two")' in res.stderr and "'x'" in res.stderr
    assert _history(kiln_cli) == []


@ENGINES
def test_sigint_cancels_the_running_runs_and_starts_no_more(
    make_nb, kiln_cli, home, tmp_path, engine
):
    nb = make_nb(
        [PARAMS, "import kiln, os\nkiln.record('pid', os.getpid())", "import time\ntime.sleep(120)"]
    )
    grid = _grid(tmp_path, "x: [1, 2, 3, 4, 5]\n")
    proc = subprocess.Popen(
        [KILN, "run", str(nb), "--sweep", grid, "-j", "2", "--engine", engine],
        env=dict(os.environ, KILN_HOME=str(home)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _sleeping_runs(home) == 2, what="two runs in their sleeping cell")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert "5 sets: 2 cancelled, 3 not run" in out
    assert "3 not run (never started and not recorded)" in out
    assert "Sweep cancelled by SIGINT" in err
    runs = _history(kiln_cli)
    assert len(runs) == 2 and {r["state"] for r in runs} == {"cancelled"}
    assert all("SIGINT" in r["reason"] for r in runs)
    pids = [r["kernel_pid"] for r in runs] + [r["records"]["pid"] for r in runs]
    assert all(wait_gone(pid, 5) for pid in pids if pid)


def _sleeping_runs(home: Path) -> int:
    """Runs whose output shows the record cell done (the sleep comes next)."""
    db = home / "kiln.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            paths = [row[0] for row in conn.execute("select output_path from runs")]
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    count = 0
    for path in paths:
        try:
            cells = read_nb(path).cells
        except Exception:
            continue
        if len(cells) > 2 and cells[2].get("execution_count") is not None:
            count += 1
    return count


def test_python_api_sweep(make_nb, home):
    nb = make_nb([PARAMS, RECORD, "assert x != 2"])
    result = kiln.sweep(nb, {"x": [1, 2, 3]}, parameters={"region": "US"}, jobs=2)
    assert [item.state for item in result.items] == ["succeeded", "failed", "succeeded"]
    assert [run.records["key"] for run in result.succeeded] == ["US-1", "US-3"]
    assert not result.ok and len(kiln.list_runs()) == 3
