"""The run log: every event on its own line, large outputs stored once (in the notebook)."""

from __future__ import annotations

import os
from pathlib import Path

from nbformat.v4 import new_code_cell, new_notebook

from kiln import runlog
from kiln.runlog import RunLog


def _lines(n: int, start: int = 0) -> str:
    return "".join(f"line {i:>8} of the output\n" for i in range(start, start + n))


def _log(tmp_path: Path) -> RunLog:
    log = RunLog(tmp_path / "run.log")
    nb = new_notebook(cells=[new_code_cell("a"), new_code_cell("print(big)")])
    nb.cells[1].id = "big-cell"
    log.set_output(tmp_path / "out.ipynb", nb)
    return log


def test_small_outputs_are_logged_whole_as_they_come(tmp_path):
    log = _log(tmp_path)
    log.output(1, {"output_type": "stream", "name": "stdout", "text": "hello\nworld\n"})
    text = (tmp_path / "run.log").read_text()
    assert "[cell 1 stdout] hello" in text and "[cell 1 stdout] world" in text
    log.close()


def test_a_large_output_keeps_its_head_and_tail_and_says_where_the_rest_is(tmp_path):
    log = _log(tmp_path)
    total = 200_000  # ~5.6 MB of lines
    log.line("cell 1 started")
    log.output(1, {"output_type": "stream", "name": "stdout", "text": _lines(total)})
    log.line("cell 1 ok in 1.000s")
    log.close()
    text = (tmp_path / "run.log").read_text()
    size = len(text.encode())
    assert size < 3 * (runlog.STREAM_HEAD + runlog.STREAM_TAIL)
    assert f"line {0:>8} of" in text  # the first line, logged as it came
    assert f"line {total - 1:>8} of" in text  # and the last one
    assert f"line {total // 2:>8} of" not in text
    note = next(line for line in text.splitlines() if "not logged here" in line)
    assert f"cell 1 (id big-cell) of {tmp_path / 'out.ipynb'}" in note
    # the tail comes before the cell's end line, in order
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if "cell 1 ok in" in line)
    assert f"line {total - 1:>8} of" in lines[end - 1]


def test_chunked_output_is_bounded_too_and_streams_keep_their_names(tmp_path):
    log = _log(tmp_path)
    for i in range(100):  # the fork engine sends stream output in chunks
        log.output(1, {"output_type": "stream", "name": "stdout", "text": _lines(1000, i * 1000)})
    log.output(1, {"output_type": "stream", "name": "stderr", "text": "the last words\n"})
    log.close()  # a run cut short still gets the tail
    text = (tmp_path / "run.log").read_text()
    assert len(text.encode()) < 3 * (runlog.STREAM_HEAD + runlog.STREAM_TAIL)
    assert "[cell 1 stderr] the last words" in text.splitlines()[-1]
    assert f"line {99_999:>8} of" in text


def test_each_cell_has_its_own_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "STREAM_HEAD", 100)
    monkeypatch.setattr(runlog, "STREAM_TAIL", 100)
    log = _log(tmp_path)
    log.output(0, {"output_type": "stream", "name": "stdout", "text": _lines(50)})
    log.line("cell 0 ok in 0.1s")
    log.output(1, {"output_type": "stream", "name": "stdout", "text": "short\n"})
    log.close()
    text = (tmp_path / "run.log").read_text()
    assert "[cell 1 stdout] short" in text
    assert text.count("not logged here") == 1


def test_output_after_a_display_in_the_middle_stays_bounded(tmp_path):
    log = _log(tmp_path)
    for i in range(3):  # a display between two large prints writes the first one's tail
        log.output(1, {"output_type": "stream", "name": "stdout", "text": _lines(50_000, i)})
        log.output(1, {"output_type": "display_data", "data": {"image/png": "AAA"}})
    log.close()
    text = (tmp_path / "run.log").read_text()
    assert len(text.encode()) < 6 * (runlog.STREAM_HEAD + runlog.STREAM_TAIL)
    assert text.count("[cell 1 display_data] image/png") == 3


def test_a_log_is_private_and_makes_its_folder_if_missing(tmp_path):
    log = RunLog(tmp_path / "a" / "b" / "run.log", mode=0o640)
    log.line("hello")
    log.close()
    path = tmp_path / "a" / "b" / "run.log"
    assert path.read_text().endswith(" hello\n")
    assert path.stat().st_mode & 0o777 == 0o640
    again = RunLog(path)  # appends to an existing log
    again.line("again")
    again.close()
    assert path.read_text().count("\n") == 2


def test_in_an_event_loop_lines_are_written_together_soon_after(tmp_path, monkeypatch):
    import asyncio
    import time

    path = tmp_path / "run.log"
    writes: list[int] = []
    real_write = os.write

    def counted(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counted)

    async def main() -> list[str]:
        log = RunLog(path)
        seen = []
        log.line("cell 0 started")
        await asyncio.sleep(0)
        log.line("cell 0 ok in 0.001s")  # another turn of the loop: still pending
        await asyncio.sleep(0)
        seen.append(path.read_text())
        deadline = time.monotonic() + 10
        while not path.read_text() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # written within FLUSH_DELAY, both lines at once
        seen.append(path.read_text())
        log.line("run succeeded")
        log.flush()  # what the runner does before it records the run's end: now
        seen.append(path.read_text())
        log.line("after the end")
        log.close()  # a pending line is written on close, and its flush is cancelled
        await asyncio.sleep(runlog.FLUSH_DELAY * 2)
        return seen

    early, together, flushed = asyncio.run(main())
    assert early == ""
    assert together.count("\n") == 2 and "cell 0 ok" in together
    assert flushed.endswith(" run succeeded\n")
    assert path.read_text().endswith(" after the end\n")
    assert len(writes) == 3  # the two cell lines, the end, the line before close


def test_a_log_that_cannot_be_written_stops_without_failing_the_run(tmp_path):
    import asyncio

    if not Path("/dev/full").exists():
        import pytest

        pytest.skip("no /dev/full")
    log = RunLog(tmp_path / "run.log")
    assert log.fd is not None
    full = os.open("/dev/full", os.O_WRONLY)  # a full disk
    os.dup2(full, log.fd)
    os.close(full)

    async def main() -> None:
        import time

        log.line("x" * 100)
        deadline = time.monotonic() + 10
        while log.error is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the flush fails: the log stops, saying why

    asyncio.run(main())
    assert log.error is not None and log.fd is None
    log.line("ignored")
    log.flush()
    log.close()


def test_lines_keep_their_order_and_odd_characters_never_stop_the_log(tmp_path):
    log = RunLog(tmp_path / "run.log")
    log.line("first\fsecond")  # split where str.splitlines splits, as before
    log.line("a lone surrogate \udc80 and é")
    log.line("")
    log.close()
    lines = (tmp_path / "run.log").read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 1)[1] if " " in line else "" for line in lines] == [
        "first",
        "second",
        "a lone surrogate \\udc80 and é",
        "",
    ]
    assert all(line[:4].isdigit() and line[23] == "Z" for line in lines)


def test_a_stamp_is_the_utc_time_in_milliseconds(monkeypatch):
    import time

    monkeypatch.setattr(runlog, "_stamp", (-1, ""))
    monkeypatch.setattr(time, "time_ns", lambda: 1_796_093_311_123_456_789)
    assert runlog._now() == "2026-12-01T02:48:31.123Z"
    monkeypatch.setattr(time, "time_ns", lambda: 1_796_093_311_999_999_999)
    assert runlog._now() == "2026-12-01T02:48:31.999Z"
