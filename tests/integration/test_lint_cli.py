"""`kiln lint` as users run it: a real subprocess, exit codes, formats, config and opt-outs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import nbformat
import pytest
import yaml

from kiln.cli.main import COMMANDS

from kilntest import KILN, build_notebook


def _glue(*parts: str) -> str:
    """A fake secret from its pieces (a call: no scanner, folding or not, sees it whole)."""
    return "".join(parts)


AWS = _glue("AKIA", "Q3EGRT7XMPL4ZN2W")
# Until `lint_cmd` is listed in kiln.cli.main.COMMANDS, run the same CLI with it added.
_SHIM = (
    "import sys, kiln.cli.main as m\n"
    "m.COMMANDS = m.COMMANDS if 'lint_cmd' in m.COMMANDS else (*m.COMMANDS, 'lint_cmd')\n"
    "sys.exit(m.run_main(sys.argv[1:]))\n"
)
LintCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def lint(tmp_path: Path) -> LintCli:
    base = [KILN] if "lint_cmd" in COMMANDS else [sys.executable, "-c", _SHIM]

    def run(
        *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("KILN_LINT_")}
        environ.update(env or {})
        return subprocess.run(
            [*base, "lint", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd or tmp_path,
            env=environ,
        )

    return run


def write(path: Path, cells: Sequence[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(cells), path)  # type: ignore[arg-type]
    return path


def test_clean_notebook_exits_0(lint: LintCli, tmp_path: Path) -> None:
    write(tmp_path / "nb.ipynb", ["import math", "print(math.pi)"])
    result = lint("nb.ipynb")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "No problems found in 1 notebook."


def test_error_exits_1_with_text_report(lint: LintCli, tmp_path: Path) -> None:
    write(tmp_path / "nb.ipynb", ["print(df)", "df = 1"])
    result = lint("nb.ipynb")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == ("nb.ipynb:0:1:7: KL104 error 'df' is used before any cell above defines it")
    assert lines[1].startswith("    hint: ")
    assert lines[-1] == "Found 1 problem (1 error, 0 warnings, 0 info) in 1 of 1 notebook."


def test_warnings_only_exit_0(lint: LintCli, tmp_path: Path) -> None:
    write(tmp_path / "nb.ipynb", ["!pip install pandas"])
    result = lint("nb.ipynb")
    assert result.returncode == 0
    assert "KL205 warning" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.ipynb"], "no such file or folder: missing.ipynb"),
        (["--format", "xml", "."], "invalid choice: 'xml'"),
        (["--select", "KL999", "."], "unknown rule or prefix 'KL999'"),
        (["--ignore", "XYZ", "."], "unknown rule or prefix 'XYZ'"),
    ],
)
def test_usage_errors_exit_2(lint: LintCli, args: list[str], message: str) -> None:
    result = lint(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_folders_are_searched(lint: LintCli, tmp_path: Path) -> None:
    write(tmp_path / "proj" / "a" / "one.ipynb", ["print(x)"])
    write(tmp_path / "proj" / "b" / "two.ipynb", ["y = 1"])
    write(tmp_path / "proj" / "a" / ".ipynb_checkpoints" / "one-checkpoint.ipynb", ["print(z)"])
    result = lint("proj", "--format", "json")
    data = json.loads(result.stdout)
    assert data["files"] == 2
    assert [(Path(f["path"]).name, f["rule"]) for f in data["findings"]] == [("one.ipynb", "KL104")]


def test_select_and_ignore(lint: LintCli, tmp_path: Path) -> None:
    write(tmp_path / "nb.ipynb", [f"key = '{AWS}'\nprint(missing)", "!pip install x"])

    def rules(*args: str) -> set[str]:
        result = lint("nb.ipynb", "--format", "json", *args)
        return {f["rule"] for f in json.loads(result.stdout)["findings"]}

    assert rules() == {"KL104", "KL205", "KL301"}
    assert rules("--select", "KL3") == {"KL301"}
    assert rules("--select", "KL1,KL205") == {"KL104", "KL205"}
    assert rules("--ignore", "KL1", "--ignore", "KL301") == {"KL205"}
    result = lint("nb.ipynb", "--select", "KL2")
    assert result.returncode == 0  # only a warning left


def test_kiln_yaml_and_cli_precedence(lint: LintCli, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write(project / "nbs" / "nb.ipynb", [f"key = '{AWS}'\nprint(missing)"])
    (project / "kiln.yaml").write_text(
        yaml.safe_dump({"lint": {"ignore": ["KL3"], "severity": {"KL104": "warning"}}})
    )
    # found by walking up from the current folder
    result = lint("nb.ipynb", "--format", "json", cwd=project / "nbs")
    findings = json.loads(result.stdout)["findings"]
    assert [(f["rule"], f["severity"]) for f in findings] == [("KL104", "warning")]
    assert result.returncode == 0
    # the command line wins over kiln.yaml
    result = lint("nb.ipynb", "--select", "KL301", cwd=project / "nbs")
    assert result.returncode == 1 and "KL301 error" in result.stdout
    # and the environment sits between them
    result = lint("nb.ipynb", cwd=project / "nbs", env={"KILN_LINT_SELECT": "KL301"})
    assert "KL301" in result.stdout and "KL104" not in result.stdout


def test_bad_kiln_yaml_exits_2(lint: LintCli, tmp_path: Path) -> None:
    write(tmp_path / "nb.ipynb", ["x = 1"])
    (tmp_path / "kiln.yaml").write_text(yaml.safe_dump({"lint": {"select": ["KL9"]}}))
    result = lint("nb.ipynb")
    assert result.returncode == 2
    assert "kiln.yaml:2:3: lint.select: unknown rule or prefix 'KL9'" in result.stderr


def test_kiln_noqa(lint: LintCli, tmp_path: Path) -> None:
    write(
        tmp_path / "nb.ipynb",
        [(f"key = '{AWS}'\nprint(missing)", ["kiln-noqa:KL301"]), ("print(other)", ["kiln-noqa"])],
    )
    result = lint("nb.ipynb", "--format", "json")
    assert [(f["rule"], f["cell"]) for f in json.loads(result.stdout)["findings"]] == [("KL104", 0)]


def test_require_parameters(lint: LintCli, tmp_path: Path) -> None:
    write(tmp_path / "nb.ipynb", ["x = 1"])
    assert lint("nb.ipynb").returncode == 0
    result = lint("nb.ipynb", "--require-parameters")
    assert result.returncode == 1
    assert "nb.ipynb: KL206 error no cell is tagged 'parameters'" in result.stdout
    write(tmp_path / "ok.ipynb", [("x = 1", ["parameters"])])
    assert lint("ok.ipynb", "--require-parameters").returncode == 0


def test_sarif_to_a_file_masks_secrets(lint: LintCli, tmp_path: Path) -> None:
    write(tmp_path / "nb.ipynb", [f"key = '{AWS}'"])
    result = lint("nb.ipynb", "--format", "sarif", "-o", "report.sarif")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Found 1 problem")
    text = (tmp_path / "report.sarif").read_text()
    sarif = json.loads(text)
    assert sarif["version"] == "2.1.0"
    assert sarif["runs"][0]["results"][0]["ruleId"] == "KL301"
    assert AWS not in text and AWS not in result.stderr


def test_list_rules(lint: LintCli) -> None:
    result = lint("--list-rules")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].startswith("KL001  error")
    assert "KL201  warning  large-output" in result.stdout
    assert "max_output_kb=500" in result.stdout


def test_secrets_built_from_pieces_are_found_and_masked(lint: LintCli, tmp_path: Path) -> None:
    password = _glue("Vx9mQ2", "pLr7wZk")
    write(
        tmp_path / "nb.ipynb",
        [
            "%matplotlib inline\n"
            f'key = "\\x{ord(AWS[0]):02x}{AWS[1:4]}" + "{AWS[4:]}"\n'
            f"conn = connect(host='db.acme.io', password={password[:5]!r} + {password[5:]!r})",
            "import os\nconn = connect(host='db', password=os.environ['DB_PASSWORD'])",
        ],
    )
    result = lint("nb.ipynb", "--select", "KL3")
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stdout.splitlines() if " KL301 " in line]
    assert [line.split(" KL301 ")[0] for line in lines] == ["nb.ipynb:0:2:7:", "nb.ipynb:0:3:44:"]
    assert "AWS access key id in the source (built from string literals): AKIA" in lines[0]
    assert lines[1].endswith("password passed as password= in the source: " + "*" * len(password))
    for fmt in ("json", "sarif"):
        text = lint("nb.ipynb", "--select", "KL3", "--format", fmt).stdout
        assert AWS not in text and AWS[4:] not in text and password not in text
        assert password[:5] not in text and password[5:] not in text
