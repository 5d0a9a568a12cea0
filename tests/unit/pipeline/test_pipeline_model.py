"""kiln.yaml's pipelines: tasks expanded and linked, and every mistake refused where it is
written (file, line, key), before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipelinekit import PipelineProject

from kiln.cli.main import run_main
from kiln.errors import UsageError

MINIMAL = """
pipelines:
  daily:
    tasks:
      extract: {notebook: extract.ipynb, parameters: {n: 100}, products: {data: out/raw.json}}
      clean:   {notebook: clean.ipynb, upstream: [extract], products: {data: out/clean.json}}
"""


def test_the_minimal_form(project: PipelineProject) -> None:
    project.notebook("extract.ipynb")
    project.notebook("clean.ipynb")
    project.config(MINIMAL)
    pipeline = project.pipeline()
    assert list(pipeline.tasks) == ["extract", "clean"]
    clean = pipeline.tasks["clean"]
    assert clean.upstream == {"extract": ("extract",)}
    assert clean.products == {"data": str(project.root.resolve() / "out/clean.json")}
    assert pipeline.tasks["extract"].parameters == {"n": 100}


def test_grid_members_templates_and_inferred_upstream(project: PipelineProject) -> None:
    for name in ("gen.ipynb", "clean.ipynb", "report.ipynb"):
        project.notebook(name)
    project.config(
        """
        pipelines:
          p:
            tasks:
              report:
                notebook: report.ipynb
                upstream: [clean]
                products: {data: out/report.json}
              clean:
                notebook: clean.ipynb
                grid: {region: [EU, US]}
                inputs: [data/raw.json, "data/{{params.region}}.csv"]
                products: {data: "out/{{ params.region }}/clean.json"}
              gen:
                notebook: gen.ipynb
                products: {raw: data/raw.json}
        """
    )
    pipeline = project.pipeline()
    # dependency order, not the file's
    assert list(pipeline.tasks) == ["gen", "clean[region=EU]", "clean[region=US]", "report"]
    eu = pipeline.tasks["clean[region=EU]"]
    root = project.root.resolve()
    assert eu.products == {"data": str(root / "out/EU/clean.json")}
    assert eu.parameters == {"region": "EU"}
    # an input another task makes is an upstream task; the others stay inputs
    assert eu.upstream == {"gen": ("gen",)}
    assert eu.inputs == (str(root / "data/EU.csv"),)
    assert pipeline.tasks["report"].upstream == {"clean": ("clean[region=EU]", "clean[region=US]")}
    assert pipeline.select(["clean[region=US]"]) == ["gen", "clean[region=US]"]
    assert pipeline.select(["clean"]) == ["gen", "clean[region=EU]", "clean[region=US]"]


# every mistake: (kiln.yaml, the key named, what the message says)
BAD = {
    "unknown upstream task": (
        """
        pipelines:
          daily:
            tasks:
              extract: {notebook: a.ipynb}
              clean:
                notebook: a.ipynb
                upstream: [extrct]
        """,
        8,
        "pipelines.daily.tasks.clean.upstream",
        "unknown task 'extrct'; did you mean 'extract'?",
    ),
    "cycle": (
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: a.ipynb, upstream: [c]}
              b: {notebook: a.ipynb, upstream: [a]}
              c: {notebook: a.ipynb, upstream: [b]}
        """,
        5,
        "pipelines.daily.tasks.a.upstream",
        "a cycle: a -> b -> c -> a",
    ),
    "bad template": (
        """
        pipelines:
          daily:
            tasks:
              a:
                notebook: a.ipynb
                parameters: {day: "2026-11-30"}
                products: {data: "out/{{params.dya}}/a.json"}
        """,
        8,
        "pipelines.daily.tasks.a.products.data",
        "bad template '{{params.dya}}'",
    ),
    "template that is not params.NAME": (
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: a.ipynb, products: {data: "out/{{ day }}.json"}}
        """,
        5,
        "pipelines.daily.tasks.a.products.data",
        "write {{params.NAME}}",
    ),
    "unclosed template": (
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: a.ipynb, parameters: {d: 1}, products: {data: "out/{{params.d.json"}}
        """,
        5,
        "pipelines.daily.tasks.a.products.data",
        "unclosed",
    ),
    "product claimed twice": (
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: a.ipynb, products: {data: out/x.json}}
              b:
                notebook: a.ipynb
                products:
                  copy: ./out/../out/x.json
        """,
        9,
        "pipelines.daily.tasks.b.products.copy",
        "out/x.json is also product 'data' of task a",
    ),
    "grid product not templated": (
        """
        pipelines:
          daily:
            tasks:
              a:
                notebook: a.ipynb
                grid: {region: [EU, US]}
                products: {data: out/x.json}
        """,
        8,
        "pipelines.daily.tasks.a.products.data",
        "is also product 'data' of task a[region=EU]",
    ),
    "reads its own product": (
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: a.ipynb, products: {data: x.json}, inputs: [x.json]}
        """,
        5,
        "pipelines.daily.tasks.a.inputs",
        "this task's own product 'data'",
    ),
    "missing notebook": (
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: nope.ipynb}
        """,
        5,
        "pipelines.daily.tasks.a.notebook",
        "nope.ipynb does not exist",
    ),
    "unknown key": (
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: a.ipynb, retires: 2}
        """,
        5,
        "pipelines.daily.tasks.a.retires",
        "did you mean 'retries'?",
    ),
    "bad task name": (
        """
        pipelines:
          daily:
            tasks:
              "a[1]": {notebook: a.ipynb}
        """,
        5,
        "pipelines.daily.tasks",
        "'a[1]' is not a valid task name",
    ),
    "negative retries": (
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: a.ipynb, retries: -1}
        """,
        5,
        "retries",
        "expected 0 or more",
    ),
    "bad duration": (
        """
        pipelines:
          daily:
            tasks:
              a: {notebook: a.ipynb, timeout: soon}
        """,
        5,
        "pipelines.daily.tasks.a.timeout",
        "expected a duration",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_pipeline_is_refused_where_it_is_written(
    project: PipelineProject,
    case: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text, line, key, message = BAD[case]
    project.notebook("a.ipynb")
    project.config(text)
    monkeypatch.chdir(project.root)
    for command in (["build"], ["status"], ["dag", "--format", "mermaid"]):
        assert run_main(command) == 2
        err = capsys.readouterr().err
        assert f"kiln.yaml:{line}:" in err, err
        assert key in err and message in err, err
        assert "Traceback" not in err
    assert not (project.root / ".kiln").exists()  # refused before anything was recorded


def test_choosing_the_pipeline(project: PipelineProject, tmp_path: Path) -> None:
    project.notebook("a.ipynb")
    project.config(
        """
        pipelines:
          one: {tasks: {a: {notebook: a.ipynb}}}
          two: {tasks: {a: {notebook: a.ipynb}}}
        """
    )
    with pytest.raises(UsageError, match=r"declares 2 pipelines \(one, two\): name one"):
        project.pipeline()
    with pytest.raises(UsageError, match=r"no pipeline 'tow'.*did you mean 'two'"):
        project.pipeline("tow")
    assert project.pipeline("two").name == "two"
    with pytest.raises(UsageError, match="has no task 'b'"):
        project.pipeline("one").select(["b"])


def test_config_check_checks_the_pipelines_too(
    project: PipelineProject, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project.notebook("a.ipynb")
    project.config(BAD["cycle"][0])
    monkeypatch.chdir(project.root)
    assert run_main(["config", "check"]) == 2
    assert "a cycle: a -> b -> c -> a" in capsys.readouterr().err
    project.config(MINIMAL.replace("extract.ipynb", "a.ipynb").replace("clean.ipynb", "a.ipynb"))
    assert run_main(["config", "check"]) == 0


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["build"], "build"),
        (["--home", "status", "status"], "status"),  # the value of --home is no command
        (["-q", "--color", "never", "dag", "--format", "svg"], "dag"),
        (["--help", "build"], None),  # top-level help lists every command
        (["bild"], None),  # the full parser says what the commands are
        ([], None),
    ],
)
def test_only_the_chosen_command_is_set_up(argv: list[str], command: str | None) -> None:
    from kiln.cli.main import _command_of

    assert _command_of(argv) == command
