"""Kiln on its peers' own test notebooks (papermill, nbclient, nbformat): the behaviours listed
in /work/shared/corpus/README.md (items 1-11), checked with the real `kiln` CLI.

The corpus lives in $KILN_CORPUS (default ~/.cache/kiln/corpus, fetched by `make corpus`);
without it every test here is skipped. Notebooks are copied into tmp_path before running.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from corpus_util import (
    NBC,
    NBF,
    PM,
    copy_in,
    corpus_path,
    index_rows,
    normalize_cell,
)

from kilntest import read_nb, stream_text

pytestmark = [pytest.mark.kernel, pytest.mark.corpus]


def _run(kiln_cli: Any, *args: str, **kw: Any) -> tuple[Any, dict[str, Any]]:
    """`kiln run ... --json`: the completed process and the run record (``{}`` if none)."""
    res = kiln_cli("run", *args, "--json", **kw)
    try:
        record = json.loads(res.stdout)
    except json.JSONDecodeError:
        record = {}
    return res, record


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _injected(nb: Any) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if "injected-parameters" in _tags(c)]


def _gone(pid: int, within: float = 2.0) -> bool:
    """True once no process ``pid`` exists (polling ``within`` seconds for it to be reaped)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by someone else (pid reused)
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


# --- 1-3: parameter injection, papermill's layout ---------------------------------------------


def test_simple_execute_injects_after_parameters_cell(kiln_cli, tmp_path):
    nb = copy_in(PM / "simple_execute.ipynb", tmp_path)
    before = nb.read_bytes()
    out = tmp_path / "out.ipynb"
    res, run = _run(kiln_cli, str(nb), str(out), "-p", "msg", "Hello")
    assert res.returncode == 0, res.stderr
    assert run["state"] == "succeeded"
    cells = read_nb(out).cells
    assert len(cells) == 4
    assert _tags(cells[0]) == ["parameters"]
    assert cells[1].cell_type == "code"
    assert _tags(cells[1]) == ["injected-parameters"]
    assert cells[1].source == '# Parameters\nmsg = "Hello"\n'
    assert _injected(read_nb(out)) == [1]
    assert stream_text(cells[2]) == "Hello\n"
    meta = read_nb(out).metadata.kiln
    assert meta.parameters == {"msg": "Hello"}
    assert meta.state == "succeeded"
    assert nb.read_bytes() == before  # the input is never modified


def test_rerunning_an_output_replaces_its_injected_cell(kiln_cli, tmp_path):
    nb = copy_in(PM / "simple_execute.ipynb", tmp_path)
    first, second = tmp_path / "first.ipynb", tmp_path / "second.ipynb"
    res, _ = _run(kiln_cli, str(nb), str(first), "-p", "msg", "Hello")
    assert res.returncode == 0, res.stderr
    res, run = _run(kiln_cli, str(first), str(second), "-p", "msg", "Again")
    assert res.returncode == 0, res.stderr
    out = read_nb(second)
    assert len(out.cells) == 4
    assert _injected(out) == [1]  # still exactly one, in the same place
    assert out.cells[1].source == '# Parameters\nmsg = "Again"\n'
    assert _tags(out.cells[0]) == ["parameters"]
    assert stream_text(out.cells[2]) == "Again\n"
    assert out.metadata.kiln.parameters == {"msg": "Again"}
    assert run["parameters"] == {"msg": "Again"}


def test_no_parameters_cell_injects_at_top_with_a_warning(kiln_cli, tmp_path):
    nb = copy_in(PM / "no_parameters.ipynb", tmp_path)
    out = tmp_path / "out.ipynb"
    # no cell tagged 'parameters': Kiln accepts undeclared names here (as papermill), with a
    # warning, so no --allow-unknown is needed
    res, run = _run(kiln_cli, str(nb), str(out), "-p", "msg", "Hello")
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr.lower() and "parameters" in res.stderr
    cells = read_nb(out).cells
    assert len(cells) == 4
    assert _tags(cells[0]) == ["injected-parameters"]
    assert cells[0].source == '# Parameters\nmsg = "Hello"\n'
    assert _injected(read_nb(out)) == [0]
    # the notebook's own `msg = None` runs after the injected cell, as with papermill
    assert stream_text(cells[2]) == "None\n"
    assert run["state"] == "succeeded"


# --- 4: command-line values, typed as papermill types them ------------------------------------

