"""Saving a running notebook: only what changed, off the event loop, from a snapshot, atomic."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

import kiln.notebook.saver as saver_module
from kiln.notebook import dumps
from kiln.notebook.saver import NotebookSaver


def _notebook(n: int) -> Any:
    return new_notebook(cells=[new_code_cell(f"x = {i}") for i in range(n)])


def _run_cell(saver: NotebookSaver, nb: Any, index: int, text: str) -> None:
    """What an engine and the runner do for one cell."""
    saver.cell_started(index)
    cell = nb.cells[index]
    cell.outputs = [new_output("stream", name="stdout", text=text)]
    cell.execution_count = index + 1
    saver.cell_finished(index)


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def _count_cells(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the cells the saver serialises."""
    calls = [0]
    real = saver_module.cell_json

    def counting(cell: Any) -> str:
        calls[0] += 1
        return real(cell)

    monkeypatch.setattr(saver_module, "cell_json", counting)
    return calls


def test_a_save_serialises_only_the_cells_that_changed(tmp_path, monkeypatch):
    calls = _count_cells(monkeypatch)
    nb = _notebook(50)
    path = tmp_path / "out.ipynb"

    async def main() -> None:
        saver = NotebookSaver(nb, path, interval=0, factor=0)
        saver.changed()
        await _until(lambda: saver.saves == 1, "the first save")
        assert calls[0] == 50
        assert path.read_text(encoding="utf-8") == dumps(nb)
        _run_cell(saver, nb, 3, "three\n")
        await _until(lambda: saver.saves == 2, "the second save")
        assert calls[0] == 51
        assert path.read_text(encoding="utf-8") == dumps(nb)
        nb.metadata["kiln"] = {"state": "succeeded"}  # the notebook's own part: always
        saver.save()
        assert calls[0] == 51
        assert path.read_text(encoding="utf-8") == dumps(nb)

    asyncio.run(main())


def test_a_long_run_serialises_each_cell_a_bounded_number_of_times(tmp_path, monkeypatch):
    calls = _count_cells(monkeypatch)
    n = 2000
    nb = _notebook(n)
    path = tmp_path / "out.ipynb"

    async def main() -> None:
        saver = NotebookSaver(nb, path, interval=0, factor=0)
        saver.changed()
        for i in range(n):
            _run_cell(saver, nb, i, f"{i}\n")
            await asyncio.sleep(0)
            if i % 200 == 199:  # it saves along the way (waited for: the writer is a thread)
                before = saver.saves
                await _until(lambda before=before: saver.saves > before, f"a save after cell {i}")
        saver.save()
        assert saver.saves >= 10

    asyncio.run(main())
    # once at the start, once when finished, at most once more while running
    assert calls[0] <= 3 * n
    assert nbformat.reads(path.read_text(encoding="utf-8"), as_version=4) == nb


