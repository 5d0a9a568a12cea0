"""Building blocks for the lint corpus: planted values, cell and output builders, `Case`."""

from __future__ import annotations

import base64
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# -- planted values (fake, assembled) -----------------------------------------------------------


def glue(*parts: str) -> str:
    """A planted value from its pieces. A call, not ``+``: scanners that fold constant string
    expressions (Kiln's own among them) do not follow calls, so no file shows a value whole."""
    return "".join(parts)


AWS_ID = glue("AKIA", "Q3EGRT7XMPL4ZN2W")
GH_TOKEN = glue("ghp_", "Zq8Lw2Vn5Rb7Tc1Yx4Mk9Hd3Gf6Js0Pa2UeW8")
SLACK = glue("xoxb-", "184752930-2283746501-aB3dE5fG7hJ9kL1mN3pQ5rS7")
GOOGLE = glue("AIza", "SyD4f8Kq2Lm9Xw3Vb7Nc1Rt6Yh5Ug0Pe2Zs")
STRIPE = glue("sk_live_", "4eC39HqLyjWDarjtT1zdp7dc")
DB_URL = glue("postgresql://etl_user:", "Vx9#mQ2pLr7w", "@db.internal.acme.io:5432/sales")
PEM = glue(
    "-----BEGIN RSA ",
    "PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq98\n-----END RSA ",
    "PRIVATE KEY-----",
)
PASSWORD = glue("Tr0ub4dor&3", "x!")
RANDOM_TOKEN = glue("q8Vz3kL0pT7w", "R2nY5bX9cF1m")
JWT = glue(
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.",
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
)
EMAIL = glue("maria.garcia", "@acme-corp.com")
CARD = glue("4111 1111 ", "1111 1111")
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
UUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

UNEXECUTED = -1


@dataclass
class Case:
    name: str
    cells: Sequence[dict[str, Any]]
    expect: Sequence[tuple[str, int | None]] = ()
    lint: dict[str, Any] | None = None  # the case's kiln.yaml `lint:` section
    project: dict[str, Any] | None = None  # other kiln.yaml sections
    language: str = "python"
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None  # file text instead of a notebook


def code(
    source: str,
    *outputs: dict[str, Any],
    count: int | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    meta = dict(metadata or {})
    if tags:
        meta["tags"] = list(tags)
    return {
        "cell_type": "code",
        "execution_count": count,
        "metadata": meta,
        "outputs": list(outputs),
        "source": source,
    }


def md(source: str, attachments: dict[str, Any] | None = None) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": "markdown", "metadata": {}, "source": source}
    if attachments:
        cell["attachments"] = attachments
    return cell


def out(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def data(mime: dict[str, Any], count: int | None = None) -> dict[str, Any]:
    if count is None:
        return {"output_type": "display_data", "metadata": {}, "data": mime}
    return {"output_type": "execute_result", "execution_count": count, "metadata": {}, "data": mime}


def error(ename: str, evalue: str, *frames: str) -> dict[str, Any]:
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": list(frames)}


def png(size: int = 3000) -> str:
    return base64.b64encode(random.Random(size).randbytes(size)).decode()


def notebook(case: Case) -> dict[str, Any]:
    cells = []
    count = 0
    for index, cell in enumerate(case.cells):
        cell = dict(cell, id=f"cell{index}")
        if cell["cell_type"] == "code":
            if cell["execution_count"] == UNEXECUTED:
                cell["execution_count"] = None
            elif cell["execution_count"] is None:
                count += 1
                cell["execution_count"] = count
            else:
                count = cell["execution_count"]
        cells.append(cell)
    kernel = {
        "name": case.language.lower() if case.language != "python" else "python3",
        "display_name": case.language,
        "language": case.language,
    }
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "cells": cells,
        "metadata": {"kernelspec": kernel, **case.metadata},
    }


CLEAN_SOURCES = [
    "import os\nimport numpy as np\nimport pandas as pd\nfrom pathlib import Path",
    "DATA = Path('data') / 'sales.csv'\npassword = os.environ['DB_PASSWORD']\n"
    "token = os.getenv('API_TOKEN', '')\nsecret_name = 'prod/db'\nconn = "
    "f'postgresql://{os.environ[\"USER\"]}:{password}@db/sales'",
    "rng = np.random.default_rng(42)\nnp.random.seed(0)\nsample = rng.normal(size=5)",
    "def summarise(frame, *cols, scale=1, **kw):\n    total = 0\n    for col in cols:\n"
    "        total += frame[col].sum() * scale\n    return total, kw",
    "class Report:\n    title = 'sales'\n    upper = title.upper()\n\n    def render(self):\n"
    "        return f'{self.title}: {summarise}'",
    "pairs = [(k, v) for k, v in {'a': 1}.items() if v]\nfirst, *rest = [1, 2, 3]\n"
    "if (n := len(rest)) > 1:\n    print(n)\nwith open(os.devnull) as fh:\n    fh.read()",
    "try:\n    import ujson as json_lib\nexcept ImportError as exc:\n    import json as json_lib\n"
    "    reason = str(exc)\nprint(json_lib, first, pairs)",
    "counter = 0\ndef bump():\n    global counter\n    counter += 1\n    return counter\n"
    "def outer():\n    seen = []\n    def inner():\n        nonlocal seen\n        seen = [1]\n"
    "        return seen\n    return inner",
    "squares = {x: x * x for x in range(3)}\nlabels = list(map(lambda s: s.upper(), ['a']))\n"
    "del squares\nprint(display, get_ipython, In, Out, __name__, labels)",
    "%matplotlib inline\nfiles = !ls data\nprint(files)\n%load_ext autoreload\n%run -m my_pkg.tool",
    "import kiln\nkiln.record('mean', float(sample.mean()))\nkiln.record('n', len(files))",
]


def _clean_outputs() -> list[dict[str, Any]]:
    return [
        out(
            f"digest {SHA256}\nrun id {UUID}\ncommit 3f2c9a1b7d4e\nversion 1.2.3 on 2024-05-17 "
            "12:30:45\n"
        ),
        data(
            {
                "text/html": f'<img src="data:image/png;base64,{png(900)}" alt="chart">'
                "<table><tr><td>2024-05-17</td><td>1234567890</td><td>3.14159265358979</td>"
                "<td>noreply@acme-corp.com</td><td>team@example.com</td></tr></table>",
                "text/plain": "chart",
            }
        ),
        data({"image/png": png(4000), "text/plain": "<Figure size 640x480 with 1 Axes>"}),
        out(
            "clone git@github.com:acme/sales.git, icon@2x.png, IPY_MODEL_"
            "5f3e2b1c9a8d4e7f6a5b4c3d2e1f0a9b, CamelCaseReportBuilder2024Final\n"
        ),
    ]


def clean_notebook() -> list[dict[str, Any]]:
    cells = [
        md(
            "# Sales\n\nContact: ![logo](logo.png) see https://example.com/docs?id=1OtyxfwoRyVK23"
            "XHnmd9JR-crBgHBL5mt"
        )
    ]
    for index, source in enumerate(CLEAN_SOURCES):
        cells.append(code(source, *(_clean_outputs() if index == 3 else ())))
    return cells
