"""Make two executions of one notebook comparable: volatile parts of outputs are replaced by
placeholders before saved and fresh outputs are compared.

What counts as volatile is data (:data:`VOLATILE`): colour codes, temporary paths, uuids,
timestamps and dates, memory addresses (``0x7f..`` and ``id()`` values), ``%time``/``%timeit``
figures. Projects add their own regexes (``kiln verify --ignore-regex``, ``kiln.yaml``'s
``verify: {ignore: [...]}``); they apply first, to the text as a reader sees it.

Images are compared by type by default: an image of the same mime type must be there (and
decode as one), because the exact bytes change with matplotlib, fonts and libpng versions.
``strict_images`` compares the bytes.

>>> normalizer = Normalizer.build(ignore=[r"run \\d+"])
>>> normalizer.outputs(cell["outputs"])
[{'output_type': 'stream', 'name': 'stdout', 'text': '<IGNORED> at <TIMESTAMP>\\n'}]
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.errors import UsageError
from kiln.recording import ARTIFACT_MIME

Replacement = str | Callable[[re.Match[str]], str]


@dataclass(frozen=True)
class Pattern:
    """One normalisation: matches of ``regex`` become ``replacement``."""

    name: str
    regex: re.Pattern[str]
    replacement: Replacement

    def apply(self, text: str) -> str:
        return self.regex.sub(self.replacement, text)


def _address_like(match: re.Match[str]) -> str:
    """``id()`` values are addresses: 16-byte aligned and in a 64-bit process's range. Other
    big integers (populations, byte counts) are left alone."""
    value = int(match.group(0))
    if 2**32 <= value < 2**48 and value % 16 == 0:
        return "<ADDR>"
    return match.group(0)


def _tmp_roots() -> str:
    """The usual temporary folders and the ones the environment names (as ``tempfile`` reads
    them, without its probing of the file system)."""
    roots = {"/tmp", "/var/tmp", "/var/folders", "/private/var/folders"}
    for name in ("TMPDIR", "TEMP", "TMP"):
        value = os.environ.get(name, "").rstrip("/\\")
        if len(value) > 1:
            roots.add(value)
    return "|".join(re.escape(r) for r in sorted(roots, key=len, reverse=True))


_TZ = r"(?:Z|[+-]\d{2}:?\d{2})"
_REPR_TZ = r"(?:, tzinfo=[\w.]+(?:\((?:[^()]|\([^()]*\))*\))?)?"

#: the built-in volatile patterns, applied in this order (after the user's own)
VOLATILE: tuple[Pattern, ...] = (
    Pattern(
        "temporary path",
        re.compile(rf"(?<![\w.~/-])(?:{_tmp_roots()})[/\\][^\s'\"<>:,)\]]*"),
        "<TMP>",
    ),
    Pattern(
        "uuid",
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        "<UUID>",
    ),
    # uuid4().hex: version nibble 4 and variant 8-b, so ordinary hashes rarely match
    Pattern("uuid hex", re.compile(r"\b[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}\b"), "<UUID>"),
    Pattern(
        "timestamp",
        re.compile(rf"\b\d{{4}}-\d{{2}}-\d{{2}}[T ]\d{{2}}:\d{{2}}(?::\d{{2}}(?:[.,]\d+)?)?{_TZ}?"),
        "<TIMESTAMP>",
    ),
    Pattern(
        "datetime repr",
        re.compile(rf"datetime\.datetime\(\d{{4}}(?:, \d+){{2,6}}{_REPR_TZ}\)"),
        "<TIMESTAMP>",
    ),
    Pattern("date repr", re.compile(r"datetime\.date\(\d{4}, \d{1,2}, \d{1,2}\)"), "<DATE>"),
    Pattern("date", re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<DATE>"),
    Pattern("time of day", re.compile(r"\b\d{2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<TIME>"),
    Pattern("hex address", re.compile(r"\b0x[0-9a-fA-F]{6,16}\b"), "<ADDR>"),
    Pattern("id() value", re.compile(r"(?<![\w.])\d{10,15}(?![\w.])"), _address_like),
    Pattern(
        "%time",
        re.compile(r"^(?:CPU times|Wall time):.*$", re.MULTILINE),
        "<TIMING>",
    ),
    Pattern(
        "%timeit",
        re.compile(r"^.*\bper loop \(mean .*$", re.MULTILINE),
        "<TIMING>",
    ),
)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_DATA_URI = re.compile(r"data:(image/[\w.+-]+);base64,[A-Za-z0-9+/=\s]+")
#: first bytes of each image type, to check that base64 data still is an image of that type
_IMAGE_MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF8",
}
_WIDGET = "application/vnd.jupyter.widget-view+json"
IGNORED = "<IGNORED>"


def _text(value: Any) -> str:
    return "".join(str(v) for v in value) if isinstance(value, list) else str(value)


def compile_ignores(entries: Iterable[str | tuple[str, str]], *, source: str) -> list[Pattern]:
    """User regexes as patterns: a string becomes ``<IGNORED>``; ``(regex, replacement)``
    becomes ``replacement``. A bad regex is a usage error naming ``source``."""
    patterns = []
    for entry in entries:
        regex, replacement = (entry, IGNORED) if isinstance(entry, str) else entry
        try:
            compiled = re.compile(regex, re.MULTILINE)
        except re.error as exc:
            raise UsageError(f"{source}: invalid regex {regex!r}: {exc}") from None
        patterns.append(Pattern(f"ignore {regex}", compiled, replacement))
    return patterns


@dataclass(frozen=True)
class Normalizer:
    """Turns outputs into comparable, JSON-able data (see the module docstring)."""

    ignore: tuple[Pattern, ...] = ()
    strict_images: bool = False
    volatile: tuple[Pattern, ...] = field(default=VOLATILE)

    @classmethod
    def build(
        cls,
        ignore: Iterable[str | tuple[str, str]] = (),
        *,
        strict_images: bool = False,
        source: str = "ignore regex",
    ) -> Normalizer:
        return cls(tuple(compile_ignores(ignore, source=source)), strict_images=strict_images)

    def text(self, text: str) -> str:
        """Colour codes out, then the user's regexes, then the volatile patterns."""
        text = _ANSI.sub("", text)
        for pattern in (*self.ignore, *self.volatile):
            text = pattern.apply(text)
        return text

    def output(self, output: Mapping[str, Any]) -> dict[str, Any]:
        """One output, normalised. Output metadata and execution counts are left out: they
        describe the execution, not the result."""
        kind = output.get("output_type")
        if kind == "stream":
            text = _terminal_text(_text(output.get("text", "")))
            return {"output_type": kind, "name": output.get("name"), "text": self.text(text)}
        if kind in ("display_data", "execute_result"):
            data = output.get("data", {})
            return {"output_type": kind, "data": self._bundle(data)}
        if kind == "error":
            return {
                "output_type": kind,
                "ename": str(output.get("ename", "")),
                "evalue": self.text(str(output.get("evalue", ""))),
            }
        return {"output_type": str(kind)}

    def outputs(self, outputs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """A cell's outputs, normalised. Kernels split stream text at will and interleave
        stdout and stderr by timing, so each run of consecutive stream outputs becomes at
        most one stdout and one stderr output (empty ones dropped)."""
        result: list[dict[str, Any]] = []
        streams: dict[str, str] = {}

        def flush() -> None:
            for name in sorted(streams, key=lambda n: (n != "stdout", n)):
                text = self.text(_terminal_text(streams[name]))
                if text:
                    result.append({"output_type": "stream", "name": name, "text": text})
            streams.clear()

        for output in outputs:
            if output.get("output_type") == "stream":
                name = str(output.get("name", "stdout"))
                streams[name] = streams.get(name, "") + _text(output.get("text", ""))
                continue
            flush()
            result.append(self.output(output))
        flush()
        return result

    def _bundle(self, data: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for mime, value in sorted(data.items()):
            if mime == "image/svg+xml":
                out[mime] = _svg(_text(value)) if self.strict_images else f"<{mime}>"
            elif mime.startswith("image/"):
                out[mime] = _image(mime, value, strict=self.strict_images)
            elif mime == _WIDGET and isinstance(value, Mapping):
                out[mime] = _json({**value, "model_id": "<MODEL_ID>"})
            elif mime == ARTIFACT_MIME and isinstance(value, Mapping):
                # where a kept file is stored names its run: its name and content compare
                out[mime] = self.text(_json({k: v for k, v in value.items() if k != "path"}))
            elif isinstance(value, (str, list)):
                text = _text(value)
                if not self.strict_images:
                    text = _DATA_URI.sub(lambda m: f"data:{m.group(1)};base64,<IMAGE>", text)
                out[mime] = self.text(text)
            else:  # JSON data: canonical text, then the same scrubbing as any text
                out[mime] = self.text(_json(value))
        return out


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False, default=str)


def _terminal_text(text: str) -> str:
    """What a terminal (and Jupyter) shows: ``\\r`` rewrites its line (progress bars)."""
    text = text.replace("\r\n", "\n")
    if "\r" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        parts = line.rstrip("\r").split("\r")
        lines.append(parts[-1])
    return "\n".join(lines)


def _image(mime: str, data: Any, *, strict: bool) -> str:
    encoded = "".join(_text(data).split())
    if strict:
        return encoded
    try:
        raw = base64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError):
        return f"<{mime}: not base64>"
    magic = _IMAGE_MAGIC.get(mime)
    ok = raw.startswith(magic) if magic is not None else bool(raw)
    return f"<{mime}>" if ok else f"<{mime}: not an image>"


