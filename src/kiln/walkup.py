"""Finding the nearest folder, at or above a start, that holds a given entry (the project
file, a repository's ``.git``): one walk up the tree for every such lookup.

Written with ``os.path``, not pathlib: every run looks these up, and this is about five
times cheaper."""

from __future__ import annotations

import os
from collections.abc import Callable


def nearest(start: str | os.PathLike[str], holds: Callable[[str], bool]) -> str | None:
    """The first folder at or above ``start`` (a folder, or a file's folder; relative to the
    working directory) for which ``holds(folder)`` is true, or None."""
    folder = os.fspath(start)
    if not os.path.isabs(folder):
        folder = os.path.join(os.getcwd(), folder)
    if not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    while True:
        if holds(folder):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
