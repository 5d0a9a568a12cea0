"""``kiln serve`` against Jupyter Kernel Gateway 3.0.1 (notebook-http mode). One process run.

Scenarios (figures quoted in the README come from this script):
  floor        the fork engine's per-run floor: ``Runner.arun`` on a warm pool, in this
               process, the same trivial notebook (median of sequential runs), measured
               again between the rounds below so that it is seen at the same moment
  endpoint     POST /api/v1/endpoints/double from one local client (keep-alive): p50, p99;
               the p50 of a client that writes each request's headers and body in two
               writes (a server that acknowledges late holds the body back ~40 ms);
               then 4 concurrent clients: requests/s (fresh state per request) and the CPU
               each call cost the server's processes, split: the API process (HTTP and the
               runs' supervisor side), the warm parent itself, the forked children; then 4
               clients that write headers and body in two writes: requests/s
  http         the HTTP side alone: the same call through Kiln's ASGI app (gate, middleware,
               route, audit, metrics) with the run replaced by a finished one, in this
               process, no socket: CPU per call (what the API process spends besides the run)
  fresh        the floor of a fresh process per request: a process set up as the warm parent
               forks children that exit at once, or run the notebook's 3 cells through
               IPython, or through plain exec (CPU of the fork and the child, no Kiln around)
  kg           the same notebook as a Kernel Gateway notebook-http service (one kernel, shared
               state): the same figures (CPU split: the gateway, the kernel); KG runs from
               its own venv under ~/.cache/kiln/bench-venvs (made here on first use)
  health       GET /health p50/p99 while 2 workers run queued notebooks flat out
  queue-1000   1,000 runs submitted through the API by 4 clients: none lost, none run twice,
               all recorded

Kiln and Kernel Gateway both serve at once and are measured in alternating rounds (kiln, kg,
kiln, kg...; ``--rounds``), so that a machine whose load changes (other people's work on
shared cores) weighs on both alike: the ratio is the median of each round's kiln/kg ratio.
Each figure is printed with the load average at its time. CPU per call (from /proc, all the
server's processes) depends on that load much less than wall-clock figures do, though not
at all: busy shared cores still make each call's CPU some 20% dearer (compare figures taken
at similar loads).

The clients are ``http.client`` connections with keep-alive, one thread each; the CPU they
spend is printed too (about half a millisecond a call: not what limits the figures).

Usage: python bench/server_bench.py [--requests 300] [--seconds 5] [--rounds 3]
       [--health-seconds 10] [--runs 1000] [--skip-kg] [--skip-queue] [--http-calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

BIN = Path(sys.executable).parent
KILN = str(BIN / "kiln")
META = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
KG_VERSION = "3.0.1"
KG_VENV = Path.home() / ".cache" / "kiln" / "bench-venvs" / f"kernel-gateway-{KG_VERSION}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: the endpoint notebook's cells: its parameters cell, and its code
DOUBLE_CELLS = ("x = 1", "import kiln\ny = x * 2\nkiln.record('y', y)")


def write_project(folder: Path) -> None:
    trivial = new_notebook(
        cells=[
            new_code_cell(DOUBLE_CELLS[0], metadata={"tags": ["parameters"]}),
            new_code_cell(DOUBLE_CELLS[1]),
        ],
        metadata=META,
    )
    nbformat.write(trivial, folder / "double.ipynb")
    work = new_notebook(
        cells=[
            new_code_cell("n = 0\nmarker = ''", metadata={"tags": ["parameters"]}),
            new_code_cell(
                "import os\nif marker:\n    with open(marker, 'a') as fh:\n"
                "        fh.write(f'{n}\\n')\ntotal = sum(i * i for i in range(20000))"
            ),
        ],
        metadata=META,
    )
    nbformat.write(work, folder / "work.ipynb")
    # Kernel Gateway's notebook-http form of the same computation: a cell per route
    kg = new_notebook(
        cells=[
            new_code_cell("import json"),
            new_code_cell(
                "# POST /double\nreq = json.loads(REQUEST)\nbody = req.get('body') or {}\n"
                "x = body.get('x', 1) if isinstance(body, dict) else 1\ny = x * 2\n"
                "print(json.dumps({'y': y}))"
            ),
        ],
        metadata=META,
    )
    nbformat.write(kg, folder / "kg.ipynb")
    (folder / "kiln.yaml").write_text(
        "endpoints:\n  double: {notebook: double.ipynb, timeout: 30s, concurrency: 4}\n"
    )


# -- a kiln server ------------------------------------------------------------------------------


class KilnServer:
    def __init__(self, project: Path, home: Path, workers: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        env["KILN_HOME"] = str(home)
        self.env = env
        self.proc = subprocess.Popen(
            [KILN, "serve", "--port", "0", "--workers", str(workers), "--grace", "5s"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = 0
        self.password = ""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        first = self.proc.stdout.readline()
        if first.startswith("admin password: "):
            self.password = first.split(": ", 1)[1].strip()
        for line in self.proc.stderr:
            found = re.search(r"listening on http://[\d.]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        token = subprocess.run(
            [KILN, "tokens", "create", "admin"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        self.token = token.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    answer = conn.getresponse()
    return answer.status, answer.read()


def latencies(
    port: int,
    path: str,
    token: str | None,
    count: int,
    check: Callable[[bytes], None],
    warm: int = 20,
) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for i in range(warm):
        status, data = call(conn, "POST", path, {"x": i}, token)
        assert status == 200, (status, data)
    times = []
    for i in range(count):
        start = time.perf_counter()
        status, data = call(conn, "POST", path, {"x": i}, token)
        times.append(time.perf_counter() - start)
        assert status == 200, (status, data)
        check(data)
    conn.close()
    return times


def _cpu(path: str) -> tuple[float, float]:
    """(CPU seconds of the process itself, of the children it reaped) from ``/proc/.../stat``."""
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of a server's process tree, split: ``main`` (the process itself: the
    API, the gateway), ``helpers`` (its child processes themselves: the warm parent, the
    kernel) and ``forked`` (their descendants, the ones they reaped included: the forked
    runs)."""
    out = {"main": 0.0, "helpers": 0.0, "forked": 0.0}
    try:
        # what the main process reaped (a worker that ended...) counts with its helpers
        out["main"], out["helpers"] = _cpu(f"/proc/{pid}/stat")
        helpers = _children(pid)
    except OSError:  # gone meanwhile
        return out
    todo: list[int] = []
    for helper in helpers:
        try:
            own, reaped = _cpu(f"/proc/{helper}/stat")
            todo += _children(helper)
        except OSError:
            continue
        out["helpers"] += own
        out["forked"] += reaped
    while todo:
        current = todo.pop()
        try:
            own, reaped = _cpu(f"/proc/{current}/stat")
            todo += _children(current)
        except OSError:
            continue
        out["forked"] += own + reaped
    return out


