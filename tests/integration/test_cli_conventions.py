"""One CLI convention for every command, the project file and home, and the run history.

Most cases call the real ``kiln`` command in a subprocess; runs use real kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kilntest import KILN, build_notebook, wait_for

pytestmark = pytest.mark.kernel

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """``kiln ARGS`` in ``cwd`` (default tmp_path), with no KILN_HOME unless given."""

    def run(
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        base.update(env or {})
        return subprocess.run(
            [KILN, *args], capture_output=True, text=True, cwd=cwd or tmp_path, env=base,
            timeout=timeout, input=input,
        )  # fmt: skip

    return run


def _nb(path: Path, cells: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(cells), path)
    return path


# -- global options, usage, help, version, completion --------------------------------------


def test_global_options_before_or_after_the_command(cli: Cli, tmp_path: Path) -> None:
    nb = _nb(tmp_path / "nb.ipynb", ["print(1)"])
    home = tmp_path / "h"
    assert cli("--home", str(home), "run", str(nb), "-q").returncode == 0
    assert cli("run", str(nb), "--home", str(home), "--quiet").returncode == 0
    before = json.loads(cli("--home", str(home), "runs", "list", "--json").stdout)
    after = json.loads(cli("runs", "list", "--json", "--home", str(home)).stdout)
    assert len(before) == len(after) == 2
    quiet = cli("run", str(nb), "--home", str(home), "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    plain = cli("--color", "never", "runs", "list", "--home", str(home))
    assert "\x1b[" not in plain.stdout and "nb.ipynb" in plain.stdout
    coloured = cli("runs", "list", "--home", str(home), "--color", "always")
    assert "\x1b[" in coloured.stdout


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (["runs", "list", "--bogus"], "usage: kiln runs list"),
        (["run", "nb.ipynb", "--nope"], "usage: kiln run"),
        (["runs", "show"], "usage: kiln runs show"),
        (["lint", "--format", "xml", "x"], "usage: kiln lint"),
        (["run", "nb.ipynb", "--timeout", "soon"], "usage: kiln run"),
    ],
)
def test_usage_errors_show_the_commands_own_usage(cli: Cli, args: list[str], usage: str) -> None:
    done = cli(*args)
    assert done.returncode == 2
    assert usage in done.stderr and "Traceback" not in done.stderr


def test_timeout_flag_says_what_a_duration_is(cli: Cli) -> None:
    done = cli("run", "nb.ipynb", "--timeout", "soon")
    assert "expected a duration" in done.stderr and "10s, 5m, 2h" in done.stderr


@pytest.mark.parametrize("group", ["runs", "git", "config"])
def test_a_group_without_subcommand_prints_its_help(cli: Cli, group: str) -> None:
    done = cli(group)
    assert done.returncode == 0
    assert f"usage: kiln {group}" in done.stdout


def test_version_both_spellings(cli: Cli) -> None:
    assert cli("-V").stdout.startswith("kiln ") and cli("--version").returncode == 0


def test_a_ctrl_c_while_kiln_is_still_loading_ends_quietly() -> None:
    """The `kiln` command's entry point loads the CLI inside its own guard: a SIGINT that
    lands in an import (the first ~40 ms) says "Interrupted." and exits 130, as later ones do,
    with no traceback. The interrupt is made to land there by an import hook."""
    script = Path(KILN).read_text()
    assert "kiln.cli.entry" in script  # the installed command goes through the guard
    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'kiln.cli.main':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from kiln.cli.entry import main\n"
        "sys.exit(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "Interrupted.\n")


def test_output_nobody_reads_is_a_quiet_failure(tmp_path: Path) -> None:
    """`kiln … | head` where the reader is gone: exit 1 and no Python noise on stderr (the
    output is flushed when the process ends, after the command returned)."""
    nb = _nb(tmp_path / "nb.ipynb", [("n = 1", ["parameters"])])
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [KILN, "params", str(nb), "--json"], stdout=write, stderr=subprocess.PIPE,
            text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == ""


def test_a_profiled_command_still_writes_its_profile(tmp_path: Path) -> None:
    """Kiln ends its process without the interpreter's teardown, except under a profiler or
    a tracer (coverage), which write their data at exit."""
    nb = _nb(tmp_path / "nb.ipynb", [("n = 1", ["parameters"])])
    profile = tmp_path / "kiln.prof"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), KILN, "params", str(nb)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert profile.stat().st_size > 0


def test_every_data_command_has_json(cli: Cli) -> None:
    for command in (["params"], ["runs", "list"], ["runs", "show"], ["runs", "rm"], ["verify"],
                    ["clean"], ["diff"], ["config", "check"]):  # fmt: skip
        assert "--json" in cli(*command, "--help").stdout, command


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_code_for_each_shell(cli: Cli, shell: str) -> None:
    done = cli("completion", shell)
    assert done.returncode == 0 and "kiln" in done.stdout and len(done.stdout) > 200


def test_completion_answers_the_shell(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "completions.txt"
    env = {
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": "kiln ru",
        "COMP_POINT": "7",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(target),
    }
    cli(env=env)
    assert set(target.read_text().split()) == {"run", "runs"}


# -- the project file and the home ---------------------------------------------------------


def test_home_is_beside_the_nearest_project_file(cli: Cli, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "notebooks" / "deep").mkdir(parents=True)
    (project / "kiln.yaml").write_text("run:\n  timeout: 10m\n")
    nb = _nb(project / "notebooks" / "nb.ipynb", ["print(1)"])
    assert cli("run", str(nb), "-q", cwd=project / "notebooks" / "deep").returncode == 0
    assert (project / ".kiln" / "kiln.db").exists()
    assert not (project / "notebooks" / "deep" / ".kiln").exists()
    listed = cli("runs", "list", "--json", cwd=project / "notebooks")
    assert len(json.loads(listed.stdout)) == 1


def test_read_only_commands_create_nothing(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = cli("runs", "list", cwd=empty)
    assert listed.returncode == 0 and "no Kiln history in" in listed.stderr
    shown = cli("runs", "show", "last", cwd=empty)
    assert shown.returncode == 2 and "no Kiln history" in shown.stderr
    assert list(empty.iterdir()) == []


BROKEN = "run:\n  timeout: 10m\nlint:\n  selct: [KL1]\n"


@pytest.mark.parametrize(
    "command",
    [["runs", "list"], ["lint", "."], ["params", "nb.ipynb"], ["run", "nb.ipynb"], ["clean", "."]],
)
def test_a_broken_project_file_stops_every_command(
    cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "kiln.yaml").write_text(BROKEN)
    _nb(tmp_path / "nb.ipynb", ["print(1)"])
    done = cli(*command)
    assert done.returncode == 2, done.stderr
    assert "kiln.yaml:4:3: lint.selct: unknown key 'selct'; did you mean 'select'?" in done.stderr
    assert "Traceback" not in done.stderr


def test_config_check_and_schema(cli: Cli, tmp_path: Path) -> None:
    import jsonschema
    import yaml

    good = (
        "run:\n  timeout: 10m\n  engine: kernel\nlint:\n  select: [KL1]\ntests:\n  a.ipynb: [{}]\n"
    )
    (tmp_path / "kiln.yaml").write_text(good)
    assert cli("config", "check").returncode == 0
    schema = json.loads(cli("config", "schema").stdout)
    jsonschema.validate(yaml.safe_load(good), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(BROKEN), schema)
    (tmp_path / "kiln.yaml").write_text(BROKEN)
    assert cli("config", "check").returncode == 2
    # the features' own checks too: a schedule that would fail at its first delivery
    (tmp_path / "a.ipynb").write_text("{}")
    (tmp_path / "kiln.yaml").write_text(
        "schedules:\n  s:\n    notebook: a.ipynb\n    cron: '@daily'\n"
        "    notify: {email: {to: [a@example.com]}}\n"
    )
    mailless = cli("config", "check")
    assert mailless.returncode == 2 and "needs an smtp section" in mailless.stderr
    (tmp_path / "kiln.yaml").unlink()
    assert "no kiln.yaml" in cli("config", "check").stderr


def test_run_defaults_precedence_flag_env_file(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "kiln.yaml").write_text("run:\n  cell_timeout: 1s\n")
    nb = _nb(tmp_path / "slow.ipynb", ["import time\ntime.sleep(3)"])
    by_file = cli("run", str(nb))
    assert by_file.returncode == 1 and "cell timeout of 1s" in by_file.stderr
    by_env = cli("run", str(nb), env={"KILN_CELL_TIMEOUT": "1m"})
    assert by_env.returncode == 0, by_env.stderr
    by_flag = cli("run", str(nb), "--cell-timeout", "1", env={"KILN_CELL_TIMEOUT": "1m"})
    assert by_flag.returncode == 1
    bad_env = cli("run", str(nb), env={"KILN_TIMEOUT": "later"})
    assert bad_env.returncode == 2 and "KILN_TIMEOUT: expected a duration" in bad_env.stderr


# -- failures, live output, history ----------------------------------------------------------


def test_a_failed_cell_shows_the_failing_line_and_the_log(cli: Cli, tmp_path: Path) -> None:
    nb = _nb(tmp_path / "nb.ipynb", ["x = 1", "def f():\n    return 1 / 0\n\nf()"])
    done = cli("run", str(nb))
    assert done.returncode == 1
    assert "cell 1 (In [2]) raised ZeroDivisionError" in done.stderr
    assert "---->" in done.stderr and "return 1 / 0" in done.stderr
    assert "run.log" in done.stderr and "\x1b[" not in done.stderr
    shown = json.loads(cli("runs", "show", "last", "--json").stdout)
    assert "\x1b[" not in json.dumps(shown["error"])


def test_long_error_values_are_shortened_once(cli: Cli, tmp_path: Path) -> None:
    nb = _nb(tmp_path / "nb.ipynb", ["raise ValueError('x' * 5000)"])
    cli("run", str(nb))
    shown = json.loads(cli("runs", "show", "last", "--json").stdout)
    assert len(shown["reason"]) < 700 and "more characters" in shown["reason"]
    assert len(shown["error"]["evalue"]) == 5000
    text = cli("runs", "show", "last").stdout
    assert text.count("xxxxxxxxxx") <= 60


def test_log_output_like_papermill(cli: Cli, tmp_path: Path) -> None:
    nb = _nb(
        tmp_path / "nb.ipynb",
        ["print('hello')", "21 * 2", "import sys; print('e', file=sys.stderr)"],
    )
    done = cli("run", str(nb), "--log-output")
    assert done.returncode == 0
    assert "Executing cell 1/3" in done.stderr and "Executing cell 3/3" in done.stderr
    assert "hello" in done.stdout and "42" in done.stdout and "e\n" in done.stderr


def test_history_filters_output_column_and_removal(cli: Cli, tmp_path: Path) -> None:
    nb = _nb(tmp_path / "nb.ipynb", [("region = 'EU'\nn = 1", ["parameters"]), "print(n)"])
    for region, n in (("EU", 1), ("US", 2), ("US", 3)):
        assert cli("run", str(nb), "-p", "region", region, "-p", "n", str(n), "-q").returncode == 0

    def ids(*args: str) -> list[str]:
        return [r["id"] for r in json.loads(cli("runs", "list", "--json", *args).stdout)]

    assert len(ids("--param", "region=US")) == 2
    assert len(ids("--param", "region=US", "--param", "n=3")) == 1
    assert len(ids("--since", "1h")) == 3 and ids("--since", "2099-01-01") == []
    assert len(ids("--limit", "1")) == 1
    table = cli("runs", "list").stdout
    assert "OUTPUT" in table and "output.ipynb" in table
    newest = ids()[0]
    assert cli("runs", "rm", newest).returncode == 0
    assert newest not in ids()
    assert cli("runs", "rm", newest).returncode == 2


def test_logs_follow_a_live_run(cli: Cli, tmp_path: Path) -> None:
    nb = _nb(
        tmp_path / "nb.ipynb",
        ["import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.5)"],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    runner = subprocess.Popen([KILN, "run", str(nb), "-q"], cwd=tmp_path, env=env)
    try:
        wait_for(lambda: (tmp_path / ".kiln" / "kiln.db").exists(), what="the run's history")
        started = time.monotonic()
        follow = cli("runs", "logs", "-f", "last", timeout=60)
        assert follow.returncode == 0
        assert "tick 3" in follow.stdout and "run succeeded" in follow.stdout
        assert time.monotonic() - started < 60
    finally:
        runner.wait(timeout=60)


def test_diff_of_two_runs(cli: Cli, tmp_path: Path) -> None:
    nb = _nb(tmp_path / "nb.ipynb", [("n = 1", ["parameters"]), "print(n)"])
    cli("run", str(nb), "-p", "n", "1", "-q")
    cli("run", str(nb), "-p", "n", "2", "-q")
    runs = json.loads(cli("runs", "list", "--json").stdout)
    done = cli("diff", runs[1]["id"], runs[0]["id"], "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["changed"] is True
    assert cli("diff", "no-such-run", runs[0]["id"]).returncode == 2


def test_records_come_back_as_python_objects(tmp_path: Path, home: Path) -> None:
    import pandas as pd

    import kiln
    from kiln.store.records import Image

    nb = _nb(
        tmp_path / "nb.ipynb",
        [
            "import kiln, pandas as pd, matplotlib\nmatplotlib.use('Agg')\n"
            "import matplotlib.pyplot as plt\n"
            "kiln.record('summary', pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']}))\n"
            "fig, ax = plt.subplots(); ax.plot([1, 2]); kiln.record('chart', fig)\n"
            "kiln.record('total', 3)"
        ],
    )
    run = kiln.run(nb)
    again = kiln.read_run(run.id)
    frame = again.records["summary"]
    assert isinstance(frame, pd.DataFrame) and list(frame["b"]) == ["x", "y"]
    chart = again.records["chart"]
    assert isinstance(chart, Image) and chart.mime == "image/png"
    assert chart.data.startswith(b"\x89PNG")
    assert again.records["total"] == 3
    assert again.record_values["summary"]["columns"] == ["a", "b"]
