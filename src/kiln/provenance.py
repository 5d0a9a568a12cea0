"""What a run ran with: its Python environment, the OS, the git state, the files it read.

Every run records this (``kiln runs show``, ``kiln rerun``, ``kiln runs compare``), so each
piece is computed once and reused, never per run:

- **The environment** (Python version, OS, machine and the installed distributions) is read
  from the ``*.dist-info`` / ``*.egg-info`` folder names on the interpreter's ``sys.path``
  (about 1 ms; ``importlib.metadata`` parses every METADATA file and costs 0.3 s here), once
  per Python executable and process, and again only when a site folder changes (an install
  or an upgrade changes its modification time). Its hash keys the one stored copy.
- **The git state** of a notebook's repository (commit, dirty flag, a hash of the diff) is
  read with ``git status`` / ``git diff`` at most once per repository every
  :data:`GIT_TTL` seconds, and again at once when ``HEAD`` or the index changes.
- **Input files** are hashed once per content: a file is hashed again only when its size,
  modification time or inode changes.

Only the standard library is used: the fork engine's supervisor and ``kiln.input`` inside a
notebook both call this.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from kiln.walkup import nearest

__all__ = [
    "GIT_TTL",
    "Environment",
    "GitState",
    "InputFile",
    "current_environment",
    "environment_of",
    "git_fingerprint",
    "git_state",
    "hash_file",
    "known_environment",
    "known_git_state",
    "package_changes",
]

#: seconds a repository's git state is reused while neither HEAD nor the index changed
GIT_TTL = 2.0
#: a git command taking longer than this is given up (the run records no git state)
GIT_TIMEOUT = 5.0

_lock = threading.Lock()


# -- the environment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """A Python environment (or a kernel of another language): what ran the notebook."""

    language: str
    #: the language's version (Python's ``3.11.7``)
    version: str
    implementation: str
    #: ``platform.platform()``: OS, release, machine, libc
    os: str
    machine: str
    #: (name, version) of each installed distribution, sorted by name
    packages: tuple[tuple[str, str], ...] = ()
    executable: str | None = field(default=None, compare=False)

    @cached_property
    def hash(self) -> str:
        """sha256 of what defines the environment (the executable's path aside: two copies
        of one venv are one environment)."""
        data = json.dumps(self.key_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode("utf-8")).hexdigest()

    def key_json(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "version": self.version,
            "implementation": self.implementation,
            "os": self.os,
            "machine": self.machine,
            "packages": [list(p) for p in self.packages],
        }

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, **self.key_json(), "executable": self.executable}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Environment:
        return cls(
            language=str(data.get("language") or "python"),
            version=str(data.get("version") or ""),
            implementation=str(data.get("implementation") or ""),
            os=str(data.get("os") or ""),
            machine=str(data.get("machine") or ""),
            packages=tuple((str(n), str(v)) for n, v in data.get("packages") or ()),
            executable=data.get("executable"),
        )

    @property
    def package_map(self) -> dict[str, str]:
        return dict(self.packages)


def package_changes(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, list[Any]]:
    """Distributions ``added`` / ``removed`` (names) and ``changed`` ([name, old, new])."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": [
            [n, before[n], after[n]] for n in sorted(before) if n in after and before[n] != after[n]
        ],
    }


