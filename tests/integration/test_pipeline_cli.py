"""`kiln build`, `kiln status` and `kiln dag` as a user runs them: real kiln processes, the
fork engine, a real SQLite history; parallelism, Ctrl-C, SIGKILL, pictures."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kilntest import KILN, CellSpec, build_notebook, wait_for, wait_for_file

Cli = Callable[..., subprocess.CompletedProcess[str]]


def write(root: Path, notebooks: dict[str, Sequence[CellSpec]], config: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, cells in notebooks.items():
        nbformat.write(build_notebook(cells), root / name)
    (root / "kiln.yaml").write_text(textwrap.dedent(config), encoding="utf-8")
    return root


@pytest.fixture
def kiln_in(home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KILN, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=root,
            env=dict(os.environ, KILN_HOME=str(home)),
        )

    return run


def db_rows(home: Path, query: str) -> list[Any]:
    with sqlite3.connect(home / "kiln.db") as conn:
        return conn.execute(query).fetchall()


EXTRACT: list[CellSpec] = [
    ("n = 3\nproduct = None", ["parameters"]),
    "import json, os\nos.makedirs('out', exist_ok=True)\n"
    "with open(product['data'], 'w') as f:\n"
    "    json.dump({'rows': list(range(n)), 'cwd': os.getcwd()}, f)",
]
CLEAN: list[CellSpec] = [
    ("upstream = None\nproduct = None", ["parameters"]),
    "import json, kiln\n"
    "with open(upstream['extract']['data']) as f:\n    raw = json.load(f)\n"
    "with open(product['data'], 'w') as f:\n    json.dump([r * 2 for r in raw['rows']], f)\n"
    "kiln.record('upstream', upstream)\nkiln.record('product', product)",
]
MINIMAL = """
pipelines:
  daily:
    tasks:
      extract: {notebook: extract.ipynb, parameters: {n: 100}, products: {data: out/raw.json}}
      clean:   {notebook: clean.ipynb, upstream: [extract], products: {data: out/clean.json}}
"""


def test_the_minimal_pipeline_as_written(
    tmp_path: Path, kiln_in: Cli, home: Path, database_url: str | None
) -> None:
    """On SQLite and on PostgreSQL (KILN_DATABASE_URL): builds, task states and the runs they
    link to all live in the configured database."""
    root = write(tmp_path / "proj", {"extract.ipynb": EXTRACT, "clean.ipynb": CLEAN}, MINIMAL)
    done = kiln_in(root, "build", "--json")
    assert done.returncode == 0, done.stderr
    build = json.loads(done.stdout)
    assert build["state"] == "succeeded"
    assert [(t["task"], t["state"]) for t in build["tasks"]] == [
        ("extract", "succeeded"),
        ("clean", "succeeded"),
    ]
    raw = json.loads((root / "out/raw.json").read_text())
    assert raw["cwd"] == str(root.resolve())  # tasks run in the project root
    assert json.loads((root / "out/clean.json").read_text())[:3] == [0, 2, 4]
    shown = kiln_in(root, "runs", "show", build["tasks"][1]["run_id"], "--json")
    run = json.loads(shown.stdout)
    assert run["build_id"] == build["id"]
    absolute = str(root.resolve())
    assert run["records"]["upstream"] == {"extract": {"data": f"{absolute}/out/raw.json"}}
    assert run["records"]["product"] == {"data": f"{absolute}/out/clean.json"}
    again = kiln_in(root, "build")
    assert again.returncode == 0
    assert "2 tasks: 2 up to date" in again.stdout
    status = kiln_in(root, "status", "--json")
    assert [t["up_to_date"] for t in json.loads(status.stdout)["tasks"]] == [True, True]
    assert (home / "kiln.db").exists() == (database_url is None)


SLOW: list[CellSpec] = [
    ("product = None\nbarrier = ''\nneed = 2", ["parameters"]),
    "import json, os, time\n"
    "me = os.path.basename(product['data'])\n"
    "open(os.path.join(barrier, 'ready-' + me), 'w').close()\n"
    "deadline = time.time() + 60\n"
    "while len(os.listdir(barrier)) < need and time.time() < deadline:\n"
    "    time.sleep(0.02)\n"
    "start = time.time()\ntime.sleep(0.3)\n"
    "with open(product['data'], 'w') as f:\n    json.dump([start, time.time()], f)",
]


def test_independent_tasks_run_j_at_a_time(tmp_path: Path, kiln_in: Cli) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    tasks = "\n".join(
        f"      t{i}: {{notebook: slow.ipynb, parameters: {{barrier: '{barrier}'}}, "
        f"products: {{data: out/t{i}.json}}}}"
        for i in range(4)
    )
    root = write(
        tmp_path / "proj", {"slow.ipynb": SLOW}, f"pipelines:\n  p:\n    tasks:\n{tasks}\n"
    )
    (root / "out").mkdir()
    done = kiln_in(root, "build", "-j", "2")
    assert done.returncode == 0, done.stderr
    spans = [json.loads((root / f"out/t{i}.json").read_text()) for i in range(4)]
    peak = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    # two at once (each waited for the other at the barrier), never more than -j
    assert peak == 2


def test_a_failed_task_makes_exit_code_1_and_the_summary_says_why(
    tmp_path: Path, kiln_in: Cli
) -> None:
    bad_clean = [CLEAN[0], "raise ValueError('no rows today')"]
    root = write(tmp_path / "proj", {"extract.ipynb": EXTRACT, "clean.ipynb": bad_clean}, MINIMAL)
    done = kiln_in(root, "build")
    assert done.returncode == 1
    assert "clean failed: cell 2 raised ValueError: no rows today" in done.stderr
    assert "log" in done.stderr and "Traceback" not in done.stderr
    assert "1 ran, 1 failed" in done.stdout


def test_bad_kiln_yaml_is_exit_2_with_line_and_key(tmp_path: Path, kiln_in: Cli) -> None:
    root = write(
        tmp_path / "proj",
        {"extract.ipynb": EXTRACT},
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: extract.ipynb, upstream: [b]}
              b: {notebook: extract.ipynb, upstream: [a]}
        """,
    )
    for command in (["build"], ["status"], ["dag"]):
        done = kiln_in(root, *command)
        assert done.returncode == 2
        assert "kiln.yaml:5:" in done.stderr
        assert "pipelines.daily.tasks.a.upstream: a cycle: a -> b -> a" in done.stderr
        assert "Traceback" not in done.stderr


