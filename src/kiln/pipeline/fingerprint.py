"""Whether a task is up to date, and why not: fingerprints, and file hashes cached on
(path, size, modification time).

A task's *fingerprint* is what its last successful run saw and wrote: the notebook's code
(each cell's source and tags, never outputs, execution counts or metadata), the kernel and
engine asked for, the resolved parameters, the content hashes of its upstream tasks' products
and of its declared inputs, and the content hashes of the products it wrote. The task is up to
date while all of them are unchanged; :func:`compare` names each difference as a person would
("code changed in cell 3", "upstream clean re-ran", "product out/a.json missing").

Hashes of files are sha256 of their content. :class:`FileHasher` remembers them in the history
keyed by a *stamp* (size and modification time, or an object store's ETag), so checking a big
project reads only the files that changed. A file modified within two seconds of being hashed
is not remembered (a second change in the same clock tick would keep its stamp).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.remote import is_url

if TYPE_CHECKING:
    from kiln.pipeline.model import Task
    from kiln.store.builds import BuildStore

#: a file changed this recently is hashed but its hash is not remembered
RACY_NS = 2_000_000_000
_BLOCK = 1 << 20


class FileHasher:
    """sha256 of files and URLs, remembered per stamp in the history (``builds``) and per
    location for the life of this object (one build or one status check)."""

    def __init__(self, builds: BuildStore | None = None) -> None:
        self.builds = builds
        self._stored: dict[str, tuple[str, str]] = {}
        self._loaded: set[str] = set()
        self._memo: dict[str, str | None] = {}
        self._new: dict[str, tuple[str, str]] = {}

    def preload(self, locations: Iterable[str]) -> None:
        """Fetch the remembered hashes of many locations in one query."""
        wanted = [loc for loc in locations if loc not in self._loaded]
        if not wanted:
            return
        self._loaded.update(wanted)
        if self.builds is not None:
            self._stored.update(self.builds.file_hashes(wanted))

    def sha(self, location: str) -> str | None:
        """The content hash of a file, folder or URL; ``None`` when it does not exist."""
        if location in self._memo:
            return self._memo[location]
        if location not in self._loaded:
            self.preload([location])
        found = self._remote(location) if is_url(location) else self._local(location)
        self._memo[location] = found
        return found

    def forget(self, locations: Iterable[str]) -> None:
        """These were just (re)written: hash them again when next asked."""
        for location in locations:
            self._memo.pop(location, None)

    def flush(self) -> None:
        """Remember the hashes computed since the last flush."""
        new = self.take_new()
        if new and self.builds is not None:
            self.builds.save_file_hashes(new)

    def take_new(self) -> dict[str, tuple[str, str]]:
        """The hashes computed since the last call, for the caller to save."""
        new, self._new = self._new, {}
        return new

    # -- local files --------------------------------------------------------------------------

    def _local(self, location: str) -> str | None:
        try:
            info = os.stat(location)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISDIR(info.st_mode):
            return self._folder(Path(location))
        stamp = f"{info.st_size}:{info.st_mtime_ns}"
        known = self._stored.get(location)
        if known is not None and known[0] == stamp:
            return known[1]
        digest = _file_sha(location)
        if time.time_ns() - info.st_mtime_ns > RACY_NS:
            self._new[location] = (stamp, digest)
            self._stored[location] = (stamp, digest)
        return digest

    def _folder(self, folder: Path) -> str:
        """A folder's hash: its files' relative paths and hashes, in order."""
        parts = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            parts.append(f"{path.relative_to(folder).as_posix()}\0{self._local(str(path))}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    # -- URLs ---------------------------------------------------------------------------------

    def _remote(self, location: str) -> str | None:
        from kiln.remote import _filesystem

        if location.startswith("file://"):
            return self._local(location[len("file://") :])
        fs, path = _filesystem(location)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            parts = [
                f"{f[len(path) :]}\0{self._remote_file(fs, f, fs.info(f), None)}"
                for f in sorted(fs.find(path))
            ]
            return hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return self._remote_file(fs, path, info, location)

    def _remote_file(self, fs: Any, path: str, info: Mapping[str, Any], key: str | None) -> str:
        """A remote file's hash, remembered under ``key`` (none: not remembered)."""
        tag = next(
            (str(info[k]) for k in ("ETag", "etag", "md5Hash", "crc32c") if info.get(k)), None
        )
        stamp = f"{info.get('size')}:{tag}" if tag else None
        known = self._stored.get(key) if key is not None else None
        if stamp is not None and known is not None and known[0] == stamp:
            return known[1]
        digest = hashlib.sha256()
        with fs.open(path, "rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
        found = digest.hexdigest()
        if stamp is not None and key is not None:  # an ETag follows the content: no racy tick
            self._new[key] = (stamp, found)
            self._stored[key] = (stamp, found)
        return found


def _file_sha(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# -- the notebook's code ------------------------------------------------------------------------


@dataclass(frozen=True)
class NotebookCode:
    """What of a notebook decides its results: each cell's type, source and tags, and the
    kernel. Outputs, execution counts and other metadata are left out."""

    sha256: str
    cells: tuple[str, ...]
    kernel: str

    @classmethod
    def of(cls, data: bytes, *, path: str) -> NotebookCode:
        from kiln.notebook.io import load_json, to_v4

        raw = load_json(data, path=path)
        if raw.get("nbformat") != 4:
            raw = to_v4(raw, path=path, validate=False)
        cells = []
        for cell in raw.get("cells", []):
            source = cell.get("source", "")
            if isinstance(source, list):
                source = "".join(source)
            tags = list((cell.get("metadata") or {}).get("tags") or [])
            text = json.dumps([cell.get("cell_type"), source, tags], ensure_ascii=False)
            cells.append(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])
        kernel = ((raw.get("metadata") or {}).get("kernelspec") or {}).get("name") or "python3"
        return cls(hashlib.sha256(data).hexdigest(), tuple(cells), str(kernel))


# -- fingerprints and their differences -------------------------------------------------------


@dataclass
class Fingerprint:
    """What a task's run saw and wrote; stored as JSON (:meth:`to_json`)."""

    notebook: str
    cells: list[str]
    kernel: str
    engine: str
    parameters: dict[str, Any]
    upstream: dict[str, dict[str, str]] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    products: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "cells": list(self.cells),
            "kernel": self.kernel,
            "engine": self.engine,
            "parameters": self.parameters,
            "upstream": self.upstream,
            "inputs": self.inputs,
            "products": self.products,
        }

    def product_hashes(self) -> dict[str, str]:
        return {name: item["sha256"] for name, item in self.products.items()}


