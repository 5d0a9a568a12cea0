"""The web UI with 100,000 runs in the history: every page's time, and app mode in a browser.

Scenarios (figures quoted in the README come from this script):
  pages   a SQLite history filled in bulk with 100,000 runs (5 notebooks, 6 users, every
          state, 90 days); a real ``kiln serve`` (1 worker); each page requested N times by a
          logged-in client on the same machine: p50 and p95 of the round trip (an upper
          bound of the server's time). The runs list is measured on its first page, filtered
          (state, user, notebook, dates) and 25 pages deep (keyset pagination).
  app     app mode in Debian's chromium (Playwright): from the form's submit to the result
          shown in its frame, on a trivial notebook run by a worker's warm fork pool: p50, p95
          (new parameters each time, so no cached result)

Usage: python bench/ui_bench.py [--runs 100000] [--requests 60] [--app 15] [--skip-app]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

BIN = Path(sys.executable).parent
KILN = str(BIN / "kiln")
META = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
NOTEBOOKS = ("report.ipynb", "hello.ipynb", "etl/load.ipynb", "etl/clean.ipynb", "model.ipynb")
USERS = ("ana", "bo", "cy", "dee", "eli", "admin")
STATES = ("succeeded",) * 6 + ("failed", "cancelled", "timed_out", "crashed")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def write_project(root: Path) -> None:
    for name in NOTEBOOKS:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nb = new_notebook(
            cells=[
                new_markdown_cell(f"# {name}\n\nA notebook of the benchmark."),
                new_code_cell("name = 'world'  # who", metadata={"tags": ["parameters"]}),
                new_code_cell("print(f'Hello, {name}!')"),
            ],
            metadata=META,
        )
        nbformat.write(nb, path)
    (root / "kiln.yaml").write_text(
        "notebooks:\n"
        + "".join(f"  {n}: {{}}\n" for n in NOTEBOOKS if n != "hello.ipynb")
        + "  hello.ipynb: {title: Greeter, app: true}\n",
        encoding="utf-8",
    )


def fill(root: Path, home: Path, count: int) -> float:
    """``count`` runs inserted in bulk (one transaction per 10,000); seconds taken."""
    os.environ["KILN_HOME"] = str(home)
    from kiln.store.schema import runs
    from kiln.store.sql import RunStore

    started = time.perf_counter()
    store = RunStore(home)
    rng = random.Random(13)
    now = datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        name = NOTEBOOKS[i % len(NOTEBOOKS)]
        created = now - timedelta(seconds=rng.uniform(60, 90 * 86400))
        state = rng.choice(STATES)
        rows.append(
            {
                "id": f"{created:%Y%m%d-%H%M%S}-{i:08x}",
                "notebook_path": str(root / name),
                "notebook_name": Path(name).name,
                "notebook_sha256": "0" * 64,
                "state": state,
                "parameters": {"name": f"user{i % 97}"},
                "created_at": created,
                "started_at": created + timedelta(seconds=1),
                "ended_at": created + timedelta(seconds=1 + rng.uniform(0.1, 30)),
                "cell_durations": [0.01, 0.02],
                "records": [],
                "submitted_by": USERS[i % len(USERS)],
                "engine": "fork",
            }
        )
        if len(rows) == 10_000:
            with store._write() as conn:
                conn.execute(runs.insert(), rows)
            rows = []
    if rows:
        with store._write() as conn:
            conn.execute(runs.insert(), rows)
    store.close()
    return time.perf_counter() - started


class Serve:
    def __init__(self, root: Path, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        env["KILN_HOME"] = str(home)
        self.proc = subprocess.Popen(
            [KILN, "serve", "--port", "0", "--workers", "1"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()
        deadline = time.monotonic() + 120
        self.url = ""
        while not self.url:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("kiln serve did not start:\n" + "\n".join(self.out + self.err))
            for line in list(self.err):
                found = re.search(r"listening on (http://\S+)", line)
                if found:
                    self.url = found.group(1)
            time.sleep(0.1)
        self.password = next(
            line.split(": ", 1)[1] for line in self.out if line.startswith("admin password: ")
        )

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def login(url: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    client.get("/login")
    answer = client.post(
        "/login",
        data={"username": "admin", "password": password, "csrf": client.cookies["kiln_csrf"]},
    )
    if answer.status_code != 303:
        raise SystemExit(f"login failed: {answer.status_code} {answer.text[:200]}")
    return client


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(client: httpx.Client, path: str, count: int) -> tuple[float, float]:
    client.get(path).raise_for_status()  # warm
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: {answer.status_code}")
    return statistics.median(times), percentile(times, 0.95)


def deep_cursor(client: httpx.Client, pages: int) -> str:
    path = "/runs"
    for _ in range(pages):
        found = re.search(r'href="(/runs\?[^"]*cursor=[^"]+)" rel="next"', client.get(path).text)
        if found is None:
            raise SystemExit("no next page")
        path = found.group(1).replace("&amp;", "&")
    return path


def app_mode(url: str, password: str, count: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    shown: list[float] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(base_url=url)
        page.set_default_timeout(60_000)
        page.goto("/login")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r"/$"))
        page.goto("/apps/hello.ipynb")
        for i in range(count + 2):
            name = f"bench{i}-{time.time_ns()}"
            page.evaluate("window.kilnAppShown = null")
            page.locator("#p-name").fill(name)
            page.locator("#app-submit").click()
            page.frame_locator("#app-output").get_by_text(f"Hello, {name}!").wait_for()
            page.wait_for_function("window.kilnAppShown !== null")
            if i >= 2:  # the first two warm the worker's pool and the renderer
                shown.append(float(page.evaluate("window.kilnAppShown")))
        browser.close()
    return shown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--app", type=int, default=15)
    parser.add_argument("--skip-app", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-ui-bench-") as tmp:
        root = Path(tmp) / "proj"
        home = Path(tmp) / "home"
        write_project(root)
        took = fill(root.resolve(), home, args.runs)
        print(f"filled the history with {args.runs:,} runs in {took:.1f} s")
        server = Serve(root, home)
        try:
            client = login(server.url, server.password)
            some = client.get("/api/v1/runs", params={"limit": 1}).json()["items"][0]["id"]
            deep = deep_cursor(client, 25)
            pages = {
                "home": "/",
                "notebook form": "/notebooks/report.ipynb",
                "runs": "/runs",
                "runs, 25 pages deep": deep,
                "runs by state": "/runs?state=failed",
                "runs by user": "/runs?user=cy",
                "runs by notebook": "/runs?notebook=etl/clean.ipynb",
                "runs by dates": "/runs?from=2026-10-01&to=2026-10-15",
                "runs, all filters": "/runs?notebook=model.ipynb&state=crashed&user=dee",
                "run page": f"/runs/{some}",
                "run live part": f"/runs/{some}/live",
                "app": "/apps/hello.ipynb",
                "users": "/admin/users",
                "audit": "/admin/audit",
                "schedules": "/schedules",
                "pipelines": "/pipelines",
            }
            print(f"\npages ({args.requests} requests each, round trip on this machine, ms)")
            print(f"  {'page':<24} {'p50':>7} {'p95':>7}")
            worst = 0.0
            for label, path in pages.items():
                p50, p95 = measure(client, path, args.requests)
                worst = max(worst, p95)
                print(f"  {label:<24} {p50:7.1f} {p95:7.1f}")
            print(f"  worst p95: {worst:.1f} ms (target: under 100 ms)")
            if not args.skip_app:
                shown = app_mode(server.url, server.password, args.app)
                print(
                    f"\napp mode, submit to rendered result in chromium ({len(shown)} runs): "
                    f"p50 {statistics.median(shown):.0f} ms, p95 {percentile(shown, 0.95):.0f} ms "
                    "(target: under 300 ms)"
                )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