WAITER: list[CellSpec] = [
    ("product = None\ngo = ''", ["parameters"]),
    "import os, time\n"
    "open(product['data'] + '.started', 'w').write('started')\n"
    "while not os.path.exists(go):\n    time.sleep(0.02)\n"
    "open(product['data'], 'w').write('done')",
]
WAIT_CONFIG = """
pipelines:
  p:
    tasks:
      quick: {{notebook: quick.ipynb, products: {{data: out/quick.json}}}}
      waits: {{notebook: waits.ipynb, parameters: {{go: '{go}'}}, products: {{data: out/waits}}}}
      after: {{notebook: quick.ipynb, upstream: [waits], products: {{data: out/after.json}}}}
"""
QUICK: list[CellSpec] = [
    ("product = None", ["parameters"]),
    "import os\nos.makedirs('out', exist_ok=True)\nopen(product['data'], 'w').write('{}')",
]


def _waiting_project(tmp_path: Path) -> tuple[Path, Path]:
    """A project whose task ``waits`` runs until the file returned second exists."""
    go = tmp_path / "go"
    root = write(
        tmp_path / "proj",
        {"quick.ipynb": QUICK, "waits.ipynb": WAITER},
        WAIT_CONFIG.format(go=go),
    )
    (root / "out").mkdir()
    return root, go


