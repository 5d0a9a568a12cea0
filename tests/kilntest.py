"""Test helpers shared by every tier (import as `from kilntest import ...`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

KILN = str(Path(sys.executable).with_name("kiln"))

CellSpec = str | tuple[str, Sequence[str]] | tuple[str, str, Sequence[str]]


def build_notebook(
    cells: Sequence[CellSpec], *, kernel: str = "python3", language: str = "python"
) -> Any:
    """Cells as source strings, (source, tags) or ("markdown", source, tags)."""
    out = []
    for spec in cells:
        if isinstance(spec, str):
            out.append(new_code_cell(spec))
        elif len(spec) == 2:
            out.append(new_code_cell(spec[0], metadata={"tags": list(spec[1])}))
        else:
            kind, source, tags = spec
            maker = new_markdown_cell if kind == "markdown" else new_code_cell
            out.append(maker(source, metadata={"tags": list(tags)}))
    return new_notebook(
        cells=out,
        metadata={"kernelspec": {"name": kernel, "display_name": kernel, "language": language}},
    )


def git(repo: Path, *args: str) -> str:
    """Run ``git -C repo ARGS`` as a test author (no user configuration needed); its output.
    Tests that need git skip without it: ``pytest.importorskip``'s kind, for a program."""
    import shutil

    if shutil.which("git") is None:
        import pytest

        pytest.skip("git is not installed")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def read_nb(path: Path | str) -> Any:
    return nbformat.read(str(path), as_version=4)


def stream_text(cell: Any, name: str = "stdout") -> str:
    return "".join(
        o.get("text", "")
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == name
    )


# -- waiting for a condition (never a fixed sleep before an assertion) ------------------------


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after
    ``timeout`` seconds naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def process_state(pid: int) -> str | None:
    """The process's state letter from ``/proc`` (``R``, ``S``, ``Z``...), None once gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (any thread of it), read from ``/proc``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                    if int(fh.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def process_report(pid: int) -> str:
    """What a process that should have gone is doing (for a failing test's message): its
    state, parent and threads with where each waits, its open files, and every process."""
    lines = [f"process {pid}:"]
    base = Path(f"/proc/{pid}")
    try:
        status = (base / "status").read_text()
        lines += [x for x in status.splitlines() if x.split(":")[0] in ("State", "PPid", "Threads")]
        for task in sorted((base / "task").iterdir()):
            wchan = (task / "wchan").read_text().strip() or "-"
            comm = (task / "comm").read_text().strip()
            lines.append(f"  thread {task.name} {comm}: waits in {wchan}")
        for fd in sorted((base / "fd").iterdir(), key=lambda f: int(f.name)):
            with contextlib.suppress(OSError):
                lines.append(f"  fd {fd.name} -> {os.readlink(fd)}")
    except OSError as exc:
        lines.append(f"  ({exc})")
    ps = subprocess.run(["ps", "-eo", "pid,ppid,stat,args"], capture_output=True, text=True)
    user = [x for x in ps.stdout.splitlines() if x.split()[1:2] != ["2"] and x.split()[:1] != ["2"]]
    return "\n".join(lines + user)


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """True once process ``pid`` has exited (False if it still runs after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def wait_for_file(path: Path, *, contains: str | None = None, timeout: float = 60.0) -> str:
    """Wait until ``path`` exists (and holds ``contains``); return its text."""

    def ready() -> str | None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        return text if contains is None or contains in text else None

    found: str = wait_for(
        ready, timeout=timeout, what=f"{path}" + (f" to hold {contains!r}" if contains else "")
    )
    return found


def wait_for_run_state(
    home: Path, states: set[str], *, count: int = 1, timeout: float = 60.0
) -> list[Any]:
    """Wait until ``count`` runs of the history in ``home`` (or in the database that
    ``KILN_DATABASE_URL`` names) are in one of ``states``."""
    import sqlite3

    url = os.environ.get("KILN_DATABASE_URL")

    def rows_in_database() -> list[Any] | None:
        import sqlalchemy as sa

        engine = sa.create_engine(url or "", poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                return list(conn.exec_driver_sql("select id, state from runs").all())
        except sa.exc.ProgrammingError:  # the schema is not created yet
            return None
        finally:
            engine.dispose()

    def matching() -> list[Any] | None:
        if url:
            rows = rows_in_database()
            if rows is None:
                return None
        else:
            db = home / "kiln.db"
            if not db.exists():
                return None
            try:
                with sqlite3.connect(db) as conn:
                    rows = conn.execute("select id, state from runs").fetchall()
            except sqlite3.OperationalError:  # the schema is not created yet
                return None
        found = [row for row in rows if row[1] in states]
        return found if len(found) >= count else None

    result: list[Any] = wait_for(matching, timeout=timeout, what=f"{count} run(s) in {states}")
    return result


def start_barrier(folder: Path, count: int, *, timeout: float = 60.0) -> Path:
    """Wait until ``count`` processes wrote ``ready-*`` files in ``folder``, then release them
    all at once by creating ``go`` (returned). Each process does: touch ready-N, wait for go."""
    wait_for(
        lambda: len(list(folder.glob("ready-*"))) >= count,
        timeout=timeout,
        what=f"{count} processes at the start line",
    )
    go = folder / "go"
    go.touch()
    return go
