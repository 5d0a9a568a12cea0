"""KL104/KL105: the static top-to-bottom name analysis, one behaviour per case."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from nbformat.v4 import new_code_cell, new_notebook

from kiln.lint.cells import view_notebook
from kiln.lint.names import undefined_names


def problems(*cells: str) -> list[tuple[str, int, str]]:
    nb = new_notebook(cells=[new_code_cell(source) for source in cells])
    view = view_notebook(nb, "nb.ipynb")
    return [(p.rule, p.cell, p.name) for p in undefined_names(view.code)]


QUIET: dict[str, Sequence[str]] = {
    "import-then-use": ["import numpy as np\nimport os.path", "np.zeros(3), os.path.sep"],
    "from-import-alias": ["from collections import OrderedDict as OD", "OD()"],
    "tuple-and-starred": ["a, (b, *c) = 1, (2, 3, 4)\nprint(a, b, c)"],
    "walrus": ["if (n := 10) > 5:\n    pass\nprint(n)"],
    "walrus-in-comprehension": ["[y for x in range(3) if (y := x)]\nprint(y)"],
    "for-target": ["for i, v in enumerate('ab'):\n    pass\nprint(i, v)"],
    "with-target": ["with open('f') as fh:\n    pass\nprint(fh)"],
    "loop-carried": ["for i in range(2):\n    if i:\n        print(prev)\n    prev = i"],
    "global-in-function": ["def setup():\n    global CONFIG\n    CONFIG = {}", "print(CONFIG)"],
    "nonlocal": [
        "def f():\n    x = 1\n    def g():\n        nonlocal x\n        x += 1\n    return g"
    ],
    "function-uses-later-global": ["def f():\n    return LATER", "LATER = 1\nf()"],
    "recursion": ["def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)"],
    "class-body-sequential": ["class A:\n    x = 1\n    y = x + 1"],
    "lambda-params": ["f = lambda a, *b, c=1, **d: (a, b, c, d)"],
    "match-captures": ["match (1, 2):\n    case (a, *rest):\n        print(a, rest)"],
    "except-as-inside": ["try:\n    pass\nexcept Exception as e:\n    print(e)"],
    "augassign-after-def": ["total = 0", "total += 1"],
    "builtins-and-ipython": ["print(len, display, get_ipython, In, Out, _, __, _3, _i2)"],
    "line-magic-assign": ["files = !ls\nout = %sx echo hi\nprint(files, out)"],
    "capture-magic": ["%%capture cap\nprint(1)", "cap.show()"],
    "time-magic-binds": ["%time r = 5", "print(r)"],
    "store-restore": ["%store -r saved", "print(saved)"],
    "help-syntax": ["x = 1\nx?"],
    "automagic": ["cd ..\nimport os\nprint(os)"],
    "annotation-not-evaluated": ["def f(x: Undefined) -> AlsoUndefined:\n    return x"],
    "del-in-branch": ["x = 1\nif False:\n    del x\nprint(x)"],
    "try-fallback": [
        "try:\n    import ujson as j\nexcept ImportError:\n    import json as j",
        "j.dumps({})",
    ],
    "bash-cell-skipped": ["%%bash\necho $UNDEFINED"],
}

LOUD: dict[str, tuple[Sequence[str], list[tuple[str, int, str]]]] = {
    "defined-below": (["print(df)", "df = 1"], [("KL104", 0, "df")]),
    "never-defined": (["print(y)"], [("KL104", 0, "y")]),
    "after-del": (["x = 1", "del x", "print(x)"], [("KL104", 2, "x")]),
    "augassign-first": (["count += 1"], [("KL104", 0, "count")]),
    "self-reference": (["x = x + 1"], [("KL104", 0, "x")]),
    "comprehension-leak": (["[i for i in range(3)]", "print(i)"], [("KL104", 1, "i")]),
    "except-name-deleted": (
        ["try:\n    1/0\nexcept Exception as e:\n    pass\nprint(e)"],
        [("KL104", 0, "e")],
    ),
    "function-never-defined": (["def f():\n    return missing"], [("KL104", 0, "missing")]),
    "method-never-defined": (
        ["class A:\n    def m(self):\n        return gone"],
        [("KL104", 0, "gone")],
    ),
    "decorator-before-def": (
        ["@register\ndef f():\n    pass", "def register(f):\n    return f"],
        [("KL104", 0, "register")],
    ),
    "default-arg": (["def f(x=DEFAULT):\n    return x"], [("KL104", 0, "DEFAULT")]),
    "class-comprehension-scope": (
        ["class A:\n    k = 2\n    v = [k * i for i in range(3)]"],
        [("KL104", 0, "k")],
    ),
    "no-file-dunder": (["print(__file__)"], [("KL104", 0, "__file__")]),
    "once-per-cell": (["print(z)\nprint(z)"], [("KL104", 0, "z")]),
    "star-import": (
        ["from os.path import *", "join('a'), nothing"],
        [("KL105", 1, "join"), ("KL105", 1, "nothing")],
    ),
    "run-magic": (["%run helpers.py", "helper()"], [("KL105", 1, "helper")]),
    "exec": (["exec('q = 1')", "print(q)"], [("KL105", 1, "q")]),
    "unparseable-cell": (["def broken(:", "print(w)"], [("KL105", 1, "w")]),
}


@pytest.mark.parametrize("cells", QUIET.values(), ids=QUIET.keys())
def test_quiet(cells: Sequence[str]) -> None:
    assert problems(*cells) == []


@pytest.mark.parametrize(("cells", "want"), LOUD.values(), ids=LOUD.keys())
def test_loud(cells: Sequence[str], want: list[tuple[str, int, str]]) -> None:
    assert problems(*cells) == want


def test_position_and_message() -> None:
    nb = new_notebook(cells=[new_code_cell("x = 1\nprint(x, later)"), new_code_cell("later = 2")])
    (problem,) = undefined_names(view_notebook(nb, "nb.ipynb").code)
    assert (problem.line, problem.column) == (2, 10)
    assert problem.message == "'later' is used before any cell above defines it"