def _start_build(root: Path, home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [KILN, "build", *(args or ("-j", "2"))],
        cwd=root,
        env=dict(os.environ, KILN_HOME=str(home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_cancels_the_running_tasks_and_records_the_build_cancelled(
    tmp_path: Path, home: Path
) -> None:
    root, _go = _waiting_project(tmp_path)
    proc = _start_build(root, home)
    try:
        wait_for_file(root / "out/waits.started")
        wait_for(
            lambda: ("quick", "succeeded") in db_rows(home, "select task, state from build_tasks"),
            what="quick to be recorded done",
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "cancelled by SIGINT" in err
    ((state, reason),) = db_rows(home, "select state, reason from builds")
    assert state == "cancelled" and reason == "cancelled by SIGINT"
    tasks = dict(db_rows(home, "select task, state from build_tasks"))
    assert tasks == {"quick": "succeeded", "waits": "cancelled", "after": "cancelled"}
    runs = dict(db_rows(home, "select notebook_name, state from runs where state != 'succeeded'"))
    assert runs == {"waits.ipynb": "cancelled"}


def test_a_build_killed_outright_leaves_the_next_build_correct(
    tmp_path: Path, home: Path, kiln_in: Cli
) -> None:
    root, go = _waiting_project(tmp_path)
    proc = _start_build(root, home)
    try:
        wait_for_file(root / "out/waits.started")
        wait_for(
            lambda: ("quick", "succeeded") in db_rows(home, "select task, state from build_tasks"),
            what="quick to be recorded done",
        )
    finally:
        proc.kill()  # SIGKILL: no handler runs
        proc.communicate(timeout=30)
    go.touch()
    done = kiln_in(root, "build", "--json")
    assert done.returncode == 0, done.stderr
    result = {t["task"]: (t["state"], t["reason"]) for t in json.loads(done.stdout)["tasks"]}
    # what was complete is not run again; what was cut short is
    assert result["quick"] == ("up_to_date", "up to date")
    assert result["waits"][0] == "succeeded" and result["after"][0] == "succeeded"
    assert db_rows(home, "select count(*) from runs where state in ('queued', 'running')") == [(0,)]
    killed = db_rows(home, "select state, reason from builds order by created_at")[0]
    assert killed[0] == "crashed" and "exited before the build ended" in killed[1]
    crashed = db_rows(home, "select notebook_name from runs where state = 'crashed'")
    assert crashed == [("waits.ipynb",)]


def test_dag_pictures_and_the_mermaid_fallback(tmp_path: Path, kiln_in: Cli, home: Path) -> None:
    root = write(tmp_path / "proj", {"extract.ipynb": EXTRACT, "clean.ipynb": CLEAN}, MINIMAL)
    assert kiln_in(root, "build").returncode == 0
    svg = kiln_in(root, "dag")
    assert svg.returncode == 0, svg.stderr
    picture = Path(svg.stdout.strip())
    assert picture == home / "dags" / "daily.svg"
    text = picture.read_text()
    assert "<svg" in text and "clean.ipynb" in text and "#c8e6c9" in text  # succeeded: green
    png = kiln_in(root, "dag", "--format", "png", "-o", str(tmp_path / "d.png"))
    assert png.returncode == 0
    assert (tmp_path / "d.png").read_bytes().startswith(b"\x89PNG")
    refused = kiln_in(root, "dag", "-o", str(tmp_path / "d.png" / "x.svg"))  # under a file
    assert refused.returncode == 2 and "cannot write" in refused.stderr
    assert "Not a directory" in refused.stderr, refused.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    mermaid = kiln_in(root, "dag", "--format", "mermaid")
    assert mermaid.stdout.startswith("flowchart LR") and "t0 --> t1" in mermaid.stdout
    no_dot = subprocess.run(
        [KILN, "dag", "-o", str(tmp_path / "d.svg")],
        capture_output=True,
        text=True,
        cwd=root,
        env=dict(os.environ, KILN_HOME=str(home), PATH=str(Path(sys.executable).parent)),
    )
    assert no_dot.returncode == 0, no_dot.stderr
    assert "dot program is not installed" in no_dot.stderr
    assert (tmp_path / "d.mmd").read_text().startswith("flowchart LR")


def test_the_python_api(tmp_path: Path, home: Path) -> None:
    import kiln
    from kiln.errors import BuildFailed

    root = write(tmp_path / "proj", {"extract.ipynb": EXTRACT, "clean.ipynb": CLEAN}, MINIMAL)
    plan = kiln.build(project=root, dry_run=True)
    assert [(t.name, t.action, t.reason) for t in plan.tasks] == [
        ("extract", "run", "never ran successfully"),
        ("clean", "run", "never ran successfully"),
    ]
    events: list[object] = []
    build = kiln.build("daily", project=root, jobs=2, observer=events.append)
    assert build.ok and build.ran == ["extract", "clean"]
    clean = build.tasks["clean"].run
    assert clean is not None and clean.build_id == build.id
    assert clean.records["product"] == {"data": str(root.resolve() / "out/clean.json")}
    assert [type(e).__name__ for e in events][:2] == ["BuildStarted", "TaskStarted"]
    status = kiln.status(project=root / "kiln.yaml")
    assert status.outdated == []
    (root / "out/raw.json").unlink()
    assert [t.reason for t in kiln.status(project=root).tasks] == [
        "product out/raw.json missing",
        "upstream extract is outdated",
    ]
    nb = nbformat.read(root / "clean.ipynb", as_version=4)
    nb.cells[1].source = "raise ValueError('broken')"
    nbformat.write(nb, root / "clean.ipynb")
    failed = kiln.build(project=root)
    assert failed.state == "failed" and failed.failed == ["clean"]
    with pytest.raises(BuildFailed, match=r"build .* of daily failed"):
        kiln.build(project=root, check=True)


def test_a_second_build_at_once_waits_and_runs_nothing_twice(
    tmp_path: Path, home: Path, kiln_in: Cli
) -> None:
    """Two `kiln build` of one pipeline at once: the second waits for the first (and says
    so), then finds what the first built up to date; every task ran once."""
    root, go = _waiting_project(tmp_path)
    first = _start_build(root, home)
    second = None
    try:
        wait_for_file(root / "out/waits.started")
        second = _start_build(root, home, "--json")
        assert second.stderr is not None
        line = second.stderr.readline()
        assert "another build of p is running: waiting for it" in line
        go.touch()
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.communicate(timeout=30)
    states = {t["task"]: t["state"] for t in json.loads(out)["tasks"]}
    assert states == {"quick": "up_to_date", "waits": "up_to_date", "after": "up_to_date"}
    ran = db_rows(home, "select notebook_name, count(*) from runs group by notebook_name")
    assert dict(ran) == {"quick.ipynb": 2, "waits.ipynb": 1}  # quick is also `after`
