"""A run's folder: made private on the first run of a new home, refused when it cannot be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.errors import HomeNotWritable
from kiln.store.files import FileModes, make_run_folder


def test_the_first_run_of_a_new_home_makes_the_runs_folder_too(tmp_path: Path) -> None:
    runs = tmp_path / "home" / "runs"
    folder = make_run_folder(runs, "r1", FileModes())
    assert folder == runs / "r1" and folder.is_dir()
    assert folder.stat().st_mode & 0o777 == 0o700
    assert make_run_folder(runs, "r2", FileModes(0o640)).stat().st_mode & 0o777 == 0o750


def test_a_run_folder_is_new_unless_a_queued_run_made_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run_folder(runs, "r1", FileModes())
    with pytest.raises(HomeNotWritable, match="cannot record a run"):
        make_run_folder(runs, "r1", FileModes())
    assert make_run_folder(runs, "r1", FileModes(), exist_ok=True).is_dir()
    (runs / "r2").write_text("not a folder")
    with pytest.raises(HomeNotWritable):
        make_run_folder(runs, "r2", FileModes(), exist_ok=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_home_is_refused_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o500)
    try:
        with pytest.raises(HomeNotWritable, match="set KILN_HOME"):
            make_run_folder(home / "runs", "r1", FileModes())
    finally:
        home.chmod(0o700)


def test_a_stored_input_is_written_once_and_its_time_kept_recent(
    tmp_path: Path, monkeypatch
) -> None:
    from kiln.store import files

    sha = "cd" * 32
    first = files.store_input(tmp_path, sha, b"{}", FileModes())
    assert first == tmp_path / "inputs" / f"{sha}.ipynb" and first.read_bytes() == b"{}"
    assert first.stat().st_mode & 0o777 == 0o600
    os.utime(first, (1_000_000, 1_000_000))  # as if long unused
    # used again soon after this process set its time: no second write of the time...
    assert files.store_input(tmp_path, sha, b"{}", FileModes()) == first
    assert first.stat().st_mtime == 1_000_000
    # ...but past TOUCH_EVERY, a prune's grace starts again
    monkeypatch.setattr(files, "TOUCH_EVERY", 0.0)
    files.store_input(tmp_path, sha, b"{}", FileModes())
    assert first.stat().st_mtime > 1_000_000
    # a copy removed meanwhile is written again, however recently it was used
    monkeypatch.setattr(files, "TOUCH_EVERY", 3600.0)
    first.unlink()
    assert files.store_input(tmp_path, sha, b"{}", FileModes()).read_bytes() == b"{}"
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == [first.name]
