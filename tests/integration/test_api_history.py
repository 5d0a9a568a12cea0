"""The Python API and the run history commands, on real kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kiln
from kiln.errors import CellExecutionError, RunNotFound

from kilntest import read_nb

pytestmark = pytest.mark.kernel

REPORT = [
    ('region: str = "EU"  # sales region\nn: int = 3  # how many rows', ["parameters"]),
    "import kiln\nimport pandas as pd\n"
    "df = pd.DataFrame({'k': list(range(n)), 'v': [i * 1.5 for i in range(n)]})\n"
    "kiln.record('total', float(df.v.sum()))\nkiln.record('table', df)\n"
    "kiln.record('region', region)",
    "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3])\n"
    "kiln.record('chart', fig)\nplt.close(fig)",
]


def test_api_run_and_read_back(make_nb, home, tmp_path):
    nb = make_nb(REPORT)
    run = kiln.run(nb, parameters={"region": "US", "n": 4})
    assert run.state == "succeeded" and run.parameters == {"region": "US", "n": 4}
    assert run.records["total"] == 9.0 and run.records["region"] == "US"
    kinds = {r.name: r.kind for r in run.records_list}
    assert kinds == {"total": "json", "table": "dataframe", "region": "json", "chart": "image"}
    table = next(r for r in run.records_list if r.name == "table").to_dataframe()
    assert list(table.columns) == ["k", "v"] and len(table) == 4
    chart = next(r for r in run.records_list if r.name == "chart")
    assert chart.image_bytes().startswith(b"\x89PNG")
    by_id = kiln.read_run(run.id)
    by_prefix = kiln.read_run(run.id[:17])
    by_path = kiln.read_run(run.output_path)
    assert by_id.record_values == by_prefix.record_values == by_path.record_values
    assert by_id.record_values == run.record_values
    assert by_path.parameters == {"region": "US", "n": 4} and by_path.state == "succeeded"
    assert by_id.kernel_version and "ipython" in by_id.kernel_version
    assert by_id.python_version and by_id.notebook_sha256 == run.notebook_sha256
    assert len(by_id.cell_durations) == 4  # parameters, injected, two cells: all executed
    assert all(d is not None and d >= 0 for d in by_id.cell_durations)


def test_api_cell_error_is_typed(make_nb, home):
    nb = make_nb(["x = 1", "x / 0"])
    with pytest.raises(CellExecutionError) as info:
        kiln.run(nb)
    err = info.value
    assert err.ename == "ZeroDivisionError" and err.cell_index == 1
    assert "x / 0" in str(err) and err.run.state == "failed"
    assert kiln.run(nb, check=False).state == "failed"


def test_read_run_unknown_id(home):
    with pytest.raises(RunNotFound):
        kiln.read_run("20990101-000000-abcdef")


def test_runs_list_show_logs(make_nb, kiln_cli, tmp_path):
    good = make_nb([("n = 1", ["parameters"]), "print('n is', n)"], name="good.ipynb")
    bad = make_nb(["raise RuntimeError('nope')"], name="bad.ipynb")
    assert kiln_cli("run", str(good), "-p", "n", "5").returncode == 0
    assert kiln_cli("run", str(bad)).returncode == 1
    assert kiln_cli("run", str(good), "-p", "n", "6").returncode == 0

    table = kiln_cli("runs", "list")
    assert table.returncode == 0
    lines = table.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "NOTEBOOK"] and len(lines) == 4
    assert "n=6" in lines[1] and "failed" in lines[2]

    runs = json.loads(kiln_cli("runs", "list", "--json").stdout)
    assert [r["state"] for r in runs] == ["succeeded", "failed", "succeeded"]
    only_good = json.loads(kiln_cli("runs", "list", "--notebook", "good.ipynb", "--json").stdout)
    assert {Path(r["notebook_path"]).name for r in only_good} == {"good.ipynb"}
    failed = json.loads(kiln_cli("runs", "list", "--state", "failed", "--json").stdout)
    assert len(failed) == 1 and failed[0]["error"]["ename"] == "RuntimeError"
    assert len(json.loads(kiln_cli("runs", "list", "-n", "1", "--json").stdout)) == 1

    show = kiln_cli("runs", "show", failed[0]["id"])
    assert "RuntimeError: nope" in show.stdout and "failed" in show.stdout
    shown = json.loads(kiln_cli("runs", "show", "last", "--json").stdout)
    assert shown["parameters"] == {"n": 6} and shown["state"] == "succeeded"
    for key in (
        "notebook_sha256",
        "started_at",
        "ended_at",
        "cell_durations",
        "output_path",
        "log_path",
        "python_version",
        "kernel_version",
        "records",
        "error",
    ):
        assert key in shown
    logs = kiln_cli("runs", "logs", "last")
    assert "[cell 2 stdout] n is 6" in logs.stdout and "run succeeded" in logs.stdout
    missing = kiln_cli("runs", "show", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_params_command(make_nb, kiln_cli):
    nb = make_nb(
        [
            (
                'region: str = "EU"  # sales region\nn: int = 3\nwhen: str  # report date',
                ["parameters"],
            )
        ]
    )
    text = kiln_cli("params", str(nb))
    assert text.returncode == 0
    assert "region" in text.stdout and "sales region" in text.stdout and "(required)" in text.stdout
    schema = json.loads(kiln_cli("params", str(nb), "--json").stdout)
    by_name = {p["name"]: p for p in schema["parameters"]}
    assert by_name["n"]["type"] == "int" and by_name["n"]["default"] == 3
    assert by_name["when"]["required"] is True and by_name["when"]["help"] == "report date"
    missing = kiln_cli("params", "nope.ipynb")
    assert missing.returncode == 2 and "nope.ipynb" in missing.stderr


def test_params_command_shows_choices_and_dates(make_nb, kiln_cli):
    nb = make_nb(
        [
            (
                "from datetime import date\nfrom typing import Literal\n"
                "region: Literal['EU', 'US'] = 'EU'\nday: date = date(2024, 1, 31)",
                ["parameters"],
            )
        ]
    )
    text = kiln_cli("params", str(nb))
    assert "str ('EU' | 'US')" in text.stdout and "date" in text.stdout
    schema = json.loads(kiln_cli("params", str(nb), "--json").stdout)
    by_name = {p["name"]: p for p in schema["parameters"]}
    assert by_name["region"]["choices"] == ["EU", "US"]
    assert by_name["day"]["type"] == "date" and by_name["day"]["default"] == "2024-01-31"


def test_example_demo_runs_end_to_end(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env.pop("KILN_HOME", None)
    res = subprocess.run(
        [sys.executable, str(root / "examples" / "run_demo.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = root / "examples" / "output"
    assert "Demo finished" in res.stdout and str(out) in res.stdout
    eu = read_nb(out / "daily_sales_EU.ipynb")
    assert eu.metadata.kiln.state == "succeeded"
    us = kiln.read_run(out / "daily_sales_US.ipynb")
    assert us.parameters["region"] == "US" and us.records["orders"] == 650
    assert us.records["total_revenue"] > 0
    assert {"summary", "chart", "low_margin_products"} <= set(us.records)
    # the schedule's report, mailed to the demo's SMTP sink
    message = (out / "mail" / "message-1.eml").read_text()
    assert "To: managers@example.com" in message and "daily-sales succeeded" in message
    assert "The report was mailed to managers@example.com" in res.stdout
