"""The files of the history: private by default, checked before a run starts, stored once.

- **Private.** A run's folder is created ``0700`` and its files ``0600``: output notebooks and
  logs hold parameter values and whatever the notebook printed. A team that shares a home sets
  ``store: {file_mode: "0640"}`` in ``kiln.yaml`` (or ``KILN_FILE_MODE=0640``); folders get the
  matching mode (``0750``).
- **Checked first.** The run folder is made, and a chosen output folder proven writable,
  before any engine starts, so a read-only or missing place is refused before the notebook's
  side effects happen.
- **Stored once.** The exact input bytes of a run are kept as ``inputs/<sha256>.ipynb`` in the
  home: a 200 MB notebook run a thousand times is one file, not a thousand copies.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import HomeNotWritable
from kiln.options import OptionError
from kiln.units import parse_file_mode

DEFAULT_FILE_MODE = 0o600


@dataclass(frozen=True)
class FileModes:
    """Permission bits for the history's files and folders."""

    file: int = DEFAULT_FILE_MODE

    @property
    def folder(self) -> int:
        """A folder readable by whoever may read its files (``0600`` -> ``0700``)."""
        mode = self.file | 0o700
        if self.file & 0o060:
            mode |= 0o050
        if self.file & 0o006:
            mode |= 0o005
        return mode


def file_modes() -> FileModes:
    """The modes in force: ``KILN_FILE_MODE``, else ``kiln.yaml``'s ``store.file_mode``."""
    text = os.environ.get("KILN_FILE_MODE")
    if text:
        try:
            return FileModes(parse_file_mode(text))
        except ValueError as exc:
            raise OptionError("KILN_FILE_MODE", str(exc)) from None
    from kiln.project import find_project_file

    if find_project_file() is None:
        return FileModes()
    from kiln.project import load_project

    section = load_project().config.store
    return FileModes(section.mode) if section is not None else FileModes()


def make_run_folder(
    runs_dir: Path, run_id: str, modes: FileModes, *, exist_ok: bool = False
) -> Path:
    """Create ``runs/<id>`` (private), or say why the home cannot take a run. A queued run's
    folder exists already (``exist_ok``)."""
    folder = runs_dir / run_id
    try:
        try:  # the runs folder is there but for a new home's first run: one call
            os.mkdir(folder, modes.folder)
        except FileNotFoundError:
            runs_dir.mkdir(parents=True, mode=modes.folder, exist_ok=True)
            os.mkdir(folder, modes.folder)
        except FileExistsError:
            if not exist_ok or not folder.is_dir():
                raise
        os.chmod(folder, modes.folder)  # mkdir's mode is masked by the umask
    except OSError as exc:
        raise HomeNotWritable(
            f"cannot record a run in {runs_dir.parent}: {exc.strerror} (creating {folder}); "
            "set KILN_HOME or --home to a folder you can write",
            home=runs_dir.parent,
        ) from None
    return folder


def check_writable_output(path: Path) -> None:
    """The output notebook can be written there: not a folder, in a folder that takes a new
    file (made if missing; read-only folders and file systems, full disks are found now)."""
    if path.is_dir():
        raise OptionError("output", f"{path} is a folder; give the output notebook's file name")
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OptionError("output", f"{folder} is a file, not a folder (for {path})") from None
    except OSError as exc:
        raise OptionError("output", f"cannot create the folder {folder}: {exc.strerror}") from None
    probe = folder / f".{path.name}.{os.getpid()}.kiln-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise OptionError("output", f"cannot write in {folder}: {exc.strerror}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def store_input(home: Path, sha256: str, data: bytes, modes: FileModes) -> Path:
    """The run's input bytes as ``inputs/<sha256>.ipynb``, written only the first time."""
    path = os.path.join(home, "inputs", f"{sha256}.ipynb")
    # a prune keeps a copy used in the last GRACE seconds (the run's row is committed next):
    # its time is set again when this process last did it more than a minute ago
    touched = _touched.get(path)
    now = time.monotonic()
    try:
        if touched is not None and now - touched < TOUCH_EVERY:
            os.stat(path)
        else:
            os.utime(path)
            _touched[path] = now
        return Path(path)
    except FileNotFoundError:
        _touched.pop(path, None)
    except OSError:  # someone else's copy in a shared home: it is there
        return Path(path)
    folder = Path(home, "inputs")
    folder.mkdir(mode=modes.folder, exist_ok=True)
    # unique per call, not per process: a server submits from several threads at once, and
    # two submissions of the same notebook must not write (and rename away) one file
    tmp = folder / f".{sha256}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, modes.file)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, modes.file)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _touched[path] = time.monotonic()
    return Path(path)


#: seconds between two updates of a stored input's time by one process (well inside the
#: retention's grace, :data:`kiln.store.retention.GRACE`)
TOUCH_EVERY = 60.0
#: stored input -> when this process last set its time (time.monotonic)
_touched: dict[str, float] = {}
