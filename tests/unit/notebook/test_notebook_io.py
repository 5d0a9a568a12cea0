"""Reading notebooks: every bad input gets one clear sentence; v3 and old v4 are upgraded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_notebook

from kiln.errors import NotebookNotFound, NotebookReadError
from kiln.notebook import load_notebook, save_notebook
from kiln.notebook.io import atomic_write_text

V3 = {
    "nbformat": 3,
    "nbformat_minor": 0,
    "metadata": {"name": "old"},
    "worksheets": [
        {
            "cells": [
                {"cell_type": "heading", "level": 1, "source": ["Title"], "metadata": {}},
                {
                    "cell_type": "code",
                    "input": ["x = 1\n", "print(x)"],
                    "language": "python",
                    "outputs": [],
                    "metadata": {},
                    "prompt_number": 1,
                },
                {"cell_type": "markdown", "source": ["text"], "metadata": {}},
            ],
            "metadata": {},
        }
    ],
}


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (b"", ["is empty", "0 bytes"]),
        (b"   \n", ["is empty"]),
        (b'{"cells": [\n  1,\n  }', ["not valid JSON", "line 3, column 3"]),
        (b"\xff\xfe garbage", ["not UTF-8"]),
        (b"[1, 2]", ["not a Jupyter notebook", "list"]),
        (b'{"cells": []}', ["not a Jupyter notebook", "'nbformat'"]),
        (b'{"nbformat": 5, "cells": []}', ["nbformat 5", "3 and 4"]),
        (b'{"nbformat": "4", "cells": []}', ["nbformat '4'"]),
        (
            json.dumps(
                {
                    "nbformat": 4,
                    "nbformat_minor": 5,
                    "metadata": {},
                    "cells": [{"cell_type": "code", "source": "x", "metadata": {}}],
                }
            ).encode(),
            ["not a valid notebook"],
        ),
        (
            json.dumps(
                {
                    "nbformat": 4,
                    "nbformat_minor": 5,
                    "metadata": {},
                    "cells": [{"cell_type": "weird", "source": "x", "metadata": {}}],
                }
            ).encode(),
            ["not a valid notebook"],
        ),
    ],
    ids=[
        "empty",
        "whitespace",
        "bad-json",
        "not-utf8",
        "json-list",
        "no-nbformat",
        "nbformat-5",
        "nbformat-str",
        "code-cell-missing-outputs",
        "unknown-cell-type",
    ],
)
def test_bad_input_is_refused_with_the_file_and_problem(tmp_path, content, needles):
    path = tmp_path / "bad.ipynb"
    path.write_bytes(content)
    with pytest.raises(NotebookReadError) as info:
        load_notebook(path)
    message = info.value.message
    assert str(path) in message
    for needle in needles:
        assert needle in message
    assert info.value.exit_code == 2


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(NotebookNotFound, match="notebook not found"):
        load_notebook(tmp_path / "nope.ipynb")
    with pytest.raises(NotebookReadError, match="is a directory"):
        load_notebook(tmp_path)


def test_a_notebook_is_read_whole_from_files_pipes_and_files_without_a_size(tmp_path):
    import threading

    from kiln.notebook.io import read_bytes

    text = json.dumps(nbformat.v4.new_notebook()).encode() * 3000  # more than one read's worth
    plain = tmp_path / "nb.ipynb"
    plain.write_bytes(text)
    assert read_bytes(plain) == text
    empty = tmp_path / "empty.ipynb"
    empty.write_bytes(b"")
    assert read_bytes(empty) == b""
    # /proc's files say they are empty and are not
    assert read_bytes("/proc/self/status").startswith(b"Name:")
    pipe = tmp_path / "nb.fifo"
    os.mkfifo(pipe)

    def write() -> None:
        with open(pipe, "wb") as fh:
            for i in range(0, len(text), 4096):
                fh.write(text[i : i + 4096])

    writer = threading.Thread(target=write)
    writer.start()
    assert read_bytes(pipe) == text
    writer.join()


def test_a_file_system_that_answers_in_pieces_still_gives_the_whole_notebook(tmp_path, monkeypatch):
    from kiln.notebook import io

    text = json.dumps(nbformat.v4.new_notebook()).encode() * 20
    path = tmp_path / "nb.ipynb"
    path.write_bytes(text)
    real_read = os.read
    monkeypatch.setattr(io.os, "read", lambda fd, n: real_read(fd, min(n, 100)))
    assert io.read_bytes(path) == text


def test_v3_is_upgraded_to_45_with_ids(tmp_path):
    path = tmp_path / "v3.ipynb"
    path.write_text(json.dumps(V3))
    nb = load_notebook(path)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "markdown"]
    assert nb.cells[1].source == "x = 1\nprint(x)"
    assert all(isinstance(c.id, str) and c.id for c in nb.cells)
    nbformat.validate(nb)


def test_v44_without_ids_gets_unique_ids(tmp_path):
    nb = new_notebook(cells=[new_code_cell("a"), new_code_cell("b")])
    raw = json.loads(nbformat.writes(nb))
    raw["nbformat_minor"] = 4
    for cell in raw["cells"]:
        del cell["id"]
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(raw))
    loaded = load_notebook(path)
    ids = [c.id for c in loaded.cells]
    assert len(set(ids)) == 2 and loaded.nbformat_minor == 5


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    nb = new_notebook(cells=[new_code_cell("x = 1")])
    target = tmp_path / "out" / "o.ipynb"
    save_notebook(nb, target)
    save_notebook(nb, target)
    assert os.listdir(target.parent) == ["o.ipynb"]
    assert nbformat.read(target, as_version=4).cells[0].source == "x = 1"


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "o.txt"
    atomic_write_text(target, "complete")

    def fail(*_a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_text(target, "half")
    assert target.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.txt"]


def test_path_objects_and_strings(tmp_path):
    nb = new_notebook(cells=[new_code_cell("x")])
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    assert load_notebook(str(path)).cells[0].source == load_notebook(Path(path)).cells[0].source


def test_dumps_writes_exactly_what_nbformat_writes(tmp_path):
    from nbformat.v4 import new_markdown_cell, new_output

    from kiln.notebook import dumps

    nb = new_notebook(
        cells=[
            new_markdown_cell("# T\nline2", attachments={"a.png": {"image/png": "AAA="}}),
            new_code_cell(
                "x = 1\nprint(x)\n",
                outputs=[
                    new_output("stream", name="stdout", text="1\n2\n"),
                    new_output(
                        "display_data",
                        data={
                            "text/html": "<b>\n</b>",
                            "image/svg+xml": "<svg>\n</svg>",
                            "application/json": {"a": [1]},
                            "image/png": "iVBOR",
                        },
                    ),
                    new_output("execute_result", data={"text/plain": "3"}, execution_count=1),
                    new_output("error", ename="E", evalue="v", traceback=["t1", "t2"]),
                ],
                metadata={"trusted": True, "tags": ["t"]},
            ),
        ],
        metadata={
            "signature": "x",
            "kernelspec": {"name": "python3", "display_name": "P"},
            "ünï": "çødé",
        },
    )
    assert dumps(nb) == nbformat.writes(nb) + "\n"


_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["", "a\nb", 'q"\\', "\u2028", "é\x00", "\r\n\x0b"])
)
_json = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(value=_json, depth=st.integers(0, 3))
def test_the_encoder_writes_what_json_writes(value, depth):
    _assert_written_as_json_writes(value, depth)


class _Text(str):
    pass


_odd_leaves = _json_leaves | st.builds(_Text, st.text(max_size=3)) | st.sampled_from([1e300, -0.0])
_odd_json = st.recursive(
    _odd_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.lists(st.text(max_size=3), max_size=4)  # the lines of a text...
        | st.tuples(st.text(max_size=3), inner)  # ...or a string first, then anything
        | st.dictionaries(st.text(max_size=5), inner)
        | st.dictionaries(st.integers(-3, 3), inner, max_size=3)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(value=_odd_json, depth=st.integers(0, 3))
def test_the_encoder_writes_what_json_writes_for_odd_values_too(value, depth):
    _assert_written_as_json_writes(value, depth)


def _assert_written_as_json_writes(value, depth):
    """Kiln's notebook encoder writes ``value`` at ``depth`` exactly as ``json.dumps`` would
    with nbformat's settings."""
    from kiln.notebook.io import _encode

    expected = json.dumps(
        value, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False
    ).replace("\n", "\n" + " " * depth)
    assert _encode(value, depth) == expected


