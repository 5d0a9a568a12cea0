"""``kiln build PIPELINE --to kfp FILE --image IMAGE``: a ``kiln.yaml`` pipeline compiled to a
Kubeflow Pipelines v2 spec with the real ``kfp`` SDK (in ``~/.cache/kiln/kfp-venv``, built on
first use by pip; Kiln from ``src/``). No cluster: the spec is checked (tasks, dependencies,
parameters, artefacts, the ``kiln run`` command lines), loaded back by the SDK, and its command
lines are run here with ``kiln run`` in dependency order, the artefact paths filled in as KFP's
launcher would, so products really travel through the artefacts. Without ``kfp``, Kiln's own
environment refuses ``--to kfp`` with exit 2 and the extra to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from orchestrator_util import SRC, history, make_project, orchestrator_python, run_in

# the first run builds the venv (minutes): past the suite's 300 s per test
pytestmark = [pytest.mark.kernel, pytest.mark.timeout(1800)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline"
_ENV = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
KILN = [sys.executable, "-c", "from kiln.cli.main import main; main()"]


def compile_in(python: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_in(python, ["-c", "from kiln.cli.main import main; main()", *args], cwd=root)


@pytest.fixture(scope="module")
def kfp_python() -> Path:
    return orchestrator_python("kfp")


@pytest.fixture(scope="module")
def sales(kfp_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The bundled example pipeline (a grid fanning out and back in) compiled."""
    root = tmp_path_factory.mktemp("kfp") / "pipeline"
    shutil.copytree(EXAMPLE, root)
    done = compile_in(
        kfp_python,
        root,
        "build",
        "sales",
        "--to",
        "kfp",
        "sales.yaml",
        "--image",
        "registry.example/kiln:1",
    )
    assert done.returncode == 0, done.stderr
    assert "Wrote sales.yaml: pipeline sales, 5 task(s)" in done.stdout
    return yaml.safe_load((root / "sales.yaml").read_text())


def test_each_task_is_a_container_running_kiln_run(sales: dict[str, Any]) -> None:
    tasks = sales["root"]["dag"]["tasks"]
    assert {key: t["taskInfo"]["name"] for key, t in tasks.items()} == {
        "generate": "generate",
        "clean-region-eu": "clean[region=EU]",
        "clean-region-us": "clean[region=US]",
        "analyse": "analyse",
        "report": "report",
    }
    executors = sales["deploymentSpec"]["executors"]
    assert len(executors) == 5
    for executor in executors.values():
        assert executor["container"]["image"] == "registry.example/kiln:1"
        assert executor["container"]["command"] == ["kiln", "run"]
    args = executors["exec-clean-region-eu"]["container"]["args"]
    assert args[:3] == ["clean.ipynb", "--cwd", "."]
    assert "kiln.task=clean[region=EU]" in args
    assert "kfp.run_id={{$.inputs.parameters['kiln_kfp_run_id']}}" in args


def test_dependencies_and_artefacts_follow_the_pipeline(sales: dict[str, Any]) -> None:
    tasks = sales["root"]["dag"]["tasks"]
    assert "dependentTasks" not in tasks["generate"]
    assert tasks["clean-region-eu"]["dependentTasks"] == ["generate"]
    assert sorted(tasks["analyse"]["dependentTasks"]) == ["clean-region-eu", "clean-region-us"]
    assert tasks["report"]["dependentTasks"] == ["analyse"]
    wired = {
        name: spec["taskOutputArtifact"]["producerTask"]
        for name, spec in tasks["analyse"]["inputs"]["artifacts"].items()
    }
    assert sorted(wired.values()) == ["clean-region-eu", "clean-region-us"]
    # a notebook run is not a pure function: KFP's cache never skips one
    assert all(not t["cachingOptions"].get("enableCache") for t in tasks.values())


def test_parameters_are_the_pipelines_inputs(sales: dict[str, Any]) -> None:
    # each task's kiln.yaml values are pipeline inputs (TASK__NAME) a KFP run can change
    declared = sales["root"]["inputDefinitions"]["parameters"]
    assert {k: (v["parameterType"], v["defaultValue"]) for k, v in declared.items()} == {
        "generate__n_orders": ("NUMBER_INTEGER", 400),
        "generate__seed": ("NUMBER_INTEGER", 7),
        "clean_region_eu__region": ("STRING", "EU"),
        "clean_region_us__region": ("STRING", "US"),
    }
    tasks = sales["root"]["dag"]["tasks"]
    given = tasks["clean-region-us"]["inputs"]["parameters"]
    assert given["region"] == {"componentInputParameter": "clean_region_us__region"}
    component = sales["components"]["comp-generate"]["inputDefinitions"]["parameters"]
    assert component["n_orders"]["parameterType"] == "NUMBER_INTEGER"
    args = sales["deploymentSpec"]["executors"]["exec-generate"]["container"]["args"]
    assert args[3:6] == ["-p", "n_orders", "{{$.inputs.parameters['n_orders']}}"]


