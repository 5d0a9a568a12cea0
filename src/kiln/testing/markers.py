"""What a cell asks of a test run or a comparison, from its tags and its comments.

Kiln's own tags, with nbval's conventions honoured so nbval-style notebooks work unchanged:

==========================  ===================================  ============================
meaning                     tags                                 comment line (nbval)
==========================  ===================================  ============================
do not compare outputs      ``kiln-verify-skip``,                ``# NBVAL_IGNORE_OUTPUT``
                            ``nbval-ignore-output``
do not run (nor compare)    ``skip-execution``, ``nbval-skip``   ``# NBVAL_SKIP``
expected to raise           ``raises-exception``,                ``# NBVAL_RAISES_EXCEPTION``
                            ``nbval-raises-exception``
==========================  ===================================  ============================

Kiln's engines already honour ``skip-execution`` and ``raises-exception``; :func:`as_kiln_tags`
translates the nbval spellings into those two before a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SKIP_EXECUTION = "skip-execution"
RAISES_EXCEPTION = "raises-exception"
INJECTED = "injected-parameters"

_IGNORE_TAGS = frozenset(
    {"kiln-verify-skip", "nbval-ignore-output", "pytest-validate-ignore-output"}
)
_SKIP_TAGS = frozenset({SKIP_EXECUTION, "nbval-skip"})
_RAISES_TAGS = frozenset({RAISES_EXCEPTION, "nbval-raises-exception"})
_COMMENTS = {
    "NBVAL_IGNORE_OUTPUT": "ignore",
    "PYTEST_VALIDATE_IGNORE_OUTPUT": "ignore",
    "NBVAL_SKIP": "skip",
    "NBVAL_RAISES_EXCEPTION": "raises",
}


@dataclass(frozen=True)
class CellPolicy:
    """``skip``: not run; ``ignore_output``: run, outputs not compared; ``raises``: may raise.
    ``why`` names the tag or comment that decided, for reports."""

    skip: bool = False
    ignore_output: bool = False
    raises: bool = False
    why: str = ""

    @property
    def compared(self) -> bool:
        return not (self.skip or self.ignore_output)


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _tags(cell: Mapping[str, Any]) -> set[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return {t for t in tags if isinstance(t, str)} if isinstance(tags, list) else set()


def comment_markers(source: str) -> dict[str, str]:
    """nbval's markers in a cell's comment lines: marker -> meaning (``ignore``, ...).

    Like nbval, a marker is a whole comment line: ``# NBVAL_IGNORE_OUTPUT``."""
    found = {}
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            word = stripped.lstrip("#").strip()
            if word in _COMMENTS:
                found[word] = _COMMENTS[word]
    return found


def cell_policy(cell: Mapping[str, Any]) -> CellPolicy:
    tags = _tags(cell)
    comments = comment_markers(_source(cell))
    by_comment = {meaning: f"# {word}" for word, meaning in comments.items()}

    def why(tag_set: frozenset[str], meaning: str) -> str:
        hit = sorted(tags & tag_set)
        if hit:
            return f"tag {hit[0]}"
        return by_comment.get(meaning, "")

    skip = why(_SKIP_TAGS, "skip")
    ignore = why(_IGNORE_TAGS, "ignore")
    raises = why(_RAISES_TAGS, "raises")
    return CellPolicy(
        skip=bool(skip),
        ignore_output=bool(ignore),
        raises=bool(raises),
        why=skip or ignore or raises,
    )


def as_kiln_tags(nb: Any) -> bool:
    """Add ``skip-execution``/``raises-exception`` to the cells whose nbval markers ask for
    them (in place); True when anything changed."""
    changed = False
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        policy = cell_policy(cell)
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        for wanted, tag in ((policy.skip, SKIP_EXECUTION), (policy.raises, RAISES_EXCEPTION)):
            if wanted and tag not in tags:
                tags.append(tag)
                changed = True
    return changed


def is_injected(cell: Mapping[str, Any]) -> bool:
    return INJECTED in _tags(cell)
