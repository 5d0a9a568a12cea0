"""Checksums in the files ``kiln export`` writes, so it overwrites only its own, unedited files.

A written file carries one line ``kiln-export: sha256=<hex>`` (a comment at the top of a
script; a key of the ``jupytext`` metadata in a text notebook's header). The hex is the SHA-256
of the file's text with the hex itself set to zeros, so any later change to the file, the line
included, shows. ::

    text = seal(f"# {PLACEHOLDER}\\nprint(1)\\n")
    check(text)                 # "intact"
    check(text + "# mine\\n")    # "edited"
    check("print(1)\\n")         # "unsealed": not written by kiln export
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, Literal

__all__ = ["KEY", "PLACEHOLDER", "UNSEALED_VALUE", "Seal", "check", "seal"]

#: the key of the checksum line (and of the jupytext metadata entry)
KEY: Final = "kiln-export"
_ZEROS: Final = "0" * 64
#: what a writer puts where the checksum goes; :func:`seal` fills it in
UNSEALED_VALUE: Final = f"sha256={_ZEROS}"
PLACEHOLDER: Final = f"{KEY}: {UNSEALED_VALUE}"
#: the line as a comment, a YAML entry (``kiln-export: sha256=...``) or JSON (``"...": "..."``)
_LINE: Final = re.compile(r'kiln-export"?:[ \t]*["\']?sha256=([0-9a-f]{64})\b')

Seal = Literal["intact", "edited", "unsealed"]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def seal(text: str) -> str:
    """``text`` with its first placeholder replaced by the checksum; unchanged without one."""
    match = _LINE.search(text)
    if match is None or match.group(1) != _ZEROS:
        return text
    return text[: match.start(1)] + _digest(text) + text[match.end(1) :]


def check(text: str) -> Seal:
    """Whether ``text`` is as kiln export wrote it, was changed since, or carries no checksum."""
    match = _LINE.search(text)
    if match is None:
        return "unsealed"
    blank = text[: match.start(1)] + _ZEROS + text[match.end(1) :]
    return "intact" if _digest(blank) == match.group(1) else "edited"