_DIST = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+?)(?:-py[\d.]+)?(?:-[^-]*)?\.(dist|egg)-info$"
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def scan_distributions(paths: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """(name, version) of the distributions installed on ``paths``, from their metadata
    folders' names; the first found wins, as for imports."""
    found: dict[str, str] = {}
    for folder in paths:
        try:
            entries = list(os.scandir(folder or "."))
        except OSError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            if not (name.endswith(".dist-info") or name.endswith(".egg-info")):
                continue
            match = _DIST.match(name)
            if match is None:
                dist, version = name.rsplit(".", 1)[0], _version_from_file(entry.path)
            else:
                dist, version = match["name"], match["version"]
            key = _canonical(dist)
            if key and key not in found:
                found[key] = version or _version_from_file(entry.path)
    return tuple(sorted(found.items()))


def _version_from_file(path: str) -> str:
    """The ``Version:`` header of a metadata folder (or egg-info file), read line by line."""
    target = path
    if os.path.isdir(path):
        for candidate in ("METADATA", "PKG-INFO"):
            if os.path.isfile(os.path.join(path, candidate)):
                target = os.path.join(path, candidate)
                break
        else:
            return ""
    try:
        with open(target, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("Version:"):
                    return line.partition(":")[2].strip()
                if not line.strip():
                    break
    except OSError:
        pass
    return ""


def _fingerprint(paths: Sequence[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for folder in paths:
        try:
            out.append((folder, os.stat(folder or ".").st_mtime_ns))
        except OSError:
            out.append((folder, -1))
    return tuple(out)


#: executable -> (sys.path, fingerprint of its folders, environment)
_known: dict[str, tuple[tuple[str, ...], tuple[tuple[str, int], ...], Environment]] = {}
#: another interpreter's description (version, os, sys.path), asked once per process
_described: dict[str, dict[str, Any]] = {}


#: machines on which ``uname -p`` prints ``unknown`` (Debian, Ubuntu, Alpine, Arch: upstream
#: coreutils) or the machine itself (Fedora, RHEL, SUSE patch it so): ``platform.platform()``
#: leaves both out of its description, so there it needs no ``uname -p`` subprocess
_PROCESSOR_LEFT_OUT = frozenset({"x86_64", "aarch64", "arm64", "ppc64le", "s390x", "riscv64"})


@cache
def os_description() -> str:
    """``platform.platform()`` (``Linux-6.1.0-18-amd64-x86_64-with-glibc2.36``), computed
    without the ``uname -p`` subprocess it starts on Linux (``platform.uname().processor``).

    On Linux with glibc, on the machines of :data:`_PROCESSOR_LEFT_OUT`, the text is the
    same pieces ``platform.platform()`` joins: the kernel's release and machine, then the C
    library's version as ``os.confstr`` gives it (what ``platform.libc_ver`` reads first).
    Anywhere else (another OS or machine, musl, Gentoo, whose ``uname -p`` names the CPU
    model) it is ``platform.platform()`` itself."""
    uname = os.uname()
    if (
        sys.platform.startswith("linux")
        and uname.sysname == "Linux"
        and uname.machine in _PROCESSOR_LEFT_OUT
        and not os.path.exists("/etc/gentoo-release")
    ):
        try:
            libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
        except (ValueError, OSError):
            libc = ""
        parts = libc.split(maxsplit=1)
        if len(parts) == 2:
            return _platform_text("Linux", uname.release, uname.machine, "with", "".join(parts))
    return platform.platform()


def _platform_text(*parts: str) -> str:
    """The pieces joined and cleaned as ``platform.platform()`` does (``platform._platform``:
    file-name safe, no ``unknown``, no doubled or trailing ``-``)."""
    text = "-".join(part.strip() for part in parts if part)
    for char in ' /\\:;"()':
        text = text.replace(char, "_" if char == " " else "-")
    text = text.replace("unknown", "")
    while "--" in text:
        text = text.replace("--", "-")
    return text.rstrip("-")


def current_environment() -> Environment:
    """This interpreter's environment (the fork engine's kernels run this Python)."""
    paths = tuple(p for p in sys.path if p)
    return _cached(
        sys.executable,
        paths,
        lambda packages: Environment(
            language="python",
            version=platform.python_version(),
            implementation=platform.python_implementation(),
            os=os_description(),
            machine=platform.machine(),
            packages=packages,
            executable=sys.executable,
        ),
    )


def environment_of(executable: str | None, *, language: str = "python") -> Environment:
    """The environment of the interpreter a kernel runs: this one when ``executable`` is
    None, ``python``/``python3`` or the same file; another Python is asked once per process
    for its version and ``sys.path`` (its distributions are then read from the folders). A
    kernel of another language gets the OS and machine only."""
    if not language.lower().startswith("python"):
        return Environment(
            language=language.lower(),
            version="",
            implementation="",
            os=os_description(),
            machine=platform.machine(),
        )
    if executable in (None, "", "python", "python3", "{python}", sys.executable) or _same(
        str(executable), sys.executable
    ):
        return current_environment()
    exe = str(executable)
    info = _described.get(exe)
    if info is None:
        info = _describe(exe)
        _described[exe] = info
    if not info:
        return Environment(
            language="python",
            version="",
            implementation="",
            os=os_description(),
            machine=platform.machine(),
            executable=exe,
        )
    paths = tuple(p for p in info.get("path", []) if p)
    return _cached(
        exe,
        paths,
        lambda packages: Environment(
            language="python",
            version=str(info.get("version", "")),
            implementation=str(info.get("implementation", "")),
            os=str(info.get("os") or os_description()),
            machine=str(info.get("machine", platform.machine())),
            packages=packages,
            executable=exe,
        ),
    )


def known_environment(executable: str | None, *, language: str = "python") -> Environment | None:
    """:func:`environment_of`'s answer when it is at hand: no distributions to scan, no
    other interpreter to ask (a few ``stat`` calls); None when finding it takes longer."""
    if not language.lower().startswith("python"):
        return environment_of(executable, language=language)
    if executable in (None, "", "python", "python3", "{python}", sys.executable):
        return _known_now(sys.executable, tuple(p for p in sys.path if p))
    exe = str(executable)
    if _same(exe, sys.executable):
        return _known_now(sys.executable, tuple(p for p in sys.path if p))
    info = _described.get(exe)
    if info is None:
        return None
    if not info:
        return environment_of(exe, language=language)
    return _known_now(exe, tuple(p for p in info.get("path", []) if p))


def _known_now(executable: str, paths: tuple[str, ...]) -> Environment | None:
    fingerprint = _fingerprint(paths)
    with _lock:
        known = _known.get(executable)
        if known is not None and known[0] == paths and known[1] == fingerprint:
            return known[2]
    return None


def _cached(
    executable: str, paths: tuple[str, ...], build: Any
) -> Environment:  # Any: a callable packages -> Environment
    fingerprint = _fingerprint(paths)
    with _lock:
        known = _known.get(executable)
        if known is not None and known[0] == paths and known[1] == fingerprint:
            return known[2]
        env: Environment = build(scan_distributions(paths))
        _known[executable] = (paths, fingerprint, env)
        return env


_DESCRIBE = (
    "import json, platform, sys; print(json.dumps({'version': platform.python_version(), "
    "'implementation': platform.python_implementation(), 'os': platform.platform(), "
    "'machine': platform.machine(), 'path': sys.path}))"
)


def _describe(executable: str) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [executable, "-c", _DESCRIBE],
            capture_output=True,
            timeout=30,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        data = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _same(a: str, b: str) -> bool:
    """The same interpreter in the same environment: a venv's ``bin/python`` is a symlink to
    the base interpreter, so the same file is not enough; the folder must be the same too."""
    try:
        folders = (
            os.path.realpath(os.path.dirname(os.path.abspath(a))),
            os.path.realpath(os.path.dirname(os.path.abspath(b))),
        )
        return folders[0] == folders[1] and os.path.samefile(a, b)
    except OSError:
        return False


# -- git -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitState:
    """The notebook's repository when the run started."""

    root: str
    commit: str | None
    branch: str | None
    dirty: bool
    #: sha256 of ``git diff HEAD`` and the untracked files' names (None when clean)
    diff_sha256: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "commit": self.commit,
            "branch": self.branch,
            "dirty": self.dirty,
            "diff_sha256": self.diff_sha256,
        }


#: (repository root, excluded folder) -> (fingerprint, when read, state)
_git_cache: dict[tuple[str, str | None], tuple[tuple[Any, ...], float, GitState | None]] = {}
#: repository root -> its git folder (worktrees keep it elsewhere)
_git_dirs: dict[str, str | None] = {}


def find_repository(start: str | os.PathLike[str]) -> Path | None:
    """The nearest folder at or above ``start`` holding ``.git`` (a folder or a worktree's
    file)."""
    found = nearest(start, lambda folder: os.path.exists(os.path.join(folder, ".git")))
    return Path(found) if found is not None else None


def git_state(
    start: str | os.PathLike[str],
    *,
    exclude: str | os.PathLike[str] | None = None,
    now: float | None = None,
) -> GitState | None:
    """The git state of the repository holding ``start`` (None outside a repository, or
    without git). ``exclude`` is a folder left out of the state: Kiln's own home (``.kiln/``
    beside ``kiln.yaml``), which is not part of the project and would otherwise make every
    repository without a ``.gitignore`` entry for it look dirty."""
    root = find_repository(start)
    if root is None:
        return None
    skip = _relative(exclude, root) if exclude is not None else None
    key = (str(root), skip)
    clock = time.monotonic() if now is None else now
    fingerprint = git_fingerprint(str(root))
    cached = _git_cache.get(key)
    if cached is not None and cached[0] == fingerprint and clock - cached[1] < GIT_TTL:
        return cached[2]
    state = _read_git(str(root), skip)
    _git_cache[key] = (fingerprint, clock, state)
    return state


def known_git_state(
    start: str | os.PathLike[str], *, exclude: str | os.PathLike[str] | None = None
) -> tuple[bool, GitState | None]:
    """:func:`git_state`'s answer when no git command is needed (outside a repository, or
    cached and unchanged): ``(True, state)``; ``(False, None)`` when git must be asked."""
    root = find_repository(start)
    if root is None:
        return True, None
    skip = _relative(exclude, root) if exclude is not None else None
    cached = _git_cache.get((str(root), skip))
    if (
        cached is not None
        and cached[0] == git_fingerprint(str(root))
        and time.monotonic() - cached[1] < GIT_TTL
    ):
        return True, cached[2]
    return False, None


def _relative(folder: str | os.PathLike[str], root: Path) -> str | None:
    """``folder`` relative to ``root`` (POSIX), or None when it is not inside it."""
    try:
        inside = Path(folder).absolute().relative_to(root)
    except ValueError:
        return None
    text = inside.as_posix()
    return None if text in ("", ".") else text


def git_fingerprint(root: str) -> tuple[Any, ...]:
    """What changes when a commit is made or the index changes: two ``stat`` calls (the
    modification times and sizes of the repository's ``HEAD`` and ``index``)."""
    if root not in _git_dirs:
        _git_dirs[root] = _git_dir(root)
    folder = _git_dirs[root]
    if folder is None:
        return ()
    out: list[Any] = []
    for name in ("HEAD", "index"):
        try:
            stat = os.stat(os.path.join(folder, name))
            out.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def _git_dir(root: str) -> str | None:
    dotgit = os.path.join(root, ".git")
    if os.path.isdir(dotgit):
        return dotgit
    try:
        with open(dotgit, encoding="utf-8") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    if text.startswith("gitdir:"):
        target = text.partition(":")[2].strip()
        return target if os.path.isabs(target) else os.path.join(root, target)
    return None


def _git(root: str, *args: str) -> bytes | None:
    try:
        done = subprocess.run(
            ["git", "-C", root, *args],
            capture_output=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _read_git(root: str, exclude: str | None = None) -> GitState | None:
    spec = ["--", ".", f":(exclude){exclude}"] if exclude else []
    status = _git(root, "status", "--porcelain=v2", "--branch", "-z", *spec)
    if status is None:
        return None
    commit = branch = None
    changed: list[bytes] = []
    untracked: list[bytes] = []
    for entry in status.split(b"\0"):
        if entry.startswith(b"# branch.oid "):
            oid = entry.split(b" ", 2)[2].decode()
            commit = None if oid == "(initial)" else oid
        elif entry.startswith(b"# branch.head "):
            head = entry.split(b" ", 2)[2].decode()
            branch = None if head == "(detached)" else head
        elif entry.startswith(b"? "):
            untracked.append(entry[2:])
        elif entry[:2] in (b"1 ", b"2 ", b"u "):
            changed.append(entry)
    dirty = bool(changed or untracked)
    diff_sha = None
    if dirty:
        digest = hashlib.sha256()
        if changed and commit is not None:
            digest.update(
                _git(root, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", *spec) or b""
            )
        elif changed:
            digest.update(b"\0".join(changed))
        for name in sorted(untracked):
            digest.update(b"\0untracked\0" + name)
        diff_sha = digest.hexdigest()
    return GitState(root=root, commit=commit, branch=branch, dirty=dirty, diff_sha256=diff_sha)


# -- input files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    """A file a run declared it reads, and its content hash when the run started."""

    path: str
    sha256: str | None
    size: int | None
    #: "project" (kiln.yaml inputs) or "notebook" (kiln.input)
    source: str = "project"
    #: why it could not be hashed (missing, unreadable)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "size": self.size}
        out["source"] = self.source
        if self.error:
            out["error"] = self.error
        return out


#: realpath -> ((size, mtime_ns, inode), sha256)
_hashes: dict[str, tuple[tuple[int, int, int], str]] = {}


def hash_file(path: str | os.PathLike[str], *, source: str = "project") -> InputFile:
    """The file's sha256 (read again only when its size, mtime or inode changed)."""
    shown = os.path.abspath(path)
    try:
        stat = os.stat(shown)
    except OSError as exc:
        return InputFile(shown, None, None, source, exc.strerror or str(exc))
    if not os.path.isfile(shown):
        return InputFile(shown, None, None, source, "not a file")
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    real = os.path.realpath(shown)
    cached = _hashes.get(real)
    if cached is not None and cached[0] == key:
        return InputFile(shown, cached[1], stat.st_size, source)
    digest = hashlib.sha256()
    try:
        with open(shown, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        return InputFile(shown, None, None, source, exc.strerror or str(exc))
    _hashes[real] = (key, digest.hexdigest())
    return InputFile(shown, digest.hexdigest(), stat.st_size, source)
