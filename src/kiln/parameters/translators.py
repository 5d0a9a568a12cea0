"""Translators: parameter values become literal source code in the kernel's language.

Values are data, never code. Each translator writes its own literals (no ``repr`` of strings):
whatever a string holds — quotes, backslashes, newlines, ``$(...)``, line separators — the
kernel reads back exactly that string and runs nothing else.

The table :data:`TRANSLATORS` maps a kernel language name to its translator class::

    >>> get_translator("python").render({"msg": "Hello"})
    '# Parameters\\nmsg = "Hello"\\n'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from kiln.errors import InvalidParameterName, NoTranslator, ParameterTypeError
from kiln.parameters.schema import _short, validate_name

__all__ = [
    "TRANSLATORS",
    "BashTranslator",
    "JuliaTranslator",
    "PythonTranslator",
    "RTranslator",
    "Translator",
    "get_translator",
]


def _hex_escape(char: str, *, byte_escape: bool) -> str:
    """``\\xNN`` (when the language has it), ``\\uNNNN`` or ``\\UNNNNNNNN``, fixed width."""
    code = ord(char)
    if code < 0x100 and byte_escape:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF


class Translator:
    """Writes values as literals of one kernel language.

    Subclasses set ``language`` and override the ``literal_*`` methods they need; ``literal``
    dispatches on the exact type of a value (plain data only), ``assign`` writes one statement and
    ``render`` the whole injected cell.
    """

    language: ClassVar[str] = ""

    def comment(self, text: str) -> str:
        return "\n".join(f"# {line}".rstrip() for line in text.splitlines() or [""])

    def check_name(self, name: str) -> None:
        """Refuse a name this language cannot assign to."""
        validate_name(name)

    def assign(self, name: str, value: Any) -> str:
        self.check_name(name)
        return f"{name} = {self.literal(value)}"

    def render(self, values: Mapping[str, Any]) -> str:
        """The source of the injected-parameters cell: a comment, then one assignment a value."""
        lines = [self.comment("Parameters")]
        lines.extend(self.assign(name, value) for name, value in values.items())
        return "\n".join(lines) + "\n"

    def literal(self, value: Any) -> str:
        kind = type(value)
        if value is None:
            return self.literal_none()
        if kind is bool:
            return self.literal_bool(value)
        if kind is int:
            return self.literal_int(value)
        if kind is float:
            return self.literal_float(value)
        if kind is str:
            return self.literal_str(value)
        if kind in (list, tuple):
            return self.literal_list(list(value))
        if kind is dict:
            return self.literal_dict(value)
        raise self.refuse(value, f"a {kind.__name__} is not plain data")

    def refuse(self, value: Any, reason: str) -> ParameterTypeError:
        return ParameterTypeError(
            f"cannot write {_short(value)} as a {self.language} literal: {reason}",
            expected="str, int, float, bool, None, list or dict",
        )

    def literal_none(self) -> str:
        return "None"

    def literal_bool(self, value: bool) -> str:
        return "True" if value else "False"

    def literal_int(self, value: int) -> str:
        try:
            return str(value)
        except ValueError:  # beyond sys.get_int_max_str_digits()
            raise self.refuse(value, "the integer is too large") from None

    def literal_float(self, value: float) -> str:
        return repr(value)

    def literal_str(self, value: str) -> str:
        raise NotImplementedError

    def literal_list(self, value: list[Any]) -> str:
        return "[" + ", ".join(self.literal(item) for item in value) + "]"

    def literal_dict(self, value: dict[Any, Any]) -> str:
        items = (f"{self.literal(k)}: {self.literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"


class PythonTranslator(Translator):
    """Python literals that ``ast.literal_eval`` reads back exactly (except non-finite floats)."""

    language = "python"
    _ESCAPES: ClassVar[dict[str, str]] = {
        "\\": "\\\\",
        '"': '\\"',
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
    }

    def literal_float(self, value: float) -> str:
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        return repr(value)

    def literal_str(self, value: str) -> str:
        # isprintable() is False for every line break str.splitlines() knows (\x0b, \x1c,
        # \x85, \u2028, ...), for controls, format characters (bidi overrides) and surrogates,
        # so the literal never spans lines and shows no invisible characters.
        out = []
        for char in value:
            escaped = self._ESCAPES.get(char)
            if escaped is not None:
                out.append(escaped)
            elif char.isprintable():
                out.append(char)
            else:
                out.append(_hex_escape(char, byte_escape=True))
        return '"' + "".join(out) + '"'


# R words that cannot be used as a bare name.
_R_RESERVED = frozenset(
    {
        "if",
        "else",
        "repeat",
        "while",
        "function",
        "for",
        "next",
        "break",
        "in",
        "TRUE",
        "FALSE",
        "NULL",
        "Inf",
        "NaN",
        "NA",
        "NA_integer_",
        "NA_real_",
        "NA_character_",
        "NA_complex_",
    }
)
_R_NAME = re.compile(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*")


class RTranslator(Translator):
    """R literals; names that are not syntactic in R (``_x``, ``function``) are backquoted."""

    language = "R"
    _ESCAPES: ClassVar[dict[str, str]] = {
        "\\": "\\\\",
        '"': '\\"',
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
    }

    def assign(self, name: str, value: Any) -> str:
        self.check_name(name)
        shown = name if _R_NAME.fullmatch(name) and name not in _R_RESERVED else f"`{name}`"
        return f"{shown} = {self.literal(value)}"

    def literal_none(self) -> str:
        return "NULL"

    def literal_bool(self, value: bool) -> str:
        return "TRUE" if value else "FALSE"

    def literal_float(self, value: float) -> str:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Inf" if value > 0 else "-Inf"
        return repr(value)

    def literal_str(self, value: str) -> str:
        out = []
        for char in value:
            escaped = self._ESCAPES.get(char)
            if escaped is not None:
                out.append(escaped)
            elif char == "\0" or _is_surrogate(char):
                raise self.refuse(value, "R strings cannot hold NUL or lone surrogates")
            elif char.isprintable():
                out.append(char)
            elif ord(char) < 0x10000:
                out.append(f"\\u{{{ord(char):04x}}}")
            else:
                out.append(f"\\U{{{ord(char):08x}}}")
        return '"' + "".join(out) + '"'

    def literal_list(self, value: list[Any]) -> str:
        return "list(" + ", ".join(self.literal(item) for item in value) + ")"

    def literal_dict(self, value: dict[Any, Any]) -> str:
        items = (f"{self.literal_str(str(k))} = {self.literal(v)}" for k, v in value.items())
        return "list(" + ", ".join(items) + ")"


_BASH_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BashTranslator(Translator):
    """Bash assignments whose values are single-quoted, so nothing in them is expanded.

    ``None`` becomes the empty string, booleans ``true``/``false``; a list becomes an indexed
    array and a dict an associative array. Values nested inside arrays are written as JSON text,
    since bash arrays hold strings only.
    """

    language = "bash"

    def check_name(self, name: str) -> None:
        validate_name(name)
        if not _BASH_NAME.fullmatch(name):
            raise InvalidParameterName(
                f"invalid parameter name {name!r} for bash: use ASCII letters, digits and _",
                name=name,
                expected="[A-Za-z_][A-Za-z0-9_]*",
            )

    def assign(self, name: str, value: Any) -> str:
        self.check_name(name)
        if type(value) is dict:
            # `declare -A` fails on a name that already holds an indexed array.
            return f"unset -v {name}\ndeclare -A {name}={self.literal(value)}"
        return f"{name}={self.literal(value)}"

    def literal_none(self) -> str:
        return "''"

    def literal_bool(self, value: bool) -> str:
        return "true" if value else "false"

    def literal_float(self, value: float) -> str:
        return repr(value)  # inf, -inf and nan are plain words in bash

    def literal_str(self, value: str) -> str:
        if "\0" in value:
            raise self.refuse(value, "bash variables cannot hold NUL")
        if any(_is_surrogate(char) for char in value):
            raise self.refuse(value, "lone surrogates cannot be written as UTF-8")
        return "'" + value.replace("'", "'\\''") + "'"

    def _element(self, value: Any) -> str:
        if type(value) in (list, tuple, dict):
            return self.literal_str(json.dumps(value, ensure_ascii=False))
        return self.literal(value)

    def literal_list(self, value: list[Any]) -> str:
        return "(" + " ".join(self._element(item) for item in value) + ")"

    def literal_dict(self, value: dict[Any, Any]) -> str:
        items = []
        for key, item in value.items():
            if str(key) == "":
                raise self.refuse(value, "bash associative arrays cannot have an empty key")
            items.append(f"[{self.literal_str(str(key))}]={self._element(item)}")
        return "(" + " ".join(items) + ")"


_JULIA_KEYWORDS = frozenset(
    {
        "baremodule",
        "begin",
        "break",
        "catch",
        "const",
        "continue",
        "do",
        "else",
        "elseif",
        "end",
        "export",
        "false",
        "finally",
        "for",
        "function",
        "global",
        "if",
        "import",
        "let",
        "local",
        "macro",
        "module",
        "quote",
        "return",
        "struct",
        "true",
        "try",
        "using",
        "while",
        "abstract",
        "mutable",
        "primitive",
        "type",
        "where",
        "in",
        "isa",
        "outer",
        "public",
        "nothing",
        "missing",
    }
)


class JuliaTranslator(Translator):
    """Julia literals; ``$`` is escaped so strings never interpolate."""

    language = "julia"
    _ESCAPES: ClassVar[dict[str, str]] = {
        "\\": "\\\\",
        '"': '\\"',
        "$": "\\$",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
    }

    def check_name(self, name: str) -> None:
        validate_name(name)
        if name in _JULIA_KEYWORDS:
            raise InvalidParameterName(
                f"invalid parameter name {name!r} for Julia: it is a Julia keyword",
                name=name,
                expected="a name that is not a Julia keyword",
            )

    def literal_none(self) -> str:
        return "nothing"

    def literal_bool(self, value: bool) -> str:
        return "true" if value else "false"

    def literal_float(self, value: float) -> str:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Inf" if value > 0 else "-Inf"
        return repr(value)

    def literal_str(self, value: str) -> str:
        out = []
        for char in value:
            escaped = self._ESCAPES.get(char)
            if escaped is not None:
                out.append(escaped)
            elif _is_surrogate(char):
                raise self.refuse(value, "Julia strings cannot hold lone surrogates")
            elif char.isprintable():
                out.append(char)
            else:  # \u takes up to 4 hex digits and \U up to 8: fixed widths never overrun
                out.append(_hex_escape(char, byte_escape=False))
        return '"' + "".join(out) + '"'

    def literal_dict(self, value: dict[Any, Any]) -> str:
        items = (f"{self.literal(k)} => {self.literal(v)}" for k, v in value.items())
        return "Dict{String, Any}(" + ", ".join(items) + ")"


TRANSLATORS: Mapping[str, type[Translator]] = MappingProxyType(
    {
        "python": PythonTranslator,
        "python3": PythonTranslator,
        "ipython": PythonTranslator,
        "r": RTranslator,
        "R": RTranslator,
        "bash": BashTranslator,
        "sh": BashTranslator,
        "julia": JuliaTranslator,
    }
)
"""Kernel language name (as in ``kernelspec.language``) -> translator class."""


def get_translator(language: str) -> Translator:
    """A translator for a kernel language; :class:`~kiln.errors.NoTranslator` if there is none."""
    cls = TRANSLATORS.get(language) or TRANSLATORS.get(language.strip().lower())
    if cls is None:
        supported = ", ".join(sorted({name.lower() for name in TRANSLATORS}))
        raise NoTranslator(
            f"no parameter translator for kernel language {language!r}; "
            f"supported languages: {supported}",
            expected=supported,
        )
    return cls()
