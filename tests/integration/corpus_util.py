"""Helpers for the corpus tests: where the peers' notebooks are, and a normaliser of outputs.

The corpus is fetched by ``/work/shared/corpus/get.sh`` (``make corpus``) into ``$KILN_CORPUS``
(default ``~/.cache/kiln/corpus``). Tests never write into it: they copy what they run into
their own ``tmp_path``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(os.environ.get("KILN_CORPUS", "~/.cache/kiln/corpus")).expanduser()
INDEX = CORPUS / "INDEX.tsv"

#: papermill's and nbclient's test notebooks (README: ``pm`` and ``nbc``), nbformat's tests
PM = Path("papermill/papermill-2.7.0/papermill/tests/notebooks")
NBC = Path("nbclient/nbclient-0.11.0/tests/files")
NBF = Path("nbformat/nbformat-5.11.1/tests")


def corpus_path(rel: Path | str) -> Path:
    """The corpus file or folder ``rel``, or skip the test saying why it is not there."""
    if not INDEX.is_file():
        pytest.skip(
            f"peers' notebook corpus not found at {CORPUS} (set KILN_CORPUS, or run `make "
            "corpus`, which needs PyPI)"
        )
    path = CORPUS / rel
    if not path.exists():
        pytest.skip(
            f"corpus at {CORPUS} lacks {rel}: incomplete fetch (get.sh leaves its include globs "
            "to the shell, so when run from a folder that has a tests/ dir it extracts almost "
            "nothing: re-run it from an empty folder)"
        )
    return path


def copy_in(rel: Path | str, dest: Path, *siblings: str) -> Path:
    """Copy a corpus notebook (and named files next to it) into ``dest``; return the copy."""
    src = corpus_path(rel)
    for name in siblings:
        shutil.copy2(src.parent / name, dest / name)
    return Path(shutil.copy2(src, dest / src.name))


def index_rows() -> list[dict[str, str]]:
    """INDEX.tsv as dicts (package, version, path, nbformat, ...); [] without a corpus."""
    if not INDEX.is_file():
        return []
    with INDEX.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# ---------------------------------------------------------------------------------------------
# Output normaliser: makes two executions of the same notebook comparable, cell by cell.

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_HEXADDR = re.compile(r"\b0x[0-9a-fA-F]{4,16}\b")
_TIMESTAMP = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
)
#: a traceback's "this line failed" arrow, old IPython ("----> 2 code") and 8+ alike
_ARROW = re.compile(r"^\s*-+>\s*\d*\s?(?P<code>.*)$")
#: magic numbers of base64 images, to check the data is still an image of that type
_IMAGE_MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF8",
}
#: cell metadata written by the executor itself (timings), never by the author
_EXECUTION_METADATA = ("execution", "ExecuteTime", "papermill")


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def scrub(text: str) -> str:
    """Colour codes, memory addresses and timestamps out of a text."""
    text = _ANSI.sub("", text)
    text = _HEXADDR.sub("<ADDR>", text)
    return _TIMESTAMP.sub("<TIME>", text)


def _image(mime: str, data: Any) -> str:
    try:
        raw = base64.b64decode(_text(data), validate=False)
    except (binascii.Error, ValueError):
        return f"<{mime}: not base64>"
    ok = raw.startswith(_IMAGE_MAGIC[mime]) if mime in _IMAGE_MAGIC else bool(raw)
    return f"<{mime} image>" if ok else f"<{mime}: not an image>"


def _svg(data: Any) -> str:
    try:  # attribute order and whitespace between elements do not matter
        return ET.canonicalize(xml_data=_text(data), strip_text=True)
    except ET.ParseError:
        return scrub(_text(data))


def _bundle(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mime, value in data.items():
        if mime == "image/svg+xml":
            out[mime] = _svg(value)
        elif mime.startswith("image/"):
            out[mime] = _image(mime, value)
        elif mime == "application/vnd.jupyter.widget-view+json":
            out[mime] = {**value, "model_id": "<MODEL_ID>"}
        elif isinstance(value, str | list):
            out[mime] = scrub(_text(value))
        else:  # JSON data
            out[mime] = value
    return out


def _traceback(lines: list[str]) -> dict[str, Any]:
    """The failing source lines and the final 'Name: message' line: what does not depend on
    the IPython version, the cell's input name or the interpreter's paths."""
    text = "\n".join(_ANSI.sub("", line) for line in lines)
    rows = [r.rstrip() for r in text.splitlines() if r.strip()]
    failing = [m.group("code").strip() for r in rows if (m := _ARROW.match(r))]
    return {"failing": failing, "last": scrub(rows[-1]) if rows else ""}


def normalize_output(output: dict[str, Any]) -> dict[str, Any]:
    kind = output.get("output_type")
    norm: dict[str, Any] = {"output_type": kind}
    if kind == "stream":
        norm["name"] = output.get("name")
        norm["text"] = scrub(_text(output.get("text", "")))
    elif kind in ("display_data", "execute_result"):
        norm["data"] = _bundle(dict(output.get("data", {})))
        if kind == "execute_result":
            norm["execution_count"] = output.get("execution_count")
    elif kind == "error":
        norm["ename"] = output.get("ename")
        norm["evalue"] = scrub(str(output.get("evalue", "")))
        norm["traceback"] = _traceback(list(output.get("traceback", [])))
    else:
        norm["raw"] = dict(output)
    return norm


def normalize_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalised outputs, consecutive chunks of one stream joined (kernels split them at will)."""
    result: list[dict[str, Any]] = []
    for output in outputs:
        norm = normalize_output(output)
        prev = result[-1] if result else None
        if (
            prev is not None
            and norm["output_type"] == "stream"
            and prev["output_type"] == "stream"
            and prev["name"] == norm["name"]
        ):
            prev["text"] += norm["text"]
        else:
            result.append(norm)
    return result


def normalize_cell(cell: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in cell.get("metadata", {}).items() if k not in _EXECUTION_METADATA}
    norm: dict[str, Any] = {
        "cell_type": cell.get("cell_type"),
        "source": _text(cell.get("source", "")),
        "metadata": meta,
    }
    if cell.get("cell_type") == "code":
        norm["execution_count"] = cell.get("execution_count")
        norm["outputs"] = normalize_outputs(list(cell.get("outputs", [])))
    return norm
