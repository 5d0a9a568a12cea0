"""Builds on the fake engine: order, recording, every rule that makes a task up to date or
not (one test per kind of change), failure isolation, resume, grids, templates, retries."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from pipelinekit import TASK_CELLS, PipelineProject

from kiln.errors import UsageError
from kiln.pipeline.result import TaskRetrying
from kiln.store import RunStore
from kiln.store.builds import BuildStore

CHAIN = """
pipelines:
  daily:
    tasks:
      extract: {notebook: extract.ipynb, parameters: {n: 100}, products: {data: out/raw.json}}
      clean:   {notebook: clean.ipynb, upstream: [extract], products: {data: out/clean.json}}
      report:  {notebook: report.ipynb, upstream: [clean], products: {data: out/report.json}}
      other:   {notebook: other.ipynb, products: {data: out/other.json}}
"""


@pytest.fixture
def chain(project: PipelineProject) -> PipelineProject:
    for name in ("extract", "clean", "report", "other"):
        project.notebook(f"{name}.ipynb")
    project.config(CHAIN)
    build = project.build()
    assert build.ok and build.ran == ["extract", "clean", "report", "other"]
    return project


def edit(path: Path, index: int, **changes: object) -> None:
    nb = nbformat.read(path, as_version=4)
    for key, value in changes.items():
        if key == "append":
            nb.cells[index].source += str(value)
        elif key == "tags":
            nb.cells[index].metadata["tags"] = value
        else:
            nb.cells[index][key] = value
    nbformat.write(nb, path)


def test_tasks_run_in_order_and_the_build_is_recorded(chain: PipelineProject) -> None:
    root = chain.root.resolve()
    # upstream and product arrive with absolute paths, as ploomber users know them
    clean = chain.read("out/clean.json")
    assert clean["got"] == [{"n": 100, "region": "EU", "got": []}]
    with RunStore(chain.home) as store:
        builds = BuildStore(store)
        build = builds.last_build(str(chain.root.resolve()), "daily")
        assert build is not None and build.state == "succeeded"
        assert [t.state for t in build.tasks.values()] == ["succeeded"] * 4
        runs = {t.run_id: store.get_run_exact(t.run_id) for t in build.tasks.values() if t.run_id}
        assert {run.build_id for run in runs.values()} == {build.id}
        # the build is a trigger: its tags make the runs filterable and go to MLflow
        assert {(r.tags["kiln.build"], r.tags["kiln.task"]) for r in runs.values()} == {
            (build.id, name) for name in build.tasks
        }
        clean_run = runs[build.tasks["clean"].run_id or ""]
        assert clean_run.records["upstream"] == {"extract": {"data": str(root / "out/raw.json")}}
        assert clean_run.records["product"] == {"data": str(root / "out/clean.json")}
        extract = runs[build.tasks["extract"].run_id or ""]
        assert extract.ended_at is not None and clean_run.started_at is not None
        assert extract.ended_at <= clean_run.started_at


def test_an_unchanged_pipeline_runs_nothing(chain: PipelineProject) -> None:
    build = chain.build()
    assert build.ok and build.ran == []
    assert [t.reason for t in build.tasks.values()] == ["up to date"] * 4


def test_code_change_reruns_the_task_and_its_descendants_only(chain: PipelineProject) -> None:
    edit(chain.root / "extract.ipynb", 1, append="\ngot = got + ['v2']")
    assert chain.reasons()["extract"] == "code changed in cell 1"
    assert chain.reasons()["clean"] == "upstream extract is outdated"
    build = chain.build()
    assert build.ran == ["extract", "clean", "report"]
    assert build.tasks["clean"].reason == "upstream extract re-ran"
    assert build.tasks["other"].state == "up_to_date"


def test_a_rerun_that_writes_the_same_products_stops_there(chain: PipelineProject) -> None:
    edit(chain.root / "extract.ipynb", 2, append="\n# a comment changes no result")
    build = chain.build()
    assert build.ran == ["extract"]
    assert build.tasks["clean"].state == "up_to_date"


def test_outputs_counts_and_metadata_edits_rerun_nothing(chain: PipelineProject) -> None:
    path = chain.root / "clean.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="old\n")]
    nb.cells[1].execution_count = 7
    nb.cells[1].metadata["collapsed"] = True
    nb.metadata["widgets"] = {"state": {}}
    nbformat.write(nb, path)
    assert chain.reasons()["clean"] == "up to date"
    assert chain.build().ran == []


def test_tag_change_reruns(chain: PipelineProject) -> None:
    edit(chain.root / "report.ipynb", 3, tags=["skip-execution"])
    assert chain.reasons()["report"] == "code changed in cell 3"
    assert chain.build().ran == ["report"]


def test_parameter_change_reruns(chain: PipelineProject) -> None:
    chain.config(CHAIN.replace("{n: 100}", "{n: 2000}"))
    assert chain.reasons()["extract"] == "parameters changed: n 100 -> 2000"
    assert chain.build().ran == ["extract", "clean", "report"]


def test_declared_input_change_reruns(project: PipelineProject) -> None:
    project.notebook("a.ipynb")
    data = project.root / "data.csv"
    data.write_text("1,2\n")
    project.config(
        """
        pipelines:
          p: {tasks: {a: {notebook: a.ipynb, inputs: [data.csv], products: {o: o.json}}}}
        """
    )
    assert project.build().ran == ["a"]
    assert project.build().ran == []
    os.utime(data, ns=(0, 0))  # touched, same content: still up to date
    assert project.build().ran == []
    data.write_text("1,3\n")
    assert project.reasons()["a"] == "input data.csv changed"
    assert project.build().ran == ["a"]
    data.unlink()
    assert project.reasons()["a"] == "input data.csv missing"


def test_deleted_product_is_rebuilt(chain: PipelineProject) -> None:
    (chain.root / "out/clean.json").unlink()
    assert chain.reasons()["clean"] == "product out/clean.json missing"
    assert chain.reasons()["report"] == "upstream clean is outdated"
    # the rebuilt product has the same content: report stays up to date
    assert chain.build().ran == ["clean"]


def test_product_edited_by_hand_is_rebuilt(chain: PipelineProject) -> None:
    (chain.root / "out/report.json").write_text('{"edited": true}')
    assert chain.reasons()["report"] == "product out/report.json changed since the task wrote it"
    assert chain.build().ran == ["report"]
    assert "edited" not in chain.read("out/report.json")


def test_engine_change_reruns(chain: PipelineProject) -> None:
    chain.config(
        CHAIN.replace(
            "products: {data: out/other.json}", "engine: kernel, products: {data: out/other.json}"
        )
    )
    assert chain.reasons()["other"] == "engine changed: auto -> kernel"
    assert chain.build().ran == ["other"]


def test_kernel_change_reruns(chain: PipelineProject) -> None:
    path = chain.root / "other.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"]["name"] = "python3-other"
    nbformat.write(nb, path)
    assert chain.reasons()["other"] == "kernel changed: python3 -> python3-other"


def test_a_failure_stops_its_descendants_never_other_branches(chain: PipelineProject) -> None:
    edit(chain.root / "clean.ipynb", 1, append="\nraise ValueError('bad data')")
    edit(chain.root / "other.ipynb", 2, append="\n        f.write(' ')")
    build = chain.build()
    assert not build.ok and build.state == "failed"
    states = {name: r.state for name, r in build.tasks.items()}
    assert states == {
        "extract": "up_to_date",
        "clean": "failed",
        "report": "blocked",
        "other": "succeeded",
    }
    # the cell's index in the run's notebook (the injected parameters are a cell of it)
    assert build.tasks["clean"].reason == "cell 2 raised ValueError: bad data"
    assert build.tasks["report"].reason == "upstream clean failed"
    assert build.failed == ["clean"]


def test_resume_runs_only_what_failed_or_never_ran(chain: PipelineProject) -> None:
    edit(chain.root / "clean.ipynb", 1, append="\nraise ValueError('bad data')")
    edit(chain.root / "extract.ipynb", 2, append="\n        f.write(' ')")
    assert chain.build().ran == ["extract"]
    edit(chain.root / "clean.ipynb", 1, source=TASK_CELLS[1])
    plan = chain.status(resume=True)
    assert [(t.name, t.action) for t in plan.tasks] == [
        ("extract", "done"),
        ("clean", "run"),
        ("report", "run"),
        ("other", "done"),
    ]
    build = chain.build(resume=True)
    assert build.ok and build.ran == ["clean", "report"]
    assert build.tasks["extract"].reason.startswith("done in build ")
    fresh = PipelineProject(chain.root.parent / "fresh")
    fresh.notebook("a.ipynb")
    fresh.config("pipelines: {p: {tasks: {a: {notebook: a.ipynb}}}}")
    with pytest.raises(UsageError, match="nothing to resume: pipeline p was never built"):
        fresh.build(resume=True)


def test_grid_fans_out_and_in(project: PipelineProject) -> None:
    for name in ("gen", "clean", "report"):
        project.notebook(f"{name}.ipynb")
    project.config(
        """
        pipelines:
          p:
            tasks:
              gen: {notebook: gen.ipynb, products: {data: data/raw.json}}
              clean:
                notebook: clean.ipynb
                grid: {region: [EU, US]}
                inputs: [data/raw.json]
                products: {data: "out/{{params.region}}/clean.json"}
              report: {notebook: report.ipynb, upstream: [clean], products: {data: out/r.json}}
        """
    )
    build = project.build(jobs=2)
    assert build.ran == ["gen", "clean[region=EU]", "clean[region=US]", "report"]
    root = project.root.resolve()
    assert project.read("out/US/clean.json")["region"] == "US"
    report = build.tasks["report"].run
    assert report is not None
    assert report.records["upstream"] == {
        "clean": {
            "clean[region=EU]": {"data": str(root / "out/EU/clean.json")},
            "clean[region=US]": {"data": str(root / "out/US/clean.json")},
        }
    }
    assert [g["region"] for g in project.read("out/r.json")["got"]] == ["EU", "US"]
    assert project.build(targets=("clean[region=US]",)).tasks.keys() == {
        "gen",
        "clean[region=US]",
    }


def test_templated_products_follow_the_parameters(project: PipelineProject) -> None:
    project.notebook("a.ipynb")
    config = """
        pipelines:
          p:
            tasks:
              a:
                notebook: a.ipynb
                parameters: {region: DAY}
                products: {data: "data/{{params.region}}/a.json"}
        """
    project.config(config.replace("DAY", "2026-11-29"))
    project.build()
    assert project.read("data/2026-11-29/a.json")["region"] == "2026-11-29"
    project.config(config.replace("DAY", "2026-11-30"))
    assert project.reasons()["a"].startswith("parameters changed: region")
    project.build()
    assert (project.root / "data/2026-11-30/a.json").is_file()


def test_upstream_and_product_only_where_declared(project: PipelineProject) -> None:
    project.notebook("a.ipynb")
    project.notebook(
        "plain.ipynb",
        [("n = 1", ["parameters"]), "import kiln\nkiln.record('names', sorted(globals()))"],
    )
    project.config(
        """
        pipelines:
          p:
            tasks:
              a: {notebook: a.ipynb, products: {data: a.json}}
              plain: {notebook: plain.ipynb, upstream: [a], parameters: {n: 2}}
        """
    )
    build = project.build()
    assert build.ok
    run = build.tasks["plain"].run
    assert run is not None and run.parameters == {"n": 2}
    assert "upstream" not in run.records["names"] and "product" not in run.records["names"]


def test_retries_with_backoff(project: PipelineProject) -> None:
    marker = project.root / "attempts"
    project.notebook(
        "flaky.ipynb",
        [
            (f"path = {str(marker)!r}", ["parameters"]),
            "import os\nwith open(path, 'a') as f:\n    f.write('x')\n"
            "if os.path.getsize(path) < 3:\n    raise RuntimeError('flaky')",
        ],
    )
    project.config(
        "pipelines: {p: {tasks: {f: {notebook: flaky.ipynb, retries: 3, retry_delay: 10ms}}}}"
    )
    build = project.build()
    result = build.tasks["f"]
    assert build.ok and result.attempts == 3
    assert [run.state for run in result.runs] == ["failed", "failed", "succeeded"]
    delays = [e.delay for e in project.events if isinstance(e, TaskRetrying)]
    assert delays == [0.01, 0.02]


def test_retries_run_out(project: PipelineProject) -> None:
    project.notebook("bad.ipynb", ["raise RuntimeError('always')"])
    project.config(
        "pipelines: {p: {tasks: {b: {notebook: bad.ipynb, retries: 1, retry_delay: 1ms}}}}"
    )
    result = project.build().tasks["b"]
    assert result.state == "failed" and len(result.runs) == 2
    assert result.reason == "cell 0 raised RuntimeError: always (after 2 attempts)"


def test_a_product_the_run_did_not_write_fails_the_task(project: PipelineProject) -> None:
    project.notebook("lazy.ipynb", ["x = 1"])
    project.config("pipelines: {p: {tasks: {l: {notebook: lazy.ipynb, products: {d: d.json}}}}}")
    result = project.build().tasks["l"]
    assert result.state == "failed"
    assert result.reason == "the run succeeded but did not write product 'd' (d.json)"
    assert project.reasons()["l"] == "never ran successfully"


def test_targets_and_force(chain: PipelineProject) -> None:
    build = chain.build(targets=("clean",), force=True)
    assert list(build.tasks) == ["extract", "clean"]
    assert build.ran == ["extract", "clean"]
    assert build.tasks["extract"].reason == "forced"


def test_hashes_are_read_once_per_size_and_time(
    chain: PipelineProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiln.pipeline import fingerprint

    old = time.time() - 60
    for path in [*chain.root.glob("*.ipynb"), *chain.root.glob("out/*.json")]:
        os.utime(path, (old, old))  # older than the racy window
    assert chain.status().outdated == []  # hashes them once, and remembers
    read: list[str] = []
    real = fingerprint._file_sha
    monkeypatch.setattr(fingerprint, "_file_sha", lambda p: read.append(p) or real(p))
    assert chain.status().outdated == []
    assert read == []
    (chain.root / "out/raw.json").write_text(json.dumps({"n": 1}))
    assert chain.reasons()["extract"] == "product out/raw.json changed since the task wrote it"
    assert read == [str(chain.root.resolve() / "out/raw.json")]


def test_the_summary_table_shows_grid_members_as_written(
    project: PipelineProject, capsys: pytest.CaptureFixture[str]
) -> None:
    from kiln.cli.build_cmd import print_build
    from kiln.cli.status_cmd import print_status

    project.notebook("a.ipynb")
    project.config(
        """
        pipelines:
          p:
            tasks:
              a: {notebook: a.ipynb, grid: {region: [EU]}, products: {d: "{{params.region}}"}}
        """
    )
    print_build(project.build())
    print_status(project.status(), as_json=False, plan=False)
    out = capsys.readouterr().out
    assert out.count("a[region=EU]") == 2  # brackets are text, not rich markup


def test_dask_warns_when_products_are_local_and_workers_remote(project: PipelineProject) -> None:
    pytest.importorskip("distributed")
    from kiln.pipeline.dask_executor import DaskExecutor

    project.notebook("a.ipynb")
    project.config(
        """
        pipelines:
          p:
            tasks:
              a: {notebook: a.ipynb, products: {data: out/a.json}}
              b: {notebook: a.ipynb, products: {data: "s3://bucket/b.json"}}
        """
    )
    with RunStore(project.home) as store:
        remote = DaskExecutor(
            store, scheduler="tcp://10.0.0.1:8786", jobs=1, pipeline=project.pipeline()
        )
        local = DaskExecutor(store, scheduler=None, jobs=1, pipeline=project.pipeline())
        (warning,) = remote.warnings()
        assert "1 product(s) or input(s) are local paths (such as a.json)" in warning
        assert local.warnings() == []  # a local cluster shares this machine's disk


def test_the_console_tells_retries_and_warnings_once(capsys: pytest.CaptureFixture[str]) -> None:
    from kiln.cli.console import BuildConsole
    from kiln.pipeline.result import BuildWarning, TaskRetrying

    console = BuildConsole(progress=False)
    console.observe(TaskRetrying("clean", 1, 2.0, "crashed: the worker died"))
    console.observe(BuildWarning("clean: using the kernel engine"))
    console.observe(BuildWarning("clean: using the kernel engine"))
    err = capsys.readouterr().err
    assert "clean: attempt 1 failed (crashed: the worker died); retrying in 2s" in err
    assert err.count("using the kernel engine") == 1
