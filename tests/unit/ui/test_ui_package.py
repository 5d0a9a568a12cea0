"""The web UI's package data and form rules, without a server."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import nbformat
import pytest

from kiln.parameters import infer_schema
from kiln.ui import forms

PAGES = (
    "base.html",
    "macros.html",
    "login.html",
    "error.html",
    "home.html",
    "notebook.html",
    "runs.html",
    "run.html",
    "run_live.html",
    "app.html",
    "admin_users.html",
    "admin_audit.html",
    "schedules.html",
    "pipelines.html",
)


def test_templates_and_static_files_are_package_data() -> None:
    root = resources.files("kiln.ui")
    for name in PAGES:
        assert root.joinpath("templates", name).is_file(), name
    for name in ("ui.css", "ui.js"):
        assert root.joinpath("static", name).is_file(), name
    pyproject = (Path(__file__).parents[3] / "pyproject.toml").read_text(encoding="utf-8")
    for pattern in ('"ui/templates/*.html"', '"ui/static/*.css"', '"ui/static/*.js"'):
        assert pattern in pyproject  # what setuptools puts in the wheel and the sdist


def test_every_template_compiles() -> None:
    from kiln.ui.web import environment

    for name in PAGES:
        environment().get_template(name)


def test_import_kiln_and_the_cli_do_not_load_the_ui() -> None:
    code = (
        "import sys, kiln, kiln.cli.main\n"
        "loaded = [m for m in sys.modules if m.startswith(('kiln.ui', 'jinja2'))]\n"
        "print(loaded)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


def _schema(source: str) -> object:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})]
    return infer_schema(nb)


CELL = (
    "from datetime import date\n"
    "from typing import Literal\n"
    "region: Literal['EU', 'US'] = 'EU'  # the market\n"
    "n: int = 5\n"
    "day: date = '2024-01-31'\n"
    "scale: float = 1.5\n"
    "verbose: bool = False\n"
    "tags: list = ['a']\n"
    "level: Literal[1, 2] | None = None\n"
    "who: str\n"
    "when = today()\n"
)


def test_each_type_gets_its_input() -> None:
    fields = {f.name: f for f in forms.fields(_schema(CELL), defaults={"n": 7})}  # type: ignore[arg-type]
    assert fields["region"].widget == "select" and fields["region"].options == ["EU", "US"]
    assert fields["region"].help == "the market" and fields["region"].value == "EU"
    assert fields["n"].widget == "number" and fields["n"].value == "7"  # kiln.yaml's default
    assert fields["day"].widget == "date" and fields["day"].value == "2024-01-31"
    assert fields["scale"].step == "any"
    assert fields["verbose"].widget == "checkbox" and not fields["verbose"].checked
    assert fields["tags"].widget == "textarea" and fields["tags"].value == '["a"]'
    assert fields["level"].optional and fields["level"].value == ""
    assert fields["who"].required and fields["who"].value == ""
    assert fields["when"].value == "" and fields["when"].placeholder == "default: today()"


def test_a_form_is_read_by_the_cli_rules_field_by_field() -> None:
    schema = _schema(CELL)
    values, errors = forms.read(
        schema,  # type: ignore[arg-type]
        {"region": "FR", "n": "x", "day": "2024-02-30", "tags": "[1", "level": "", "who": ""},
    )
    assert set(errors) == {"region", "n", "day", "tags", "who"}
    assert "expects one of 'EU', 'US'" in errors["region"]
    assert "expects int" in errors["n"] and "YYYY-MM-DD" in errors["day"]
    assert errors["who"] == "who is required"
    values, errors = forms.read(
        schema,  # type: ignore[arg-type]
        {
            "region": "US",
            "n": "3",
            "day": "2024-02-29",
            "verbose": "true",
            "tags": "[1, 2]",
            "level": "",
            "who": "me",
            "scale": "",
        },
    )
    assert errors == {}
    assert values == {
        "region": "US",
        "n": "3",
        "day": "2024-02-29",
        "verbose": "true",
        "tags": "[1, 2]",
        "level": None,  # an optional select left on None
        "who": "me",
    }  # scale left empty: the cell's default
    assert forms.split(values)[0] == {"level": None}


@pytest.mark.parametrize(
    ("value", "text"), [(None, ""), (True, "true"), ([1], "[1]"), (2.5, "2.5")]
)
def test_values_as_text(value: object, text: str) -> None:
    assert forms.as_text(value) == text