def test_the_encoder_raises_what_json_raises_for_keys_it_cannot_sort():
    from kiln.notebook.io import _encode

    with pytest.raises(TypeError):
        _encode({"a": 1, 2: 3}, 0)


def test_the_encoder_falls_back_to_json_for_the_unusual():
    import enum

    from kiln.notebook.io import _encode

    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    for value in (
        {1: "int key", 2: [True, None]},
        [Level.HIGH, Name("x"), (1, 2), float("nan"), float("-inf"), 1e300],
        {"nested": {"t": (Name("y"), {"z": []})}},
    ):
        expected = json.dumps(
            value, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False
        )
        assert _encode(value, 0) == expected


def test_cells_and_frame_make_the_notebook(tmp_path):
    from kiln.notebook.io import cell_json, dumps, join_cells, notebook_frame

    nb = new_notebook(cells=[new_code_cell("a = 1"), new_code_cell("b\nc")])
    head, tail = notebook_frame(nb)
    assert join_cells(head, [cell_json(c) for c in nb.cells], tail) == nbformat.writes(nb) + "\n"
    empty = new_notebook(metadata={"cells": []})  # a key named cells one level down
    assert dumps(empty) == nbformat.writes(empty) + "\n"


def test_atomic_write_abandoned_mid_way_keeps_the_previous_file(tmp_path):
    from kiln.notebook.io import atomic_write

    target = tmp_path / "o.txt"
    atomic_write(target, [b"complete"])

    def parts():
        yield b"half of it"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, parts())
    assert target.read_bytes() == b"complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.txt"]


