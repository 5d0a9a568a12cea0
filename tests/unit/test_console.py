"""What `kiln run` prints: live output, warnings, the summary."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kiln.cli.console import Console
from kiln.engines.base import CellOutput
from kiln.runner import RunWarning
from kiln.store.records import Record, Run


def test_log_output_streams_to_the_matching_stream(capsys):
    console = Console(progress=False, log_output=True)
    console.observe(CellOutput(0, {"output_type": "stream", "name": "stdout", "text": "out\n"}))
    console.observe(CellOutput(0, {"output_type": "stream", "name": "stderr", "text": "err\n"}))
    console.observe(
        CellOutput(
            1,
            {
                "output_type": "error",
                "ename": "E",
                "evalue": "v",
                "traceback": ["\x1b[31mTraceback\x1b[0m", "E: v"],
            },
        )
    )
    console.observe(RunWarning("careful"))
    captured = capsys.readouterr()
    assert captured.out == "out\n"
    assert captured.err == "err\nTraceback\nE: v\nWarning: careful\n"


def test_quiet_without_log_output(capsys):
    console = Console(progress=False, log_output=False)
    console.observe(CellOutput(0, {"output_type": "stream", "name": "stdout", "text": "out\n"}))
    assert capsys.readouterr().out == ""


def test_summary_names_paths_and_records(capsys):
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    run = Run(
        id="r1",
        notebook_path="/x/nb.ipynb",
        notebook_sha256="0",
        state="succeeded",
        started_at=start,
        ended_at=start + timedelta(seconds=1.5),
        output_path="/o.ipynb",
        log_path="/l.log",
        records_list=[Record("total", "json", 3)],
    )
    Console(progress=False, log_output=False).summary(run)
    err = capsys.readouterr().err
    assert "Run r1 succeeded in 1.50s" in err and "/o.ipynb" in err and "records: total" in err
