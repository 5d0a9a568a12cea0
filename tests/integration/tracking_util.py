"""Helpers of the tracking tests: separate virtualenvs cached under ``~/.cache/kiln`` (one with
the full ``mlflow`` for ``mlflow server``, one with two versions of a tiny local package), and
a real ``mlflow server`` on 127.0.0.1.

The venvs are built once (under a file lock, so parallel test workers wait for one build) and
reused until what they should hold changes; a ``ready`` file written last marks a finished
build, so a build killed halfway is started again.

Run as a script (``python tests/integration/tracking_util.py mlflow``) to build the MLflow venv
ahead of the tests and see how long it takes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

CACHE = Path.home() / ".cache" / "kiln"
MLFLOW_VENV = CACHE / "mlflow-venv"
PKG_VENV = CACHE / "test-venvs" / "tracking-pkg"
ROOT = Path(__file__).resolve().parents[2]
#: what the MLflow venv holds beside Kiln's own dependencies (kiln runs there from src/)
MLFLOW_REQUIREMENT = "mlflow>=2"


class VenvUnavailable(Exception):
    """A test venv could not be built (no index, no wheel): the tests needing it skip."""


def kiln_dependencies() -> list[str]:
    """Kiln's runtime requirements, as pyproject.toml declares them."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(data["project"]["dependencies"])


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _pip(venv: Path, *args: str, timeout: float = 900) -> None:
    done = subprocess.run(
        [str(_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise VenvUnavailable(f"pip install {' '.join(args)} failed: {' / '.join(tail)}")


def _build(venv: Path, key: str, install: list[list[str]]) -> Path:
    """The venv at ``venv`` holding ``install`` (pip argument lists), built unless its
    ``ready`` file says it holds ``key`` already."""
    ready = venv / "ready"
    with _locked(venv):
        if ready.is_file() and ready.read_text() == key and _python(venv).exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
        )
        if made.returncode != 0:
            raise VenvUnavailable(f"python -m venv failed: {made.stderr.strip()[-300:]}")
        for args in install:
            _pip(venv, *args)
        ready.write_text(key)
    return venv


def mlflow_venv() -> Path:
    """The venv with the full ``mlflow`` (for ``mlflow server``) and Kiln's dependencies, so
    that Kiln (from ``src/``) can run there with MLflow installed."""
    wanted = sorted([MLFLOW_REQUIREMENT, *kiln_dependencies()])
    key = json.dumps({"python": sys.version, "requirements": wanted})
    return _build(MLFLOW_VENV, key, [wanted])


# -- a tiny package in two versions ---------------------------------------------------------------


def build_tiny_package(where: Path, version: str) -> Path:
    """A wheel of ``kilntinypkg`` at ``version``, written here (a wheel is a zip file with
    its metadata: no build backend, no index needed)."""
    import base64
    import zipfile

    where.mkdir(parents=True, exist_ok=True)
    wheel = where / f"kilntinypkg-{version}-py3-none-any.whl"
    info = f"kilntinypkg-{version}.dist-info"
    files = {
        "kilntinypkg/__init__.py": f'VERSION = "{version}"\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: kilntinypkg\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: kiln-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        data = text.encode()
        sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={sha},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def package_venv() -> Path:
    """A venv that can be a Jupyter kernel; the tests install ``kilntinypkg`` into it in the
    version they need. This venv's site-packages are added after its own (a ``.pth`` file),
    so ipykernel and its dependencies need no index, and what is installed in it wins."""
    key = json.dumps({"python": sys.version, "kind": "ipykernel-only", "v": 1})
    ready = PKG_VENV / "ready"
    with _locked(PKG_VENV):
        if ready.is_file() and ready.read_text() == key and _python(PKG_VENV).exists():
            return PKG_VENV
        shutil.rmtree(PKG_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(PKG_VENV)], check=True)
        # this interpreter's site-packages (ipykernel and its dependencies) through a .pth,
        # after the venv's own: kilntinypkg installed there wins
        site = next((PKG_VENV / "lib").glob("python*/site-packages"))
        ours = [p for p in sys.path if p.endswith("site-packages")]
        (site / "zz_parent_site.pth").write_text("\n".join(ours) + "\n")
        ready.write_text(key)
    return PKG_VENV


def install_tiny_package(venv: Path, wheel: Path) -> None:
    """Install (or replace) ``kilntinypkg`` from its wheel, offline."""
    _pip(venv, "--no-index", "--no-deps", "--force-reinstall", str(wheel), timeout=300)


# -- mlflow server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait until something listens on ``port`` (or the process died, or time ran out)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


if __name__ == "__main__":
    started = time.monotonic()
    target = sys.argv[1] if len(sys.argv) > 1 else "mlflow"
    built = mlflow_venv() if target == "mlflow" else package_venv()
    print(f"{built} ready in {time.monotonic() - started:.1f} s")
