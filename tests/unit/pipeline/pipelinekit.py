"""A pipeline project in a temporary folder, built on the fake engine (no kernel)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat

from kiln.engines.fake import FakeEngine
from kiln.pipeline import Build, BuildOptions, Pipeline, Status, load_pipeline, plan, run_build
from kiln.pipeline.executors import LocalExecutor
from kiln.project import load_project
from kiln.store import RunStore
from kiln.store.builds import BuildStore

from kilntest import CellSpec, build_notebook

#: a task notebook: reads every upstream product (JSON), writes its own products
TASK_CELLS: list[CellSpec] = [
    ('upstream = None\nproduct = None\nn = 1\nregion = "EU"', ["parameters"]),
    "import json, os\n"
    "def products_of(up):\n"
    "    for value in (up or {}).values():\n"
    "        nested = all(isinstance(v, dict) for v in value.values())\n"
    "        for products in (value.values() if nested else [value]):\n"
    "            yield from products.values()\n"
    "def load(path):\n"
    "    with open(path) as f:\n"
    "        return json.load(f)\n"
    "got = [load(p) for p in sorted(products_of(upstream))]",
    "for name, path in (product or {}).items():\n"
    "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
    "    with open(path, 'w') as f:\n"
    "        json.dump({'n': n, 'region': region, 'got': got}, f)",
    "import kiln\nkiln.record('upstream', upstream)\nkiln.record('product', product)",
]


class PipelineProject:
    """Notebooks and a kiln.yaml under ``root``; builds recorded in ``root/.kiln``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / ".kiln"
        self.engine = FakeEngine()
        self.events: list[Any] = []

    def notebook(self, name: str, cells: Sequence[CellSpec] = TASK_CELLS) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(build_notebook(cells), path)
        return path

    def config(self, text: str) -> Path:
        path = self.root / "kiln.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def pipeline(self, name: str | None = None) -> Pipeline:
        return load_pipeline(name, project=load_project(self.root))

    def build(self, name: str | None = None, **options: Any) -> Build:
        with RunStore(self.home) as store:
            executor = LocalExecutor(store, jobs=options.get("jobs", 1), engine=self.engine)
            return run_build(
                self.pipeline(name),
                store=store,
                options=BuildOptions(**options),
                executor=executor,
                observer=self.events.append,
            )

    def status(self, name: str | None = None, **options: Any) -> Status:
        with BuildStore.open(self.home) as builds:
            return plan(self.pipeline(name), builds, BuildOptions(**options))

    def reasons(self, name: str | None = None) -> dict[str, str]:
        return {t.name: t.reason for t in self.status(name).tasks}

    def read(self, relative: str) -> Any:
        import json

        return json.loads((self.root / relative).read_text())
