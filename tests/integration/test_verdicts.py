"""Both engines reach the verdict a kernel-based runner reaches on real notebooks: matplotlib's
interactive backends run, and an error shown after a cell's code (a post-execute callback)
fails the cell, as papermill and nbmake fail it."""

from __future__ import annotations

import json

import pytest

from kilntest import read_nb

pytestmark = pytest.mark.kernel

ENGINES = ["kernel", "fork"]

#: matplotlib draws the figure after the cell's code, in a post-execute callback, and fails
#: there on bad mathtext (nbmake's magic_error notebook makes the same point)
BAD_MATHTEXT = "import matplotlib.pyplot as plt\nplt.title(r'$\\foo$')\nplt.plot([1])"


def _run(kiln_cli, nb, engine: str, *args: str) -> dict:
    res = kiln_cli("run", str(nb), "--engine", engine, "--json", *args)
    return dict(json.loads(res.stdout), exit=res.returncode)


@pytest.mark.parametrize("backend", ["notebook", "nbagg", "widget", "ipympl"])
def test_interactive_matplotlib_backends_get_a_kernels_verdict(make_nb, kiln_cli, backend):
    nb = make_nb([f"%matplotlib {backend}", "import matplotlib.pyplot as plt\nplt.plot([1, 2])"])
    kernel, fork = (_run(kiln_cli, nb, engine) for engine in ENGINES)
    assert fork["state"] == kernel["state"], (kernel["reason"], fork["reason"])
    if fork["state"] == "succeeded":
        cells = read_nb(fork["output_path"]).cells
        notice = "".join(o.get("text", "") for o in cells[0].outputs)
        assert f"`%matplotlib {backend}`" in notice and "inline" in notice
        assert any("image/png" in o.get("data", {}) for o in cells[1].outputs)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_error_after_the_cells_code_fails_the_run(make_nb, kiln_cli, engine):
    nb = make_nb([BAD_MATHTEXT, "print('never')"])
    run = _run(kiln_cli, nb, engine)
    assert run["exit"] == 1 and run["state"] == "failed"
    assert run["error"]["ename"] == "ValueError" and run["error"]["cell_index"] == 0
    cells = read_nb(run["output_path"]).cells
    texts = [o.get("text", "") for c in cells for o in c.get("outputs", [])]
    assert "never\n" not in texts  # the next cell did not run


@pytest.mark.parametrize("engine", ENGINES)
def test_an_error_after_the_cells_code_honours_raises_exception_and_allow_errors(
    make_nb, kiln_cli, engine
):
    tagged = make_nb([(BAD_MATHTEXT, ["raises-exception"]), "print('ran')"], name="t.ipynb")
    run = _run(kiln_cli, tagged, engine)
    assert run["state"] == "succeeded" and run["error"] is None
    plain = make_nb([BAD_MATHTEXT, "print('ran')"], name="p.ipynb")
    run = _run(kiln_cli, plain, engine, "--allow-errors")
    assert run["state"] == "succeeded"
    assert [e["ename"] for e in run["error"]["allowed"]] == ["ValueError"]