UNTYPED = "i = None\nf = None\nb = None\nn = None\nraw = None\nl = None\nd = None\ns = None\n"
NAMES = ["i", "f", "b", "n", "raw", "l", "d", "s"]
REPORT_TYPES = (
    "import kiln\n"
    f"for _k in {NAMES!r}:\n"
    "    kiln.record(_k, {'type': type(globals()[_k]).__name__, 'value': globals()[_k]})\n"
)


def test_command_line_values_reach_the_kernel_typed(make_nb, kiln_cli, tmp_path):
    nb = make_nb([(UNTYPED, ["parameters"]), REPORT_TYPES])
    out = tmp_path / "out.ipynb"
    res, run = _run(
        kiln_cli, str(nb), str(out),
        "-p", "i", "3", "-p", "f", "1.5", "-p", "b", "True", "-p", "n", "None",
        "-r", "raw", "42", "-y", 'l: [1, "a", null]', "-y", "d: 2024-01-01", "-p", "s", "hi",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    types = {k: (v["type"], v["value"]) for k, v in run["records"].items()}
    assert types == {
        "i": ("int", 3),
        "f": ("float", 1.5),
        "b": ("bool", True),
        "n": ("NoneType", None),
        "raw": ("str", "42"),
        "l": ("list", [1, "a", None]),
        "d": ("str", "2024-01-01"),  # a YAML date stays a string
        "s": ("str", "hi"),
    }
    assert read_nb(out).metadata.kiln.parameters == {k: v for k, (_, v) in types.items()}


# --- 5-7: failing cells, SystemExit -----------------------------------------------------------


def test_sysexit1_fails_with_banner_and_marker(kiln_cli, tmp_path):
    nb = copy_in(PM / "sysexit1.ipynb", tmp_path)
    out = tmp_path / "out.ipynb"
    res, run = _run(kiln_cli, str(nb), str(out))
    assert res.returncode == 1, res.stderr
    assert run["state"] == "failed"
    assert "SystemExit" in res.stderr
    cells = read_nb(out).cells
    assert len(cells) == 5  # banner + 3 cells + marker
    banner, first, marker, failing, later = cells
    assert banner.cell_type == "markdown" and "kiln-error-banner" in _tags(banner)
    assert 'href="#kiln-error-cell"' in banner.source
    assert first.execution_count == 1
    assert marker.cell_type == "markdown" and "kiln-error-marker" in _tags(marker)
    assert 'id="kiln-error-cell"' in marker.source
    assert failing.source == "sys.exit(1)" and failing.execution_count == 2
    errors = [o for o in failing.outputs if o.output_type == "error"]
    assert [(e.ename, e.evalue) for e in errors] == [("SystemExit", "1")]
    assert later.outputs == [] and later.execution_count is None
    assert read_nb(out).metadata.kiln.state == "failed"


@pytest.mark.parametrize(
    ("name", "evalue"),
    [("sysexit0.ipynb", "0"), ("systemexit.ipynb", "")],
    ids=["sys.exit(0)", "raise-SystemExit"],
)
def test_systemexit_zero_counts_as_success(kiln_cli, tmp_path, name, evalue):
    # cell 1 is `sys.exit(0)` / a bare `raise SystemExit` (code None): papermill 2.7 treats both
    # as a clean end of the notebook: no error, exit 0, the exception kept as the cell's output
    # and the cells after it not run (papermill's own test_sys_exit0 / test_system_exit)
    nb = copy_in(PM / name, tmp_path)
    out = tmp_path / "out.ipynb"
    res, run = _run(kiln_cli, str(nb), str(out))
    assert res.returncode == 0, res.stderr
    assert run["state"] == "succeeded"
    out_nb = read_nb(out)
    cells = out_nb.cells
    assert len(cells) == 3  # no banner, no marker
    assert not any({"kiln-error-banner", "kiln-error-marker"} & set(_tags(c)) for c in cells)
    assert cells[0].execution_count == 1
    assert cells[1].execution_count == 2
    errors = [o for o in cells[1].outputs if o.output_type == "error"]
    assert [(e.ename, e.evalue) for e in errors] == [("SystemExit", evalue)]
    assert cells[2].execution_count is None and cells[2].outputs == []
    assert out_nb.metadata.kiln.state == "succeeded"


def test_line_magic_usage_error_fails_the_run(kiln_cli, tmp_path):
    nb = copy_in(PM / "line_magic_error.ipynb", tmp_path)
    out = tmp_path / "out.ipynb"
    res, run = _run(kiln_cli, str(nb), str(out))
    assert res.returncode == 1, res.stderr
    assert run["state"] == "failed"
    assert "UsageError" in res.stderr
    cells = read_nb(out).cells
    assert "kiln-error-banner" in _tags(cells[0])
    assert "kiln-error-marker" in _tags(cells[1])
    assert cells[2].source == "%undefined-line-magic" and cells[2].execution_count == 1
    assert cells[3].execution_count is None and cells[3].outputs == []


# --- 8-9: timeouts and dead kernels -----------------------------------------------------------


def test_long_cell_times_out_quickly(kiln_cli, tmp_path):
    # The notebook's only cell is `sleep(60)`; the KeyboardInterrupt stored in it is an old
    # output from an interactive session, the code raises nothing itself. So the 2 s cell
    # timeout is what ends the run, and the right state is timed_out (papermill leaves the
    # notebook unmarked here).
    nb = copy_in(PM / "keyboard_interrupt.ipynb", tmp_path)
    out = tmp_path / "out.ipynb"
    t0 = time.monotonic()
    res, run = _run(kiln_cli, str(nb), str(out), "--cell-timeout", "2", timeout=60)
    wall = time.monotonic() - t0
    assert res.returncode == 1, res.stderr  # non-zero: 1 = failed / timed out / crashed
    assert wall < 10, f"took {wall:.1f}s"
    assert run["state"] == "timed_out"
    assert run["error"]["cell_index"] == 0
    out_nb = read_nb(out)
    assert out_nb.metadata.kiln.state == "timed_out"
    assert "kiln-error-banner" in _tags(out_nb.cells[0])
    assert "kiln-error-marker" in _tags(out_nb.cells[1])
    sleeper = out_nb.cells[2]
    assert sleeper.source.endswith("sleep(60)")
    # the KeyboardInterrupt stored in the input is stale: it must not survive into the output
    assert not [o for o in sleeper.outputs if o.get("ename") == "KeyboardInterrupt"]
    assert _gone(run["kernel_pid"]), f"kernel {run['kernel_pid']} still alive"


def test_kernel_that_kills_itself_is_reported_crashed(kiln_cli, tmp_path):
    nb = copy_in(NBC / "Autokill.ipynb", tmp_path)  # os.kill(os.getpid(), SIGTERM)
    out = tmp_path / "out.ipynb"
    t0 = time.monotonic()
    res, run = _run(kiln_cli, str(nb), str(out), timeout=90)
    wall = time.monotonic() - t0
    assert res.returncode != 0
    assert wall < 20, f"took {wall:.1f}s"
    assert run["state"] == "crashed", res.stderr
    pid = run["kernel_pid"]
    assert isinstance(pid, int) and pid > 0
    assert _gone(pid), f"kernel {pid} still alive after the run"
    out_nb = read_nb(out)
    assert out_nb.metadata.kiln.state == "crashed"
    assert "kiln-error-banner" in _tags(out_nb.cells[0])


# --- 10: nbclient's golden notebooks ----------------------------------------------------------

# nbclient's tests/test_client.py::test_run_all_notebooks: these notebooks, re-executed, must
# reproduce their stored outputs. Values: extra `kiln run` flags (nbclient's opts) or a skip.
HAVE_IPYWIDGETS = importlib.util.find_spec("ipywidgets") is not None
GOLDEN: dict[str, list[str] | str] = {
    "Other Comms.ipynb": [],
    "Clear Output.ipynb": [],
    "Empty Cell.ipynb": [],
    "Factorials.ipynb": [],
    "HelloWorld.ipynb": [],
    "Inline Image.ipynb": [],
    "Interrupt.ipynb": (
        "needs nbclient's interrupt_on_timeout: interrupt the cell and go on with the next; "
        "Kiln's cell timeout deliberately ends the run as timed_out (see "
        "test_long_cell_times_out_quickly)"
    ),
    "JupyterWidgets.ipynb": (
        [] if HAVE_IPYWIDGETS else "needs ipywidgets, which is not installed in this venv"
    ),
    "Skip Exceptions with Cell Tags.ipynb": [],
    "Skip Exceptions.ipynb": ["--allow-errors"],  # nbclient runs it with allow_errors=True
    "Skip Execution with Cell Tag.ipynb": [],
    "SVG.ipynb": [],
    "Unicode.ipynb": [],
    "UnicodePy3.ipynb": [],
    "update-display-id.ipynb": [],
    "Check History in Memory.ipynb": [],
}


def _golden_params() -> list[Any]:
    params = []
    for name, flags in GOLDEN.items():
        marks = [pytest.mark.skip(reason=f"{name}: {flags}")] if isinstance(flags, str) else []
        args = flags if isinstance(flags, list) else []
        params.append(pytest.param(name, args, marks=marks, id=name.removesuffix(".ipynb")))
    return params


@pytest.mark.parametrize(("name", "flags"), _golden_params())
def test_nbclient_golden_notebook_reexecutes_to_its_outputs(kiln_cli, tmp_path, name, flags):
    nb = copy_in(NBC / name, tmp_path, "python.png")  # Inline Image reads python.png from cwd
    expected = read_nb(nb)
    out = tmp_path / "out.ipynb"
    res, run = _run(kiln_cli, str(nb), str(out), *flags, env={"COLUMNS": "80", "LINES": "24"})
    assert res.returncode == 0, res.stderr
    assert run["state"] == "succeeded"
    actual = read_nb(out)
    assert len(actual.cells) == len(expected.cells)
    for index, (want, got) in enumerate(zip(expected.cells, actual.cells, strict=True)):
        assert normalize_cell(got) == normalize_cell(want), f"{name}: cell {index} differs"


# --- 11: nbformat 3 notebooks -----------------------------------------------------------------


def _v3_notebooks() -> list[Any]:
    rows = [r for r in index_rows() if r["nbformat"].startswith("3")]
    if not rows:
        reason = "no nbformat 3 notebook listed in the corpus INDEX.tsv (corpus not fetched?)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-corpus")]
    return [pytest.param(r["path"], id=Path(r["path"]).stem) for r in rows]


