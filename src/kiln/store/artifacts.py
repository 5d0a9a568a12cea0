"""Run artefacts on object storage: input, output notebook, log and files of every run at an
fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``file:///shared/...``), readable from any
machine.

``KILN_ARTIFACTS`` (or ``store: {artifacts: ...}`` in ``kiln.yaml``) turns it on; without it a
run's files stay in its local run folder, as always. With it, a run still writes locally (the
run folder is its scratch space: atomic saves, a line-buffered log), and :class:`RunUpload`
copies what changed there every few seconds while the run goes on and everything at its end,
before its terminal state is written: a run that says ``succeeded`` has its files in the store.
Then the local folder goes. The run's row names the objects (``run_dir``, ``input_path``,
``output_path``, ``log_path`` hold URLs), so ``kiln runs show/logs``, the API and
``kiln runs prune`` find them wherever they run.

Layout under the URL: ``inputs/<sha256>.ipynb`` (each submitted notebook once per content)
and ``runs/<run id>/`` (``output.ipynb``, ``run.log``, ``artifacts/...``). Each object is
written whole (object stores make a PUT appear at once; on ``file://`` a temporary file is
renamed into place), so a reader never sees half an object.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kiln.errors import StoreError
from kiln.remote import is_url

#: how often a running run's changed files are copied to the store (seconds)
UPLOAD_EVERY = 5.0

_cache: dict[str, ArtifactStore] = {}


def artifacts_url() -> str | None:
    """The artefact store chosen for this process: ``$KILN_ARTIFACTS``, else ``store.artifacts``
    of the ``kiln.yaml`` above the working directory; None keeps files in run folders."""
    env = os.environ.get("KILN_ARTIFACTS", "").strip()
    if env:
        return env
    from kiln.project import find_project_file

    if find_project_file() is None:
        return None
    from kiln.project import load_project

    section = load_project().config.store
    return section.artifacts if section is not None else None


def artifact_store(url: str | None = None) -> ArtifactStore | None:
    """The store at ``url`` (default :func:`artifacts_url`), one per URL per process."""
    url = url if url is not None else artifacts_url()
    if not url:
        return None
    found = _cache.get(url)
    if found is None:
        found = _cache[url] = ArtifactStore(url)
    return found


def is_remote(path: str | None) -> bool:
    """A row's path that names an object (a URL), not a local file."""
    return is_url(path)