def test_atomic_write_writes_every_part_in_order_through_short_writes(tmp_path, monkeypatch):
    from kiln.notebook import io

    monkeypatch.setattr(io, "WRITE_CHUNK", 10)
    real_write = os.write
    sizes: list[int] = []

    def short_write(fd: int, data: bytes) -> int:  # a file system that takes 7 bytes a time
        sizes.append(len(data))
        return real_write(fd, bytes(data[:7]))

    monkeypatch.setattr(os, "write", short_write)
    parts = [f"part {i};".encode() for i in range(50)]
    io.atomic_write(tmp_path / "o.txt", parts, mode=0o640)
    assert (tmp_path / "o.txt").read_bytes() == b"".join(parts)
    assert (tmp_path / "o.txt").stat().st_mode & 0o777 == 0o640
    assert max(sizes) < 10 + len(parts[0])  # written as it comes, not gathered whole


def test_atomic_write_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno

    from kiln.notebook.io import atomic_write

    target = tmp_path / "o.txt"
    atomic_write(target, [b"complete"])

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, [b"new"])
    assert target.read_bytes() == b"complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.txt"]


def test_atomic_write_makes_a_missing_folder_and_takes_a_bare_name(tmp_path, monkeypatch):
    from kiln.notebook.io import atomic_write

    atomic_write(tmp_path / "a" / "b" / "o.txt", [b"x"])
    assert (tmp_path / "a" / "b" / "o.txt").read_bytes() == b"x"
    monkeypatch.chdir(tmp_path)
    atomic_write("bare.txt", [b"y"])
    assert (tmp_path / "bare.txt").read_bytes() == b"y"


def test_the_encoder_writes_deep_nesting_as_json_does():
    from kiln.notebook.io import _encode

    value: object = {"leaf": ["a", "b"], "n": 1.5}
    for i in range(80):
        value = {"k": value, "l": [value] if i % 7 == 0 else []} if i % 2 else [value, "x"]
    expected = json.dumps(
        value, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False
    )
    assert _encode(value, 0) == expected
    assert _encode(value, 5) == expected.replace("\n", "\n     ")
