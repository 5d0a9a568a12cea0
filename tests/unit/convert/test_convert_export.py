"""`kiln export`: the typed CLI, notebook semantics kept inside main(), magics, the CLI command.

No kernel here: the exported scripts run as plain `python` subprocesses, and the reference for
"what the notebook does" is its cells executed one after another in one namespace.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kiln.cli.main import run_main
from kiln.convert.export import export_script
from kiln.convert.pyscope import bound_names, indent_code

from kilntest import build_notebook

PARAMS = (
    'region: str = "EU"  # sales region\n'
    "n: int = 3  # how many rows\n"
    "scale = 1.5\n"
    "verbose = False\n"
    "items: list = [1, 2]\n"
    "limit: int | None = None\n"
    "when: str  # report date"
)


def _export(cells: list[Any], tmp_path: Path, name: str = "report") -> tuple[Path, Any]:
    result = export_script(
        build_notebook(cells), source_name=f"{name}.ipynb", script_name=f"{name}.py"
    )
    path = tmp_path / f"{name}.py"
    path.write_text(result.text)
    return path, result


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(path: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd or path.parent,
    )


# -- the command-line interface ---------------------------------------------------------------


def test_main_signature_is_typed_from_the_schema(tmp_path):
    path, result = _export([(PARAMS, ["parameters"]), "print(n)"], tmp_path)
    main = _load(path).main
    params = inspect.signature(main).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    shown = {n: (inspect.formatannotation(p.annotation), p.default) for n, p in params.items()}
    assert shown["region"] == ("str", "EU") and shown["n"] == ("int", 3)
    assert shown["scale"] == ("float", 1.5) and shown["verbose"] == ("bool", False)
    assert shown["limit"] == ("int | None", None)
    assert shown["when"] == ("str", inspect.Parameter.empty)  # required
    assert repr(shown["items"][1]) == "<the notebook's default>"  # a list: built per call
    assert [p.name for p in result.parameters] == list(params)


def test_parse_args_types_flags_and_defaults(tmp_path):
    path, _ = _export([(PARAMS, ["parameters"])], tmp_path)
    parse = _load(path).parse_args
    args = ["--when", "2024-01-01", "--n", "4", "--verbose", "--items", "[3, 4]"]
    assert parse([*args, "--limit", "none"]) == {
        "when": "2024-01-01",
        "n": 4,
        "verbose": True,
        "items": [3, 4],
        "limit": None,
    }
    assert parse(["--when", "x", "--no-verbose", "--scale", "2"]) == {
        "when": "x",
        "verbose": False,
        "scale": 2.0,
    }
    assert parse(["--when", "x", "--items", "[5, {a: 1}]"])["items"] == [5, {"a": 1}]  # YAML


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "the following arguments are required: --when", id="missing-required"),
        pytest.param(["--when", "x", "--n", "three"], "invalid int value", id="bad-int"),
        pytest.param(["--when", "x", "--items", "{a: 1}"], "expected a list", id="dict-for-list"),
        pytest.param(["--when", "x", "--regoin", "US"], "unrecognized arguments", id="typo"),
    ],
)
def test_bad_command_lines_exit_2_with_a_message(tmp_path, args, message):
    path, _ = _export([(PARAMS, ["parameters"])], tmp_path)
    done = _run(path, *args)
    assert done.returncode == 2 and message in done.stderr


def test_help_lists_parameters_with_help_and_defaults(tmp_path):
    path, _ = _export([("markdown", "# Sales report", []), (PARAMS, ["parameters"])], tmp_path)
    out = _run(path, "--help").stdout
    assert "Sales report" in out
    assert 'sales region (default: "EU")' in out and "report date (required)" in out
    assert "--verbose, --no-verbose" in out


# -- notebook semantics -----------------------------------------------------------------------

SEMANTICS = [
    ("n: int = 3\nlabel = 'x'", ["parameters"]),
    # a function that reads names assigned later, and a global statement inside a function
    "def total():\n    return sum(values) * factor\ncount = 0\n"
    "def bump():\n    global count\n    count += 1\n",
    "values = [i * i for i in range(n)]\nfactor = 2\nbump(); bump()",
    # classes: qualname and pickling as at module level
    "import pickle\nclass Point:\n    def __init__(self, x): self.x = x\n"
    "p = pickle.loads(pickle.dumps(Point(n)))\nqual = Point.__qualname__",
    # star import, annotated assignment, annotation alone, walrus in a comprehension, del
    "from math import *\nroot: float = sqrt(16)\nunused: int\n"
    "big = [y for v in values if (y := v * 10) > 10]\ntmp = 1\ndel tmp",
    # loop variable, except-as, with-as, match capture, a cell-level global statement
    "for last in range(3):\n    pass\ntry:\n    1 / 0\nexcept ZeroDivisionError as err:\n"
    "    caught = type(err).__name__\nglobal glob\nglob = 'g'\n"
    "match values:\n    case [first, *rest]:\n        pass",
    "import json\nprint(json.dumps({'total': total(), 'count': count, 'p': p.x, 'qual': qual,\n"
    "    'root': root, 'pi': round(pi, 3), 'big': big, 'last': last, 'caught': caught,\n"
    "    'first': first, 'rest': rest, 'tmp': 'tmp' in globals(), 'glob': glob,\n"
    "    'label': label, 'doc': '''line one\n  indented line\n'''}))",
]


def _reference(cells: list[Any], params: dict[str, Any]) -> dict[str, Any]:
    """What the notebook prints when its cells run in one namespace, parameters injected."""
    code = []
    for spec in cells:
        source = spec if isinstance(spec, str) else spec[0]
        code.append(source)
        if not isinstance(spec, str) and "parameters" in spec[1]:
            code.append("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    script = "\n".join(code)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


def test_exported_script_behaves_like_the_notebook(tmp_path):
    path, result = _export(SEMANTICS, tmp_path)
    assert result.warnings == []
    done = _run(path, "--n", "4", "--label", "y")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got == _reference(SEMANTICS, {"n": 4, "label": "y"})
    assert got["qual"] == "Point" and got["count"] == 2 and got["doc"].startswith("line one\n  ")


def test_main_can_be_imported_and_called_twice(tmp_path):
    cells = [("n = 1", ["parameters"]), "items = []\nitems.append(n)\ntotal = sum(items)"]
    module = _load(_export(cells, tmp_path)[0])
    module.main(n=5)
    assert module.total == 5
    module.main()
    assert module.total == 1  # the parameters cell's default again, a fresh list


def test_non_literal_default_is_computed_by_the_parameters_cell(tmp_path):
    cells = [("import os\nwho = os.environ.get('WHO', 'nobody')", ["parameters"]), "print(who)"]
    path, _ = _export(cells, tmp_path)
    assert _run(path).stdout == "nobody\n"
    assert _run(path, "--who", "me").stdout == "me\n"


def test_top_level_await_makes_an_async_runner(tmp_path):
    cells = [
        "import asyncio\nawait asyncio.sleep(0)\nasync def f():\n    return 7",
        "print(await f())",
    ]
    path, result = _export(cells, tmp_path)
    assert "async def _run_cells" in result.text and "asyncio.run(_run_cells" in result.text
    assert _run(path).stdout == "7\n"


def test_a_notebook_defining_main_gets_another_entry_point(tmp_path):
    cells = ["def main():\n    print('notebook main')", "main()"]
    path, result = _export(cells, tmp_path)
    assert result.entry == "kiln_main" and "kiln_main(**parse_args())" in result.text
    assert _run(path).stdout == "notebook main\n"


def test_markdown_raw_injected_and_skipped_cells(tmp_path):
    cells = [
        ("markdown", "# Title\nSome *prose*", []),
        ("raw", "raw text", []),
        ("x = 1", ["parameters"]),
        ("x = 99", ["injected-parameters"]),
        ("raise SystemExit('never')", ["skip-execution"]),
        "print(x)",
    ]
    path, result = _export(cells, tmp_path)
    assert "    # # Title\n    # Some *prose*\n" in result.text
    assert "    # raw text\n" in result.text
    assert "    # raise SystemExit('never')\n" in result.text
    assert _run(path).stdout == "1\n"


# -- magics -----------------------------------------------------------------------------------

MAGICS = [
    ("name = 'kiln'", ["parameters"]),
    "%matplotlib inline\n%load_ext autoreload\n%time x = 21 * 2",
    "!echo hello {name}\nlisting = !echo one; echo two\nprint(listing)",
    "%%bash\necho from bash\n",
    "%%time\ny = x + 1\nprint(y)",
    "%env GREETING=hi\nimport os\nprint(os.environ['GREETING'])",
    "%pip install does-not-exist",
    "%%sql\nselect 1",
    "print('done')",
]


def test_magics_translated_dropped_or_flagged(tmp_path):
    path, result = _export(MAGICS, tmp_path)
    text = result.text
    assert "# %matplotlib inline  (kiln export: not needed outside Jupyter)" in text
    assert 'subprocess.run(f"echo hello {name}", shell=True, check=True)' in text
    assert 'subprocess.run(["bash"], input="""\\\necho from bash\n""", text=True, check=True)' in (
        text
    )
    assert "# kiln export: install before running this script: pip install does-not-exist" in text
    assert "# kiln export: IPython-only cell, not run: %%sql" in text
    warnings = [(w.cell, w.message) for w in result.warnings]
    assert [cell for cell, _ in warnings] == [6, 7]
    assert "install the packages first" in warnings[0][1]
    done = _run(path, "--name", "you")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Wall time: ")
    assert lines[1:4] == ["hello you", "['one', 'two']", "from bash"]
    assert lines[4].startswith("Wall time: ") or lines[5].startswith("Wall time: ")
    assert "43" in lines and "hi" in lines and lines[-1] == "done"


def test_failing_shell_command_stops_the_script(tmp_path):
    path, _ = _export(["!exit 3", "print('not reached')"], tmp_path)
    done = _run(path)
    assert done.returncode != 0 and "CalledProcessError" in done.stderr
    assert "not reached" not in done.stdout


def test_invalid_cell_is_commented_out_with_a_warning(tmp_path):
    path, result = _export(["x = (", "return 5", "print('still runs')"], tmp_path)
    messages = [w.message for w in result.warnings]
    assert "was never closed" in messages[0] and "'return' outside function" in messages[1]
    assert _run(path).stdout == "still runs\n"


# -- scope analysis ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "names"),
    [
        pytest.param("import a.b, c as d\nfrom e import f as g", {"a", "d", "g"}, id="imports"),
        pytest.param("x, (y, *z) = 1, (2, 3)", {"x", "y", "z"}, id="unpacking"),
        pytest.param("[i for i in r]\n{k: v for k, v in m}", set(), id="comprehension-scope"),
        pytest.param("[w for i in r if (w := i)]", {"w"}, id="walrus-leaks"),
        pytest.param("def f(a=(b := 1)):\n    c = 2", {"f", "b"}, id="def"),
        pytest.param("class K:\n    attr = 1", {"K"}, id="class"),
        pytest.param(
            "with o as (p, q):\n    pass\nfor t in r:\n    pass", {"p", "q", "t"}, id="with-for"
        ),
        pytest.param(
            "try:\n    pass\nexcept E as e:\n    del gone", {"e", "gone"}, id="except-del"
        ),
        pytest.param("global g1, g2", {"g1", "g2"}, id="global"),
        pytest.param("lambda x: (y := x)", set(), id="lambda"),
    ],
)
def test_bound_names(code, names):
    assert bound_names(ast.parse(code)) == names


def test_indent_code_leaves_multiline_strings_alone():
    code = 's = """a\n  b\n"""\nif s:\n    t = 1\n\nu = f"""{s}\nx"""\n'
    assert indent_code(code, "    ") == (
        '    s = """a\n  b\n"""\n    if s:\n        t = 1\n\n    u = f"""{s}\nx"""\n'
    )


# -- the command ------------------------------------------------------------------------------


def test_export_command_writes_next_to_the_notebook(make_nb, tmp_path, capsys):
    nb = make_nb([("n = 1", ["parameters"]), "print(n)"], name="report.ipynb")
    assert run_main(["export", str(nb)]) == 0
    assert "Wrote" in capsys.readouterr().err and (tmp_path / "report.py").is_file()
    assert run_main(["export", str(nb)]) == 0  # its own file: overwritten
    (tmp_path / "report.py").write_text("# my own module\n")
    assert run_main(["export", str(nb)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert run_main(["export", str(nb), "--force"]) == 0


def test_export_to_stdout(make_nb, capsys):
    nb = make_nb(["print(1)"])
    assert run_main(["export", str(nb), "-o", "-"]) == 0
    assert 'if __name__ == "__main__":' in capsys.readouterr().out


def test_to_percent_writes_a_paired_jupytext_file(make_nb, tmp_path):
    nb = make_nb([("markdown", "# T", []), ("n = 1", ["parameters"])], name="report.ipynb")
    assert run_main(["export", str(nb), "--to", "py:percent"]) == 0
    text = (tmp_path / "report.py").read_text()
    assert "formats: ipynb,py:percent" in text
    assert '# %% tags=["parameters"]\nn = 1' in text and "# %% [markdown]\n# # T" in text
    assert run_main(["export", str(nb), "--to", "md", "-o", str(tmp_path / "r.md")]) == 0
    assert "formats" not in (tmp_path / "r.md").read_text()  # not beside as report.md: unpaired


def test_unknown_format_and_non_python_notebook_exit_2(make_nb, capsys):
    nb = make_nb(["x <- 1"], kernel="ir", language="R")
    assert run_main(["export", str(nb)]) == 2
    assert "is a R notebook" in capsys.readouterr().err
    assert run_main(["export", str(nb), "--to", "nonsense:fmt", "-o", "-"]) == 2


# -- export fixes (issue 8): future imports, annotations, shown values, shims -------------------


def test_future_imports_move_to_the_top_of_the_script(tmp_path):
    cells = [
        "from __future__ import annotations\nimport sys",
        "from __future__ import division; ratio = 1 / 2\n"
        "def f(x: NotDefinedAnywhere) -> int:\n    return 1",
        "print(f.__annotations__, ratio)",
    ]
    path, result = _export(cells, tmp_path)
    docstring_end = result.text.index('"""\n', result.text.index('"""') + 3) + 4
    after = result.text[docstring_end:].lstrip("\n")
    assert after.startswith("from __future__ import annotations, division\n")
    assert "    # from __future__ import annotations  (kiln export: moved to the top" in result.text
    assert "\n    ratio = 1 / 2\n" in result.text  # `future; statement` keeps the statement
    # a later cell's annotations stay unevaluated, as IPython applies the import to them too
    assert _run(path).stdout == "{'x': 'NotDefinedAnywhere', 'return': 'int'} 0.5\n"


def test_parameter_annotations_are_kept_in_main_and_used_by_the_parser(tmp_path):
    cells = [
        (
            "import datetime\nfrom typing import Literal\n"
            "step: float = 0.1\n"
            'mode: Literal["fast", "full"] = "fast"\n'
            'names: list[str] = ["a"]\n'
            "when: datetime.date = datetime.date(2024, 1, 1)\n"
            "limit: int | None = None",
            ["parameters"],
        ),
        "print(step, mode, names, when, limit)",
    ]
    path, result = _export(cells, tmp_path)
    assert 'mode: Literal["fast", "full"] = "fast"' in result.text
    assert "from typing import Any, Literal\n" in result.text  # evaluated at import time
    module = _load(path)
    params = inspect.signature(module.main).parameters
    shown = {n: inspect.formatannotation(p.annotation) for n, p in params.items()}
    assert shown == {
        "step": "float",
        "mode": "Literal['fast', 'full']",
        "names": "list[str]",
        "when": "'datetime.date'",  # a name the cells define: quoted until they have run
        "limit": "int | None",
    }
    assert module.parse_args(["--step", "0.5", "--mode", "full"]) == {"step": 0.5, "mode": "full"}
    done = _run(path, "--mode", "slow")
    assert done.returncode == 2 and "invalid choice: 'slow'" in done.stderr
    assert _run(path, "--mode", "full").stdout == "0.1 full ['a'] 2024-01-01 None\n"


def test_cells_last_expression_is_shown_as_jupyter_shows_it(tmp_path):
    cells = [
        "x = 2\nx * 21",
        "'text'  # a comment",
        "None",
        "x;",
        "print('printed')",
        "if x:\n    x + 1",
        "[\n    x,\n    3,\n]",
        "%%time\nx",
    ]
    path, result = _export(cells, tmp_path)
    assert "_kiln_show(x * 21)" in result.text and "    print('printed')\n" in result.text
    lines = _run(path).stdout.splitlines()
    assert lines[:4] == ["42", "'text'", "printed", "[2, 3]"]
    assert lines[4].startswith("Wall time: ") and len(lines) == 5


def test_statements_left_out_leave_a_note_or_a_pass_where_a_block_needs_one(tmp_path):
    cells = [
        "x: int\ng = 0\nif g == 0:\n    y: int\nfor i in range(2):\n    global h\n    h = i\n"
        "a = 1; b: int; c = 2",
        "if g == 0:\n    global k\n    z: int\nk = 3",
        "print(g, h, a, c, k)",
    ]
    path, result = _export(cells, tmp_path)
    assert "    # x: int  (kiln export: an annotation alone binds nothing)\n" in result.text
    assert "        pass  # y: int  (kiln export: an annotation alone binds nothing)\n" in (
        result.text
    )
    assert "        # global h  (kiln export: every name of the notebook is global)\n" in (
        result.text
    )
    assert "    a = 1; c = 2\n" in result.text
    block = result.text.split("# -- cell 1 (code) --\n")[1].split("    k = 3")[0]
    assert block.count("pass") == 1  # a block all of whose statements go keeps one `pass`
    assert _run(path).stdout == "0 1 1 2 3\n"


def test_magics_in_a_block_keep_one_pass_only_where_needed(tmp_path):
    cells = [
        "if True:\n    %matplotlib inline\n    %load_ext autoreload\n"
        "if True:\n    %matplotlib inline\n    print('ran')"
    ]
    path, result = _export(cells, tmp_path)
    body = result.text.split("# -- cell 0 (code) --\n", 1)[1]
    assert body.count("pass") == 1 and _run(path).stdout == "ran\n"


def test_a_module_the_notebook_binds_is_imported_under_another_name(tmp_path):
    cells = ["import os\nos = os\n%env GREETING=hi\n%cd .", "print(os.environ['GREETING'])"]
    path, result = _export(cells, tmp_path)
    assert "import os as _os\n" in result.text
    assert '_os.environ["GREETING"] = "hi"' in result.text
    assert _run(path).stdout == "hi\n"


def test_get_ipython_and_display_work_outside_ipython(tmp_path):
    cells = ["shell = get_ipython()\nprint(shell is None)\ndisplay('shown')\nshow = display"]
    path, result = _export(cells, tmp_path)
    assert result.warnings[0].message == "calls get_ipython(), which returns None outside IPython"
    done = _run(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True\nshown\n"


def test_exec_locals_and_dir_at_a_cells_top_level_see_the_notebooks_namespace(tmp_path):
    cells = [
        "exec('made = 1')\nsnapshot = locals()\nseen = eval('made + 1')\n"
        "count: int = len([n for n in dir() if n == 'made'])",
        "def f():\n    inner = 2\n    return sorted(locals())\n\n"
        "print(made, seen, snapshot is globals(), count, f(), vars() is globals())",
        "locals()['made']",
    ]
    path, result = _export(cells, tmp_path)
    assert "exec('made = 1', globals())" in result.text
    assert "    return sorted(locals())\n" in result.text  # a function's own scope: unchanged
    assert _run(path).stdout == "1 2 True 1 ['inner'] True\n1\n"