def test_the_sdk_loads_the_spec_back(kfp_python: Path, tmp_path: Path, sales: Any) -> None:
    spec = tmp_path / "sales.yaml"
    spec.write_text(yaml.safe_dump(sales))
    code = (
        "import sys\nfrom kfp import components\n"
        "print(components.load_component_from_file(sys.argv[1]).name)"
    )
    done = run_in(kfp_python, ["-c", code, str(spec)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sales"


_PLACEHOLDER = re.compile(
    r"\{\{\$\.(inputs|outputs)\.(parameters|artifacts)\['([^']+)'\](\.path)?\}\}"
)


def _launch(spec: dict[str, Any], root: Path, artefacts: Path, values: dict[str, Any]) -> list[str]:
    """Run each task's ``kiln run`` command line as KFP's launcher would: placeholders filled
    (parameters from the task's inputs, the pipeline's inputs from ``values`` or their
    defaults, artefacts as local files), upstream tasks first."""
    tasks = spec["root"]["dag"]["tasks"]
    for name, declared in spec["root"]["inputDefinitions"]["parameters"].items():
        default = declared["defaultValue"]
        is_int = declared["parameterType"] == "NUMBER_INTEGER"
        values.setdefault(name, int(default) if is_int else default)
    done: list[str] = []
    while len(done) < len(tasks):
        for key, task in tasks.items():
            if key in done or any(d not in done for d in task.get("dependentTasks", [])):
                continue
            inputs = task.get("inputs", {})
            executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
            container = spec["deploymentSpec"]["executors"][executor]["container"]

            def fill(match: re.Match[str], key: str = key, inputs: Any = inputs) -> str:
                side, kind, name, _ = match.groups()
                if kind == "parameters":
                    given = inputs["parameters"][name]
                    if "componentInputParameter" in given:
                        return str(values[given["componentInputParameter"]])
                    value = given["runtimeValue"]["constant"]
                    return {"{{$.pipeline_job_uuid}}": "job-1"}.get(value, str(value)).replace(
                        "{{$.pipeline_task_name}}", key
                    )
                if side == "outputs":
                    return str(artefacts / key / name)
                source = inputs["artifacts"][name]["taskOutputArtifact"]
                return str(artefacts / source["producerTask"] / source["outputArtifactKey"])

            args = [_PLACEHOLDER.sub(fill, arg) for arg in container["args"]]
            ran = subprocess.run(
                [*KILN, container["command"][1], *args],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=300,
                env={**_ENV, "PYTHONPATH": SRC},
                check=False,
            )
            assert ran.returncode == 0, f"{key}: {args}\n{ran.stderr}"
            done.append(key)
    return done


def test_the_command_lines_run_with_products_as_artefacts(kfp_python: Path, tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    done = compile_in(kfp_python, root, "build", "etl", "--to", "kfp", "etl.yaml", "--image", "i")
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load((root / "etl.yaml").read_text())
    # a KFP run that sets one of the pipeline's inputs
    order = _launch(spec, root, tmp_path / "artefacts", {"extract__day": "2024-05-01"})
    assert order == ["extract", "transform", "load"]
    # each product went to its artefact, not to kiln.yaml's path, and was read from there
    assert not (root / "out").exists()
    chain = "extract@2024-05-01;transform@none;load@none;"
    assert (tmp_path / "artefacts" / "load" / "product__out").read_text() == chain
    runs = history(root)
    assert [r.tags["kiln.task"] for r in runs] == ["extract", "transform", "load"]
    assert {r.tags["kfp.run_id"] for r in runs} == {"job-1"}
    assert [r.tags["kfp.task_name"] for r in runs] == ["extract", "transform", "load"]


def test_without_kfp_kiln_says_which_extra_to_install(tmp_path: Path) -> None:
    if _has_kfp():
        pytest.skip("kfp is installed in Kiln's own environment")
    root = make_project(tmp_path / "proj")
    done = subprocess.run(
        [*KILN, "build", "etl", "--to", "kfp", "etl.yaml", "--image", "i"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "needs the kfp SDK: pip install 'kiln-notebooks[kubeflow]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (root / "etl.yaml").exists()


def _has_kfp() -> bool:
    import importlib.util

    return importlib.util.find_spec("kfp") is not None
