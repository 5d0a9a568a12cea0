"""Lint settings: kiln.yaml found by walking up, layered precedence, validation, scheduling."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kiln.errors import UsageError
from kiln.lint import RULES, LintConfig, load_lint_config
from kiln.project import find_project_file

ALL = {rule.id for rule in RULES}


def write_project(folder: Path, data: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kiln.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_enable_every_rule() -> None:
    config = LintConfig()
    assert config.enabled_rules() == ALL
    assert config.severity_of("KL202") == "warning"
    assert config.option("KL201", "max_output_kb") == 500


def test_found_by_walking_up(tmp_path: Path) -> None:
    project = write_project(tmp_path, {"lint": {"ignore": ["KL2"]}})
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_project_file(deep) == project
    config = load_lint_config(deep, environ={})
    assert config.project_file == str(project)
    assert not any(r.startswith("KL2") for r in config.enabled_rules())


def test_no_project_file(tmp_path: Path) -> None:
    assert load_lint_config(tmp_path, environ={}).enabled_rules() == ALL


def test_select_prefixes_and_ignore(tmp_path: Path) -> None:
    write_project(tmp_path, {"lint": {"select": ["KL1", "KL301"], "ignore": ["KL102"]}})
    enabled = load_lint_config(tmp_path, environ={}).enabled_rules()
    assert "KL301" in enabled and "KL104" in enabled
    assert "KL102" not in enabled and "KL302" not in enabled and "KL201" not in enabled


def test_precedence_cli_over_environment_over_file(tmp_path: Path) -> None:
    write_project(tmp_path, {"lint": {"ignore": ["KL1"]}})
    env = {"KILN_LINT_IGNORE": "KL3"}
    config = load_lint_config(tmp_path, environ=env)
    assert "KL104" not in config.enabled_rules() and "KL301" not in config.enabled_rules()
    # the command line's --select replaces what the layers below enabled
    cli = config.with_overrides(select=["KL104", "KL301"])
    assert cli.enabled_rules() == {"KL104", "KL301"}
    # --ignore alone only removes
    assert "KL205" not in config.with_overrides(ignore=["KL205"]).enabled_rules()


def test_severity_and_options(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        {
            "lint": {
                "severity": {"KL202": "error", "KL1": "info"},
                "rules": {"KL201": {"max_output_kb": 2000}, "KL305": {"allow_domains": "a.com"}},
            }
        },
    )
    config = load_lint_config(tmp_path, environ={})
    assert config.severity_of("KL202") == "error"
    assert config.severity_of("KL104") == "info"
    assert config.option("KL201", "max_output_kb") == 2000
    assert config.option("KL305", "allow_domains") == ("a.com",)


@pytest.mark.parametrize(
    ("lint", "message"),
    [
        ({"select": ["KL999"]}, "unknown rule or prefix 'KL999'"),
        ({"ignore": "XX"}, "unknown rule or prefix 'XX'"),
        ({"severity": {"KL104": "fatal"}}, r":3:5: lint.severity.KL104: expected one of error"),
        ({"severity": {"KL999": "error"}}, "unknown rule 'KL999'"),
        ({"rules": {"KL201": {"max_output_mb": 1}}}, "unknown option 'max_output_mb'"),
        ({"rules": {"KL201": {"max_output_kb": "big"}}}, "must be a whole number"),
        ({"rules": {"KL999": {}}}, "unknown rule 'KL999'"),
        ({"selekt": ["KL1"]}, "lint.selekt: unknown key 'selekt'; did you mean 'select'"),
        ({"require_parameters": "yes"}, "lint.require_parameters: expected true or false"),
    ],
)
def test_bad_settings_are_usage_errors(tmp_path: Path, lint: object, message: str) -> None:
    write_project(tmp_path, {"lint": lint})
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_lint_config(tmp_path, environ={})


def test_bad_yaml_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "kiln.yaml").write_text("lint: [unclosed\n")
    with pytest.raises(UsageError, match=r"kiln.yaml:2:1: invalid YAML"):
        load_lint_config(tmp_path, environ={})


def test_unknown_cli_code_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="command line: select: unknown rule or prefix 'KLX'"):
        LintConfig().with_overrides(select=["KLX"])


def test_require_parameters_applies_to_every_notebook(tmp_path: Path) -> None:
    write_project(tmp_path, {"lint": {"require_parameters": True}})
    config = load_lint_config(tmp_path, environ={})
    assert config.parameters_required_by(tmp_path / "adhoc.ipynb")
    assert load_lint_config(tmp_path / "elsewhere", environ={}).require_parameters


def test_exclude_globs(tmp_path: Path) -> None:
    write_project(tmp_path, {"lint": {"exclude": ["scratch/*"]}})
    config = load_lint_config(tmp_path, environ={})
    assert config.excluded(tmp_path / "scratch" / "a.ipynb")
    assert not config.excluded(tmp_path / "reports" / "a.ipynb")


def test_pipeline_notebooks_need_a_parameters_cell(tmp_path: Path) -> None:
    """KL206 applies to the notebooks that pipeline tasks run, and only to them."""
    import nbformat

    from kiln.lint import lint_notebook

    from kilntest import build_notebook

    for name in ("task.ipynb", "adhoc.ipynb"):
        nbformat.write(build_notebook(["print(1)"]), tmp_path / name)
    write_project(
        tmp_path,
        {"pipelines": {"daily": {"tasks": {"t": {"notebook": "task.ipynb"}}}}},
    )
    config = load_lint_config(tmp_path, environ={})
    why = config.parameters_required_by(tmp_path / "task.ipynb")
    assert why is not None and "pipeline" in why
    assert config.parameters_required_by(tmp_path / "adhoc.ipynb") is None
    nb = build_notebook(["print(1)"])
    task = [f.rule for f in lint_notebook(nb, tmp_path / "task.ipynb", config=config)]
    adhoc = [f.rule for f in lint_notebook(nb, tmp_path / "adhoc.ipynb", config=config)]
    assert "KL206" in task and "KL206" not in adhoc
