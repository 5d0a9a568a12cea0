"""The public lint API: the declared surface, the run gate, file discovery, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from lintcorpus import make_corpus

from kiln.errors import NotebookNotFound
from kiln.lint import (
    RULES,
    Finding,
    LintConfig,
    LintReport,
    errors_for_run_gate,
    lint_notebook,
    lint_paths,
)

from kilntest import build_notebook

corpus = make_corpus()


def test_rule_table() -> None:
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    families = {"KL0": "general", "KL1": "reproducibility", "KL2": "production", "KL3": "security"}
    for rule in RULES:
        assert rule.category == families[rule.id[:3]]
        assert rule.severity in ("error", "warning", "info")
        assert rule.summary and rule.hint and rule.name


def test_lint_notebook_takes_a_notebook_node() -> None:
    nb = build_notebook(["print(later)", "later = 1"])
    (finding,) = lint_notebook(nb, "nb.ipynb", config=LintConfig())
    assert isinstance(finding, Finding)
    assert (finding.rule, finding.cell, finding.line, finding.column) == ("KL104", 0, 1, 7)
    assert finding.location() == "nb.ipynb:0:1:7"


def test_run_gate_blocks_errors_only_as_configured() -> None:
    nb = build_notebook([f"key = '{corpus.AWS_ID}'", "print(missing)", "!pip install x"])
    blocking = errors_for_run_gate(nb, "nb.ipynb", LintConfig())
    assert {f.rule for f in blocking} == {"KL301", "KL104"}  # KL205 is only a warning
    ignored = LintConfig().with_overrides(ignore=["KL301"])
    assert {f.rule for f in errors_for_run_gate(nb, "nb.ipynb", ignored)} == {"KL104"}
    relaxed = LintConfig().with_overrides(severity={"KL104": "warning", "KL301": "info"})
    assert errors_for_run_gate(nb, "nb.ipynb", relaxed) == []


def test_noqa_tags() -> None:
    nb = build_notebook(
        [
            (f"print('{corpus.AWS_ID}', missing)", ["kiln-noqa:KL3"]),
            (f"print('{corpus.AWS_ID}', missing)", ["kiln-noqa:KL104 KL301"]),
            (f"print('{corpus.AWS_ID}', missing)", ["kiln-noqa"]),
            (f"print('{corpus.AWS_ID}', missing)", ["kiln-noqa:KL104", "kiln-noqa:KL301"]),
        ]
    )
    found = {(f.rule, f.cell) for f in lint_notebook(nb, "nb.ipynb", config=LintConfig())}
    assert found == {("KL104", 0)}


def test_report_exit_code() -> None:
    def finding(severity: str) -> Finding:
        return Finding("a.ipynb", 0, 1, 1, "KL104", severity, "m", "h")  # type: ignore[arg-type]

    assert LintReport([]).exit_code == 0
    assert LintReport([finding("warning"), finding("info")]).exit_code == 0
    assert LintReport([finding("warning"), finding("error")]).exit_code == 1


def _write(path: Path, cells: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(cells), path)
    return path


def test_discovery_skips_checkpoints_state_and_hidden_folders(tmp_path: Path) -> None:
    good = _write(tmp_path / "a" / "report.ipynb", ["x = 1"])
    _write(tmp_path / "a" / ".ipynb_checkpoints" / "report-checkpoint.ipynb", ["print(y)"])
    _write(tmp_path / ".kiln" / "runs" / "r1" / "input.ipynb", ["print(y)"])
    _write(tmp_path / ".git" / "x.ipynb", ["print(y)"])
    _write(tmp_path / "venv" / "lib" / "pkg" / "demo.ipynb", ["print(y)"])
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "notes.txt").write_text("not a notebook")
    report = lint_paths([tmp_path, good], config=LintConfig())
    assert list(report.files) == [str(good)]
    assert report.findings == []


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NotebookNotFound, match="no such file or folder"):
        lint_paths([tmp_path / "nope.ipynb"], config=LintConfig())


def test_unreadable_file_is_a_finding_and_the_rest_is_linted(tmp_path: Path) -> None:
    (tmp_path / "bad.ipynb").write_text('{"cells": [')
    _write(tmp_path / "good.ipynb", ["print(missing)"])
    report = lint_paths([tmp_path], config=LintConfig())
    assert [(f.rule, Path(f.path).name) for f in report.findings] == [
        ("KL001", "bad.ipynb"),
        ("KL104", "good.ipynb"),
    ]
    assert "not valid JSON" in report.findings[0].message


def test_nbformat_v3_notebooks_are_linted(tmp_path: Path) -> None:
    v3 = {
        "nbformat": 3,
        "nbformat_minor": 0,
        "metadata": {"name": "old"},
        "worksheets": [
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "input": "print(missing)",
                        "language": "python",
                        "outputs": [],
                        "prompt_number": 1,
                    }
                ]
            }
        ],
    }
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(v3))
    (finding,) = lint_paths([path], config=LintConfig()).findings
    assert (finding.rule, finding.cell) == ("KL104", 0)


def test_worker_processes_give_the_same_report(tmp_path: Path) -> None:
    from kiln.lint import engine

    if not engine._can_fork():
        pytest.skip("forking workers needs Linux and a single-threaded process")
    for n in range(engine.PARALLEL_MIN_FILES + 6):
        cells = [f"print(v{n})", f"key = '{corpus.AWS_ID}'" if n % 3 == 0 else "x = 1"]
        _write(tmp_path / f"d{n % 4}" / f"nb{n:03d}.ipynb", cells)
    serial = lint_paths([tmp_path], config=LintConfig(), jobs=1)
    parallel = lint_paths([tmp_path], config=LintConfig(), jobs=2)
    assert parallel.findings == serial.findings
    assert parallel.files == serial.files
    assert len(serial.findings) == engine.PARALLEL_MIN_FILES + 6 + 24


def test_a_value_shown_several_ways_is_reported_once_per_output() -> None:
    email, key = corpus.EMAIL, corpus.AWS_ID
    frame = corpus.data(
        {"text/plain": f"0  {email}  {key}", "text/html": f"<td>{email}</td><td>{key}</td>"},
        count=1,
    )
    nb = {"cells": [corpus.code("df = load()\ndf", frame, count=1)], "metadata": {}}
    found = [(f.rule, f.cell) for f in lint_notebook(nb, "nb.ipynb", config=LintConfig())]
    assert sorted(found) == [("KL104", 0), ("KL302", 0), ("KL305", 0)]