def task_kernel(task: Task, code_kernel: str) -> str:
    return task.kernel or code_kernel


def task_engine(task: Task, default: str | None) -> str:
    return task.engine or default or "auto"


@dataclass
class Check:
    """The outcome of comparing a task with its last good state."""

    reasons: list[str]
    #: the task's current code, when it had to be read
    code: NotebookCode | None = None

    @property
    def up_to_date(self) -> bool:
        return not self.reasons


def compare(
    task: Task,
    recorded: Mapping[str, Any] | None,
    *,
    hasher: FileHasher,
    root: Path,
    engine_default: str | None,
    upstream_now: Mapping[str, Mapping[str, str] | None],
    upstream_ran: Iterable[str] = (),
) -> Check:
    """Why ``task`` is not up to date (no reasons: it is).

    ``upstream_now`` holds each upstream task's current product hashes, or ``None`` for an
    upstream task that is itself outdated (it will run first, so this one must follow);
    ``upstream_ran`` names those that ran in this build."""
    if not recorded:
        return Check(["never ran successfully"])
    reasons: list[str] = []
    code: NotebookCode | None = None
    notebook_sha = hasher.sha(str(task.notebook))
    if notebook_sha is None:
        return Check([f"notebook {shown(str(task.notebook), root)} missing"])
    if notebook_sha != recorded.get("notebook"):
        code = NotebookCode.of(task.notebook.read_bytes(), path=str(task.notebook))
        reasons += _code_changes(list(recorded.get("cells", [])), list(code.cells))
        kernel = task_kernel(task, code.kernel)
        if kernel != recorded.get("kernel"):
            reasons.append(f"kernel changed: {recorded.get('kernel')} -> {kernel}")
    elif task.kernel is not None and task.kernel != recorded.get("kernel"):
        reasons.append(f"kernel changed: {recorded.get('kernel')} -> {task.kernel}")
    engine = task_engine(task, engine_default)
    if engine != recorded.get("engine"):
        reasons.append(f"engine changed: {recorded.get('engine')} -> {engine}")
    reasons += _parameter_changes(dict(recorded.get("parameters", {})), dict(task.parameters))
    before_products = {k: v.get("location") for k, v in dict(recorded.get("products", {})).items()}
    if before_products != dict(task.products):
        reasons.append("products changed in kiln.yaml")
    reasons += _input_changes(task, dict(recorded.get("inputs", {})), hasher, root)
    reasons += _upstream_changes(
        dict(recorded.get("upstream", {})), upstream_now, set(upstream_ran)
    )
    if not reasons:
        reasons += _product_changes(task, dict(recorded.get("products", {})), hasher, root)
    return Check(reasons, code)


