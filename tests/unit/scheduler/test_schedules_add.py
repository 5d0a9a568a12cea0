"""`kiln schedules add|remove` edit kiln.yaml as text: everything else in the file (comments,
blank lines, order, flow style) stays byte for byte; the result is checked as the scheduler
loads it before it is written, and a refused change leaves the file untouched."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from kiln.errors import KilnError
from kiln.project import load_project
from kiln.scheduler.edit import add_schedule, remove_schedule, schedule_body
from kiln.scheduler.model import load_schedules

from kilntest import build_notebook

ORIGINAL = """\
# the project
run: {timeout: 10m}   # a comment kept

schedules:
  # the first one
  first:
      notebook: nb.ipynb
      cron: "@daily"

# pipelines below
pipelines:
  etl:
    tasks:
      a: {notebook: nb.ipynb}
smtp: {host: 127.0.0.1, port: 2525, from: kiln@example.com}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    nbformat.write(build_notebook([("day = ''\nn = 1", ["parameters"]), "print(day)"]),
                   tmp_path / "nb.ipynb")  # fmt: skip
    (tmp_path / "kiln.yaml").write_text(ORIGINAL)
    return tmp_path


def _body(**kwargs: object) -> dict[str, object]:
    base: dict[str, object] = {"notebook": "nb.ipynb", "pipeline": None, "cron": "0 6 * * 1-5"}
    base.update(kwargs)
    return schedule_body(**base)  # type: ignore[arg-type]


def test_add_keeps_the_file_and_loads_as_given(root: Path) -> None:
    body = _body(timezone="Europe/Berlin", parameters={"day": "{{ yesterday }}", "n": "3"},
                 retries=2, email=["a@example.com"], on="failure")  # fmt: skip
    add_schedule(root, "daily-sales", body)
    text = (root / "kiln.yaml").read_text()
    # the original lines all stay, in order; the new block sits at the end of the section
    head, tail = ORIGINAL.split("\n# pipelines below\n")
    assert text.startswith(head.rstrip("\n") + "\n  daily-sales:\n")
    assert text.endswith("\n# pipelines below\n" + tail)
    schedules = load_schedules(load_project(root))
    section = schedules["daily-sales"].section
    assert section.cron == "0 6 * * 1-5" and section.timezone == "Europe/Berlin"
    assert section.parameters == {"day": "{{ yesterday }}", "n": 3}  # typed by the notebook
    assert section.retries == 2
    assert section.notify is not None and section.notify.email is not None
    assert section.notify.email.recipients == ["a@example.com"]
    assert section.notify.email.on == "failure"
    assert list(schedules) == ["first", "daily-sales"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"cron": "61 6 * * *"}, "is not a valid cron expression"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"notebook": "missing.ipynb"}, "missing.ipynb does not exist"),
        ({"parameters": {"nope": "1"}}, "unknown parameter 'nope'"),
        ({"parameters": {"n": "many"}}, "expects int, got 'many'"),
        ({"parameters": {"day": "{{ yesterdy }}"}}, "'yesterdy' is undefined"),
        ({"notebook": None, "pipeline": "nope"}, "no pipeline 'nope'"),
        ({"notebook": None, "pipeline": "etl", "parameters": {"n": "1"}}, "takes no parameters"),
    ],
)
def test_a_refused_schedule_leaves_the_file_untouched(
    root: Path, body: dict[str, object], message: str
) -> None:
    with pytest.raises(KilnError, match="schedule s2") as caught:
        add_schedule(root, "s2", _body(**body))
    assert message in str(caught.value) and caught.value.exit_code == 2
    assert (root / "kiln.yaml").read_text() == ORIGINAL
    assert [p.name for p in root.iterdir() if p.name.startswith(".kiln.yaml")] == []


def test_an_existing_name_is_refused(root: Path) -> None:
    with pytest.raises(KilnError, match=r"kiln\.yaml:6: schedule 'first' exists already") as e:
        add_schedule(root, "first", _body())
    assert e.value.exit_code == 2 and (root / "kiln.yaml").read_text() == ORIGINAL


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("run: {timeout: 1m}", "run: {timeout: 1m}\nschedules:\n  s2:\n"),
        ("schedules: {}  # none yet\n", "schedules:\n  s2:\n"),
        ("", "schedules:\n  s2:\n"),
    ],
)
def test_a_new_section(root: Path, original: str, expected: str) -> None:
    (root / "kiln.yaml").write_text(original)
    add_schedule(root, "s2", _body())
    assert (root / "kiln.yaml").read_text().startswith(expected)
    assert list(load_schedules(load_project(root))) == ["s2"]


def test_a_project_without_kiln_yaml_gets_one(tmp_path: Path, root: Path) -> None:
    (root / "kiln.yaml").unlink()
    add_schedule(root, "s2", _body())
    assert (root / "kiln.yaml").read_text().startswith("schedules:\n  s2:\n    notebook: nb")
    (root / "kiln.yaml").unlink()
    with pytest.raises(KilnError):
        add_schedule(root, "s2", _body(cron="nope"))
    assert not (root / "kiln.yaml").exists()


def test_a_one_line_section_is_refused(root: Path) -> None:
    flow = "schedules: {first: {notebook: nb.ipynb, cron: '@daily'}}\n"
    (root / "kiln.yaml").write_text(flow)
    with pytest.raises(KilnError, match="written on one line"):
        add_schedule(root, "s2", _body())
    assert (root / "kiln.yaml").read_text() == flow


def test_remove_takes_only_the_entry(root: Path) -> None:
    add_schedule(root, "second", _body(email=["a@example.com"]))
    remove_schedule(root, "second")
    assert (root / "kiln.yaml").read_text() == ORIGINAL
    remove_schedule(root, "first")
    text = (root / "kiln.yaml").read_text()
    assert "first" not in text and "schedules: {}\n" in text and "# a comment kept" in text
    assert load_project(root).config.schedules == {}
    with pytest.raises(KilnError, match="no schedule 'first'"):
        remove_schedule(root, "first")
