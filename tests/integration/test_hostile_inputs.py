"""Malformed and hostile inputs through every subcommand: one paragraph, exit 2, nothing written.

A matrix of bad notebooks x the commands that read notebooks, in-process (the same ``main`` the
``kiln`` command runs), plus YAML bombs and other hostile parameter files; a few cases again in
a real subprocess.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.cli.main import run_main

from kilntest import KILN

CELL = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None}


def _v4(cells: object) -> bytes:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
    return json.dumps(nb).encode()


BAD_NOTEBOOKS: dict[str, bytes | None] = {
    "missing": None,
    "empty": b"",
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00",
    "not-json": b'{"nbformat": 4, "cells": [',
    "json-list": b"[1, 2]",
    "no-nbformat": b'{"cells": []}',
    "nbformat-99": b'{"nbformat": 99, "cells": []}',
    "cells-not-list": b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": 3}',
    "cells-not-cells": _v4([1, "a", None]),
    "bad-cell-type": _v4([{**CELL, "cell_type": 42, "source": "x"}]),
    "source-not-text": _v4([{**CELL, "source": 42}]),
    "nested-100000": b"[" * 100_000 + b"]" * 100_000,
    "nested-in-metadata": (
        b'{"nbformat": 4, "nbformat_minor": 5, "cells": [], "metadata": '
        + b'{"a": ' * 50_000
        + b"1"
        + b"}" * 50_001
    ),
    "lone-surrogate": _v4([{**CELL, "source": "x = '\ud800'"}]).replace(b"\\\\ud800", b"\\ud800"),
    "invalid-v4": _v4([{"cell_type": "code", "source": "x", "outputs": "no"}]),
}

COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "run": lambda nb, tmp: ["run", str(nb), str(tmp / "out.ipynb")],
    "run-sweep": lambda nb, tmp: ["run", str(nb), "--sweep", str(tmp / "grid.yaml")],
    "params": lambda nb, tmp: ["params", str(nb)],
    "lint": lambda nb, tmp: ["lint", str(nb)],
    "clean": lambda nb, tmp: ["clean", str(nb)],
    "clean-check": lambda nb, tmp: ["clean", "--check", str(nb)],
    "diff": lambda nb, tmp: ["diff", str(nb), str(tmp / "good.ipynb")],
    "export": lambda nb, tmp: ["export", str(nb), "-o", str(tmp / "out.py")],
    "verify": lambda nb, tmp: ["verify", str(nb)],
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KILN_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text("x: [1, 2]\n")
    (tmp_path / "good.ipynb").write_bytes(_v4([{**CELL, "source": "x = 1"}]))
    return tmp_path


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(BAD_NOTEBOOKS))
def test_bad_notebook_is_one_paragraph_and_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture[str], case: str, command: str
) -> None:
    nb = workdir / "bad.ipynb"
    data = BAD_NOTEBOOKS[case]
    if data is not None:
        nb.write_bytes(data)
    before = sorted(p.name for p in workdir.iterdir())
    code = run_main(COMMANDS[command](nb, workdir))
    out, err = capsys.readouterr()
    if command == "lint" and data is not None:  # lint reports it as a finding (exit 1)
        assert code == 1 and "KL001 error" in out and "bad.ipynb" in out, out + err
        err = out
    else:
        assert code == 2, err
        assert err.startswith("Error: ") and "bad.ipynb" in err
    assert "Internal error" not in err and "Traceback" not in err
    assert len(err) < 1200
    after = sorted(p.name for p in workdir.iterdir() if p.name != "home")
    assert after == before  # no output file, no script, nothing half-written
    runs = workdir / "home" / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []  # no run folder left behind
    if data is not None:
        assert nb.read_bytes() == data  # never modified


HOSTILE_PARAMETERS = {
    "yaml-bomb": (
        "-f",
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
        "alias bomb",
    ),
    "recursive-alias": ("-f", "a: &a [*a]\n", "recursive alias"),
    "binary-file": ("-f", b"\x00\x01\x02PK\x03\x04", "binary file"),
    "huge-int": ("-y", "n: " + "9" * 5000, "more than 1000 digits"),
    "duplicate-key": ("-y", "n: 1\nn: 2", "duplicate key 'n'"),
    "python-tag": ("-y", "n: !!python/object/apply:os.system [id]", "unsupported YAML tag"),
    "deep-yaml": ("-y", "n: " + "[" * 5000 + "]" * 5000, "invalid YAML"),
    "sweep-bomb": ("--sweep", "x: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\ny: [*a, *a]\n" * 1, ""),
    "base64-not": ("-b", "!!!", "not base64"),
    "base64-bomb": ("-b", base64.b64encode(b"a: &a [*a]").decode(), "recursive alias"),
}


@pytest.mark.parametrize("case", list(HOSTILE_PARAMETERS))
def test_hostile_parameter_input_is_refused_at_once(
    workdir: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    flag, content, message = HOSTILE_PARAMETERS[case]
    nb = workdir / "good.ipynb"
    if flag in ("-f", "--sweep"):
        target = workdir / "values.yaml"
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        value = str(target)
    else:
        value = str(content)
    started = time.monotonic()
    code = run_main(["run", str(nb), flag, value])
    took = time.monotonic() - started
    err = capsys.readouterr().err
    if case == "sweep-bomb":  # a small, legitimate use of aliases still works
        assert code in (0, 2), err
        return
    assert code == 2, err
    assert message in err and "Traceback" not in err and "Internal error" not in err
    assert took < 30  # the bound is what matters; a bomb used to take minutes and gigabytes


def test_the_real_command_refuses_a_bomb_quickly(tmp_path: Path) -> None:
    (tmp_path / "good.ipynb").write_bytes(_v4([{**CELL, "source": "x = 1"}]))
    (tmp_path / "bomb.yaml").write_text(HOSTILE_PARAMETERS["yaml-bomb"][1])  # type: ignore[arg-type]
    env = dict(os.environ, KILN_HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [KILN, "run", "good.ipynb", "-f", "bomb.yaml"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "alias bomb" in done.stderr
    (tmp_path / "deep.ipynb").write_bytes(BAD_NOTEBOOKS["nested-100000"])  # type: ignore[arg-type]
    nested = subprocess.run(
        [KILN, "run", "deep.ipynb"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )  # fmt: skip
    assert nested.returncode == 2 and "nested too deeply" in nested.stderr
