"""Nothing found too late (read-only places, full disks, stray output paths) and private files.

Read-only and full file systems are real: small tmpfs mounts made by the test (root only; the
tests skip with the reason elsewhere). Each case checks that the notebook's own side effect did
not happen when the run was refused, and that the history stays readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from kilntest import KILN, build_notebook

pytestmark = pytest.mark.kernel

SIDE_EFFECT = "import pathlib\npathlib.Path({marker!r}).write_text('ran')"


def _kiln(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    base.update(env or {})
    return subprocess.run([KILN, *args], capture_output=True, text=True, cwd=cwd, env=base,
                          timeout=180)  # fmt: skip


def _notebook(path: Path, marker: Path, *extra: str) -> Path:
    nbformat.write(build_notebook([SIDE_EFFECT.format(marker=str(marker)), *extra]), path)
    return path


@contextlib.contextmanager
def _tmpfs(path: Path, *options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join(options)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_output_path_that_is_a_folder_is_refused_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    nb = _notebook(tmp_path / "nb.ipynb", marker)
    (tmp_path / "out").mkdir()
    done = _kiln("run", str(nb), str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and "is a folder" in done.stderr
    assert not marker.exists()


def test_read_only_output_folder_is_refused_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    nb = _notebook(tmp_path / "nb.ipynb", marker)
    with _tmpfs(tmp_path / "ro", "ro", "size=1m") as ro:
        done = _kiln("run", str(nb), str(ro / "out.ipynb"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "cannot write in" in done.stderr and "Read-only file system" in done.stderr
    assert not marker.exists()


def test_read_only_home_is_refused_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    nb = _notebook(tmp_path / "nb.ipynb", marker)
    home = tmp_path / "home"
    assert _kiln("run", str(nb), cwd=tmp_path, env={"KILN_HOME": str(home)}).returncode == 0
    marker.unlink()
    # the same history, now on a read-only file system
    subprocess.run(["mount", "--bind", "-o", "ro", str(home), str(home)], capture_output=True)
    remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(home)], capture_output=True)
    if remount.returncode != 0:
        subprocess.run(["umount", str(home)], capture_output=True)
        pytest.skip("cannot make a read-only bind mount here")
    try:
        done = _kiln("run", str(nb), cwd=tmp_path, env={"KILN_HOME": str(home)})
        assert done.returncode == 2, done.stderr
        assert "cannot record a run" in done.stderr and "Traceback" not in done.stderr
        assert not marker.exists()
        listed = _kiln("runs", "list", "--json", cwd=tmp_path, env={"KILN_HOME": str(home)})
        assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1
    finally:
        subprocess.run(["umount", str(home)], capture_output=True)


def test_a_full_disk_ends_the_run_failed_and_the_history_readable(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    big = "print('x' * 3_000_000)"
    nb = _notebook(tmp_path / "nb.ipynb", marker, big, "print('after')")
    with _tmpfs(tmp_path / "small", "size=2m") as small:
        done = _kiln("run", str(nb), str(small / "out.ipynb"), cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "no space left on the device" in done.stderr
        assert "Internal error" not in done.stderr
        listed = _kiln("runs", "list", "--json", cwd=tmp_path)
        assert listed.returncode == 0
        (run,) = json.loads(listed.stdout)
        assert run["state"] == "failed" and "no space left" in run["reason"]


def test_a_full_home_disk_still_ends_the_run(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    nbformat.write(build_notebook(["print('x' * 3_000_000)", "print('after')"]), nb)
    with _tmpfs(tmp_path / "home", "size=2m") as home:
        env = {"KILN_HOME": str(home)}
        assert _kiln("runs", "list", cwd=tmp_path, env=env).returncode == 0
        done = _kiln("run", str(nb), cwd=tmp_path, env=env)
        assert done.returncode in (1, 2), done.stderr
        assert "Internal error" not in done.stderr and "Traceback" not in done.stderr
        listed = _kiln("runs", "list", "--json", cwd=tmp_path, env=env)
        assert listed.returncode == 0, listed.stderr
        states = {r["state"] for r in json.loads(listed.stdout)}
        assert states <= {"failed", "crashed"} and "running" not in states


def test_sweep_outputs_stay_in_the_working_directory(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    nbformat.write(build_notebook([("x = 1", ["parameters"]), "print(x)"]), nb)
    (tmp_path / "grid.yaml").write_text("x: [1, 2]\n")
    work = tmp_path / "work"
    work.mkdir()
    escaping = "../escaped-{x}.ipynb"
    done = _kiln("run", str(nb), escaping, "--sweep", str(tmp_path / "grid.yaml"), cwd=work)
    assert done.returncode == 2 and "outside the working directory" in done.stderr
    assert not list(tmp_path.glob("escaped-*"))
    allowed = _kiln("run", str(nb), escaping, "--sweep", str(tmp_path / "grid.yaml"),
                    "--allow-outside", cwd=work)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert sorted(p.name for p in tmp_path.glob("escaped-*")) == [
        "escaped-1.ipynb",
        "escaped-2.ipynb",
    ]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_files_are_private_and_inputs_stored_once(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    nbformat.write(build_notebook([("secret = 'x'", ["parameters"]), "print(secret)"]), nb)
    env = {"KILN_HOME": str(tmp_path / "home")}
    for value in ("a", "b"):
        assert (
            _kiln("run", str(nb), "-p", "secret", value, "-q", cwd=tmp_path, env=env).returncode
            == 0
        )
    runs = json.loads(_kiln("runs", "list", "--json", cwd=tmp_path, env=env).stdout)
    for run in runs:
        assert _mode(Path(run["run_dir"])) == 0o700
        assert _mode(Path(run["output_path"])) == 0o600
        assert _mode(Path(run["log_path"])) == 0o600
    inputs = list((tmp_path / "home" / "inputs").iterdir())
    assert len(inputs) == 1 and _mode(inputs[0]) == 0o600
    assert {run["input_path"] for run in runs} == {str(inputs[0])}
    assert inputs[0].read_bytes() == nb.read_bytes()


def test_a_team_shares_the_history_through_the_group(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    nbformat.write(build_notebook(["print(1)"]), nb)
    (tmp_path / "kiln.yaml").write_text("store:\n  file_mode: '0640'\n")
    assert _kiln("run", str(nb), "-q", cwd=tmp_path).returncode == 0
    (run,) = json.loads(_kiln("runs", "list", "--json", cwd=tmp_path).stdout)
    assert _mode(Path(run["run_dir"])) == 0o750 and _mode(Path(run["output_path"])) == 0o640
    env = {"KILN_FILE_MODE": "0660"}
    assert _kiln("run", str(nb), "-q", cwd=tmp_path, env=env).returncode == 0
    newest = json.loads(_kiln("runs", "list", "--json", cwd=tmp_path).stdout)[0]
    assert _mode(Path(newest["log_path"])) == 0o660
    (tmp_path / "kiln.yaml").write_text("store:\n  file_mode: '0200'\n")
    bad = _kiln("run", str(nb), cwd=tmp_path)
    assert bad.returncode == 2 and "kiln.yaml:2:3: store: expected a file mode" in bad.stderr
