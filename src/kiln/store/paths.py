"""Where the store lives on disk and what runs are called.

Kept free of SQLAlchemy so that naming a run or finding the home folder costs no imports.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path

#: Run ids become folder names and URL segments: letters, digits, ``.``, ``_`` and ``-`` only.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: Names that mean something else to :meth:`RunStore.get_run` and so cannot be run ids.
RESERVED_IDS = frozenset({"last"})


def default_home(cwd: Path | None = None) -> Path:
    """The Kiln home folder: ``$KILN_HOME``; else ``.kiln`` beside the nearest ``kiln.yaml``
    above ``cwd``; else ``<cwd>/.kiln`` (see :func:`kiln.project.find_home`)."""
    from kiln.project import find_home

    return find_home(cwd)


def database_url() -> str | None:
    """The runs database chosen for this process: ``$KILN_DATABASE_URL``, else ``store.url`` of
    the ``kiln.yaml`` above the working directory; None means SQLite in the home folder."""
    env = os.environ.get("KILN_DATABASE_URL", "").strip()
    if env:
        return env
    from kiln.project import find_project_file

    if find_project_file() is None:
        return None
    from kiln.project import load_project

    section = load_project().config.store
    return section.url if section is not None else None


_issued: tuple[str, set[str]] = ("", set())


def new_run_id() -> str:
    """A new run id such as ``20240131-154502-3fa9c1d2``.

    UTC time to the second, then 32 random bits: ids sort by creation time and are safe in
    file names and URLs. Within one process an id is never issued twice (sweeps start many
    runs per second); across processes two runs in the same second collide with odds of one
    in four billion.
    """
    global _issued
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    if _issued[0] != stamp:
        _issued = (stamp, set())
    while True:
        run_id = f"{stamp}-{secrets.token_hex(4)}"
        if run_id not in _issued[1]:
            _issued[1].add(run_id)
            return run_id


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is usable as a folder name, else raise ``ValueError``."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ValueError(
            f"invalid run id {run_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if run_id in RESERVED_IDS:
        raise ValueError(f"invalid run id {run_id!r}: the name is reserved")
    return run_id