class ArtifactStore:
    """One artefact store: an fsspec filesystem and the root URL of Kiln's objects."""

    def __init__(self, url: str) -> None:
        if not is_url(url):
            raise StoreError(
                f"the artefact store {url!r} is not a URL: expected e.g. s3://bucket/prefix, "
                "gs://bucket/prefix or file:///shared/folder"
            )
        from kiln.remote import _filesystem

        self.url = url.rstrip("/")
        try:
            self.fs, root = _filesystem(self.url)
        except Exception as exc:  # UsageError naming the package to install, or the fs's own
            raise StoreError(f"cannot use the artefact store {self.url}: {exc}") from exc
        self.root = str(root).rstrip("/")
        self.local = "file" in _protocols(self.fs)
        self._inputs: set[str] = set()

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- names -----------------------------------------------------------------------------

    def run_url(self, run_id: str, name: str = "") -> str:
        return f"{self.url}/runs/{run_id}" + (f"/{name}" if name else "")

    def input_url(self, sha256: str) -> str:
        return f"{self.url}/inputs/{sha256}.ipynb"

    def _path(self, url: str) -> str:
        """The filesystem path of one of this store's URLs."""
        if not url.startswith(self.url + "/"):
            raise StoreError(f"{url} is not in the artefact store {self.url}")
        return self.root + url[len(self.url) :]

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(self, url: str, data: bytes) -> None:
        """Write one object whole."""
        path = self._path(url)
        try:
            if self.local:
                folder = os.path.dirname(path)
                os.makedirs(folder, exist_ok=True)
                tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
                with open(tmp, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        except Exception as exc:
            raise StoreError(f"cannot write {url}: {_why(exc)}") from exc

    def put_files(self, pairs: list[tuple[Path, str]]) -> None:
        """Copy local files to objects (concurrently where the filesystem can)."""
        if not pairs:
            return
        if self.local or len(pairs) == 1:
            for local, url in pairs:
                self.put_bytes(url, local.read_bytes())
            return
        try:  # one PUT per object, concurrently (no listing or HEAD first, unlike put)
            self.fs.pipe({self._path(url): local.read_bytes() for local, url in pairs})
        except Exception as exc:
            raise StoreError(f"cannot write to {self.url}: {_why(exc)}") from exc

    def ensure_input(self, sha256: str, data: bytes) -> str:
        """The object holding a run's input bytes, written the first time only."""
        url = self.input_url(sha256)
        if sha256 in self._inputs:
            return url
        try:
            there = self.fs.exists(self._path(url))
        except Exception as exc:
            raise StoreError(f"cannot reach the artefact store {self.url}: {_why(exc)}") from exc
        if not there:
            self.put_bytes(url, data)
        self._inputs.add(sha256)
        return url

    def remove(self, url: str) -> int:
        """Remove an object or everything under a prefix; how many objects went."""
        path = self._path(url)
        try:
            found = self.fs.find(path)
            if not found:
                return 0
            self.fs.rm(found)
            if self.local:
                with contextlib.suppress(OSError):
                    _remove_empty_folders(Path(path))
            self.fs.invalidate_cache()
            return len(found)
        except FileNotFoundError:
            return 0
        except Exception as exc:
            raise StoreError(f"cannot remove {url}: {_why(exc)}") from exc

    def inputs(self) -> Iterator[tuple[str, float | None]]:
        """The stored inputs: ``(url, modified time or None)``."""
        try:
            entries = self.fs.ls(f"{self.root}/inputs", detail=True, refresh=True)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise StoreError(f"cannot list {self.url}/inputs: {_why(exc)}") from exc
        for entry in entries:
            name = str(entry["name"]).rstrip("/")
            if name.endswith(".ipynb"):
                yield f"{self.url}/inputs/{name.rsplit('/', 1)[-1]}", _mtime(entry)


def read_bytes(path: str) -> bytes:
    """The bytes of a run's file: a local path, or an object of the artefact store."""
    if not is_url(path):
        return Path(path).read_bytes()
    from kiln.remote import _filesystem

    fs, where = _filesystem(path)
    try:
        with fs.open(where, "rb") as handle:
            data: bytes = handle.read()
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise OSError(f"cannot read {path}: {_why(exc)}") from exc
    return data


def read_range(path: str, start: int = 0, *, live: Path | None = None) -> bytes:
    """A run's file from byte ``start`` on: its ``live`` local copy while that exists (the run
    goes on on this machine, in this home), else the file or the object (as of its last copy,
    a few seconds old while the run goes on). FileNotFoundError when neither is there."""
    if live is not None and is_url(path):
        with contextlib.suppress(FileNotFoundError):
            return _read_local(live, start)
    if not is_url(path):
        return _read_local(Path(path), start)
    from kiln.remote import _filesystem

    fs, where = _filesystem(path)
    try:
        fs.invalidate_cache(where)  # the object grows while the run goes on
        size = int(fs.info(where)["size"])
        if start >= size:
            return b""
        data: bytes = fs.cat_file(where, start=start, end=size)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise OSError(f"cannot read {path}: {_why(exc)}") from exc
    return data


def _read_local(path: Path, start: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read()


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[Path]:
    """A run's file as a local path: itself, or the object downloaded for the block's time."""
    if not is_url(path):
        yield Path(path)
        return
    import tempfile

    data = read_bytes(path)
    with tempfile.TemporaryDirectory(prefix="kiln-") as folder:
        local = Path(folder) / path.rsplit("/", 1)[-1]
        local.write_bytes(data)
        yield local


def exists(path: str) -> bool:
    """Whether a run's file is there (local or in the artefact store)."""
    if not is_url(path):
        return os.path.isfile(path)
    from kiln.remote import _filesystem

    try:
        fs, where = _filesystem(path)
        return bool(fs.exists(where))
    except Exception:
        return False


def remove_run_objects(run_dir: str) -> int:
    """Remove a run's objects (``run_dir`` is its prefix URL)."""
    store = _owner_of(run_dir)
    return store.remove(run_dir) if store is not None else 0


def _owner_of(url: str) -> ArtifactStore | None:
    """The store of a run URL: its ``.../runs/<id>`` prefix names it."""
    head, sep, _ = url.rpartition("/runs/")
    return artifact_store(head) if sep else None


class RunUpload:
    """Copies one run's local folder to the store: changed files every ``every`` seconds
    while the run goes on (a thread), everything at :meth:`finish`."""

    def __init__(
        self,
        store: ArtifactStore,
        run_id: str,
        folder: Path,
        *,
        every: float = UPLOAD_EVERY,
        output: Path | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.folder = folder
        self.every = every
        #: where the output notebook is written locally (in ``folder`` unless chosen)
        self.output = output if output is not None else folder / "output.ipynb"
        self._sent: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        #: the last error of a periodic copy (the run goes on; the end tries again)
        self.error: str | None = None

    def start(self) -> None:
        """Copy what changed every ``every`` seconds until :meth:`stop` (one thread of the
        process does it for every run: a run of milliseconds starts no thread of its own)."""
        _copier.add(self)

    def periodic(self) -> None:
        try:
            self.sync()
        except StoreError as exc:
            self.error = exc.message

    def sync(self) -> int:
        """Copy the files that changed since the last copy; how many were copied."""
        with self._lock:
            pairs, marks = [], {}
            for local in sorted(self.folder.rglob("*")):
                if not local.is_file() or local.name.endswith(".tmp"):
                    continue
                stat = local.stat()
                relative = local.relative_to(self.folder).as_posix()
                mark = (stat.st_mtime_ns, stat.st_size)
                if self._sent.get(relative) == mark:
                    continue
                pairs.append((local, self.store.run_url(self.run_id, relative)))
                marks[relative] = mark
            self.store.put_files(pairs)
            self._sent.update(marks)
            return len(pairs)

    def stop(self) -> None:
        """Stop the periodic copies (waiting for one under way)."""
        _copier.remove(self)
        with self._lock:
            pass

    def finish(self, *, remove_local: bool = True) -> str | None:
        """The last copy; then the local folder goes. Returns why the copy failed (the local
        folder then stays, and the run's row should name it), or None."""
        self.stop()
        try:
            self.sync()
        except StoreError as exc:
            return exc.message
        if remove_local:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)
        return None

    def row_paths(self, *, output_chosen: bool) -> dict[str, str]:
        """Where the run's files are, as its row names them (the objects)."""
        paths = {
            "run_dir": self.store.run_url(self.run_id),
            "log_path": self.store.run_url(self.run_id, "run.log"),
        }
        if not output_chosen:
            paths["output_path"] = self.store.run_url(self.run_id, "output.ipynb")
        return paths

    def settle(self, note: Callable[[str], None]) -> dict[str, Any]:
        """The last copy, before the run's end is written. Returns the row's fields to change:
        none when the copy went well; the local paths (which keep the files) when it did not,
        after ``note`` was told why."""
        problem = self.finish()
        if problem is None:
            return {}
        note(f"warning: the run's files stay in {self.folder}: {problem}")
        return {
            "run_dir": str(self.folder),
            "log_path": str(self.folder / "run.log"),
            "output_path": str(self.output),
        }

    def artifact_urls(self, artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Recorded artefacts (files in the local folder) as the objects they become."""
        out = []
        for entry in artifacts:
            path = Path(str(entry.get("path", "")))
            with contextlib.suppress(ValueError):
                relative = path.resolve().relative_to(self.folder.resolve()).as_posix()
                entry = {**entry, "path": self.store.run_url(self.run_id, relative)}
            out.append(entry)
        return out


class _Copier:
    """The thread that makes the periodic copies of every running run of this process."""

    def __init__(self) -> None:
        self._due: dict[RunUpload, float] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, upload: RunUpload) -> None:
        with self._lock:
            self._due[upload] = time.monotonic() + upload.every
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="kiln-artifacts")
                self._thread.daemon = True
                self._thread.start()
        self._changed.set()

    def remove(self, upload: RunUpload) -> None:
        with self._lock:
            self._due.pop(upload, None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                ready = [upload for upload, when in self._due.items() if when <= now]
                for upload in ready:
                    self._due[upload] = now + upload.every
                wait = min(self._due.values(), default=now + 60.0) - now
            for upload in ready:
                upload.periodic()
            self._changed.wait(max(0.05, wait))
            self._changed.clear()


_copier = _Copier()


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _mtime(entry: dict[str, Any]) -> float | None:
    for key in ("LastModified", "mtime", "updated", "last_modified"):
        value = entry.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        stamp = getattr(value, "timestamp", None)
        if callable(stamp):
            return float(stamp())
    return None


def _remove_empty_folders(path: Path) -> None:
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        folder.rmdir()
    if path.is_dir():
        path.rmdir()


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, OSError) else text
