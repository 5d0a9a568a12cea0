"""``kiln serve`` against Jupyter Kernel Gateway 3.0.1 (notebook-http mode). One process run.

Scenarios (figures quoted in the README come from this script):
  floor        the fork engine's per-run floor: ``Runner.arun`` on a warm pool, in this
               process, the same trivial notebook (median of sequential runs)
  endpoint     POST /api/v1/endpoints/double from one local client (keep-alive): p50, p99;
               then 4 concurrent clients: requests/s (fresh state per request)
  kg           the same notebook as a Kernel Gateway notebook-http service (one kernel, shared
               state): p50, p99, and requests/s with 4 concurrent clients; KG runs from its own
               venv under ~/.cache/kiln/bench-venvs (made here on first use)
  health       GET /health p50/p99 while 2 workers run queued notebooks flat out
  queue-1000   1,000 runs submitted through the API by 4 clients: none lost, none run twice,
               all recorded

Usage: python bench/server_bench.py [--requests 300] [--seconds 10] [--runs 1000] [--skip-kg]
"""

from __future__ import annotations

import argparse
import asyncio
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


def write_project(folder: Path) -> None:
    trivial = new_notebook(
        cells=[
            new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            new_code_cell("import kiln\ny = x * 2\nkiln.record('y', y)"),
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
    body: Any = None,
) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for i in range(20):  # warm-up
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


def throughput(
    port: int, path: str, token: str | None, clients: int, seconds: float
) -> dict[str, float]:
    done = [0] * clients
    refused = [0] * clients
    hung = [0] * clients
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=max(30.0, seconds * 3))
        while time.perf_counter() < stop:
            try:
                status, _ = call(conn, "POST", path, {"x": i}, token)
            except OSError:  # no answer in time (seen from Kernel Gateway with 4 clients)
                hung[i] += 1
                break
            if status == 200:
                done[i] += 1
            else:
                refused[i] += 1
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    return {"rps": sum(done) / took, "refused": float(sum(refused)), "hung": float(sum(hung))}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# -- scenarios ----------------------------------------------------------------------------------


def fork_floor(project: Path, home: Path, runs: int) -> list[float]:
    from kiln.runner import Runner, RunRequest

    async def main() -> list[float]:
        runner = Runner(home=home, handle_signals=False)
        times = []
        try:
            for i in range(runs + 10):
                start = time.perf_counter()
                await runner.arun(
                    RunRequest(
                        notebook=project / "double.ipynb", parameters={"x": i}, engine="fork"
                    )
                )
                if i >= 10:
                    times.append(time.perf_counter() - start)
        finally:
            await runner.aclose_engines()
            runner.close()
        return times

    return asyncio.run(main())


def kiln_endpoint(project: Path, work: Path, requests: int, seconds: float) -> dict[str, Any]:
    server = KilnServer(project, work / "home-endpoint", workers=0)
    try:

        def check(data: bytes) -> None:
            assert "y" in json.loads(data)["records"]

        times = latencies(server.port, "/api/v1/endpoints/double", server.token, requests, check)
        load = throughput(server.port, "/api/v1/endpoints/double", server.token, 4, seconds)
    finally:
        server.stop()
    return {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99), **load}


def kernel_gateway(project: Path, requests: int, seconds: float) -> dict[str, Any]:
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
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_PATH")}
    env["JUPYTER_PATH"] = str(KG_VENV / "share" / "jupyter")
    proc = subprocess.Popen(
        [
            str(KG_VENV / "bin" / "jupyter"),
            "kernelgateway",
            "--KernelGatewayApp.api=kernel_gateway.notebook_http",
            f"--KernelGatewayApp.seed_uri={project / 'kg.ipynb'}",
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                status, _ = call(conn, "POST", "/double", {"x": 1})
                conn.close()
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("Kernel Gateway did not start")
            time.sleep(0.2)

        def check(data: bytes) -> None:
            assert "y" in json.loads(data)

        times = latencies(port, "/double", None, requests, check)
        load = throughput(port, "/double", None, 4, seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99), **load}


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
        # /health while the workers work through the queue
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        health = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            start = time.perf_counter()
            conn.request("GET", "/health")
            answer = conn.getresponse()
            answer.read()
            health.append(time.perf_counter() - start)
            time.sleep(0.02)
        busy = call(conn, "GET", "/metrics", None, server.token)[1].decode()
        out["health_p50_ms"], out["health_p99_ms"] = pct(health, 0.5), pct(health, 0.99)
        out["workers_busy_during"] = float(re.search(r"\nkiln_workers_busy (\S+)", busy).group(1))  # type: ignore[union-attr]
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
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--skip-kg", action="store_true")
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
        floor = fork_floor(project, work / "home-floor", 100)
        results["floor_ms"] = statistics.median(floor) * 1000
        results["kiln_endpoint"] = kiln_endpoint(project, work, args.requests, args.seconds)
        if not args.skip_kg:
            results["kernel_gateway"] = kernel_gateway(project, args.requests, args.seconds)
        results["queue"] = health_and_queue(project, work, args.runs, args.seconds)
    kiln, kg = results["kiln_endpoint"], results.get("kernel_gateway")
    print(f"machine: {results['machine']}")
    print(f"fork floor (Runner.arun, warm pool, median): {results['floor_ms']:.1f} ms")
    print(
        f"kiln endpoint: p50 {kiln['p50_ms']:.1f} ms, p99 {kiln['p99_ms']:.1f} ms, "
        f"{kiln['rps']:.1f} req/s with 4 clients (refused {kiln['refused']:.0f}); p50 is "
        f"{kiln['p50_ms'] / results['floor_ms']:.2f}x the floor"
    )
    if kg:
        print(
            f"kernel gateway {KG_VERSION}: p50 {kg['p50_ms']:.1f} ms, p99 {kg['p99_ms']:.1f} ms, "
            f"{kg['rps']:.1f} req/s with 4 clients (requests never answered: {kg['hung']:.0f}); "
            f"kiln/kg req/s = {kiln['rps'] / kg['rps']:.2f}x"
        )
    queue = results["queue"]
    print(
        f"/health while 2 workers run flat out: p50 {queue['health_p50_ms']:.1f} ms, "
        f"p99 {queue['health_p99_ms']:.1f} ms (workers busy: {queue['workers_busy_during']:.0f})"
    )
    print(
        f"{queue['submitted']} runs submitted in {queue['submit_s']:.1f} s, all ended in "
        f"{queue['all_done_s']:.1f} s: {queue['unique_ids']} ids, {queue['recorded']} recorded, "
        f"states {queue['states']}, ran {queue['ran']} times, each once: {queue['ran_once']}"
    )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "server_bench.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