def _code_changes(before: list[str], now: list[str]) -> list[str]:
    changed = [i for i, (a, b) in enumerate(zip(before, now, strict=False)) if a != b]
    if len(before) != len(now):
        if len(now) > len(before) and before == now[: len(before)]:
            return [f"cells added after cell {len(before) - 1}" if before else "cells added"]
        first = changed[0] if changed else min(len(before), len(now))
        return [f"cells added or removed ({len(before)} -> {len(now)} cells, from cell {first})"]
    if not changed:
        return []
    cells = ", ".join(str(i) for i in changed[:5]) + (" ..." if len(changed) > 5 else "")
    return [f"code changed in cell{'s' if len(changed) > 1 else ''} {cells}"]


def _parameter_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    if _json(before) == _json(now):
        return []
    parts = []
    for name in dict.fromkeys([*before, *now]):
        if name not in now:
            parts.append(f"{name} removed")
        elif name not in before:
            parts.append(f"{name}={_short(now[name])} added")
        elif _json(before[name]) != _json(now[name]):
            parts.append(f"{name} {_short(before[name])} -> {_short(now[name])}")
    return [f"parameters changed: {', '.join(parts)}"]


def _input_changes(task: Task, before: dict[str, str], hasher: FileHasher, root: Path) -> list[str]:
    reasons = []
    for location in task.inputs:
        now = hasher.sha(location)
        if now is None:
            reasons.append(f"input {shown(location, root)} missing")
        elif location not in before:
            reasons.append(f"input {shown(location, root)} added")
        elif before[location] != now:
            reasons.append(f"input {shown(location, root)} changed")
    gone = [loc for loc in before if loc not in task.inputs]
    if gone:
        reasons.append(f"input {shown(gone[0], root)} no longer declared")
    return reasons


def _upstream_changes(
    before: dict[str, dict[str, str]],
    now: Mapping[str, Mapping[str, str] | None],
    ran: set[str],
) -> list[str]:
    reasons = []
    for name, hashes in now.items():
        if hashes is None:
            reasons.append(f"upstream {name} is outdated")
        elif name not in before:
            reasons.append(f"upstream {name} added")
        elif dict(hashes) != before[name]:
            reasons.append(
                f"upstream {name} re-ran" if name in ran else f"upstream {name}'s products changed"
            )
    gone = [name for name in before if name not in now]
    if gone:
        reasons.append(f"upstream {gone[0]} removed")
    return reasons


def _product_changes(
    task: Task, before: dict[str, dict[str, str]], hasher: FileHasher, root: Path
) -> list[str]:
    reasons = []
    for name, location in task.products.items():
        now = hasher.sha(location)
        if now is None:
            reasons.append(f"product {shown(location, root)} missing")
        elif before.get(name, {}).get("sha256") != now:
            reasons.append(f"product {shown(location, root)} changed since the task wrote it")
    return reasons


def shown(location: str, root: Path) -> str:
    """A location as messages show it: relative to the project root when inside it."""
    if is_url(location):
        return location
    try:
        return Path(location).relative_to(root).as_posix()
    except ValueError:
        return location


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any, limit: int = 30) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
