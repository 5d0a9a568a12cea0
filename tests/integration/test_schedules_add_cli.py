"""`kiln schedules add|remove` as a user runs them: the schedule lands in kiln.yaml and
`kiln schedules list` shows it; a bad one is exit 2 with a clear message, no traceback,
and the file unchanged."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat

from kilntest import KILN, build_notebook


def _kiln(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(root / "home")
    return subprocess.run([KILN, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_add_list_remove(tmp_path: Path) -> None:
    nbformat.write(build_notebook([("day = ''", ["parameters"])]), tmp_path / "sales.ipynb")
    smtp = "smtp: {host: 127.0.0.1, port: 2525, from: kiln@example.com}\n"
    (tmp_path / "kiln.yaml").write_text("# team settings\nrun: {timeout: 5m}\n" + smtp)
    added = _kiln(tmp_path, "schedules", "add", "daily-sales", "--notebook", "sales.ipynb",
                  "--cron", "0 6 * * 1-5", "--timezone", "Europe/Berlin", "-p", "day",
                  "{{ yesterday }}", "--email", "managers@example.com", "--on", "always",
                  "--retries", "2")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "added schedule daily-sales" in added.stderr and "next: " in added.stderr
    text = (tmp_path / "kiln.yaml").read_text()
    assert text.startswith("# team settings\nrun: {timeout: 5m}\n" + smtp + "schedules:\n  daily")
    listed = _kiln(tmp_path, "schedules", "list", "--json")
    assert listed.returncode == 0 and '"daily-sales"' in listed.stdout
    again = _kiln(tmp_path, "schedules", "add", "daily-sales", "--notebook", "sales.ipynb",
                  "--cron", "@daily")  # fmt: skip
    assert again.returncode == 2 and "schedule 'daily-sales' exists already" in again.stderr
    bad = _kiln(tmp_path, "schedules", "add", "other", "--notebook", "sales.ipynb",
                "--cron", "0 25 * * *")  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "schedule other not added (the file is unchanged)" in bad.stderr
    assert "is not a valid cron expression" in bad.stderr
    assert (tmp_path / "kiln.yaml").read_text() == text
    both = _kiln(tmp_path, "schedules", "add", "x", "--notebook", "a", "--pipeline", "b",
                 "--cron", "@daily")  # fmt: skip
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    removed = _kiln(tmp_path, "schedules", "remove", "daily-sales")
    assert removed.returncode == 0, removed.stderr
    assert (tmp_path / "kiln.yaml").read_text() == (
        "# team settings\nrun: {timeout: 5m}\n" + smtp + "schedules: {}\n"
    )


def test_commands_editing_at_once_all_land(tmp_path: Path) -> None:
    """Six `kiln schedules add` started together: each waits for the project's edit lock, so
    none writes over another's schedule (each used to read the file, then write it whole)."""
    nbformat.write(build_notebook([("day = ''", ["parameters"])]), tmp_path / "sales.ipynb")
    (tmp_path / "kiln.yaml").write_text("# team settings\nrun: {timeout: 5m}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(tmp_path / "home")
    names = [f"s{i}" for i in range(6)]
    procs = [
        subprocess.Popen(
            [KILN, "schedules", "add", name, "--notebook", "sales.ipynb", "--cron", "0 6 * * *"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    outcomes = list(zip((p.returncode for p in procs), errors, strict=True))
    assert all(code == 0 for code, _ in outcomes), outcomes
    listed = _kiln(tmp_path, "schedules", "list", "--json")
    assert listed.returncode == 0
    assert all(f'"{name}"' in listed.stdout for name in names)
    assert (tmp_path / "kiln.yaml").read_text().startswith("# team settings\nrun: {timeout: 5m}\n")
    removed = [
        subprocess.Popen(
            [KILN, "schedules", "remove", name],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names[:3]
    ]
    assert all(p.communicate(timeout=120) and p.returncode == 0 for p in removed)
    left = _kiln(tmp_path, "schedules", "list", "--json").stdout
    assert all(f'"{n}"' not in left for n in names[:3]) and all(f'"{n}"' in left for n in names[3:])
