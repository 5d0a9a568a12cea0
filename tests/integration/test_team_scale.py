"""Team scale with real parts: run artefacts on a real S3-compatible server (moto), workers
with homes of their own ("machines") sharing one PostgreSQL database and the artefact store,
a worker killed outright, a database that goes away during a run, a history copied."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kilnpg import PostgresServer, PostgresUnavailable
from kilntest import KILN, build_notebook, wait_for, wait_for_file

pytestmark = pytest.mark.kernel

#: a notebook that imports a helper module of its project (each checkout has its own)
NOTEBOOK = [
    ("n = 1\nsleep = 0.0\nmarker = ''", ["parameters"]),
    "import os, time, kiln, helper\n"
    "if marker:\n"
    "    first = not os.path.exists(marker)\n"
    "    with open(marker, 'a') as fh:\n"
    "        fh.write(f'{n} {helper.WHERE} {os.getpid()}\\n')\n"
    "    if first:\n"
    "        time.sleep(sleep)\n"
    "print('ran', n, 'in', helper.WHERE)\n"
    "kiln.record('n', n)\n"
    "kiln.record('where', helper.WHERE)",
]


def _checkout(root: Path, where: str, *, cells: list[Any] | None = None) -> Path:
    """A copy of the project as a machine would have it: kiln.yaml, the notebook, a helper."""
    (root / "reports").mkdir(parents=True)
    (root / "kiln.yaml").write_text("run:\n  engine: fork\n")
    (root / "reports" / "helper.py").write_text(f"WHERE = {where!r}\n")
    nbformat.write(build_notebook(cells or NOTEBOOK), root / "reports" / "nb.ipynb")
    return root


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    for name in ("KILN_DATABASE_URL", "KILN_ARTIFACTS"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    env.update(extra)
    return env


def _kiln(
    *args: str, home: Path, cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KILN, *args], capture_output=True, text=True, env=_env(home), cwd=cwd,
                          timeout=timeout)  # fmt: skip


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _runs(home: Path, cwd: Path) -> dict[str, dict[str, Any]]:
    listed = json.loads(_ok(_kiln("runs", "list", "--json", "--limit", "0", home=home, cwd=cwd)))
    return {run["id"]: run for run in listed}


def _objects(url: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    return sorted(path[len(root) + 1 :] for path in fs.find(root))


def test_a_runs_files_go_to_the_artefact_store_and_come_back(
    tmp_path: Path, artifacts_url: str, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _checkout(tmp_path / "project", "here")
    (project / "reports" / "art.ipynb").write_text(
        nbformat.writes(
            build_notebook(
                [
                    "import kiln, os\nopen('plot.txt', 'w').write('a plot')\n"
                    "kiln.artifact('plot.txt')\nprint('made a plot')"
                ]
            )
        )
    )
    home = tmp_path / "home"
    _ok(_kiln("run", "reports/nb.ipynb", "-p", "n", "4", home=home, cwd=project))
    _ok(_kiln("run", "reports/art.ipynb", home=home, cwd=project))
    runs = sorted(_runs(home, project).values(), key=lambda r: r["created_at"])
    first, second = runs
    prefix = f"{artifacts_url}/runs/{first['id']}"
    assert first["state"] == "succeeded" and first["records"] == {"n": 4, "where": "here"}
    assert first["run_dir"] == prefix
    assert first["output_path"] == f"{prefix}/output.ipynb"
    assert first["log_path"] == f"{prefix}/run.log"
    assert first["input_path"].startswith(f"{artifacts_url}/inputs/")
    objects = _objects(artifacts_url)
    assert f"runs/{first['id']}/output.ipynb" in objects
    assert f"runs/{second['id']}/artifacts/plot.txt" in objects
    assert not (home / "runs" / first["id"]).exists()  # the local copy went once uploaded
    (artefact,) = second["artifacts"]
    assert artefact["path"] == f"{artifacts_url}/runs/{second['id']}/artifacts/plot.txt"
    # read back from another home: nothing local to read from
    elsewhere = tmp_path / "elsewhere"
    if database_url is None:  # "another machine" sharing the SQLite file
        monkeypatch.setenv("KILN_DATABASE_URL", f"sqlite:///{home / 'kiln.db'}")
    logs = _ok(_kiln("runs", "logs", first["id"], home=elsewhere, cwd=tmp_path))
    assert "stdout] ran 4 in here" in logs and "run succeeded" in logs
    followed = _ok(_kiln("runs", "logs", "-f", first["id"], home=elsewhere, cwd=tmp_path))
    assert followed == logs
    shown = _ok(_kiln("runs", "show", first["id"], home=elsewhere, cwd=tmp_path))
    assert f"{prefix}/output.ipynb" in shown
    diffed = _kiln("diff", first["id"], "reports/nb.ipynb", home=elsewhere, cwd=project)
    assert diffed.returncode in (0, 1), diffed.stderr  # compared: the output was downloaded
    rerun = _kiln("rerun", first["id"], home=elsewhere, cwd=project)  # its input from S3
    assert rerun.returncode == 0, rerun.stderr
    assert "missing" not in rerun.stdout + rerun.stderr  # outputs compared from the store
    # prune removes the objects with the rows; the inputs go once no run names them
    pruned = _kiln("runs", "prune", "--keep-last", "0", home=elsewhere, cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    assert _runs(elsewhere, tmp_path) == {}
    assert not [o for o in _objects(artifacts_url) if o.startswith("runs/")]


def test_a_store_that_cannot_be_written_keeps_the_files_local(
    tmp_path: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KILN_ARTIFACTS", "s3://no-such-bucket-kiln/x")
    project = _checkout(tmp_path / "project", "here")
    home = tmp_path / "home"
    done = _kiln("run", "reports/nb.ipynb", home=home, cwd=project)
    # the input cannot be stored: the run is refused before anything runs, saying why
    assert done.returncode != 0 and "no-such-bucket-kiln" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def team(
    tmp_path: Path, postgres_url: str, artifacts_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Path]]:
    """Three "machines": homes and checkouts of their own, one PostgreSQL database and one
    artefact store shared."""
    monkeypatch.setenv("KILN_DATABASE_URL", postgres_url)
    laptop = _checkout(tmp_path / "laptop" / "project", "laptop")
    machines = {"laptop": laptop}
    for name in ("alpha", "beta"):  # the same commit checked out elsewhere
        machines[name] = shutil.copytree(laptop, tmp_path / name / "project")
        (machines[name] / "reports" / "helper.py").write_text(f"WHERE = {name!r}\n")
    yield machines


def _home(checkout: Path) -> Path:
    return checkout.parent / "home"


def _worker(checkout: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [KILN, "worker", *args],
        env=_env(_home(checkout)),
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: killing it kills the whole "machine"
    )


def _submit(checkout: Path, *args: str) -> str:
    done = _kiln("run", "reports/nb.ipynb", "--queue", *args, home=_home(checkout), cwd=checkout)
    return _ok(done).strip()


def test_workers_on_other_machines_run_what_anyone_submits(team: dict[str, Path]) -> None:
    laptop, alpha, beta = team["laptop"], team["alpha"], team["beta"]
    # beta's checkout holds another version of the notebook: the submitted one runs
    changed = nbformat.read(beta / "reports" / "nb.ipynb", as_version=4)
    changed.cells.append(nbformat.v4.new_code_cell("raise SystemExit('the checkout ran')"))
    nbformat.write(changed, beta / "reports" / "nb.ipynb")
    marker = laptop.parent / "ran.txt"
    ids = [_submit(laptop, "-p", "n", str(n), "-p", "marker", str(marker)) for n in range(8)]
    queued = json.loads(_ok(_kiln("queue", "--json", home=_home(laptop), cwd=laptop)))
    assert sorted(run["id"] for run in queued) == sorted(ids)
    workers = [_worker(alpha, "--until-empty"), _worker(beta, "--until-empty")]
    for worker in workers:
        _out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    lines = marker.read_text().split("\n")
    ran = sorted(int(line.split()[0]) for line in lines if line)
    assert ran == list(range(8))  # every run once: none lost, none run twice
    runs = _runs(_home(laptop), laptop)
    assert {runs[i]["state"] for i in ids} == {"succeeded"}
    where = {runs[i]["records"]["where"] for i in ids}
    assert where <= {"alpha", "beta"}  # each ran in its worker's checkout (its helper)
    for run_id in ids:  # every log is readable from the laptop, which ran nothing
        log = _ok(_kiln("runs", "logs", run_id, home=_home(laptop), cwd=laptop))
        assert "run succeeded" in log
        assert f"(submitted from {laptop} on " in log
        if runs[run_id]["records"]["where"] == "beta":
            assert "differs from the submitted notebook" in log
        else:
            assert "differs" not in log
    assert not list((_home(laptop) / "runs").glob("*/run.log"))


def test_a_worker_killed_mid_run_is_retried_elsewhere_exactly_once(
    team: dict[str, Path],
) -> None:
    laptop, alpha, beta = team["laptop"], team["alpha"], team["beta"]
    marker = laptop.parent / "ran.txt"
    first = _submit(laptop, "-p", "sleep", "120", "-p", "marker", str(marker), "--retries", "1")
    doomed = _worker(alpha, "--lease", "2s")
    try:
        wait_for(
            lambda: marker.exists() and marker.read_text().endswith("\n"),
            timeout=120,
            what="the run to start on alpha",
        )
        held = json.loads(_ok(_kiln("queue", "--json", home=_home(laptop), cwd=laptop)))
        assert [run["lease_owner"].split(":")[0] for run in held] == [os.uname().nodename]
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)  # the machine is gone: worker, engine, run
        doomed.communicate()
    survivor = _worker(beta, "--lease", "2s")
    try:
        wait_for(lambda: len(marker.read_text().splitlines()) == 2, timeout=120, what="the retry")

        def both_ended() -> dict[str, dict[str, Any]] | None:
            found = _runs(_home(laptop), laptop)
            states = {run["state"] for run in found.values()}
            return found if states == {"crashed", "succeeded"} else None

        runs = wait_for(both_ended, timeout=120, what="the retry to succeed")
    finally:
        survivor.send_signal(signal.SIGTERM)
        _out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    assert len(runs) == 2
    crashed = runs[first]
    assert crashed["state"] == "crashed"
    assert "lease" in crashed["reason"] or "exited" in crashed["reason"]
    (retry,) = [run for run in runs.values() if run["id"] != first]
    assert retry["retry_of"] == first and retry["attempt"] == 2
    assert retry["state"] == "succeeded" and retry["records"]["where"] == "beta"
    assert [line.split()[1] for line in marker.read_text().splitlines()] == ["alpha", "beta"]


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own (it is stopped and started again)."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.stop()


def test_a_database_that_goes_away_during_a_run_gets_its_end_when_it_returns(
    tmp_path: Path, own_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_DATABASE_URL", own_postgres.create_database())
    gate = tmp_path / "gate"
    gate.mkdir()
    project = _checkout(
        tmp_path / "project",
        "here",
        cells=[
            ("gate = ''", ["parameters"]),
            "import os, time\nopen(os.path.join(gate, 'started'), 'w').close()\n"
            "while not os.path.exists(os.path.join(gate, 'go')):\n    time.sleep(0.05)\n"
            "print('finished while the database was away')",
        ],
    )
    home = tmp_path / "home"
    run_id = _submit(project, "-p", "gate", str(gate))
    worker = _worker(project, "--until-empty", "--lease", "60s")
    try:
        wait_for(
            lambda: (gate / "started").exists() or worker.poll() is not None,
            timeout=120,
            what="the run to start",
        )
        assert worker.poll() is None, worker.communicate()
        own_postgres.halt()
        (gate / "go").touch()
        # the run ended while the database was away: its log says so, its row cannot yet
        wait_for_file(home / "runs" / run_id / "run.log", contains="run succeeded")
        assert worker.poll() is None
        own_postgres.resume()
        _out, err = worker.communicate(timeout=180)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.communicate()
    assert worker.returncode == 0, err
    (run,) = _runs(home, project).values()
    assert run["id"] == run_id and run["state"] == "succeeded"
    assert "trying again" in err


def test_a_history_of_10000_runs_is_copied_to_postgresql_and_checked(
    tmp_path: Path, postgres_url: str
) -> None:
    from datetime import datetime, timedelta, timezone

    from kiln.store import Run, RunStore
    from kiln.store.accounts import add_token, add_user
    from kiln.store.audit import append
    from kiln.store.schema import runs as runs_table
    from kiln.store.values import RUN_FIELDS, column_values

    home = tmp_path / "home"
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with RunStore(home) as store:
        made = (
            Run(
                id=f"20240101-000000-{n:08x}",
                notebook_path=f"/p/report{n % 7}.ipynb",
                notebook_sha256="0" * 64,
                state=("succeeded", "failed", "crashed")[n % 3],
                parameters={"n": n, "when": "2024-01-01", "ratio": n / 3},
                created_at=start + timedelta(seconds=n),
                tags={"team": "a"} if n % 2 else {},
            )
            for n in range(10_000)
        )
        rows = [column_values({f: getattr(run, f) for f in RUN_FIELDS}) for run in made]
        with store._write() as conn:
            conn.execute(runs_table.insert(), rows)
        store.create_run(Run(id="queued-one", notebook_path="q.ipynb",
                             notebook_sha256="1" * 64, state="queued"))  # fmt: skip
        add_user(store, "ana", "admin", None)
        add_user(store, "bo", "viewer", "argon2-hash")
        add_token(store, user="ana", sha256="2" * 64, label="ci")
        for n in range(25):
            append(store, actor="ana", action="run.submit", target=str(n), details={"n": n})
        source = store.get_run_exact("20240101-000000-00000007")
    done = subprocess.run(
        [KILN, "store", "copy", "--from", f"sqlite:///{home / 'kiln.db'}", "--to", postgres_url],
        capture_output=True, text=True, env=_env(home), cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "copied 10,029 rows" in done.stderr
    assert "runs:    10,001 rows" in done.stderr and "MISMATCH" not in done.stderr
    with RunStore(tmp_path / "other", url=postgres_url) as copy:
        assert copy.backend == "postgresql"
        assert len(copy.list_runs(limit=None)) == 10_001
        assert copy.get_run_exact(source.id) == source
        failed = copy.list_runs(state="failed", notebook="report1.ipynb", limit=None)
        assert len(failed) == sum(1 for n in range(10_000) if n % 21 == 1)
        append(copy, actor="bo", action="login")  # the audit ids go on after the copied ones
        from kiln.store.audit import count

        assert count(copy) == 26
    again = subprocess.run(
        [KILN, "store", "copy", "--from", f"sqlite:///{home / 'kiln.db'}", "--to", postgres_url],
        capture_output=True, text=True, env=_env(home), cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert again.returncode != 0 and "copy into an empty database" in again.stderr
    assert "Traceback" not in again.stderr


def test_the_api_serves_output_and_log_from_the_artefact_store(
    tmp_path: Path, postgres_url: str, artifacts_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server_util import admin_client, running

    project = _checkout(tmp_path / "project", "server")
    (project / "kiln.yaml").write_text(
        f"run:\n  engine: fork\nstore:\n  url: {postgres_url}\n  artifacts: {artifacts_url}\n"
    )
    monkeypatch.delenv("KILN_ARTIFACTS")  # the project file says where, as a team's would
    elsewhere = _checkout(tmp_path / "elsewhere", "elsewhere")
    monkeypatch.setenv("KILN_DATABASE_URL", postgres_url)
    monkeypatch.setenv("KILN_ARTIFACTS", artifacts_url)
    _ok(_kiln("run", "reports/nb.ipynb", "-p", "n", "9", home=tmp_path / "h", cwd=elsewhere))
    (run_id,) = _runs(tmp_path / "h", elsewhere)
    with running(project, tmp_path / "server-home", "--workers", "0") as server:
        admin = admin_client(server)
        log = admin.get(f"/api/v1/runs/{run_id}/log")
        assert log.status_code == 200 and "ran 9 in elsewhere" in log.text
        notebook = admin.get(f"/api/v1/runs/{run_id}/notebook")
        assert notebook.status_code == 200, notebook.text
        assert nbformat.reads(notebook.text, as_version=4).metadata["kiln"]["run_id"] == run_id
        html = admin.get(f"/api/v1/runs/{run_id}/html")
        assert html.status_code == 200 and "ran 9 in elsewhere" in html.text
        events = admin.get(f"/api/v1/runs/{run_id}/log", params={"follow": "true"})
        assert "event: end" in events.text and "ran 9 in elsewhere" in events.text


def test_kiln_yaml_refuses_an_artefact_store_that_is_not_a_url(tmp_path: Path) -> None:
    project = _checkout(tmp_path / "project", "here")
    (project / "kiln.yaml").write_text("store:\n  artifacts: /shared/runs\n")
    done = _kiln("run", "reports/nb.ipynb", home=tmp_path / "home", cwd=project)
    assert done.returncode == 2 and "is not a URL" in done.stderr and "kiln.yaml" in done.stderr
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


def test_pooled_connections_survive_a_database_restart(
    tmp_path: Path, own_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiln.store import RunStore
    from kiln.store import engine as store_engine

    monkeypatch.setattr(store_engine, "PING_AFTER", 0.0)  # every idle connection is checked
    with RunStore(tmp_path / "home", url=own_postgres.create_database()) as store:
        assert store.list_runs() == []  # a pooled connection now
        own_postgres.halt()
        own_postgres.resume()
        assert store.list_runs() == []  # its dead connection was replaced, not used
