"""`kiln run` end to end on real ipykernel kernels, as a user calls it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from kilntest import read_nb, stream_text

pytestmark = pytest.mark.kernel

PARAMS_CELL = (
    'region: str = "EU"  # sales region\n'
    "n: int = 3\n"
    "ratio: float = 0.5\n"
    "flag: bool = True\n"
    "items: list = [1, 2]\n"
    "opts: dict = {}\n"
    "maybe: int | None = None\n"
)
SHOW = (
    "import kiln\n"
    "for _name in ['region', 'n', 'ratio', 'flag', 'items', 'opts', 'maybe']:\n"
    "    _v = globals()[_name]\n"
    "    kiln.record(_name, {'type': type(_v).__name__, 'value': _v})\n"
)


def _runs(home: Path) -> list[tuple[str, str]]:
    db = home / "kiln.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return list(conn.execute("select id, state from runs"))


def test_typed_parameters_arrive_with_their_types(make_nb, kiln_cli, tmp_path):
    nb = make_nb([(PARAMS_CELL, ["parameters"]), SHOW])
    out = tmp_path / "out.ipynb"
    res = kiln_cli(
        "run",
        str(nb),
        str(out),
        "-p",
        "n",
        "7",
        "-p",
        "ratio",
        "1",
        "-p",
        "flag",
        "false",
        "-p",
        "region",
        "US",
        "-y",
        "items: [1, a, null]",
        "-p",
        "opts",
        "{k: 2}",
        "-p",
        "maybe",
        "None",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    rec = run["records"]
    assert rec["n"] == {"type": "int", "value": 7}
    assert rec["ratio"] == {"type": "float", "value": 1.0}
    assert rec["flag"] == {"type": "bool", "value": False}
    assert rec["region"] == {"type": "str", "value": "US"}
    assert rec["items"] == {"type": "list", "value": [1, "a", None]}
    assert rec["opts"] == {"type": "dict", "value": {"k": 2}}
    assert rec["maybe"] == {"type": "NoneType", "value": None}
    out_nb = read_nb(out)
    assert out_nb.metadata["kiln"]["parameters"]["n"] == 7
    assert run["state"] == "succeeded"


@pytest.mark.parametrize(
    "value",
    [
        "'); import os #",
        '"; import os; os.system("echo pwned") #',
        "back\\slash \\n not a newline",
        "line1\nline2\r\n",
        "sep\u2028arator\u2029",
        'quote \' and " and """ triple',
        "{x} %s $(whoami) `id`",
        "",
    ],
    ids=[
        "close-call",
        "double-quote-escape",
        "backslashes",
        "newlines",
        "u2028",
        "quotes",
        "format-chars",
        "empty",
    ],
)
def test_hostile_strings_arrive_as_the_same_string(make_nb, kiln_cli, tmp_path, value):
    nb = make_nb([('s = "default"', ["parameters"]), "import kiln\nkiln.record('s', s)"])
    res = kiln_cli("run", str(nb), str(tmp_path / "o.ipynb"), "-r", "s", value, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["records"]["s"] == value
    injected = read_nb(tmp_path / "o.ipynb").cells[1]
    assert injected.metadata.tags == ["injected-parameters"]
    assert injected.source.count("\n") == 2  # comment + one assignment line, never more


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-p", "1x", "3"], "'1x'"),
        (["-p", "class", "3"], "'class'"),
        (["-p", "__import__", "3"], "'__import__'"),
        (["-p", "a-b", "3"], "'a-b'"),
        (["-y", "'x; import os': 1"], "x; import os"),
        (["-p", "n", "three"], "'n'"),
        (["-p", "ratio", "abc"], "'ratio'"),
        (["-p", "flag", "maybe"], "'flag'"),
        (["-p", "regoin", "EU"], "did you mean 'region'"),
        (["-y", "n: 1.5"], "'n'"),
    ],
    ids=[
        "digit-first",
        "keyword",
        "dunder",
        "dash",
        "yaml-code-name",
        "int-text",
        "float-text",
        "bool-word",
        "unknown-typo",
        "float-for-int",
    ],
)
def test_bad_parameters_are_refused_before_any_kernel_starts(make_nb, kiln_cli, home, args, needle):
    nb = make_nb([(PARAMS_CELL, ["parameters"]), "print('ran')"])
    res = kiln_cli("run", str(nb), *args)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert _runs(home) == []  # nothing recorded, nothing started


