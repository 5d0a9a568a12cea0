"""The cached nbformat schema check: same verdicts as nbformat, compiled once per machine."""

from __future__ import annotations

import marshal
import os
from pathlib import Path
from typing import Any

import fastjsonschema
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from kiln.errors import NotebookReadError
from kiln.notebook import schemacheck
from kiln.notebook.io import to_v4

MINOR = nbformat.v4.nbformat_minor


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(schemacheck, "_checks", {})
    return tmp_path / "cache" / "kiln" / "validators"


def _nb() -> Any:
    return new_notebook(cells=[new_code_cell("x = 1"), new_markdown_cell("# hi")])


def _forget() -> None:
    schemacheck._checks.clear()  # as a new process would start


def test_a_valid_notebook_passes_and_the_compiled_check_is_kept(cache: Path) -> None:
    assert schemacheck.is_valid(_nb(), MINOR)
    kept = list(cache.glob("nbformat-*.marshal"))
    assert len(kept) == 1


def test_the_next_process_uses_the_kept_check_without_compiling(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert schemacheck.is_valid(_nb(), MINOR)
    _forget()

    def refuse(*_a: Any, **_k: Any) -> str:
        raise AssertionError("compiled again")

    monkeypatch.setattr(fastjsonschema, "compile_to_code", refuse)
    assert schemacheck.is_valid(_nb(), MINOR)
    bad = _nb()
    bad.cells[0]["cell_type"] = "sql"
    assert not schemacheck.is_valid(bad, MINOR)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda nb: nb.cells[0].pop("source"),
        lambda nb: nb.cells[0].__setitem__("execution_count", "three"),
        lambda nb: nb.cells[1].__setitem__("outputs", []),  # markdown cells have none
        lambda nb: nb.__setitem__("surprise", 1),
        lambda nb: nb.cells[0].__setitem__("id", "not an id!"),
    ],
)
def test_what_nbformat_refuses_is_refused_with_nbformat_s_message(breakage: Any) -> None:
    nb = _nb()
    breakage(nb)
    assert not schemacheck.is_valid(nb, MINOR)
    with pytest.raises(nbformat.ValidationError):
        nbformat.validate(nb)
    raw = nbformat.from_dict(nb)
    with pytest.raises(NotebookReadError, match="is not a valid notebook"):
        to_v4(raw, path="broken.ipynb")


def test_a_damaged_cache_file_is_compiled_again(cache: Path) -> None:
    assert schemacheck.is_valid(_nb(), MINOR)
    (kept,) = cache.glob("nbformat-*.marshal")
    kept.write_bytes(b"\x00not marshal")
    _forget()
    assert schemacheck.is_valid(_nb(), MINOR)
    assert kept.stat().st_size > 1000  # rewritten


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_cache_still_checks(cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    cache.parent.chmod(0o500)
    try:
        assert schemacheck.is_valid(_nb(), MINOR)
        assert not cache.exists()
    finally:
        cache.parent.chmod(0o700)


def test_a_cache_that_is_a_file_still_checks(cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_text("in the way")
    assert schemacheck.is_valid(_nb(), MINOR)


def test_other_minor_versions_are_left_to_nbformat(cache: Path) -> None:
    assert not schemacheck.is_valid(_nb(), MINOR + 1)
    assert not schemacheck.is_valid(_nb(), 4)
    assert not cache.exists()


def test_a_cache_others_can_write_is_not_trusted(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XDG_CACHE_HOME=/tmp must not let another user's file run as this user's code."""
    assert schemacheck.is_valid(_nb(), MINOR)
    (kept,) = cache.glob("nbformat-*.marshal")
    planted = compile("def validate(data):\n    return data\n", "planted", "exec")
    kept.write_bytes(marshal.dumps(planted))  # accepts anything
    bad = _nb()
    bad.cells[0]["cell_type"] = "sql"

    kept.chmod(0o666)  # a file others could have written
    _forget()
    assert not schemacheck.is_valid(bad, MINOR)

    kept.chmod(0o600)
    cache.chmod(0o777)  # a folder others could write to
    _forget()
    assert not schemacheck.is_valid(bad, MINOR)
    assert schemacheck.is_valid(_nb(), MINOR)  # still checks, compiled in memory

    cache.chmod(0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.geteuid() + 1)  # a file of another user
    _forget()
    assert not schemacheck.is_valid(bad, MINOR)


def test_a_symlinked_cache_file_is_not_followed(cache: Path, tmp_path: Path) -> None:
    assert schemacheck.is_valid(_nb(), MINOR)
    (kept,) = cache.glob("nbformat-*.marshal")
    elsewhere = tmp_path / "elsewhere.marshal"
    elsewhere.write_bytes(marshal.dumps(compile("def validate(d):\n    pass\n", "x", "exec")))
    kept.unlink()
    kept.symlink_to(elsewhere)
    _forget()
    bad = _nb()
    bad.cells[0]["cell_type"] = "sql"
    assert not schemacheck.is_valid(bad, MINOR)
