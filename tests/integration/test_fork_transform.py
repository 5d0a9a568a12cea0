"""The fork engine's shortcut past IPython's static input transformations gives what IPython
gives: on hand-made cells aimed at each transformation, and on every code cell of the peers'
notebooks (the corpus)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from typing import Any

import nbformat
import pytest
from corpus_util import CORPUS, corpus_path
from IPython.core.inputtransformer2 import TransformerManager

from kiln.engines.forkshell import _MAY_TRANSFORM, KilnTransformerManager

#: cells that IPython transforms, or that look as if it might: each goes through IPython
TRICKY = [
    "%time x = 1",
    "%%bash\necho hi",
    "!ls -la",
    "files = !ls",
    "t = %time 1",
    "x = 1\n!echo hi",
    "print?",
    "?print",
    "len??",
    "/print 1",
    ",print a b",
    ";print a b",
    ">>> x = 1\n>>> x",
    "x = 1\n... y",
    "In [1]: x = 1",
    "   x = 1\n   y = 2",
    "\n\nx = 1",
    "x = 1\n    \ny = 2",
    "x = 1\r\ny = 2",
    "x = 1\x0cy = 2",
    "s = 'a\u2028b'",
    "def f():\n    ...",
    "x = (1,\n,2)",
    "x = '%s' % 3",
    "if a != b:\n    pass",
    "x = 5 % 3\ny = 'what?'",
    "d = {'a': 1}\n  # indented comment",
    "x = \\\n  %time 1",
    "if True:\n\t!ls",
]

#: cells that take the shortcut: IPython leaves them as they are (and adds a final newline)
PLAIN = [
    "x = 1",
    "# Parameters\nx = 3\nname = 'it''s'\n",
    "import kiln\ny = x * 2\nkiln.record('y', y)",
    "def f(a, b):\n    return a % b\n\nf(5, 3)",
    "for i in range(3):\n    print(i)\n",
    "",
    "x = [1,\n     2]\n",
    "if a == b:\n    pass",
    "print('done!')",
]


def manager() -> TransformerManager:
    return TransformerManager()


@pytest.mark.parametrize("cell", TRICKY + PLAIN)
def test_the_shortcut_gives_what_ipython_gives(cell):
    with warnings.catch_warnings():  # IPython warns of some of these line breaks itself
        warnings.simplefilter("ignore")
        assert KilnTransformerManager().transform_cell(cell) == manager().transform_cell(cell)


def _refuse(self: TransformerManager, raw: str) -> str:
    raise AssertionError(f"ran IPython's transformations on {raw!r}")


@pytest.mark.parametrize("cell", PLAIN)
def test_plain_cells_do_not_run_the_transformations(cell, monkeypatch):
    monkeypatch.setattr(TransformerManager, "transform_cell", _refuse)
    ours = KilnTransformerManager()
    assert ours.transform_cell(cell) == (cell if cell.endswith("\n") else cell + "\n")


@pytest.mark.parametrize("cell", [c for c in TRICKY if "!" in c or "%" in c or "?" in c])
def test_cells_ipython_would_change_are_not_shortcut(cell):
    mgr = manager()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformed = mgr.transform_cell(cell)
    if transformed != cell and transformed != cell + "\n":
        assert cell[:1] in (" ", "\t", "\n") or _MAY_TRANSFORM.search(cell) is not None, (
            f"{cell!r} would have been shortcut"
        )


def test_a_cell_that_registers_a_transformation_is_obeyed():
    # get_ipython().input_transformers_cleanup.append(...) in one cell changes the next
    ours = KilnTransformerManager()
    ours.cleanup_transforms.append(lambda lines: [line.replace("1", "2") for line in lines])
    assert ours.transform_cell("x = 1") == "x = 2\n"


def _corpus_cells() -> list[tuple[str, str]]:
    corpus_path("")  # skips without a corpus
    cells = []
    for path in sorted(CORPUS.rglob("*.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:  # the corpus holds deliberately broken notebooks
            continue
        for cell in nb.cells:
            if cell.get("cell_type") == "code" and isinstance(cell.get("source"), str):
                cells.append((str(path.relative_to(CORPUS)), cell.source))
    return cells


def test_every_corpus_cell_transforms_as_ipython_would():
    cells = _corpus_cells()
    assert len(cells) > 300
    ours, ipythons = KilnTransformerManager(), manager()
    shortcut = 0
    for where, source in cells:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = ipythons.transform_cell(source)
            assert ours.transform_cell(source) == expected, (where, source)
        if source[:1] not in (" ", "\t", "\n") and not _MAY_TRANSFORM.search(source):
            shortcut += 1
    # the point of it: most real cells take the shortcut
    assert shortcut > len(cells) * 0.8, (shortcut, len(cells))


def test_the_fork_shell_transforms_single_lines_dynamically_as_ipython_does():
    # automagic and autocall apply to single lines and depend on the namespace: the shell
    # runs them after the shortcut, as with IPython's own manager (in a child process: an
    # IPython shell takes over the process's __main__)
    probe = (
        "import json, sys\n"
        "from IPython.core.inputtransformer2 import TransformerManager\n"
        "from kiln.engines.forkshell import KilnTransformerManager, make_shell\n"
        "shell = make_shell()\n"
        "ours = shell.input_transformer_manager\n"
        "assert isinstance(ours, KilnTransformerManager)\n"
        "cells = json.loads(sys.stdin.read())\n"
        "out = []\n"
        "for cell in cells:\n"
        "    shell.input_transformer_manager = TransformerManager()\n"
        "    theirs = shell.transform_cell(cell)\n"
        "    shell.input_transformer_manager = ours\n"
        "    out.append([shell.transform_cell(cell), theirs])\n"
        "    shell.user_ns['pwd'] = 1 if cell == 'pwd = 1' else shell.user_ns.get('pwd')\n"
        "print(json.dumps(out))\n"
    )
    cells = ["pwd", "x = 1", "pwd = 1", "pwd", "cd /tmp", "print 1", "a\n", "%time 1"]
    done = subprocess.run(
        [sys.executable, "-c", probe],
        input=json.dumps(cells),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    pairs: list[Any] = json.loads(done.stdout.strip().splitlines()[-1])
    for cell, (ours, ipythons) in zip(cells, pairs, strict=True):
        assert ours == ipythons, cell
    assert "run_line_magic('pwd'" in pairs[0][0]  # automagic did apply