def test_unknown_parameter_lists_known_ones_and_allow_unknown_passes(make_nb, kiln_cli, tmp_path):
    nb = make_nb([(PARAMS_CELL, ["parameters"]), "import kiln\nkiln.record('extra', extra)"])
    res = kiln_cli("run", str(nb), "-p", "extra", "5")
    assert res.returncode == 2
    assert "region" in res.stderr and "maybe" in res.stderr and "'extra'" in res.stderr
    res = kiln_cli("run", str(nb), "-p", "extra", "5", "--allow-unknown", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["records"]["extra"] == 5


def test_missing_required_parameter(make_nb, kiln_cli):
    nb = make_nb([("region: str\nn = 1", ["parameters"]), "print(region)"])
    res = kiln_cli("run", str(nb))
    assert res.returncode == 2
    assert "region" in res.stderr and "required" in res.stderr
    assert kiln_cli("run", str(nb), "-p", "region", "EU").returncode == 0


def test_papermill_layout_and_rerun_replaces_injected_cell(make_nb, kiln_cli, tmp_path):
    nb = make_nb([("markdown", "# Title", []), ('msg = "hi"', ["parameters"]), "print(msg)"])
    out1, out2 = tmp_path / "o1.ipynb", tmp_path / "o2.ipynb"
    assert kiln_cli("run", str(nb), str(out1), "-p", "msg", "Hello").returncode == 0
    first = read_nb(out1)
    assert first.cells[1].metadata.tags == ["parameters"]
    assert first.cells[2].metadata.tags == ["injected-parameters"]
    assert first.cells[2].source == '# Parameters\nmsg = "Hello"\n'
    assert stream_text(first.cells[3]) == "Hello\n"
    res = kiln_cli("run", str(out1), str(out2), "-p", "msg", "Again")
    assert res.returncode == 0, res.stderr
    second = read_nb(out2)
    injected = [c for c in second.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'msg = "Again"' in injected[0].source
    assert stream_text(second.cells[3]) == "Again\n"
    assert second.metadata.kiln.parameters == {"msg": "Again"}


def test_no_parameters_cell_injects_at_top_with_warning(make_nb, kiln_cli, tmp_path):
    nb = make_nb(["print(msg)"])
    out = tmp_path / "o.ipynb"
    res = kiln_cli("run", str(nb), str(out), "-p", "msg", "Hello")
    assert res.returncode == 0, res.stderr
    assert "no cell tagged 'parameters'" in res.stderr
    cells = read_nb(out).cells
    assert cells[0].metadata.tags == ["injected-parameters"]
    assert stream_text(cells[1]) == "Hello\n"


def test_parameter_file_yaml_and_raw(make_nb, kiln_cli, tmp_path):
    nb = make_nb([(PARAMS_CELL, ["parameters"]), SHOW])
    pfile = tmp_path / "p.yaml"
    pfile.write_text("region: APAC\nn: 11\nitems: [2024-01-01]\n")
    res = kiln_cli("run", str(nb), "-f", str(pfile), "-r", "region", "42", "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)["records"]
    assert rec["region"]["value"] == "42"  # -r is a raw string, and later flags win
    assert rec["n"]["value"] == 11
    assert rec["items"]["value"] == ["2024-01-01"]  # a YAML date stays a string
    bad = tmp_path / "bad.yaml"
    bad.write_text("n: [1,\n")
    res = kiln_cli("run", str(nb), "-f", str(bad))
    assert res.returncode == 2 and "bad.yaml" in res.stderr and "Traceback" not in res.stderr
    res = kiln_cli("run", str(nb), "-f", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and "missing.yaml" in res.stderr


def test_cell_error_banner_marker_partial_output(make_nb, kiln_cli, tmp_path, home):
    nb = make_nb(["print('before')", "1/0", "print('after')"])
    out = tmp_path / "o.ipynb"
    res = kiln_cli("run", str(nb), str(out))
    assert res.returncode == 1
    assert "ZeroDivisionError" in res.stderr and "1/0" in res.stderr
    cells = read_nb(out).cells
    assert cells[0].cell_type == "markdown" and "kiln-error-banner" in cells[0].metadata.tags
    assert "ZeroDivisionError" in cells[0].source and "#kiln-error-cell" in cells[0].source
    assert stream_text(cells[1]) == "before\n"
    assert (
        "kiln-error-marker" in cells[2].metadata.tags and 'id="kiln-error-cell"' in cells[2].source
    )
    assert cells[3].outputs[-1].output_type == "error"
    assert cells[4].outputs == [] and cells[4].execution_count is None
    assert _runs(home)[0][1] == "failed"


def test_allow_errors_keeps_going(make_nb, kiln_cli, tmp_path):
    nb = make_nb(["1/0", "print('after')"])
    out = tmp_path / "o.ipynb"
    res = kiln_cli("run", str(nb), str(out), "--allow-errors")
    assert res.returncode == 0, res.stderr
    assert stream_text(read_nb(out).cells[1]) == "after\n"


def test_skip_execution_tag(make_nb, kiln_cli, tmp_path):
    nb = make_nb([("raise SystemExit('should not run')", ["skip-execution"]), "print('ok')"])
    out = tmp_path / "o.ipynb"
    assert kiln_cli("run", str(nb), str(out)).returncode == 0
    cells = read_nb(out).cells
    assert cells[0].execution_count is None and stream_text(cells[1]) == "ok\n"


def test_report_mode_hides_inputs_and_log_output_streams(make_nb, kiln_cli, tmp_path):
    nb = make_nb(["import sys\nprint('to-out')\nprint('to-err', file=sys.stderr)"])
    out = tmp_path / "o.ipynb"
    res = kiln_cli("run", str(nb), str(out), "--report-mode", "--log-output")
    assert res.returncode == 0, res.stderr
    assert "to-out" in res.stdout and "to-err" in res.stderr
    assert all(c.metadata.jupyter.source_hidden for c in read_nb(out).cells)


def test_cwd_and_kernel_flags(make_nb, kiln_cli, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    nb = make_nb(["import os, kiln\nkiln.record('cwd', os.getcwd())"])
    res = kiln_cli("run", str(nb), "--cwd", str(work), "--kernel", "python3", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["records"]["cwd"] == str(work)
    res = kiln_cli("run", str(nb), "--kernel", "no-such-kernel")
    assert res.returncode == 2 and "no-such-kernel" in res.stderr and "python3" in res.stderr


def test_bash_kernel_gets_literal_parameters(make_nb, kiln_cli, tmp_path):
    nb = make_nb(
        [("name='x'\ncount=1", ["parameters"]), 'echo "[$name] [$count]"'],
        kernel="bash",
        language="bash",
    )
    out = tmp_path / "o.ipynb"
    res = kiln_cli(
        "run", str(nb), str(out), "-r", "name", "$(echo pwned) 'q' `id`", "-p", "count", "4"
    )
    assert res.returncode == 0, res.stderr
    text = stream_text(read_nb(out).cells[2])
    assert "[$(echo pwned) 'q' `id`] [4]" in text


def test_output_path_cannot_be_the_input(make_nb, kiln_cli):
    nb = make_nb(["print(1)"])
    before = nb.read_bytes()
    res = kiln_cli("run", str(nb), str(nb))
    assert res.returncode == 2 and "never overwrites" in res.stderr
    assert nb.read_bytes() == before


def test_input_notebook_is_never_modified(make_nb, kiln_cli):
    nb = make_nb([("x = 1", ["parameters"]), "print(x)", "1/0"])
    before = nb.read_bytes()
    kiln_cli("run", str(nb), "-p", "x", "2")
    assert nb.read_bytes() == before


def test_prepare_only(make_nb, kiln_cli, tmp_path):
    nb = make_nb([("x = 1", ["parameters"]), "raise SystemExit(3)"])
    out = tmp_path / "o.ipynb"
    assert kiln_cli("run", str(nb), str(out), "-p", "x", "2", "--prepare-only").returncode == 0
    cells = read_nb(out).cells
    assert cells[1].source == "# Parameters\nx = 2\n" and cells[2].outputs == []


def test_debug_shows_traceback_only_when_asked(kiln_cli, tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{ not json")
    plain = kiln_cli("run", str(bad))
    debug = kiln_cli("--debug", "run", str(bad))
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr


def test_lint_gate_refuses_a_notebook_with_lint_errors(make_nb, kiln_cli, home, tmp_path):
    nb = make_nb(["print(total)", "total = 1"])  # a name used before it is defined
    res = kiln_cli("run", str(nb), "--lint")
    assert res.returncode == 1
    assert "KL104" in res.stderr and "not running it" in res.stderr
    assert _runs(home) == []  # refused before anything was recorded or started
    (tmp_path / "kiln.yaml").write_text("lint:\n  ignore: [KL104]\n")
    res = kiln_cli("run", str(nb), "--lint", "--allow-errors")
    assert res.returncode == 0, res.stderr
    clean = make_nb(["total = 1", "print(total)"], name="clean.ipynb")
    assert kiln_cli("run", str(clean), "--lint").returncode == 0
