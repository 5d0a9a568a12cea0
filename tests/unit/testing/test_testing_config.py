"""kiln.yaml's ``tests`` and ``verify`` sections, and parameter sets in notebook metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from kiln.errors import UsageError
from kiln.testing import parameter_sets
from kiln.testing.config import set_id, verify_settings


def write_nb(path: Path, tests: Any = None) -> Path:
    meta: dict[str, Any] = {}
    if tests is not None:
        meta["kiln"] = {"tests": tests}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")], metadata=meta), path)
    return path


def ids_and_values(sets: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(s.id, s.values) for s in sets]


def test_no_sets_declared(tmp_path: Path) -> None:
    assert parameter_sets(write_nb(tmp_path / "nb.ipynb")) is None


def test_sets_from_kiln_yaml_list_and_mapping_with_globs(tmp_path: Path) -> None:
    (tmp_path / "kiln.yaml").write_text(
        "tests:\n"
        "  notebooks/report.ipynb:\n"
        "    - {region: EU}\n"
        "    - {region: US, n: 3, ratio: 0.5}\n"
        "    - {}\n"
        "  notebooks/daily-*.ipynb:\n"
        "    europe: {region: EU}\n"
        "    world:\n",
        encoding="utf-8",
    )
    report = write_nb(tmp_path / "notebooks" / "report.ipynb")
    assert ids_and_values(parameter_sets(report)) == [
        ("region=EU", {"region": "EU"}),
        ("region=US,n=3,ratio=0.5", {"region": "US", "n": 3, "ratio": 0.5}),
        ("defaults", {}),
    ]
    daily = write_nb(tmp_path / "notebooks" / "daily-1.ipynb")
    assert ids_and_values(parameter_sets(daily)) == [("europe", {"region": "EU"}), ("world", {})]
    assert parameter_sets(write_nb(tmp_path / "notebooks" / "other.ipynb")) is None


def test_sets_from_notebook_metadata_and_kiln_yaml_wins(tmp_path: Path) -> None:
    nb = write_nb(tmp_path / "nb.ipynb", tests=[{"region": "EU"}, {"region": "EU"}])
    assert [s.id for s in parameter_sets(nb) or []] == ["region=EU", "region=EU#2"]
    (tmp_path / "kiln.yaml").write_text("tests:\n  nb.ipynb: [{region: US}]\n", encoding="utf-8")
    assert ids_and_values(parameter_sets(nb)) == [("region=US", {"region": "US"})]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("tests: [a]\n", "kiln.yaml:1:1: tests: expected a mapping; got a list"),
        ("tests:\n  nb.ipynb: 3\n", r'kiln.yaml:2:3: tests\["nb.ipynb"\]: expected a list or a'),
        ("tests:\n  nb.ipynb: [[1]]\n", r'kiln.yaml:2:14: tests\["nb.ipynb"\]\[0\]: expected a'),
        ("verify: {ignor: [x]}\n", "verify.ignor: unknown key 'ignor'; did you mean 'ignore'"),
        ("verify: {strict_images: maybe}\n", "verify.strict_images: expected true or false"),
        ("verify: {ignore: [{pattern: x}]}\n", r"verify.ignore\[0\].pattern: unknown key"),
        ("verify: [\n", "kiln.yaml:2:1: invalid YAML"),
    ],
    ids=[
        "tests-not-mapping",
        "sets-not-list",
        "set-not-mapping",
        "unknown",
        "bool",
        "entry",
        "yaml",
    ],
)
def test_bad_project_file_is_a_usage_error(tmp_path: Path, yaml_text: str, message: str) -> None:
    (tmp_path / "kiln.yaml").write_text(yaml_text, encoding="utf-8")
    nb = write_nb(tmp_path / "nb.ipynb")
    with pytest.raises(UsageError, match=message):
        parameter_sets(nb)
        verify_settings(nb)


def test_verify_settings(tmp_path: Path) -> None:
    (tmp_path / "kiln.yaml").write_text(
        "verify:\n  ignore: ['took \\d+ ms', {regex: 'run \\d+', replace: 'run N'}]\n"
        "  strict_images: true\n",
        encoding="utf-8",
    )
    settings = verify_settings(write_nb(tmp_path / "sub" / "nb.ipynb"))
    assert settings.ignore == (r"took \d+ ms", (r"run \d+", "run N"))
    assert settings.strict_images is True


def test_set_ids_are_readable_and_bounded() -> None:
    assert set_id({"region": "EU", "n": 3, "flags": [1, 2]}) == "region=EU,n=3,flags=[1, 2]"
    assert len(set_id({"text": "x" * 200})) == 60