def _svg(text: str) -> str:
    try:  # attribute order and whitespace between elements do not matter
        return ET.canonicalize(xml_data=text, strip_text=True)
    except ET.ParseError:
        return text


def normalize_outputs(
    outputs: Sequence[Mapping[str, Any]],
    *,
    ignore: Iterable[str | tuple[str, str]] = (),
    strict_images: bool = False,
) -> list[dict[str, Any]]:
    """A cell's outputs with volatile parts replaced (see :class:`Normalizer`).

    >>> normalize_outputs(cell["outputs"], ignore=[r"took \\d+ ms"])
    """
    return Normalizer.build(ignore, strict_images=strict_images).outputs(outputs)


def render_outputs(outputs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Normalised outputs as lines, for a readable diff."""
    lines: list[str] = []
    for output in outputs:
        kind = output["output_type"]
        if kind == "stream":
            lines.append(f"[{output['name']}]")
            lines.extend(str(output["text"]).splitlines())
        elif kind == "error":
            lines.append("[error]")
            lines.append(f"{output['ename']}: {output['evalue']}")
        elif "data" in output:
            for mime, value in output["data"].items():
                lines.append(f"[{kind} {mime}]")
                lines.extend(str(value).splitlines())
        else:
            lines.append(f"[{kind}]")
    return lines