def throughput(
    port: int,
    path: str,
    token: str | None,
    clients: int,
    seconds: float,
    pid: int | None = None,
    *,
    split: bool = False,
) -> dict[str, float]:
    """``clients`` keep-alive clients calling flat out for ``seconds``; ``split``: clients
    that write each request's headers and body in two writes (:class:`SplitClient`)."""
    done = [0] * clients
    refused = [0] * clients
    hung = [0] * clients
    stop = time.perf_counter() + seconds
    timeout = max(30.0, seconds * 3)

    def client(i: int) -> None:
        send: Callable[[], int]
        if split:
            splitting = SplitClient(port, path, token, timeout)
            send, close = (lambda: splitting.call(i)), splitting.sock.close
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            send, close = (lambda: call(conn, "POST", path, {"x": i}, token)[0]), conn.close
        try:
            while time.perf_counter() < stop:
                try:
                    status = send()
                except OSError:  # no answer in time (seen from Kernel Gateway with 4 clients)
                    hung[i] += 1
                    break
                if status == 200:
                    done[i] += 1
                else:
                    refused[i] += 1
        finally:
            close()

    server_cpu = tree_cpu(pid) if pid is not None else {}
    own_cpu = time.process_time()
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    calls = max(1, sum(done))
    out = {
        "rps": sum(done) / took,
        "refused": float(sum(refused)),
        "hung": float(sum(hung)),
        "client_cpu_ms": (time.process_time() - own_cpu) * 1000 / calls,
        "load": os.getloadavg()[0],
    }
    if pid is not None:
        after = tree_cpu(pid)
        for part, seconds in after.items():
            out[f"{part}_cpu_ms"] = (seconds - server_cpu[part]) * 1000 / calls
        out["server_cpu_ms"] = sum(out[f"{part}_cpu_ms"] for part in after)
    return out


