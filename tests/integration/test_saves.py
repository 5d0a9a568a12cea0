"""Saving the output notebook of real runs: a huge output does not slow the cells after it
nor delay a SIGTERM, a killed Kiln leaves a complete notebook, the log stays small."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from kilntest import KILN, read_nb, stream_text

pytestmark = pytest.mark.kernel

#: 40 MB of stdout in one cell: 400,000 lines of 100 bytes
BIG = "print('\\n'.join(f'{i:>98}|' for i in range(400_000)))"


def _start(args: list[str], home: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, KILN_HOME=str(home))
    return subprocess.Popen(
        [KILN, *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _log_says(home: Path, text: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "kiln ended before the point the test waits for"
        for log in home.glob("runs/*/run.log"):
            if text in log.read_text(encoding="utf-8", errors="replace"):
                return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the run's log")


def test_sigterm_after_a_huge_output_is_honoured_and_saves_what_ran(
    make_nb, home, tmp_path, kiln_cli
):
    # before: every one of these quick cells re-wrote the 40 MB output (a second each), and
    # the SIGTERM waited behind the messages of every cell the run had already done
    nb = make_nb(["import time", BIG, *["time.sleep(0.005)"] * 3000])
    out = tmp_path / "o.ipynb"
    proc = _start(["run", str(nb), str(out), "--engine", "fork"], home, tmp_path)
    try:
        _log_says(home, "cell 5 ok in", proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)  # generous: the point is not 40 s and more
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    run = json.loads(kiln_cli("runs", "show", "last", "--json").stdout)
    assert run["state"] == "cancelled"
    saved = read_nb(out)
    assert saved.metadata.kiln.state == "cancelled"
    # the banner is cell 0: the notebook's cells follow, saved as far as the run got
    assert stream_text(saved.cells[2]).endswith(f"{399_999:>98}|\n")
    ran = [c for c in saved.cells[1:] if c.cell_type == "code" and c.execution_count]
    assert len(ran) >= 6


def test_a_killed_kiln_always_leaves_a_complete_notebook(make_nb, home, tmp_path):
    nb = make_nb(["import time", BIG, *["time.sleep(0.002)"] * 2000])
    for point in (2, 40, 300):
        out = tmp_path / f"o-{point}.ipynb"
        proc = _start(["run", str(nb), str(out), "--engine", "fork"], home, tmp_path)
        try:
            _log_says(home, f"cell {point} ok in", proc)
        finally:
            proc.kill()  # whatever a save was doing at that moment
            proc.communicate(timeout=20)
        saved = read_nb(out)
        nbformat.validate(saved)
        assert len(saved.cells) == len(read_nb(nb).cells)
        for log in home.glob("runs/*/run.log"):
            log.unlink()


def test_a_huge_output_is_in_the_notebook_and_only_its_ends_in_the_log(make_nb, kiln_cli, tmp_path):
    nb = make_nb(["print('small')", BIG, "print('after')"])
    out = tmp_path / "o.ipynb"
    res = kiln_cli("run", str(nb), str(out), "--json", "--engine", "fork")
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    saved = read_nb(out)
    text = stream_text(saved.cells[1])
    assert len(text) == 400_000 * 100
    log = Path(run["log_path"]).read_text(encoding="utf-8")
    assert len(log) < 400_000  # not 40 MB: the first and last 64 KiB of it
    assert f"{0:>98}|" in log and f"{399_999:>98}|" in log
    note = next(line for line in log.splitlines() if "not logged here" in line)
    assert f"cell 1 (id {saved.cells[1].id}) of {out.resolve()}" in note
    assert "[cell 0 stdout] small" in log and "[cell 2 stdout] after" in log


DISPLAYS = [
    "from IPython.display import display, update_display, clear_output\nimport time",
    "h = display('0%', display_id='bar')\nprint('started')",
    "42",
    *[f"update_display('{i}0%', display_id='bar')\nprint({i})\ntime.sleep(0.03)" for i in range(8)],
    "print('gone')\nclear_output()\nprint('kept')",
    "h.update('100%')",
    "raise ValueError('allowed')",
    "print('end')",
]


@pytest.mark.parametrize("engine", ["fork", "kernel"])
def test_the_final_save_is_the_whole_notebook_as_the_engine_left_it(
    make_nb, tmp_path, monkeypatch, engine
):
    """The saver keeps the JSON of cells it believes unchanged: check that belief against a
    full serialisation of the notebook each real engine leaves (displays updated from later
    cells, clear_output, errors)."""
    from kiln.notebook import dumps
    from kiln.notebook.saver import NotebookSaver
    from kiln.runner import Runner, RunRequest

    checked: list[str] = []
    real_save = NotebookSaver.save

    def checking_save(self: NotebookSaver) -> None:
        real_save(self)
        checked.append(self.path.read_text(encoding="utf-8"))
        assert checked[-1] == dumps(self.nb)

    monkeypatch.setattr(NotebookSaver, "save", checking_save)
    monkeypatch.setattr("kiln.notebook.saver.MIN_INTERVAL", 0.0)  # save after every cell
    nb = make_nb(DISPLAYS)
    out = tmp_path / "o.ipynb"
    with Runner(home=tmp_path / "home") as runner:
        run = runner.run(
            RunRequest(notebook=nb, output=out, engine=engine, allow_errors=True), check=False
        )
    assert run.state == "succeeded", run.reason
    assert len(checked) == 1
    saved = read_nb(out)
    by_source = {c.source: c for c in saved.cells}
    assert by_source[DISPLAYS[1]].outputs[0].data["text/plain"] == "'100%'"
    assert stream_text(by_source[DISPLAYS[11]]) == "kept\n"
