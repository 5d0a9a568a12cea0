"""Exported scripts compile and lint clean: every notebook of the peers' corpus through the real
`kiln export` command path, and a notebook that uses every part Kiln adds around its cells.

Lint means `ruff check` with ruff's default rules (`--isolated`: the project's own settings are
not the user's). The cells' own lines are the notebook's business: a script may only have the
findings ruff reports on the notebook itself.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from corpus_util import CORPUS, corpus_path

from kiln.cli.main import run_main
from kiln.convert.export import export_script

from kilntest import build_notebook

#: what `kiln export` may answer, with exit 2, for a notebook it cannot export
REFUSALS = {
    "not Python": re.compile(r"is an? .+ notebook; kiln export writes Python modules"),
    "not a valid notebook": re.compile(r"is not a valid notebook|has nbformat \d"),
    "invalid parameters cell": re.compile(r"cannot read the parameters cell"),
}


def _ruff() -> str:
    found = Path(sys.executable).with_name("ruff")
    path = str(found) if found.is_file() else shutil.which("ruff")
    if path is None:
        pytest.skip("ruff is not installed (pip install ruff, a dev dependency)")
    return path


def _ruff_findings(paths: list[Path]) -> dict[str, collections.Counter[tuple[str, str]]]:
    """(rule, message) per file, by ruff's default rules; line numbers and cells left out of
    the messages, since they differ between a notebook and its script."""
    done = subprocess.run(
        [_ruff(), "check", "--isolated", "--no-cache", "--output-format", "json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    found: dict[str, collections.Counter[tuple[str, str]]] = collections.defaultdict(
        collections.Counter
    )
    for item in json.loads(done.stdout):
        message = re.sub(r"cell \d+, |\d+", "", item["message"])
        found[str(Path(item["filename"]).resolve())][item["code"], message] += 1
    return found


def _export_corpus(tmp_path: Path) -> dict[str, Any]:
    """Every corpus notebook through `kiln export` (in process: 190 notebooks in seconds)."""
    corpus_path("")  # skips, saying why, without a corpus
    outcome: dict[str, Any] = {"exported": [], "refused": collections.defaultdict(list)}
    problems = []
    notebooks = sorted(CORPUS.rglob("*.ipynb"))
    for number, notebook in enumerate(notebooks):
        script = tmp_path / f"script_{number}.py"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = run_main(["export", str(notebook), "-o", str(script), "-q"])
        name = str(notebook.relative_to(CORPUS))
        message = err.getvalue()
        if code == 0:
            try:
                py_compile.compile(str(script), doraise=True)
            except py_compile.PyCompileError as exc:
                problems.append(f"{name}: the script does not compile: {exc}")
            outcome["exported"].append((notebook, script))
            continue
        kinds = [kind for kind, pattern in REFUSALS.items() if pattern.search(message)]
        if code != 2 or not kinds or "Traceback" in message:
            problems.append(f"{name}: exit {code}: {message.strip()}")
        else:
            outcome["refused"][kinds[0]].append(name)
    counts = {kind: len(names) for kind, names in outcome["refused"].items()}
    summary = f"{len(notebooks)} notebooks: {len(outcome['exported'])} exported, {counts}"
    print(f"kiln export over the corpus: {summary}")
    assert not problems, "\n".join([summary, *problems])
    return outcome


@pytest.mark.corpus
def test_every_corpus_notebook_exports_to_a_script_that_compiles_or_gets_a_clear_error(tmp_path):
    outcome = _export_corpus(tmp_path)
    exported = {str(nb.relative_to(CORPUS)) for nb, _ in outcome["exported"]}
    # regressions of issue 8: `from __future__` cells were an internal error
    assert "nbval/nbval-0.11.0/tests/test_coalesce.ipynb" in exported
    assert sum("nbformat-5.11.1/tests/test4" in name for name in exported) >= 6
    # the refusals are right: a notebook refused as "not Python" says so in its metadata
    for name in outcome["refused"]["not Python"]:
        metadata = json.loads((CORPUS / name).read_text(encoding="utf-8"))["metadata"]
        languages = [
            (metadata.get("kernelspec") or {}).get("language"),
            (metadata.get("language_info") or {}).get("name"),
            (metadata.get("jupytext") or {}).get("main_language"),
        ]
        assert any(lang and not lang.lower().startswith("python") for lang in languages), name
    invalid = outcome["refused"]["not a valid notebook"]
    assert invalid and all(not _valid_as_written(CORPUS / name) for name in invalid)


def _valid_as_written(path: Path) -> bool:
    """nbformat's verdict on the file as it is, not upgraded (Kiln reads nbformat 3 and 4)."""
    try:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
    except (ValueError, KeyError, nbformat.ValidationError):
        return False
    return nb.nbformat >= 3