class SplitClient:
    """A keep-alive client that writes each request's headers and body in two writes (as many
    HTTP clients do), Nagle's algorithm on, as a client's socket has it: a server that
    acknowledges late holds the body back (delayed ACK, ~40 ms)."""

    def __init__(self, port: int, path: str, token: str | None, timeout: float = 120.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.path, self.token = path, token

    def __enter__(self) -> SplitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def call(self, i: int) -> int:
        """POST ``{"x": i}``; the answer's status."""
        data = json.dumps({"x": i}).encode()
        head = f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        if self.token:
            head += f"Authorization: Bearer {self.token}\r\n"
        head += f"Content-Length: {len(data)}\r\n\r\n"
        self.sock.sendall(head.encode())
        self.sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            answer += chunk
        headers, body = answer.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length: *(\d+)", headers).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += self.sock.recv(65536)
        return int(headers.split(b" ", 2)[1])


def split_latencies(port: int, path: str, token: str | None, count: int) -> list[float]:
    """Round trips of a :class:`SplitClient` (the first 10 warm up)."""
    times = []
    with SplitClient(port, path, token) as client:
        for i in range(count + 10):
            start = time.perf_counter()
            status = client.call(i)
            if i >= 10:
                times.append(time.perf_counter() - start)
            assert status == 200, status
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# -- scenarios ----------------------------------------------------------------------------------


class Floor:
    """A runner with a warm fork pool in this process: the per-run floor, without HTTP."""

    def __init__(self, project: Path, home: Path) -> None:
        from kiln.runner import Runner

        self.project = project
        self.loop = asyncio.new_event_loop()
        self.runner = Runner(home=home, handle_signals=False)
        self.runs(10)  # the warm parent starts

    def runs(self, count: int) -> list[float]:
        from kiln.runner import RunRequest

        async def main() -> list[float]:
            times = []
            for i in range(count):
                request = RunRequest(
                    notebook=self.project / "double.ipynb", parameters={"x": i}, engine="fork"
                )
                start = time.perf_counter()
                await self.runner.arun(request)
                times.append(time.perf_counter() - start)
            return times

        return self.loop.run_until_complete(main())

    def close(self) -> None:
        self.loop.run_until_complete(self.runner.aclose_engines())
        self.runner.close()
        self.loop.close()


class KernelGateway:
    """The trivial notebook as a Kernel Gateway notebook-http service (its own venv)."""

    def __init__(self, project: Path) -> None:
        python = KG_VENV / "bin" / "python"
        if not python.exists():
            print(f"making {KG_VENV} (Kernel Gateway {KG_VERSION}) ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(KG_VENV)], check=True)
            subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    f"jupyter_kernel_gateway=={KG_VERSION}",
                    "ipykernel",
                ],
                check=True,
            )
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_PATH")}
        env["JUPYTER_PATH"] = str(KG_VENV / "share" / "jupyter")
        self.proc = subprocess.Popen(
            [
                str(KG_VENV / "bin" / "jupyter"),
                "kernelgateway",
                "--KernelGatewayApp.api=kernel_gateway.notebook_http",
                f"--KernelGatewayApp.seed_uri={project / 'kg.ipynb'}",
                "--KernelGatewayApp.ip=127.0.0.1",
                f"--KernelGatewayApp.port={self.port}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                status, _ = call(conn, "POST", "/double", {"x": 1})
                conn.close()
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit("Kernel Gateway did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _kiln_answer(data: bytes) -> None:
    assert "y" in json.loads(data)["records"]


def _kg_answer(data: bytes) -> None:
    assert "y" in json.loads(data)


def compare(
    project: Path, work: Path, requests: int, seconds: float, rounds: int, with_kg: bool
) -> dict[str, Any]:
    """The floor, Kiln's endpoint and Kernel Gateway in alternating rounds (see the top)."""
    floor = Floor(project, work / "home-floor")
    kiln = KilnServer(project, work / "home-endpoint", workers=0)
    kg = KernelGateway(project) if with_kg else None
    path = "/api/v1/endpoints/double"
    out: dict[str, Any] = {"floor": [], "kiln": [], "kg": [], "kiln_times": [], "kg_times": []}
    out["kiln_split"], out["kg_split"] = [], []
    out["kiln_split_rps"], out["kg_split_rps"] = [], []
    try:
        for n in range(rounds):
            out["floor"] += floor.runs(max(10, requests // rounds // 3))
            out["kiln_times"] += latencies(
                kiln.port, path, kiln.token, requests // rounds, _kiln_answer
            )
            if kg is not None:
                out["kg_times"] += latencies(
                    kg.port, "/double", None, requests // rounds, _kg_answer
                )
            out["kiln_split"] += split_latencies(kiln.port, path, kiln.token, 30)
            if kg is not None:
                out["kg_split"] += split_latencies(kg.port, "/double", None, 30)
            out["kiln"].append(throughput(kiln.port, path, kiln.token, 4, seconds, kiln.proc.pid))
            if kg is not None:
                out["kg"].append(throughput(kg.port, "/double", None, 4, seconds, kg.proc.pid))
            # the same 4 clients, each writing a request's headers and body in two writes
            out["kiln_split_rps"].append(
                throughput(kiln.port, path, kiln.token, 4, seconds / 2, split=True)["rps"]
            )
            if kg is not None:
                out["kg_split_rps"].append(
                    throughput(kg.port, "/double", None, 4, seconds / 2, split=True)["rps"]
                )
            print(
                f"round {n + 1}: kiln {out['kiln'][-1]['rps']:.1f} calls/s"
                + (f", kg {out['kg'][-1]['rps']:.1f}" if kg is not None else "")
                + f" (load {os.getloadavg()[0]:.1f})",
                file=sys.stderr,
            )
    finally:
        kiln.stop()
        if kg is not None:
            kg.stop()
        floor.close()
    return out


def summary(rounds: list[dict[str, float]], times: list[float]) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    found = {
        "p50_ms": pct(times, 0.5),
        "p99_ms": pct(times, 0.99),
        "rps": median("rps"),
        "rps_rounds": [round(r["rps"], 1) for r in rounds],
        "server_cpu_ms": median("server_cpu_ms"),
        "main_cpu_ms": median("main_cpu_ms"),
        "helpers_cpu_ms": median("helpers_cpu_ms"),
        "forked_cpu_ms": median("forked_cpu_ms"),
        "client_cpu_ms": median("client_cpu_ms"),
        "refused": sum(r["refused"] for r in rounds),
        "hung": sum(r["hung"] for r in rounds),
        "load": [round(r["load"], 1) for r in rounds],
    }
    return found


#: the fresh-process floor, measured in a process set up as the fork engine's warm parent
#: (IPython shell made, gc frozen): CPU of its fork and of each child, reaped with wait4
FRESH_FLOOR = """
import gc, json, os, resource, sys
from kiln.engines import forkchild  # what the warm parent imports
from kiln.engines.forkshell import make_shell
shell = make_shell()
gc.freeze()
cells = json.loads(sys.argv[2])
codes = [compile(c, "<cell>", "exec") for c in cells]
def child(how):
    if how == "ipython":
        for cell in cells:
            shell.run_cell(cell, store_history=True)
    elif how == "exec":
        for code in codes:
            exec(code, shell.user_ns)
    os._exit(0)
out = {}
count = int(sys.argv[1])
for _round in range(3):
    for how in ("exit", "ipython", "exec"):
        before = resource.getrusage(resource.RUSAGE_SELF)
        child_cpu = 0.0
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                child(how)
            _, _, used = os.wait4(pid, 0)
            child_cpu += used.ru_utime + used.ru_stime
        after = resource.getrusage(resource.RUSAGE_SELF)
        parent = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        out.setdefault(how, []).append((parent + child_cpu) * 1000 / count)
print(json.dumps(out))
"""


def fresh_process_floor(count: int = 200) -> dict[str, float]:
    """CPU of one fresh process per request, forked from a parent set up as the fork engine's
    warm parent, with nothing of Kiln's run around it (no supervisor, channel, output capture,
    record): ``exit`` forks and exits at once, ``ipython`` runs the endpoint notebook's three
    cells (its parameters cell, the injected one, its code) through the IPython shell, ``exec``
    runs them with plain ``exec``. Fork and child together, median of 3 rounds."""
    cells = [DOUBLE_CELLS[0], "# Parameters\nx = 3\n", DOUBLE_CELLS[1]]
    done = subprocess.run(
        [sys.executable, "-c", FRESH_FLOOR, str(count), json.dumps(cells)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    rounds = json.loads(done.stdout.strip().splitlines()[-1])
    found = {how: statistics.median(values) for how, values in rounds.items()}
    found["load"] = os.getloadavg()[0]
    return found


def http_side(project: Path, home: Path, calls: int) -> dict[str, float]:
    """CPU per endpoint call of Kiln's ASGI app alone (see ``http`` at the top)."""
    import types

    from kiln.project import load_project
    from kiln.server import accounts
    from kiln.server.app import build_app
    from kiln.server.settings import load_settings
    from kiln.store.records import RunState
    from kiln.store.sql import RunStore

    store = RunStore(home)
    accounts.ensure_first_admin(store)
    secret, _ = accounts.create_token(store, "admin", expires=3600, actor="bench")
    app, asgi = build_app(load_settings(load_project(project), home=home, workers=0), store=store)
    ctx = app.state.ctx
    finished = types.SimpleNamespace(state=RunState.SUCCEEDED, id="0" * 12, record_values={"y": 2})

    async def run(name: str, parameters: Any, *, user: str) -> Any:
        return finished

    ctx.endpoints.call = run
    body = b'{"x": 3}'
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Bearer {secret}".encode()),
    ]

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/v1/endpoints/double",
            "raw_path": b"/api/v1/endpoints/double",
            "query_string": b"",
            "root_path": "",
            "headers": list(headers),
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client stays: never a disconnect
            raise AssertionError

        async def send(message: Any) -> None:
            sent.append(message)

        await asgi(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    async def main() -> float:
        for _ in range(max(100, calls // 10)):
            await one()
        started = time.process_time()  # this process's threads: the audit writer's too
        for _ in range(calls):
            await one()
        ctx.audit.flush()
        return (time.process_time() - started) * 1000 / calls

    try:
        return {"cpu_ms": asyncio.run(main()), "load": os.getloadavg()[0]}
    finally:
        ctx.audit.close()
        store.close()


def health_and_queue(project: Path, work: Path, runs: int, seconds: float) -> dict[str, Any]:
    server = KilnServer(project, work / "home-queue", workers=2)
    marker = work / "ran.txt"
    out: dict[str, Any] = {}
    try:
        ids: list[str] = []
        lock = threading.Lock()

        def submit(start: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
            for n in range(start, runs, 4):
                status, data = call(
                    conn,
                    "POST",
                    "/api/v1/runs",
                    {"notebook": "work.ipynb", "parameters": {"n": n, "marker": str(marker)}},
                    server.token,
                )
                assert status == 202, data
                with lock:
                    ids.append(json.loads(data)["id"])
            conn.close()

        started = time.perf_counter()
        senders = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        out["submit_s"] = time.perf_counter() - started
        # /health while the workers work through the queue: for ``seconds``, or until the
        # queue is empty and no worker is busy (then the workers are no longer running flat out)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        health = []
        busy: list[float] = []  # the workers' gauge, read once a second meanwhile
        window = time.perf_counter()
        stop = window + seconds
        next_look = 0.0
        while time.perf_counter() < stop:
            start = time.perf_counter()
            conn.request("GET", "/health")
            answer = conn.getresponse()
            answer.read()
            health.append(time.perf_counter() - start)
            if start >= next_look:
                next_look = start + 1.0
                metrics = call(conn, "GET", "/metrics", None, server.token)[1].decode()
                found = re.search(r"\nkiln_workers_busy (\S+)", metrics)
                depth = re.search(r"\nkiln_queue_depth (\S+)", metrics)
                busy.append(float(found.group(1)) if found else float("nan"))
                if busy[-1] == 0 and depth is not None and float(depth.group(1)) == 0:
                    break  # drained
            time.sleep(0.02)
        out["health_window_s"] = time.perf_counter() - window
        out["health_p50_ms"], out["health_p99_ms"] = pct(health, 0.5), pct(health, 0.99)
        out["load"] = os.getloadavg()[0]
        out["workers_busy_during"] = statistics.median(busy)
        out["workers_busy_samples"] = busy
        # every run to its end
        while True:
            page = json.loads(
                call(
                    conn,
                    "GET",
                    "/api/v1/runs?state=queued&state=running&limit=1",
                    None,
                    server.token,
                )[1]
            )
            if not page["items"]:
                break
            time.sleep(0.5)
        out["all_done_s"] = time.perf_counter() - started
        states: dict[str, int] = {}
        cursor = None
        recorded = set()
        while True:
            query = "/api/v1/runs?limit=500" + (f"&cursor={cursor}" if cursor else "")
            page = json.loads(call(conn, "GET", query, None, server.token)[1])
            for item in page["items"]:
                recorded.add(item["id"])
                states[item["state"]] = states.get(item["state"], 0) + 1
            cursor = page["next_cursor"]
            if not cursor:
                break
        conn.close()
    finally:
        server.stop()
    ran = [int(line) for line in marker.read_text().split()]
    out.update(
        submitted=len(ids),
        unique_ids=len(set(ids)),
        recorded=len(recorded & set(ids)),
        states=states,
        ran=len(ran),
        ran_once=len(set(ran)) == len(ran) == runs,
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="4 clients' load, a round and a server"
    )
    parser.add_argument("--health-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--skip-kg", action="store_true")
    parser.add_argument("--skip-queue", action="store_true")
    parser.add_argument("--http-calls", type=int, default=3000, help="the http scenario's calls")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    }
    with tempfile.TemporaryDirectory(prefix="kiln-server-bench-") as tmp:
        work = Path(tmp)
        project = work / "project"
        project.mkdir()
        write_project(project)
        seen = compare(
            project,
            work,
            args.requests,
            args.seconds,
            args.rounds,
            not args.skip_kg,
        )
        results["floor_ms"] = statistics.median(seen["floor"]) * 1000
        results["http"] = http_side(project, work / "home-http", args.http_calls)
        results["fresh"] = fresh_process_floor()
        results["kiln_endpoint"] = summary(seen["kiln"], seen["kiln_times"])
        results["split_p50_ms"] = {
            name: pct(seen[f"{name}_split"], 0.5)
            for name in ("kiln", "kg")
            if seen[f"{name}_split"]
        }
        results["split_rps"] = {
            name: [round(r, 1) for r in seen[f"{name}_split_rps"]]
            for name in ("kiln", "kg")
            if seen[f"{name}_split_rps"]
        }
        if not args.skip_kg:
            results["kernel_gateway"] = summary(seen["kg"], seen["kg_times"])
            results["ratios"] = [
                round(k["rps"] / g["rps"], 2) for k, g in zip(seen["kiln"], seen["kg"], strict=True)
            ]
        if not args.skip_queue:
            results["queue"] = health_and_queue(project, work, args.runs, args.health_seconds)
    kiln, kg = results["kiln_endpoint"], results.get("kernel_gateway")
    print(f"machine: {results['machine']}")
    print(
        "fork floor (Runner.arun, warm pool, median, between the rounds): "
        f"{results['floor_ms']:.1f} ms"
    )
    print(
        f"kiln endpoint: p50 {kiln['p50_ms']:.1f} ms, p99 {kiln['p99_ms']:.1f} ms (p50 "
        f"{kiln['p50_ms'] / results['floor_ms']:.2f}x the floor); with 4 clients "
        f"{kiln['rps']:.1f} calls/s (rounds {kiln['rps_rounds']}, refused {kiln['refused']:.0f}), "
        f"{kiln['server_cpu_ms']:.1f} ms of server CPU a call (API process "
        f"{kiln['main_cpu_ms']:.1f}, warm parent {kiln['helpers_cpu_ms']:.1f}, forked children "
        f"{kiln['forked_cpu_ms']:.1f}); "
        f"load {kiln['load']}"
    )
    split, split_rps = results["split_p50_ms"], results["split_rps"]
    print(
        "a client writing headers and body separately (Nagle on): p50 "
        + ", ".join(f"{name} {ms:.1f} ms" for name, ms in split.items())
        + "; 4 such clients: "
        + ", ".join(
            f"{name} {statistics.median(rps):.1f} calls/s (rounds {rps})"
            for name, rps in split_rps.items()
        )
    )
    if len(split_rps) == 2:
        ratios = [round(k / g, 2) for k, g in zip(split_rps["kiln"], split_rps["kg"], strict=True)]
        print(f"kiln/kg calls/s with such clients: {statistics.median(ratios):.2f}x ({ratios})")
    print(
        f"kiln's HTTP side alone (ASGI app, run replaced by a finished one, no socket): "
        f"{results['http']['cpu_ms']:.2f} ms of CPU a call (load {results['http']['load']:.1f})"
    )
    if kg:
        print(
            f"kernel gateway {KG_VERSION}: p50 {kg['p50_ms']:.1f} ms, p99 {kg['p99_ms']:.1f} ms; "
            f"with 4 clients {kg['rps']:.1f} calls/s (rounds {kg['rps_rounds']}, never answered "
            f"{kg['hung']:.0f}), {kg['server_cpu_ms']:.1f} ms of server CPU a call (gateway "
            f"{kg['main_cpu_ms']:.1f}, kernel {kg['helpers_cpu_ms'] + kg['forked_cpu_ms']:.1f}); "
            f"load {kg['load']}"
        )
        print(
            f"kiln/kg calls/s: {statistics.median(results['ratios']):.2f}x (median of the rounds "
            f"{results['ratios']}); client CPU {kiln['client_cpu_ms']:.2f} ms a call"
        )
        cores = os.cpu_count() or 1
        budget = cores * 1000 / (3 * kg["rps"]) - kiln["client_cpu_ms"]
        print(
            f"3x kg's calls/s on {cores} cores leaves at most {budget:.1f} ms of CPU a call "
            f"(all cores busy, the clients' CPU taken out); kiln spends "
            f"{kiln['server_cpu_ms']:.1f}"
        )
    fresh = results["fresh"]
    print(
        "a fresh process per request, nothing else (forked from a parent set up as the warm "
        f"parent, fork and child CPU): fork and exit {fresh['exit']:.1f} ms; the notebook's 3 "
        f"cells through IPython {fresh['ipython']:.1f} ms, through plain exec "
        f"{fresh['exec']:.1f} ms (load {fresh['load']:.1f})"
    )
    queue = results.get("queue")
    if queue:
        print(
            f"/health while 2 workers run flat out: p50 {queue['health_p50_ms']:.1f} ms, "
            f"p99 {queue['health_p99_ms']:.1f} ms over {queue['health_window_s']:.1f} s (workers "
            f"busy, median of a sample a second: {queue['workers_busy_during']:.0f}"
            f"; load {queue['load']:.1f})"
        )
        print(
            f"{queue['submitted']} runs submitted in {queue['submit_s']:.1f} s, all ended in "
            f"{queue['all_done_s']:.1f} s: {queue['unique_ids']} ids, {queue['recorded']} "
            f"recorded, states {queue['states']}, ran {queue['ran']} times, each once: "
            f"{queue['ran_once']}"
        )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "server_bench.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
