"""How a fork-engine run's output reaches the supervisor: a long cell's output while the cell
runs, what a dying child showed before it died, a flood of output through a subprocess whole
(guards for any change to how the child sends or the supervisor reads)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kiln.engines.base import CellOutput, ExecuteOptions
from kiln.engines.fork import ForkEngine, ForkPool
from kiln.runner import Runner, RunRequest

from kilntest import build_notebook, read_nb, stream_text

pytestmark = pytest.mark.kernel


def _execute(nb: Any, on_event: Any, seconds: float = 60.0) -> Any:
    async def main() -> Any:
        engine = ForkEngine(ForkPool())
        session = engine.session(
            ExecuteOptions(kernel_name="python3", deadline=time.monotonic() + seconds)
        )
        try:
            await session.start()
            return await session.execute(nb, on_event)
        finally:
            await session.close(graceful=True)
            await engine.pool.close()

    return asyncio.run(main())


def test_a_long_cells_output_reaches_the_supervisor_while_the_cell_runs(tmp_path):
    # the cell waits for a file that the supervisor's side writes once it has seen the cell's
    # first output: held until the cell's end, the output would never let the cell finish
    flag = tmp_path / "seen"
    nb = build_notebook(
        [
            "import os, time\nprint('ready', flush=True)\nend = time.monotonic() + 30\n"
            f"while not os.path.exists({str(flag)!r}) and time.monotonic() < end:\n"
            "    time.sleep(0.005)\n"
            f"print('seen' if os.path.exists({str(flag)!r}) else 'never seen')"
        ]
    )

    def on_event(event: Any) -> None:
        if isinstance(event, CellOutput) and "ready" in str(event.output.get("text")):
            flag.touch()

    outcome = _execute(nb, on_event)
    assert outcome.status == "ok"
    assert stream_text(nb["cells"][0]) == "ready\nseen\n"


def test_a_megabyte_through_a_subprocess_finishes_whole(tmp_path):
    nb = build_notebook(
        [
            "import os\nos.system(\"head -c 1000000 /dev/zero | tr '\\\\0' x\")",
            "print('after')",
        ]
    )
    outcome = _execute(nb, lambda _e: None)
    assert outcome.status == "ok"
    assert stream_text(nb["cells"][0]) == "x" * 1_000_000
    assert stream_text(nb["cells"][1]) == "after\n"


def test_what_a_cell_showed_right_before_the_child_died_is_kept(tmp_path):
    nb_path = tmp_path / "crash.ipynb"
    nbformat.write(
        build_notebook(
            [
                "print('first cell')",
                "from IPython.display import display\ndisplay('shown before the crash')\n"
                "import ctypes\nctypes.string_at(0)",
            ]
        ),
        nb_path,
    )

    async def main() -> Any:
        runner = Runner(home=tmp_path / "home")
        try:
            return await runner.arun(RunRequest(notebook=nb_path, engine="fork"), check=False)
        finally:
            await runner.aclose_engines()
            runner.close()

    run = asyncio.run(main())
    assert run.state == "crashed" and "died while running cell 1" in run.reason
    out = [c for c in read_nb(Path(run.output_path)).cells if c.cell_type == "code"]
    assert stream_text(out[0]) == "first cell\n"
    shown = [o for o in out[1].outputs if o.get("output_type") == "display_data"]
    assert [o["data"]["text/plain"] for o in shown] == ["'shown before the crash'"]
