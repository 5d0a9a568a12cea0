"""Benchmark ``kiln lint`` on 1,000 generated notebooks (no kernel involved).

    .venv/bin/python bench/lint_bench.py [--notebooks 1000] [--repeat 3] [--keep DIR]

Generates varied notebooks (5-40 cells: imports, data code, functions, loops, magics, string
building, markdown, stdout, HTML tables, base64 PNGs, tracebacks; a few planted secrets, some
split into pieces, and e-mail addresses), then
times, as fresh processes the way CI calls it: ``kiln lint DIR`` (text and SARIF). In-process,
it also times the detect-secrets pre-filter's effect (every line sent to detect-secrets versus
only candidate lines). ``nbqa flake8`` is timed too when it is installed, for reference.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHIM = (
    "import sys, kiln.cli.main as m\n"
    "m.COMMANDS = m.COMMANDS if 'lint_cmd' in m.COMMANDS else (*m.COMMANDS, 'lint_cmd')\n"
    "sys.exit(m.run_main(sys.argv[1:]))\n"
)

_CODE = [
    "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt",
    "df = pd.read_csv('data/sales_{n}.csv')\ndf.head()",
    "totals = df.groupby('region')['amount'].sum()\ntotals",
    "def clean(frame, cols=None):\n    cols = cols or list(frame.columns)\n"
    "    return frame.dropna(subset=cols)\n\nclean_df = clean(df)",
    "for i, row in enumerate(df.itertuples()):\n    if i > 3:\n        break\n    print(row)",
    "squares = {{k: v ** 2 for k, v in zip(range(10), range(10))}}\nevens = [x for x in squares "
    "if x % 2 == 0]",
    "%matplotlib inline\nfig, ax = plt.subplots()\nax.plot(np.arange(10))",
    "with open('out_{n}.txt', 'w') as fh:\n    fh.write(str(totals))",
    "try:\n    value = int('x')\nexcept ValueError as exc:\n    print('bad', exc)",
    "class Model:\n    def __init__(self, k):\n        self.k = k\n    def predict(self, x):\n"
    "        return x * self.k\n\nmodel = Model(3)\nmodel.predict(2)",
    "rng = np.random.default_rng(42)\nsample = rng.normal(size=100)\nsample.mean()",
    "import kiln\nkiln.record('total', float(totals.sum()))",
    "!ls -la data\nresult = !echo hi",
    "summary = df.describe()\nsummary",
    # string building, as real notebooks do it: the cells the secret scan's fold pass reads
    "title = 'Sales report ' + str({n}) + ' (' + 'EU' + ')'\n"
    'label = f"{{title}}: {{totals.sum():.2f}}"',
    "print('%s: %.2f' % ('total', totals.sum()))\n"
    "msg = '{{}} rows, {{}} columns'.format(*df.shape)",
    "cfg = {{'host': 'db.internal', 'user': 'etl', 'timeout': 30, 'token': os.environ['T']}}\n"
    "path = 'out/' 'sales_' + str({n}) + '.csv'",
]
_MARKDOWN = [
    "# Sales report {n}\n\nThis notebook summarises the sales per region.",
    "## Cleaning\n\nWe drop rows with missing values. See [docs](https://example.com/docs).",
    "Some *emphasis* and a list:\n\n- one\n- two\n- three",
]


def _glue(*parts: str) -> str:
    """A fake secret from its pieces: a call, so no scanner (folding or not) sees it here."""
    return "".join(parts)


_PLANTS = [
    _glue("aws_key = 'AKIA", "IOSFODNN7EXAMPLE'"),
    "print('contact: jane.doe@acme-corp.com')",
    _glue("conn = 'postgresql://admin:", "S3cr3tPa55@db.internal:5432/sales'"),
    _glue("token = 'ghp_", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8'"),
    _glue("aws_key = 'AKIA' + 'IOSF", "ODNN7EXAMPLE'"),  # evasions the fold pass undoes
    _glue("conn = psycopg2.connect(host='db', user='etl', password='S3cr3t", "Pa55')"),
]


def _png(rng: random.Random, size: int) -> str:
    return base64.b64encode(rng.randbytes(size)).decode()


def _outputs(rng: random.Random, count: int) -> list[dict[str, Any]]:
    kind = rng.random()
    if kind < 0.4:
        lines = [f"row {i}: value={rng.random():.4f}\n" for i in range(rng.randint(1, 30))]
        return [{"output_type": "stream", "name": "stdout", "text": lines}]
    if kind < 0.6:
        rows = "".join(
            f"<tr><td>{i}</td><td>{rng.random():.3f}</td><td>EU</td></tr>"
            for i in range(rng.randint(5, 60))
        )
        return [
            {
                "output_type": "execute_result",
                "execution_count": count,
                "metadata": {},
                "data": {
                    "text/html": f"<table><thead><tr><th>a</th></tr></thead>{rows}</table>",
                    "text/plain": "   a  b\n0  1  2",
                },
            }
        ]
    if kind < 0.75:
        return [
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {
                    "image/png": _png(rng, rng.randint(5_000, 60_000)),
                    "text/plain": "<Figure size 640x480 with 1 Axes>",
                },
            }
        ]
    if kind < 0.8:
        return [
            {
                "output_type": "error",
                "ename": "ValueError",
                "evalue": "bad value",
                "traceback": ["\x1b[0;31mValueError\x1b[0m Traceback", f"Cell In[{count}], line 1"],
            }
        ]
    return []


def make_notebook(rng: random.Random, n: int) -> dict[str, Any]:
    cells: list[dict[str, Any]] = []
    count = 0
    for index in range(rng.randint(5, 40)):
        if rng.random() < 0.25:
            source = rng.choice(_MARKDOWN).format(n=n)
            cells.append(
                {"cell_type": "markdown", "id": f"m{index}", "metadata": {}, "source": source}
            )
            continue
        source = rng.choice(_CODE).format(n=n)
        if rng.random() < 0.03:
            source += "\n" + rng.choice(_PLANTS)
        count += 1 if rng.random() < 0.9 else 3
        cells.append(
            {
                "cell_type": "code",
                "id": f"c{index}",
                "metadata": {},
                "execution_count": count,
                "source": source,
                "outputs": _outputs(rng, count),
            }
        )
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": cells,
    }


def generate(folder: Path, count: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    total = 0
    for n in range(count):
        sub = folder / f"team{n % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        text = json.dumps(make_notebook(rng, n), indent=1)
        (sub / f"nb_{n:04d}.ipynb").write_text(text)
        total += len(text)
    return total


def _time(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _in_process(folder: Path, repeat: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "src"))
    from kiln.lint import lint_paths, secret_scan
    from kiln.lint.config import LintConfig

    config = LintConfig()
    lint_paths([folder], config=config)  # warm: imports, detect-secrets plugins
    results: dict[str, float] = {}
    original = secret_scan.is_candidate
    for label, prefilter in (("with pre-filter", original), ("every line", lambda text: True)):
        secret_scan.is_candidate = prefilter  # type: ignore[assignment]
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            report = lint_paths([folder], config=config)
            times.append(time.perf_counter() - start)
        results[label] = statistics.median(times)
        results[f"findings ({label})"] = len(report.findings)
    secret_scan.is_candidate = original  # type: ignore[assignment]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kiln-lint-bench-"))
    try:
        size = generate(folder, args.notebooks)
        print(f"{args.notebooks} notebooks, {size / 1e6:.1f} MB, in {folder}")
        kiln = [sys.executable, "-c", SHIM, "lint"]
        env_cmd = [*kiln, str(folder)]
        print(f"kiln lint (text, fresh process):  {_time(env_cmd, args.repeat):6.2f} s")
        sarif = [*env_cmd, "--format", "sarif"]
        print(f"kiln lint --format sarif:         {_time(sarif, args.repeat):6.2f} s")
        for label, value in _in_process(folder, args.repeat).items():
            unit = "" if label.startswith("findings") else " s"
            shown = f"{value:6.2f}" if unit else f"{int(value):6d}"
            print(f"in process, {label + ':':<28}{shown}{unit}")
        nbqa = shutil.which("nbqa") or str(Path(sys.executable).with_name("nbqa"))
        if os.path.exists(nbqa):
            print(
                f"nbqa flake8 (reference):          "
                f"{_time([nbqa, 'flake8', str(folder)], 1):6.2f} s"
            )
        else:
            print("nbqa not installed: no peer reference timed")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