def _v3_cells(path: Path) -> list[dict[str, Any]]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return [c for ws in raw.get("worksheets", []) for c in ws.get("cells", [])]


def _v4_convertible(path: Path) -> bool:
    try:
        nbformat.read(str(path), as_version=4)
    except Exception:  # nbformat refuses it (its own tests expect a ValidationError)
        return False
    return True


@pytest.mark.parametrize("rel", _v3_notebooks())
def test_v3_notebook_is_written_back_as_v4_5(kiln_cli, tmp_path, rel):
    nb = copy_in(rel, tmp_path)
    out = tmp_path / "out.ipynb"
    # test3.ipynb's last cell fetches an image over HTTP: a proxy on a closed local port makes
    # that fail at once whether or not the machine is online, and --allow-errors lets the run
    # go on (the error stays in that cell's output)
    offline = {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    res, run = _run(
        kiln_cli, str(nb), str(out), "--allow-errors", "--cell-timeout", "60", env=offline
    )
    if not _v4_convertible(corpus_path(rel)):
        # nbformat itself cannot upgrade these (no worksheets, a worksheet without cells, no
        # metadata): Kiln must refuse them as bad input, clearly, and write nothing
        assert res.returncode == 2, res.stderr
        assert nb.name in res.stderr and "Traceback" not in res.stderr
        assert not out.exists()
        return
    assert res.returncode == 0, res.stderr
    assert run["state"] == "succeeded"
    written = json.loads(out.read_text(encoding="utf-8"))
    assert (written["nbformat"], written["nbformat_minor"]) == (4, 5)
    old = _v3_cells(corpus_path(rel))
    cells = written["cells"]
    assert len(cells) == len(old)  # worksheets flattened, no cell lost or added
    ids = [c.get("id") for c in cells]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids)
    for v3, v4 in zip(old, cells, strict=True):
        kind = "markdown" if v3["cell_type"] == "heading" else v3["cell_type"]
        assert v4["cell_type"] == kind
        if kind == "code":
            assert "".join(v4["source"]) == "".join(v3["input"])
    nbformat.validate(nbformat.reads(out.read_text(encoding="utf-8"), nbformat.NO_CONVERT))


def test_corpus_has_the_expected_v3_notebooks():
    """Guard for the parametrisation above: an empty list would silently test nothing."""
    corpus_path(NBF / "test3.ipynb")
    names = {Path(r["path"]).name for r in index_rows() if r["nbformat"].startswith("3")}
    assert {"test3.ipynb", "test3_no_min_version.ipynb"} <= names
