"""`kiln run` on an existing SQLite history never imports SQLAlchemy, and records its runs
exactly as before: real runs, the real command line, real SQLite files.

The command runs in a fresh interpreter through ``kiln.cli.main.run_main``, which then says
whether SQLAlchemy was imported (``python -X importtime`` would slow the run down).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.store.schema import SCHEMA_HEAD

from kilntest import KILN, wait_for, wait_for_run_state

pytestmark = pytest.mark.kernel

_CLI = """
import sys
from kiln.cli.main import run_main
code = run_main(sys.argv[1:])
imported = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic"))
print("IMPORTED", " ".join(imported) or "-", file=sys.stderr)
sys.exit(code)
"""


def _kiln(home: Path, cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run the CLI in a fresh interpreter: its result, and whether SQLAlchemy was imported."""
    env = dict(os.environ, KILN_HOME=str(home))
    done = subprocess.run(
        [sys.executable, "-c", _CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert len(lines) == 1, done.stderr
    return done, lines[0] != "IMPORTED -"


def _environments(home: Path) -> list[str]:
    conn = sqlite3.connect(home / "kiln.db")
    try:
        return [row[0] for row in conn.execute("SELECT hash FROM environments")]
    finally:
        conn.close()


def _version(home: Path) -> str:
    conn = sqlite3.connect(home / "kiln.db")
    try:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    finally:
        conn.close()


PARAMS = ("x = 1", ["parameters"])


@pytest.mark.parametrize("engine", ["fork", "kernel"])
def test_runs_and_sweeps_on_an_existing_history_never_import_sqlalchemy(
    make_nb, home, tmp_path, kiln_cli, engine
):
    nb = make_nb([PARAMS, "y = x * 2", "print(y)"])
    # the first run in a brand-new home sets the history up through SQLAlchemy
    first, imported = _kiln(home, tmp_path, "run", str(nb), "-p", "x", "1", "--engine", engine)
    assert first.returncode == 0, first.stderr
    assert imported
    # the second takes the standard library's path
    second, imported = _kiln(
        home, tmp_path, "run", str(nb), "-p", "x", "2", "--engine", engine, "--json"
    )
    assert second.returncode == 0, second.stderr
    assert not imported, second.stderr
    grid = tmp_path / "grid.yaml"
    grid.write_text("x: [3, 4]\n")
    sweep, imported = _kiln(
        home, tmp_path, "run", str(nb), "--sweep", str(grid), "-j", "2", "--engine", engine
    )
    assert sweep.returncode == 0, sweep.stderr
    assert not imported, sweep.stderr
    assert sweep.stdout.splitlines()[-1] == "2 sets: 2 succeeded"
    # read back through the usual commands (SQLAlchemy): recorded as before
    shown = json.loads(kiln_cli("runs", "show", json.loads(second.stdout)["id"], "--json").stdout)
    listed = json.loads(kiln_cli("runs", "list", "--json").stdout)
    assert sorted(run["parameters"]["x"] for run in listed) == [1, 2, 3, 4]
    assert {run["state"] for run in listed} == {"succeeded"}
    assert (shown["state"], shown["parameters"], shown["engine"]) == ("succeeded", {"x": 2}, engine)
    assert shown["output_path"] and Path(shown["output_path"]).is_file()
    # every run names the one environment row, which exists
    hashes = {run["environment_hash"] for run in listed}
    assert len(hashes) == 1 and list(hashes) == _environments(home)
    assert shown["environment"]["language"] == "python"


def test_an_outdated_history_is_upgraded_by_the_next_run(make_nb, home, tmp_path):
    import sqlalchemy as sa
    from alembic import command

    from kiln.store import RunStore
    from kiln.store.migrate import alembic_config

    RunStore(home).close()
    engine = sa.create_engine(f"sqlite:///{home / 'kiln.db'}", poolclass=sa.NullPool)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0009")
    finally:
        engine.dispose()
    assert _version(home) == "0009"
    nb = make_nb([PARAMS, "print(x)"])
    done, imported = _kiln(home, tmp_path, "run", str(nb))
    assert done.returncode == 0, done.stderr
    assert imported and _version(home) == SCHEMA_HEAD
    again, imported = _kiln(home, tmp_path, "run", str(nb))
    assert again.returncode == 0, again.stderr
    assert not imported


def test_a_killed_runs_orphan_is_marked_crashed_by_the_next_run(make_nb, home, tmp_path):
    nb = make_nb([PARAMS, "print('first')", "import time\ntime.sleep(120)"])
    _kiln(home, tmp_path, "run", str(make_nb(["1"], name="setup.ipynb")))  # the history exists
    env = dict(os.environ, KILN_HOME=str(home))
    proc = subprocess.Popen(
        [KILN, "run", str(nb), "--engine", "fork"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_run_state(home, {"running"})
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # the next run opens the history through sqlite3, finds the orphan by its look, and marks
    # it (that write, rare, is SQLAlchemy's)
    done, _ = _kiln(home, tmp_path, "run", str(make_nb(["2"], name="next.ipynb")))
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(home / "kiln.db")
    try:
        rows = conn.execute(
            "SELECT state, reason, kernel_pid FROM runs WHERE notebook_name = 'nb.ipynb'"
        ).fetchall()
    finally:
        conn.close()
    assert len(rows) == 1
    state, reason, kernel_pid = rows[0]
    assert state == "crashed" and f"Kiln process {proc.pid} on host" in reason
    if kernel_pid is not None:  # the run's leftover process is ended too
        wait_for(lambda: not _alive(kernel_pid), what="the orphan's process gone", timeout=10)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