class _Gate:
    """Holds the saver's worker inside a write until the test opens it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()
        self.writes = 0
        self.real = saver_module.atomic_write
        monkeypatch.setattr(saver_module, "atomic_write", self.write)

    def write(self, path: Path, parts: Iterable[bytes], **kw: Any) -> None:
        self.writes += 1
        rest = iter(parts)
        first = next(rest)
        self.entered.set()
        assert self.open.wait(30), "the gate was never opened"
        self.real(path, itertools.chain([first], rest), **kw)


def test_saves_never_block_the_event_loop_and_coalesce(tmp_path, monkeypatch):
    gate = _Gate(monkeypatch)
    nb = _notebook(200)
    path = tmp_path / "out.ipynb"

    async def main() -> None:
        saver = NotebookSaver(nb, path, interval=0, factor=0)
        saver.changed()
        await _until(gate.entered.is_set, "the worker to start writing")
        # the worker is stuck in its write: the loop still runs every cell and callback
        for i in range(200):
            _run_cell(saver, nb, i, f"{i}\n")
            await asyncio.sleep(0)
        assert gate.writes == 1 and saver.saves == 0
        gate.open.set()
        await _until(lambda: saver.saves == 2, "the two saves")
        await asyncio.sleep(0.05)
        # the 200 finished cells made one more save, not 200
        assert gate.writes == 2
        assert path.read_text(encoding="utf-8") == dumps(nb)
        saver.save()

    asyncio.run(main())


def test_the_worker_writes_the_snapshot_not_what_changed_since(tmp_path, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real = saver_module.cell_json

    def slow_cell_json(cell: Any) -> str:
        entered.set()
        assert release.wait(30)
        return real(cell)

    nb = _notebook(2)
    path = tmp_path / "out.ipynb"

    async def main() -> None:
        saver = NotebookSaver(nb, path, interval=0, factor=0)
        saver.cell_started(0)
        nb.cells[0].outputs = [
            new_output("stream", name="stdout", text="before\n"),
            new_output("display_data", data={"text/plain": "shown"}),
        ]
        expected = dumps(nb)
        monkeypatch.setattr(saver_module, "cell_json", slow_cell_json)
        saver.cell_finished(0)
        await _until(entered.is_set, "the worker to serialise")
        # the engine goes on changing the same cell while the worker serialises it
        cell = nb.cells[0]
        cell.outputs[0]["text"] += "after\n"
        cell.outputs[1]["data"] = {"text/plain": "updated"}
        cell.outputs.append(new_output("stream", name="stderr", text="more\n"))
        cell.metadata["tags"] = ["changed"]
        cell.execution_count = 99
        release.set()
        await _until(lambda: saver.saves == 1, "the save")
        assert path.read_text(encoding="utf-8") == expected
        saver.save()
        assert path.read_text(encoding="utf-8") == dumps(nb)

    asyncio.run(main())


@pytest.mark.parametrize("how", ["nbclient", "fork"])
def test_a_display_updated_from_a_later_cell_is_saved(tmp_path, how):
    nb = _notebook(3)
    path = tmp_path / "out.ipynb"

    async def main() -> None:
        saver = NotebookSaver(nb, path, interval=0, factor=0)
        saver.cell_started(0)
        nb.cells[0].outputs = [new_output("display_data", data={"text/plain": "0%"})]
        saver.cell_finished(0)
        await _until(lambda: saver.saves == 1, "the first save")
        # cell 1 updates cell 0's display: no event names cell 0
        saver.cell_started(1)
        if how == "nbclient":  # replaces data and metadata of the output in place
            nb.cells[0].outputs[0]["data"] = {"text/plain": "100%"}
            nb.cells[0].outputs[0]["metadata"] = {}
        else:  # the fork engine replaces the cell's outputs
            nb.cells[0].outputs = [new_output("display_data", data={"text/plain": "100%"})]
        saver.cell_finished(1)
        await _until(lambda: saver.saves == 2, "the second save")
        assert "100%" in path.read_text(encoding="utf-8")
        assert path.read_text(encoding="utf-8") == dumps(nb)
        saver.save()

    asyncio.run(main())


def test_a_failed_background_save_loses_nothing(tmp_path, monkeypatch):
    nb = _notebook(3)
    path = tmp_path / "out.ipynb"
    real = saver_module.atomic_write
    fail = [False]

    def flaky(path: Path, parts: Iterable[bytes], **kw: Any) -> None:
        if fail[0]:
            fail[0] = False
            raise OSError(28, "No space left on device")
        real(path, parts, **kw)

    monkeypatch.setattr(saver_module, "atomic_write", flaky)

    async def main() -> None:
        errors: list[BaseException] = []
        saver = NotebookSaver(nb, path, interval=0, factor=0, on_error=errors.append)
        saver.changed()
        await _until(lambda: saver.saves == 1, "the first save")
        fail[0] = True
        _run_cell(saver, nb, 1, "kept\n")
        await _until(lambda: bool(errors), "the failed save")
        assert "No space left" in str(errors[0])
        assert "kept" not in path.read_text(encoding="utf-8")  # the last complete file
        saver.save()
        assert path.read_text(encoding="utf-8") == dumps(nb)
        assert "kept" in path.read_text(encoding="utf-8")

    asyncio.run(main())


def test_the_final_save_comes_after_a_save_under_way(tmp_path, monkeypatch):
    nb = _notebook(20)
    path = tmp_path / "out.ipynb"

    async def main() -> None:
        saver = NotebookSaver(nb, path, interval=0, factor=0)
        _run_cell(saver, nb, 0, "first\n")
        await _until(lambda: saver.saves == 1, "the first save")
        first = path.read_text(encoding="utf-8")
        gate = _Gate(monkeypatch)
        _run_cell(saver, nb, 1, "second\n")
        second = dumps(nb)
        await _until(gate.entered.is_set, "a save under way")
        stopping = asyncio.get_running_loop().run_in_executor(None, saver.stop)
        await asyncio.sleep(0.05)
        gate.open.set()
        await stopping
        # the save under way was finished or abandoned: never half a file, never a temp file
        assert path.read_text(encoding="utf-8") in (first, second)
        assert os.listdir(tmp_path) == ["out.ipynb"]
        nb.metadata["kiln"] = {"state": "cancelled"}
        saver.save()
        assert path.read_text(encoding="utf-8") == dumps(nb)
        assert os.listdir(tmp_path) == ["out.ipynb"]

    asyncio.run(main())


def test_the_next_save_waits_in_proportion_to_the_last(tmp_path, monkeypatch):
    """A lower bound only: a slower machine makes the measured gap longer, never shorter."""
    real = saver_module.atomic_write
    spans: list[tuple[float, float]] = []

    def slow(path: Path, parts: Iterable[bytes], **kw: Any) -> None:
        start = time.monotonic()
        time.sleep(0.05)
        real(path, parts, **kw)
        spans.append((start, time.monotonic()))

    monkeypatch.setattr(saver_module, "atomic_write", slow)
    nb = _notebook(3)

    async def main() -> None:
        saver = NotebookSaver(nb, tmp_path / "out.ipynb", interval=0.01, factor=4)
        saver.changed()
        await _until(lambda: saver.saves == 1, "the first save")
        _run_cell(saver, nb, 0, "x\n")
        await _until(lambda: saver.saves == 2, "the second save")
        saver.save()

    asyncio.run(main())
    (start1, end1), (start2, _) = spans[0], spans[1]
    assert start2 - end1 >= 4 * (end1 - start1)
