"""A throwaway S3-compatible server for the tests and benchmarks: moto in server mode on
127.0.0.1 (a free port), and the environment that points botocore (and so s3fs) at it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from kilntest import wait_for


class S3Unavailable(RuntimeError):
    """moto's server (or s3fs) is not installed here."""


class MotoServer:
    """One ``moto_server`` process; :meth:`stop` ends it by its pid."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        self._buckets = 0

    @classmethod
    def start(cls) -> MotoServer:
        try:
            import moto  # noqa: F401
            import s3fs  # noqa: F401
        except ImportError as exc:
            raise S3Unavailable(f"moto[server] and s3fs are needed: {exc}") from None
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        if binary is None:
            raise S3Unavailable("moto_server is not installed")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(proc, port)

        def up() -> bool:
            if proc.poll() is not None:
                raise S3Unavailable(f"moto_server exited {proc.returncode}")
            try:
                with urllib.request.urlopen(server.endpoint, timeout=2):
                    return True
            except OSError:
                return False

        try:
            wait_for(up, timeout=60, what="the moto S3 server")
        except BaseException:
            server.stop()
            raise
        return server

    def bucket(self, prefix: str = "kiln") -> str:
        """A new, empty bucket; returns its name."""
        import fsspec

        self._buckets += 1
        name = f"{prefix}-{os.getpid()}-{self._buckets}"
        fs = fsspec.filesystem(
            "s3", skip_instance_cache=True, client_kwargs={"endpoint_url": self.endpoint},
            key="testing", secret="testing",
        )  # fmt: skip
        fs.mkdir(name)
        return name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
