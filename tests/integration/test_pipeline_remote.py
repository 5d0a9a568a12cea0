"""Products at fsspec URLs: ``file://`` and ``s3://`` on a local S3-compatible server (moto in
server mode, started here on 127.0.0.1): written, hashed, found up to date, rebuilt when an
object goes away, and passed downstream as URLs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from kilntest import KILN, CellSpec, build_notebook, wait_for

#: reads its upstream products and writes its own, all through fsspec
TASK: list[CellSpec] = [
    ("upstream = None\nproduct = None\nregion = 'EU'", ["parameters"]),
    "import json, fsspec, kiln\n"
    "rows = [region]\n"
    "for value in (upstream or {}).values():\n"
    "    nested = all(isinstance(v, dict) for v in value.values())\n"
    "    for products in (value.values() if nested else [value]):\n"
    "        for url in products.values():\n"
    "            with fsspec.open(url, 'r') as f:\n"
    "                rows += json.load(f)\n"
    "for url in product.values():\n"
    "    with fsspec.open(url, 'w') as f:\n"
    "        json.dump(rows, f)\n"
    "kiln.record('upstream', upstream)",
]


def _project(root: Path, config: str) -> Path:
    root.mkdir(parents=True)
    nbformat.write(build_notebook(TASK), root / "task.ipynb")
    (root / "kiln.yaml").write_text(textwrap.dedent(config), encoding="utf-8")
    return root


def _build(root: Path, home: Path, env: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    done = subprocess.run(
        [KILN, "build", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env=dict(os.environ, KILN_HOME=str(home), **(env or {})),
    )
    assert done.returncode == 0, done.stderr
    return {t["task"]: (t["state"], t["reason"]) for t in json.loads(done.stdout)["tasks"]}


def test_file_url_products(tmp_path: Path, home: Path) -> None:
    store = tmp_path / "shared"
    root = _project(
        tmp_path / "proj",
        f"""
        pipelines:
          p:
            tasks:
              a: {{notebook: task.ipynb, products: {{data: "file://{store}/a.json"}}}}
              b: {{notebook: task.ipynb, inputs: ["file://{store}/a.json"],
                  products: {{data: "file://{store}/b.json"}}}}
        """,
    )
    store.mkdir()
    assert _build(root, home) == {
        "a": ("succeeded", "never ran successfully"),
        "b": ("succeeded", "never ran successfully"),
    }
    assert json.loads((store / "b.json").read_text()) == ["EU", "EU"]
    assert _build(root, home)["b"] == ("up_to_date", "up to date")
    (store / "a.json").write_text('["edited"]')
    result = _build(root, home)
    assert result["a"] == (
        "succeeded",
        f"product file://{store}/a.json changed since the task wrote it",
    )
    # a rewrote what it wrote before: b has nothing new to read
    assert result["b"] == ("up_to_date", "up to date")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 and the environment that points fsspec at it."""
    pytest.importorskip("moto", reason="moto[server] is not installed")
    pytest.importorskip("s3fs", reason="s3fs is not installed")
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.skip("moto_server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }

    def up() -> bool:
        try:
            with urllib.request.urlopen(env["AWS_ENDPOINT_URL"], timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, what="the moto S3 server")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir("kiln-test")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_s3_products_on_a_local_server(tmp_path: Path, home: Path, s3: dict[str, str]) -> None:
    import fsspec

    root = _project(
        tmp_path / "proj",
        """
        pipelines:
          p:
            tasks:
              clean:
                notebook: task.ipynb
                grid: {region: [EU, US]}
                products: {data: "s3://kiln-test/clean/{{params.region}}.json"}
              report:
                notebook: task.ipynb
                upstream: [clean]
                products: {data: s3://kiln-test/report.json}
        """,
    )
    first = _build(root, home, s3)
    assert [state for state, _ in first.values()] == ["succeeded"] * 3
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert json.loads(fs.cat("kiln-test/report.json")) == ["EU", "EU", "US"]
    second = _build(root, home, s3)
    assert [state for state, _ in second.values()] == ["up_to_date"] * 3
    fs.rm("kiln-test/clean/US.json")
    third = _build(root, home, s3)
    assert third["clean[region=US]"] == (
        "succeeded",
        "product s3://kiln-test/clean/US.json missing",
    )
    assert third["clean[region=EU]"][0] == "up_to_date"
    assert third["report"][0] == "up_to_date"  # the same object was written again
    fs.pipe("kiln-test/clean/EU.json", b'["changed by hand"]')
    fourth = _build(root, home, s3)
    assert fourth["clean[region=EU]"][0] == "succeeded"
    assert fourth["report"][0] == "up_to_date"
