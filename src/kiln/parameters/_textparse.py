"""A best-effort reader for ``parameters`` cells in R, bash and Julia.

There is no parser for these languages here: each line that looks like ``name = value``
(``name <- value`` in R, ``name=value`` in bash) declares a parameter whose type is read from the
literal text. Anything more complex (expressions, multi-line values) becomes type ``any`` with its
text kept in ``default_source``. Names that are not identifiers (R's ``my.var``) are skipped,
because :func:`kiln.parameters.validate_name` would refuse them anyway.
"""

from __future__ import annotations

import ast
import keyword
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from kiln.parameters.schema import Parameter

__all__ = ["SYNTAXES", "TextSyntax", "parse_text_cell"]


@dataclass(frozen=True)
class TextSyntax:
    """How one language writes assignments, literals and comments."""

    assignment: re.Pattern[str]  # groups: name, value, and optionally flags (bash declare)
    true_words: frozenset[str]
    false_words: frozenset[str]
    null_words: frozenset[str]
    list_prefixes: tuple[str, ...]
    dict_prefixes: tuple[str, ...]
    comment_needs_space: bool = False  # bash: `#` opens a comment only at the start of a word
    bare_words_are_strings: bool = False  # bash: region=EU is the string "EU"
    int_suffix: str = ""  # R: 3L


_R = TextSyntax(
    assignment=re.compile(r"(?P<name>[A-Za-z.][A-Za-z0-9._]*)\s*(?:<-|=(?!=))\s*(?P<value>.*)"),
    true_words=frozenset({"TRUE", "T"}),
    false_words=frozenset({"FALSE", "F"}),
    null_words=frozenset({"NULL", "NA"}),
    list_prefixes=("c(", "list("),
    dict_prefixes=(),
    int_suffix="L",
)
_BASH = TextSyntax(
    assignment=re.compile(
        r"(?:(?:declare|typeset|export|readonly|local)\s+(?P<flags>(?:-[A-Za-z]+\s+)*))?"
        r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)"
    ),
    true_words=frozenset({"true"}),
    false_words=frozenset({"false"}),
    null_words=frozenset(),
    list_prefixes=("(",),
    dict_prefixes=(),
    comment_needs_space=True,
    bare_words_are_strings=True,
)
_JULIA = TextSyntax(
    assignment=re.compile(
        r"(?:const\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=(?![=>])\s*(?P<value>.*)"
    ),
    true_words=frozenset({"true"}),
    false_words=frozenset({"false"}),
    null_words=frozenset({"nothing", "missing"}),
    list_prefixes=("[",),
    dict_prefixes=("Dict(", "Dict{"),
)

SYNTAXES: Mapping[str, TextSyntax] = MappingProxyType(
    {"r": _R, "bash": _BASH, "sh": _BASH, "julia": _JULIA}
)

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_BASH_SPECIAL = frozenset("$`\\\"'(){}[]*?;&|<> \t")


def parse_text_cell(source: str, syntax: TextSyntax) -> list[Parameter]:
    found = []
    for lineno, line in enumerate(source.splitlines(), start=1):
        match = syntax.assignment.fullmatch(line.strip())
        if match is None:
            continue
        name = match["name"]
        if not name.isidentifier() or keyword.iskeyword(name):
            continue
        text, help_text = _split_comment(match["value"], syntax)
        flags = match.groupdict().get("flags") or ""
        ptype, default, optional = _read_literal(text, syntax, flags)
        found.append(
            Parameter(
                name=name,
                type=ptype,
                default=default,
                default_source=text,
                optional=optional,
                required=False,
                help=help_text,
                annotation=None,
                line=lineno,
            )
        )
    return found


def _split_comment(text: str, syntax: TextSyntax) -> tuple[str, str]:
    """(value text, comment text); a ``#`` inside quotes is part of the value."""
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote is not None:
            if char == "\\" and not (quote == "'" and syntax.bare_words_are_strings):
                i += 2
                continue
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and not (
            syntax.comment_needs_space and i > 0 and not text[i - 1].isspace()
        ):
            return text[:i].strip(), text[i:].lstrip("#").strip()
        i += 1
    return text.strip(), ""


def _read_literal(text: str, syntax: TextSyntax, flags: str) -> tuple[str, Any, bool]:
    """(type, default, optional) for the literal text of a value."""
    if "A" in flags or text.startswith(syntax.dict_prefixes):
        return "dict", None, False
    if "a" in flags or text.startswith(syntax.list_prefixes):
        return "list", None, False
    if not text:
        return ("str", "", False) if syntax.bare_words_are_strings else ("any", None, False)
    if text in syntax.null_words:
        return "any", None, True
    if text in syntax.true_words:
        return "bool", True, False
    if text in syntax.false_words:
        return "bool", False, False
    if _INT.fullmatch(text):
        return "int", int(text), False
    suffix = syntax.int_suffix
    if suffix and text.endswith(suffix) and _INT.fullmatch(text[: -len(suffix)]):
        return "int", int(text[: -len(suffix)]), False
    if _FLOAT.fullmatch(text):
        return "float", float(text), False
    string = _read_string(text, syntax)
    if string is not None:
        return "str", string, False
    if syntax.bare_words_are_strings and not _BASH_SPECIAL.intersection(text):
        return "str", text, False
    return "any", None, False


def _read_string(text: str, syntax: TextSyntax) -> str | None:
    """The value of one complete quoted string, or None when ``text`` is anything else."""
    if len(text) < 2 or text[0] not in "'\"" or text[-1] != text[0]:
        return None
    if _split_comment(text + " #", syntax)[0] != text:
        return None  # an unterminated quote swallowed the comment marker
    inner = text[1:-1]
    if syntax.bare_words_are_strings:
        if text[0] == "'":
            return None if "'" in inner else inner
        if re.search(r"(?<!\\)[$`]", inner):
            return None  # expansion: not a literal
        return re.sub(r"\\([$`\"\\\n])", r"\1", inner)
    if text[0] == '"' and "$" in inner and syntax is _JULIA:
        return None  # Julia interpolation
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # escapes Python does not know, such as "\."
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None