@pytest.mark.corpus
def test_corpus_scripts_add_no_lint_finding_to_their_notebooks(tmp_path):
    exported = _export_corpus(tmp_path)["exported"]
    scripts = _ruff_findings([script for _, script in exported])
    notebooks = _ruff_findings([nb for nb, _ in exported])
    added, unreadable = [], []
    for notebook, script in exported:
        own = notebooks[str(notebook.resolve())]
        if any(code == "invalid-syntax" for code, _ in own):
            unreadable.append(notebook.name)  # ruff cannot lint it all: nothing to compare
            continue
        extra = scripts[str(script.resolve())] - own
        if extra:
            added.append(f"{notebook.relative_to(CORPUS)}: {dict(extra)}")
    print(f"{len(exported)} scripts; {len(unreadable)} notebooks ruff cannot parse: {unreadable}")
    assert not added, "\n".join(added)
    assert len(unreadable) < len(exported) / 10


# -- what Kiln adds is clean --------------------------------------------------------------------

EVERYTHING = [
    "from __future__ import annotations\n\nimport os\nimport sys",
    (
        "import datetime\nfrom typing import Literal\n\n"
        'region: Literal["EU", "US"] = "EU"  # sales region\n'
        "n: int = 3\nlimit: int | None = None\nitems: list[int] = [1, 2]\n"
        'options: dict = {"a": 1}\nwhen = datetime.date.today()\nfast = False',
        ["parameters"],
    ),
    "import json\nimport math",
    "%matplotlib inline\ntotal = n * 2\n%time print(total)\n!echo {region}\nlisting = !echo one\n"
    "%env GREETING=hi\n%cd .\nif fast:\n    %load_ext autoreload\n"
    "here = os.getcwd()\nprint(here, listing, sys.argv, json.dumps(items), math.pi)",
    "%%bash\necho from bash\n",
    "%%time\ntotal + 1",
    "%pip install nothing-at-all",
    "from math import *\n\nroot = sqrt(16)",
    "x: int\nlater = limit\ndisplay(options)\nshell = get_ipython()",
    "import asyncio\n\nawait asyncio.sleep(0)",
    "def f(v: Anything) -> int:\n    return v\n\n\nroot * 2",
    "print(when, total, root, later, shell)",
]


def test_what_kiln_adds_around_clean_cells_is_clean(tmp_path):
    nb = build_notebook(EVERYTHING)
    notebook = tmp_path / "everything.ipynb"
    nbformat.write(nb, notebook)
    assert not _ruff_findings([notebook]), "the test's notebook must itself be clean"
    result = export_script(nb, source_name=notebook.name, script_name="everything.py")
    script = tmp_path / "everything.py"
    script.write_text(result.text, encoding="utf-8")
    script.chmod(0o755)  # what the command does (EXE001 otherwise)
    found = _ruff_findings([script])
    assert not found, f"{dict(found)}\n{result.text}"
    done = subprocess.run(
        [sys.executable, str(script), "--region", "US", "--limit", "7"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "from bash\n" in done.stdout and "8.0\n" in done.stdout  # root * 2 shown


# -- a cell's last expression: what the script prints is what a kernel shows ------------------

SHOWN = [
    "x = 6\nx * 7",
    "'text'  # a comment",
    "None",
    "x;",
    "{'a': [1, 2.5], 'b': None}",
    "print('printed')",
    "def f():\n    return 'from f'\n\nf()",
    "if x:\n    x + 1",
]


@pytest.mark.kernel
def test_shown_values_match_what_a_kernel_shows(make_nb, home, tmp_path):
    import kiln

    nb_path = make_nb(SHOWN, name="shown.ipynb")
    run = kiln.run(nb_path, engine="kernel")  # a real Jupyter kernel
    executed = nbformat.read(str(run.output_path), as_version=4)
    expected = []
    for cell in executed.cells:
        for output in cell.outputs:
            if output.output_type == "execute_result":
                expected.append(output.data["text/plain"])
            elif output.output_type == "stream":
                expected.extend(output.text.splitlines())
    script = tmp_path / "shown.py"
    script.write_text(export_script(nbformat.read(nb_path, as_version=4)).text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected
    assert expected == ["42", "'text'", "{'a': [1, 2.5], 'b': None}", "printed", "'from f'"]
