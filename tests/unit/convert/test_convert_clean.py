"""`kiln clean`: what is stripped, what is kept, idempotence, and the three CLI modes."""

from __future__ import annotations

import io
import json
import os
import sys

import nbformat
import pytest
from convert_nbs import executed_notebook

from kiln.cli.main import run_main
from kiln.convert.clean import clean_json, clean_text, find_notebooks


def _clean(nb):
    raw = json.loads(nbformat.writes(nb))
    result = clean_json(raw)
    return raw, result


def test_strips_outputs_counts_and_volatile_metadata():
    raw, result = _clean(executed_notebook())
    params, printed, plot = raw["cells"][1:]
    assert printed["outputs"] == [] and printed["execution_count"] is None
    assert params["metadata"] == {"tags": ["parameters"]}  # execution, collapsed gone
    assert printed["metadata"] == {}  # scrolled, papermill gone
    assert set(raw["metadata"]) == {"kernelspec", "language_info"}
    assert raw["metadata"]["language_info"] == {"name": "python", "file_extension": ".py"}
    assert result.outputs_cleared == 1 and result.counts_cleared == 3
    assert "widgets" in result.summary() and "outputs in 1 cell" in result.summary()
    # the keep-output cell keeps its outputs, not its execution count
    assert plot["execution_count"] is None
    assert plot["outputs"][0]["data"]["text/plain"] == ["<Figure size 1x1>"]


def test_sources_tags_ids_and_kernelspec_are_kept():
    nb = executed_notebook()
    raw, _ = _clean(nb)
    for before, after in zip(nb.cells, raw["cells"], strict=True):
        assert "".join(after["source"]) == before.source
        assert after["id"] == before.id
        assert after["metadata"].get("tags") == before.metadata.get("tags")
    assert raw["metadata"]["kernelspec"] == dict(nb.metadata.kernelspec)


def test_idempotent_byte_for_byte_and_written_like_jupyter():
    once, first = clean_text(nbformat.writes(executed_notebook()).encode(), path="nb")
    twice, second = clean_text(once.encode(), path="nb")
    assert first.changed and not second.changed
    assert twice == once
    # the same bytes nbformat (and so Jupyter) writes for the cleaned notebook
    assert once == nbformat.writes(nbformat.reads(once, as_version=4)) + "\n"
    assert "é" in once and once.endswith("}\n") and once.startswith('{\n "cells": [\n  {\n')


def test_nbformat_minor_and_key_order_are_preserved():
    raw = {
        "nbformat_minor": 2,
        "nbformat": 4,
        "metadata": {"z": 1, "a": 2},
        "cells": [{"source": "x", "cell_type": "code", "outputs": [], "metadata": {}}],
    }
    text, result = clean_text(json.dumps(raw).encode(), path="nb")
    assert not result.changed  # nothing volatile; no cell ids added for a 4.2 notebook
    assert list(json.loads(text)) == ["nbformat_minor", "nbformat", "metadata", "cells"]
    assert list(json.loads(text)["metadata"]) == ["z", "a"]
    assert '"nbformat_minor": 2' in text and '"id"' not in text


def test_v3_notebook_is_cleaned_in_its_worksheets():
    raw = {
        "nbformat": 3,
        "nbformat_minor": 0,
        "metadata": {},
        "worksheets": [
            {"cells": [{"cell_type": "code", "input": "1", "prompt_number": 4, "outputs": [1]}]}
        ],
    }
    _, result = clean_text(json.dumps(raw).encode(), path="nb")
    cell = raw["worksheets"][0]["cells"][0]
    clean_json(raw)
    assert result.changed and cell["outputs"] == [] and cell["prompt_number"] is None


def test_keep_outputs_option_keeps_every_output():
    raw = json.loads(nbformat.writes(executed_notebook()))
    clean_json(raw, keep_outputs=True)
    assert raw["cells"][2]["outputs"] and raw["cells"][2]["execution_count"] is None


# -- CLI --------------------------------------------------------------------------------------


def test_check_lists_dirty_files_and_exits_1_without_writing(write_nb, capsys):
    dirty = write_nb(executed_notebook(), "dirty.ipynb")
    before = dirty.read_bytes()
    assert run_main(["clean", "--check", str(dirty)]) == 1
    assert f"{dirty}: not clean (outputs in 1 cell" in capsys.readouterr().out
    assert dirty.read_bytes() == before


def test_clean_rewrites_only_changed_files_then_check_passes(write_nb, capsys, tmp_path):
    dirty = write_nb(executed_notebook(), "a/dirty.ipynb")
    assert run_main(["clean", str(dirty)]) == 0
    tidy = write_nb(nbformat.reads(dirty.read_text(), as_version=4), "a/tidy.ipynb")
    os.utime(tidy, (1_000_000, 1_000_000))
    assert run_main(["clean", str(tmp_path / "a")]) == 0
    assert tidy.stat().st_mtime == 1_000_000  # already clean: not rewritten
    assert run_main(["clean", "--check", str(tmp_path)]) == 0
    assert "2 notebook(s): 0 to clean, 2 already clean" in capsys.readouterr().err


def test_stdin_to_stdout_is_a_git_filter(monkeypatch, capsysbinary):
    data = nbformat.writes(executed_notebook()).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run_main(["clean", "--stdout", "-"]) == 0
    out = capsysbinary.readouterr().out
    assert out == clean_text(data, path="-")[0].encode()


def test_stdin_that_is_not_a_notebook_passes_through(monkeypatch, capsysbinary):
    data = b"<<<<<<< HEAD\n{}\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run_main(["clean", "-", "--stdin-name", "x.ipynb"]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out == data
    assert b"Warning: x.ipynb is not valid JSON" in captured.err


def test_unreadable_notebook_exits_2_and_others_are_still_cleaned(write_nb, tmp_path, capsys):
    good = write_nb(executed_notebook(), "good.ipynb")
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    assert run_main(["clean", str(bad), str(good)]) == 2
    assert "bad.ipynb is not valid JSON" in capsys.readouterr().err
    assert run_main(["clean", "--check", str(good)]) == 0


def test_folders_skip_checkpoints_and_hidden_folders(write_nb, tmp_path):
    nb = executed_notebook()
    keep = [write_nb(nb, "x/a.ipynb"), write_nb(nb, "x/sub/b.ipynb")]
    write_nb(nb, "x/.ipynb_checkpoints/a-checkpoint.ipynb")
    write_nb(nb, "x/.venv/c.ipynb")
    assert find_notebooks([tmp_path / "x"]) == keep


@pytest.mark.parametrize(
    "args",
    [pytest.param(["--stdout", "a.ipynb", "b.ipynb"], id="stdout-two-files"), ["-", "a.ipynb"]],
)
def test_usage_errors_exit_2(args, capsys):
    assert run_main(["clean", *args]) == 2
