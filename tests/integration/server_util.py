"""A real ``kiln serve`` for tests: a subprocess on 127.0.0.1 (a free port), its admin
password, clients with tokens per role; ended by pid."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nbformat

from kilntest import KILN, build_notebook, wait_for, wait_gone

LISTENING = re.compile(r"listening on (http://\S+)")

#: markup that sets the page's title when it runs: shown by notebooks (outputs, Markdown,
#: parameter values and help, records) the API and the web UI must never run in their origin
XSS = {
    "script": "<script>document.title='pwned-script'</script>",
    "img": "<img src=x onerror=\"document.title='pwned-img'\">",
    "svg": "<svg onload=\"document.title='pwned-svg'\"></svg>",
    "link": "<a href=\"javascript:document.title='pwned-link'\">click</a>",
}
MARKERS = ("pwned-script", "pwned-img", "pwned-svg", "pwned-link")


class Server:
    """One ``kiln serve`` process; ``url`` once it listens."""

    def __init__(self, project: Path, home: Path, *args: str) -> None:
        self.project, self.home = project, home
        # the test's database (the database_url fixture) is the one setting that goes through
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KILN_") or k == "KILN_DATABASE_URL"
        }
        env["KILN_HOME"] = str(home)
        self.env = env
        self.proc = subprocess.Popen(
            [KILN, "serve", "--port", "0", *args],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.clients: list[httpx.Client] = []
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.url: str = wait_for(self._listening, timeout=90, what="kiln serve to listen")
        self.password: str | None = next(
            (line.split(": ", 1)[1] for line in self.out if line.startswith("admin password: ")),
            None,
        )

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def _listening(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"kiln serve exited {self.proc.returncode}:\n" + self.log())
        for line in self.err:
            found = LISTENING.search(line)
            if found:
                return found.group(1)
        return None

    def log(self) -> str:
        return "\n".join(self.out + self.err)

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)
        self.clients.append(client)  # closed when the server stops
        return client

    def kiln(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KILN, *args],
            cwd=self.project,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        """SIGKILL: the server has no chance to record anything."""
        for client in self.clients:
            client.close()
        self.proc.kill()
        self.proc.wait()
        wait_gone(self.proc.pid)
        self._close()


@contextlib.contextmanager
def running(project: Path, home: Path, *args: str) -> Iterator[Server]:
    server = Server(project, home, *args)
    try:
        yield server
    finally:
        server.stop()


def admin_client(server: Server, password: str | None = None) -> httpx.Client:
    """A client logged in as admin (a session cookie)."""
    client = server.client()
    answer = client.post(
        "/api/v1/login", json={"username": "admin", "password": password or server.password}
    )
    assert answer.status_code == 200, answer.text
    return client


def make_user(admin: httpx.Client, name: str, role: str, password: str | None = None) -> str:
    """An account with a role and a token for it (returned)."""
    answer = admin.post("/api/v1/users", json={"name": name, "role": role, "password": password})
    assert answer.status_code == 201, answer.text
    token = admin.post("/api/v1/tokens", json={"user": name})
    assert token.status_code == 201, token.text
    secret: str = token.json()["token"]
    return secret


def write_notebook(path: Path, cells: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(cells), path)
    return path


def wait_state(client: httpx.Client, run_id: str, states: set[str], timeout: float = 90) -> Any:
    def reached() -> Any:
        data = client.get(f"/api/v1/runs/{run_id}").json()
        return data if data["state"] in states else None

    return wait_for(reached, timeout=timeout, what=f"run {run_id} to be {states}")
