"""Helpers of the orchestrator tests (Airflow, Prefect, Kubeflow Pipelines): one venv per
orchestrator under ``~/.cache/kiln`` (``airflow-venv``, ``prefect-venv``, ``kfp-venv``), and the
small project every orchestrator runs (three notebooks in a ``kiln.yaml`` pipeline, one that
records, one that fails).

A venv holds its orchestrator at a pinned version and Kiln's dependencies; Kiln itself runs
from the checkout's ``src/`` (``PYTHONPATH``), so one venv serves every checkout and clean
clone. It is built once (under a file lock) and rebuilt when the pinned requirements or the
Python change (the ``ready`` file holds their key; see ``tracking_util._build``). Without a
package index the tests skip, except in CI (``CI=true``), where they fail.

Run as a script (``python tests/integration/orchestrator_util.py airflow``) to build a venv
ahead of the tests and see how long it takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from tracking_util import CACHE, VenvUnavailable, _build, _locked, kiln_dependencies

import kiln

from kilntest import build_notebook

SRC = str(Path(kiln.__file__).resolve().parents[1])

#: the orchestrator each venv holds, pinned: a new pin rebuilds the venv. Airflow 3.3 is
#: installed without its constraints file (not reachable here); these pins resolve cleanly
#: from PyPI on Python 3.11 with Kiln's SQLAlchemy 2.
PINS: dict[str, list[str]] = {
    "airflow": ["apache-airflow==3.3.2"],
    "prefect": ["prefect==3.9.1"],
    "kfp": ["kfp==2.17.3"],
}


def venv_key(name: str) -> str:
    wanted = sorted([*PINS[name], *kiln_dependencies()])
    return json.dumps({"python": sys.version, "requirements": wanted, "v": 1})


def orchestrator_python(name: str) -> Path:
    """The Python of the ``name`` venv, built on first use; skips (fails in CI) when it
    cannot be built."""
    started = time.monotonic()
    wanted = sorted([*PINS[name], *kiln_dependencies()])
    try:
        venv = _build(CACHE / f"{name}-venv", venv_key(name), [wanted])
    except (VenvUnavailable, subprocess.SubprocessError, OSError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the {name} venv must build in CI: {exc}", pytrace=False)
        pytest.skip(f"cannot install {name} in a venv of its own: {exc}")
    took = time.monotonic() - started
    if took > 30:
        print(f"\nbuilt the {name} venv in {took:.0f} s", file=sys.stderr)
    return venv / "bin" / "python"


def run_in(
    python: Path,
    args: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """A Python of an orchestrator venv, running this checkout's Kiln (``src/`` first)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KILN_", "PYTEST_"))}
    full.update(env or {})
    full["PYTHONPATH"] = os.pathsep.join([SRC, str(Path(__file__).parent)])
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=full,
        check=False,
    )


def last_json(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a driver printed on its last line (the whole output on failure)."""
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"exit {done.returncode}\n--- stdout\n{done.stdout[-6000:]}\n"
        f"--- stderr\n{done.stderr[-6000:]}"
    )
    return json.loads(lines[-1])


def once_per_session(
    factory: pytest.TempPathFactory, name: str, make: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """``make(folder)`` run once per test session, whatever the xdist workers: the first
    worker to get here runs it (its JSON result saved in the session's shared temporary
    folder), the others wait for it and read the result. An orchestrator's scenarios take
    tens of seconds; running them once per worker would double that for nothing."""
    shared = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder the workers' own temporary folders share
    folder = shared / f"orchestrator-{name}"
    with _locked(folder):
        saved = folder / "result.json"
        if saved.is_file():
            found: dict[str, Any] = json.loads(saved.read_text(encoding="utf-8"))
            return found
        folder.mkdir(parents=True, exist_ok=True)
        result = make(folder)
        saved.write_text(json.dumps(result, default=str), encoding="utf-8")
        return result


# -- the project every orchestrator runs --------------------------------------------------------

SINGLE = [
    ("n = 1\nday = 'none'", ["parameters"]),
    "import kiln\nkiln.record('total', 2 * n)\nkiln.record('day', day)",
]
FAILING = [
    ("n = 1", ["parameters"]),
    "raise ValueError(f'boom {n}')",
]
#: each step appends its name to its upstream's product and records the chain and the time
STEP = [
    ("day = 'none'\nupstream = None\nproduct = None", ["parameters"]),
    "import time\nfrom pathlib import Path\nimport kiln\n"
    "before = ''\n"
    "if upstream:\n"
    "    (only,) = upstream.values()\n"
    "    before = Path(only['out']).read_text()\n"
    "Path(product['out']).parent.mkdir(parents=True, exist_ok=True)\n"
    "chain = before + STEP_NAME + '@' + day + ';'\n"
    "Path(product['out']).write_text(chain)\n"
    "kiln.record('chain', chain)\nkiln.record('at', time.time())",
]

KILN_YAML = """\
pipelines:
  etl:
    tasks:
      extract:
        notebook: extract.ipynb
        parameters: {day: "{{ ds }}"}
        products: {out: out/extract.txt}
      transform:
        notebook: transform.ipynb
        inputs: [out/extract.txt]
        products: {out: out/transform.txt}
      load:
        notebook: load.ipynb
        upstream: [transform]
        products: {out: out/load.txt}
"""


def make_project(root: Path) -> Path:
    """The test project: ``single.ipynb``, ``fail.ipynb`` and the pipeline ``etl``
    (extract -> transform -> load; extract's ``day`` is ``{{ ds }}``, Airflow's date)."""
    root.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(SINGLE), root / "single.ipynb")
    nbformat.write(build_notebook(FAILING), root / "fail.ipynb")
    for step in ("extract", "transform", "load"):
        cells = [STEP[0], f"STEP_NAME = {step!r}\n" + STEP[1]]
        nbformat.write(build_notebook(cells), root / f"{step}.ipynb")
    (root / "kiln.yaml").write_text(KILN_YAML, encoding="utf-8")
    return root


def history(root: Path, **tags: str) -> list[kiln.Run]:
    """The project's runs (oldest first), those with ``tags`` when given."""
    runs = kiln.list_runs(home=root / ".kiln", limit=None, tags=tags or None)
    return sorted(runs, key=lambda run: run.started_at or run.id)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "airflow"
    began = time.monotonic()
    print(f"{orchestrator_python(target)} ready in {time.monotonic() - began:.1f} s")
