"""The Dask executor on a real distributed.LocalCluster: the same results and history as a
local build, and a worker killed mid-task (by pid) gives a retry or a clear failure, never a
hang and never a task recorded twice as running."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import nbformat
import pytest

from kilntest import KILN, CellSpec, build_notebook, wait_for

pytest.importorskip("distributed", reason="the dask extra is not installed")

TASK: list[CellSpec] = [
    ("upstream = None\nproduct = None\nn = 3", ["parameters"]),
    "import json, os, kiln\n"
    "rows = list(range(n))\n"
    "for name, value in (upstream or {}).items():\n"
    "    with open(value['data']) as f:\n"
    "        rows += json.load(f)\n"
    "with open(product['data'], 'w') as f:\n"
    "    json.dump(rows, f)\n"
    "kiln.record('rows', len(rows))",
]

#: writes its pid, then waits for the test to kill its worker; a second attempt goes through
VICTIM: list[CellSpec] = [
    ("product = None\nmark = ''", ["parameters"]),
    "import os, time\n"
    "first = not os.path.exists(mark + '.pid')\n"
    "if first:\n"
    "    with open(mark + '.tmp', 'w') as f:\n"
    "        f.write(str(os.getpid()))\n"
    "    os.replace(mark + '.tmp', mark + '.pid')\n"
    "    time.sleep(120)\n"
    "with open(product['data'], 'w') as f:\n"
    "    f.write('survived')",
]


def _project(root: Path, config: str, notebooks: dict[str, list[CellSpec]]) -> Path:
    root.mkdir(parents=True)
    (root / "out").mkdir()
    for name, cells in notebooks.items():
        nbformat.write(build_notebook(cells), root / name)
    (root / "kiln.yaml").write_text(textwrap.dedent(config), encoding="utf-8")
    return root


def _kiln(root: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KILN, *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=root,
        env=dict(os.environ, KILN_HOME=str(home)),
    )


def test_a_dask_build_matches_a_local_one(tmp_path: Path, home: Path) -> None:
    config = """
        pipelines:
          p:
            tasks:
              a: {notebook: t.ipynb, parameters: {n: 2}, products: {data: out/a.json}}
              b: {notebook: t.ipynb, parameters: {n: 3}, products: {data: out/b.json}}
              c: {notebook: t.ipynb, upstream: [a, b], products: {data: out/c.json}}
        """
    local = _project(tmp_path / "local", config, {"t.ipynb": TASK})
    remote = _project(tmp_path / "dask", config, {"t.ipynb": TASK})
    assert _kiln(local, tmp_path / "home-local", "build", "-j", "2").returncode == 0
    done = _kiln(remote, home, "build", "--executor", "dask", "-j", "2", "--json")
    assert done.returncode == 0, done.stderr
    build = json.loads(done.stdout)
    assert [t["state"] for t in build["tasks"]] == ["succeeded"] * 3
    for name in ("a", "b", "c"):
        assert (remote / f"out/{name}.json").read_text() == (local / f"out/{name}.json").read_text()
    # the same history: each task a recorded run with its output notebook and log, here
    for task in build["tasks"]:
        assert Path(task["output_path"]).is_file() and Path(task["log_path"]).is_file()
        assert Path(task["output_path"]).is_relative_to(home)
        shown = json.loads(_kiln(remote, home, "runs", "show", task["run_id"], "--json").stdout)
        assert shown["build_id"] == build["id"] and shown["state"] == "succeeded"
    assert shown["records"] == {"rows": 8}
    # and the same incremental state: nothing to do, locally or on Dask
    again = _kiln(remote, home, "build", "--json")
    assert [t["state"] for t in json.loads(again.stdout)["tasks"]] == ["up_to_date"] * 3


def _worker_of(pid: int) -> int:
    """The Dask worker process above a notebook's process (a spawned Python)."""
    current = pid
    for _ in range(6):
        stat = Path(f"/proc/{current}/stat").read_text()
        current = int(stat.rsplit(")", 1)[1].split()[1])
        cmdline = Path(f"/proc/{current}/cmdline").read_bytes()
        if b"multiprocessing" in cmdline:
            return current
    raise AssertionError(f"no Dask worker above pid {pid}")


def test_a_killed_worker_gives_a_retry_or_a_clear_failure(tmp_path: Path, home: Path) -> None:
    root = _project(
        tmp_path / "proj",
        """
        pipelines:
          p:
            tasks:
              retried:
                notebook: victim.ipynb
                parameters: {mark: MARK1}
                products: {data: out/retried.txt}
                retries: 1
                retry_delay: 10ms
              lost:
                notebook: victim.ipynb
                parameters: {mark: MARK2}
                products: {data: out/lost.txt}
        """.replace("MARK1", str(tmp_path / "retried")).replace("MARK2", str(tmp_path / "lost")),
        {"victim.ipynb": VICTIM},
    )
    proc = subprocess.Popen(
        [KILN, "build", "--executor", "dask", "-j", "2", "--json"],
        cwd=root,
        env=dict(os.environ, KILN_HOME=str(home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # both running, each on its own worker (one thread each); then both workers die
        pids = [tmp_path / f"{name}.pid" for name in ("retried", "lost")]
        wait_for(lambda: all(p.exists() for p in pids), timeout=120, what="both tasks to start")
        for pid_file in pids:
            os.kill(_worker_of(int(pid_file.read_text())), signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    tasks = {t["task"]: t for t in json.loads(out)["tasks"]}
    assert tasks["retried"]["state"] == "succeeded", (tasks, err)
    assert tasks["retried"]["attempts"] == 2
    assert (root / "out/retried.txt").read_text() == "survived"
    assert tasks["lost"]["state"] == "failed"
    assert tasks["lost"]["reason"].startswith("crashed: the Dask worker running it died")
    with sqlite3.connect(home / "kiln.db") as conn:
        runs = conn.execute("select notebook_name, state from runs order by created_at").fetchall()
    # every attempt recorded once, none left running
    assert sorted(state for _, state in runs) == ["crashed", "crashed", "succeeded"]
