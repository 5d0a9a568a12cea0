"""Parameter values: coerce command-line text, read YAML, check values against the schema.

Everything here runs before a kernel starts, so a bad name, a wrong type or a forgotten required
parameter is refused with a message that names the parameter and what was expected.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kiln.errors import (
    InvalidParameterName,
    MissingParameter,
    ParameterError,
    ParameterTypeError,
    UnknownParameter,
)
from kiln.parameters.schema import Parameter, ParameterSchema, _short, validate_name

__all__ = [
    "CliValue",
    "Extra",
    "check_plain_data",
    "coerce_cli_value",
    "load_yaml_values",
    "resolve_parameters",
]

_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})
_NULL_WORDS = frozenset({"None", "null"})
_INT_TEXT = re.compile(r"[+-]?\d+(?:_\d+)*", re.ASCII)
_FLOAT_TEXT = re.compile(
    r"[+-]?(?:(?:\d+(?:_\d+)*)?\.?\d+(?:_\d+)*(?:[eE][+-]?\d+)?|\d+\.|inf|infinity|nan)",
    re.ASCII | re.IGNORECASE,
)
_PLAIN_TYPES = "str, int, float, bool, None, list or dict"


@dataclass(frozen=True)
class CliValue:
    """A value typed on the command line with -p NAME VALUE, still text; coerced by the schema.

    >>> resolve_parameters(schema, {"n": CliValue("3")})   # doctest: +SKIP
    {'n': 3}
    """

    text: str


@dataclass(frozen=True)
class Extra:
    """A value passed even when the notebook does not declare it (papermill's
    ``PAPERMILL_INPUT_PATH`` / ``PAPERMILL_OUTPUT_PATH`` from ``--inject-paths``)."""

    value: Any


def coerce_cli_value(param: Parameter | None, text: str, *, notebook: str | None = None) -> Any:
    """Turn ``-p NAME VALUE`` text into a value of the parameter's type.

    Unknown parameters and type ``any`` get papermill's inference (int, float, True/False,
    None/null, else the text). A ``str`` parameter always gets the text unchanged. ``list`` and
    ``dict`` read the text as YAML flow style (``[1, 2]``, ``{a: 1}``).
    """
    if param is None or param.type == "any":
        if param is not None and param.choices is not None:
            return _choice_of(param, text)
        return _infer_text(text)
    ptype = param.type
    if ptype == "str":
        return text
    if param.optional and text.strip() in _NULL_WORDS:
        return None
    if ptype == "date":
        return text.strip()  # checked as a date by _check_value
    if ptype == "int":
        try:
            return int(text)
        except ValueError:
            if _inferred_int(param):
                try:
                    return float(text)  # widened by _check_value, with its notice
                except ValueError:
                    pass
            raise _cli_error(param, text, notebook, "") from None
    if ptype == "float":
        try:
            return float(text)
        except ValueError:
            raise _cli_error(param, text, notebook, "") from None
    if ptype == "bool":
        word = text.strip().lower()
        if word in _TRUE_WORDS or word in _FALSE_WORDS:
            return word in _TRUE_WORDS
        accepted = "true/false, yes/no, on/off, 1/0"
        raise _cli_error(param, text, notebook, f" (accepted: {accepted})")
    if ptype in ("list", "dict"):
        return _coerce_yaml(param, text, notebook)
    raise ParameterTypeError(
        f"parameter {param.name!r}{_of(notebook)} has an unknown type {ptype!r}",
        name=param.name,
        expected=ptype,
        notebook=notebook,
    )


def _choice_of(param: Parameter, value: Any) -> Any:
    """A value typed as text matched to one of a ``Literal[...]`` of mixed types."""
    if param.choices is None or not isinstance(value, str):
        return value
    for choice in param.choices:
        if value == choice or (not isinstance(choice, str) and value == str(choice)):
            return choice
    return value


def _infer_text(text: str) -> Any:
    if _INT_TEXT.fullmatch(text):
        return int(text)
    if _FLOAT_TEXT.fullmatch(text):
        return float(text)
    if text in ("True", "true"):
        return True
    if text in ("False", "false"):
        return False
    if text in _NULL_WORDS:
        return None
    return text


def _coerce_yaml(param: Parameter, text: str, notebook: str | None) -> Any:
    from kiln.yamlio import YamlError, load_yaml, plain

    example = "[1, 2]" if param.type == "list" else "{a: 1}"
    hint = f" (YAML flow style such as {example})"
    try:
        value = plain(load_yaml(text, origin=f"-p {param.name}"))
    except YamlError as exc:
        raise _cli_error(param, text, notebook, f"{hint}: {exc.problem}") from None
    if value is None and param.optional:
        return None
    expected_type = list if param.type == "list" else dict
    if not isinstance(value, expected_type):
        raise _cli_error(param, text, notebook, hint)
    return check_plain_data(value, name=param.name, notebook=notebook)


def _cli_error(param: Parameter, text: str, notebook: str | None, hint: str) -> ParameterTypeError:
    optional = " or None" if param.optional else ""
    return ParameterTypeError(
        f"parameter {param.name!r}{_of(notebook)} expects {param.type}{optional}, "
        f"got {_short(text)}{hint}",
        name=param.name,
        expected=param.type,
        notebook=notebook,
    )


def _of(notebook: str | None) -> str:
    return f" of {notebook}" if notebook else ""


def check_plain_data(value: Any, *, name: str, notebook: str | None = None) -> Any:
    """``value`` as plain data (tuples become lists), or ParameterTypeError.

    Plain data is what JSON and YAML can hold: str, int, float (NaN and infinities too), bool,
    None, and lists and dicts with string keys of those. Subclasses (``IntEnum``, numpy scalars)
    are refused rather than guessed at.
    """
    return _plain(value, name, notebook, path="", seen=())


def _plain(value: Any, name: str, notebook: str | None, *, path: str, seen: tuple[int, ...]) -> Any:
    kind = type(value)
    if value is None or kind in (str, int, float, bool):
        return value
    if kind in (list, tuple, dict):
        if id(value) in seen:
            raise _plain_error(name, notebook, path, "contains itself")
        inner = (*seen, id(value))
        if kind is dict:
            result = {}
            for key, item in value.items():
                if type(key) is not str:
                    raise _plain_error(name, notebook, path, f"has a non-string key {_short(key)}")
                result[key] = _plain(item, name, notebook, path=f"{path}[{key!r}]", seen=inner)
            return result
        return [
            _plain(item, name, notebook, path=f"{path}[{i}]", seen=inner)
            for i, item in enumerate(value)
        ]
    shown = (
        f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__name__
    )
    raise _plain_error(name, notebook, path, f"is a {shown}, not {_PLAIN_TYPES}")


def _plain_error(name: str, notebook: str | None, path: str, problem: str) -> ParameterTypeError:
    what = f"value{path}" if path else "value"
    return ParameterTypeError(
        f"parameter {name!r}{_of(notebook)}: the {what} {problem}; "
        f"parameters must be plain data ({_PLAIN_TYPES})",
        name=name,
        expected=_PLAIN_TYPES,
        notebook=notebook,
    )


def _inferred_int(param: Parameter) -> bool:
    """``alpha = 1``: the type is only what the literal happens to be, not a declaration."""
    return param.type == "int" and param.annotation is None


def _widen_notice(param: Parameter, value: float, notebook: str | None) -> str:
    return (
        f"parameter {param.name!r}{_of(notebook)}: the float {value!r} is used although the "
        f"parameters cell's integer default makes it look like an int; declare "
        f"'{param.name}: float' to say so (an annotated int refuses floats)"
    )


def _check_value(
    param: Parameter | None,
    name: str,
    value: Any,
    notebook: str | None,
    notices: list[str] | None = None,
) -> Any:
    value = check_plain_data(value, name=name, notebook=notebook)
    if param is None:
        return value
    if value is None:
        if param.optional or (param.type == "any" and param.choices is None):
            return None
        raise _type_error(param, value, notebook, " (the parameter is not optional)")
    if param.choices is not None:
        return _check_choice(param, value, notebook)
    return _check_type(param, value, notebook, notices)


def _check_choice(param: Parameter, value: Any, notebook: str | None) -> Any:
    for choice in param.choices or ():
        # 1 == True in Python: a Literal[1] must not take True
        if value == choice and type(value) is type(choice):
            return value
    shown = ", ".join(repr(c) for c in param.choices or ())
    raise ParameterTypeError(
        f"parameter {param.name!r}{_of(notebook)} expects one of {shown}, got {_short(value)}",
        name=param.name,
        expected=f"one of {shown}",
        notebook=notebook,
    )


def _check_type(
    param: Parameter, value: Any, notebook: str | None, notices: list[str] | None
) -> Any:
    ptype = param.type
    if ptype == "any":
        return value
    if ptype == "date":
        return _check_date(param, value, notebook)
    kind = type(value)
    if ptype == "float" and kind in (int, float):
        try:
            return float(value)
        except OverflowError:
            raise _type_error(param, value, notebook, " (too large for a float)") from None
    accepted = {"int": int, "bool": bool, "str": str, "list": list, "dict": dict}.get(ptype)
    if kind is accepted:
        return value
    if kind is float and _inferred_int(param):
        if notices is not None:
            notices.append(_widen_notice(param, value, notebook))
        return value
    raise _type_error(param, value, notebook, "")


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _check_date(param: Parameter, value: Any, notebook: str | None) -> str:
    """A ``date`` parameter's value: ISO text ``YYYY-MM-DD`` naming a real day."""
    import datetime

    if type(value) is str and _ISO_DATE.fullmatch(value):
        try:
            datetime.date.fromisoformat(value)
            return value
        except ValueError:
            pass
    raise ParameterTypeError(
        f"parameter {param.name!r}{_of(notebook)} expects a date as YYYY-MM-DD, "
        f"got {_short(value)}",
        name=param.name,
        expected="date",
        notebook=notebook,
    )


def _type_error(
    param: Parameter, value: Any, notebook: str | None, hint: str
) -> ParameterTypeError:
    optional = " or None" if param.optional else ""
    got = "None" if value is None else f"{type(value).__name__} {_short(value)}"
    return ParameterTypeError(
        f"parameter {param.name!r}{_of(notebook)} expects {param.type}{optional}, got {got}{hint}",
        name=param.name,
        expected=param.type,
        notebook=notebook,
    )


def resolve_parameters(
    schema: ParameterSchema,
    values: Mapping[str, Any],
    *,
    allow_unknown: bool = False,
    notebook: str | None = None,
    notices: list[str] | None = None,
) -> dict[str, Any]:
    """Check ``values`` against ``schema`` and return them coerced, in the order given.

    :class:`CliValue` text is coerced with :func:`coerce_cli_value`; other values must already
    have the parameter's type (an int is accepted for a float). Unknown names are refused when
    the notebook has a ``parameters`` cell, unless ``allow_unknown``; a notebook without one
    takes any name (the values are injected at the top, as papermill does).

    A parameter whose type is only inferred from an integer literal (``alpha = 1``) takes a
    float too, and a line explaining it is appended to ``notices``; an annotated ``int``
    refuses it.
    """
    declares = schema.cell_index is not None or bool(schema.parameters)
    resolved: dict[str, Any] = {}
    for name, value in values.items():
        validate_name(name, notebook=notebook)
        param = schema.get(name)
        if isinstance(value, Extra):
            value = value.value
            if param is None:
                resolved[name] = check_plain_data(value, name=name, notebook=notebook)
                continue
        if param is None and declares and not allow_unknown:
            raise _unknown(schema, name, notebook)
        if isinstance(value, CliValue):
            coerced = coerce_cli_value(param, value.text, notebook=notebook)
            resolved[name] = _check_value(param, name, coerced, notebook, notices)
        else:
            resolved[name] = _check_value(param, name, value, notebook, notices)
    missing = [p for p in schema if p.required and p.name not in values]
    if missing:
        raise _missing(missing, notebook)
    return resolved


def _unknown(schema: ParameterSchema, name: str, notebook: str | None) -> UnknownParameter:
    names = schema.names()
    where = f" for notebook {notebook}" if notebook else ""
    known = ", ".join(names) if names else "none (the parameters cell declares nothing)"
    message = f"unknown parameter {name!r}{where}; known parameters: {known}"
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return UnknownParameter(message, name=name, expected=", ".join(names), notebook=notebook)


def _missing(missing: list[Parameter], notebook: str | None) -> MissingParameter:
    where = f" for {notebook}" if notebook else ""
    shown = ", ".join(f"{p.name!r} ({p.type})" for p in missing)
    flags = " ".join(f"-p {p.name} VALUE" for p in missing)
    plural = "s" if len(missing) > 1 else ""
    return MissingParameter(
        f"missing required parameter{plural} {shown}{where}; pass {'them' if plural else 'it'} "
        f"with {flags}",
        name=missing[0].name,
        expected=missing[0].type,
        notebook=notebook,
    )


# -- YAML ---------------------------------------------------------------------------------------


def load_yaml_values(text: str | bytes, *, origin: str) -> dict[str, Any]:
    """Read a YAML mapping of parameter values (``-y TEXT`` or ``-f FILE``).

    ``origin`` names where the text came from (``"-y"``, a file path) in error messages. An empty
    document gives ``{}``. Dates and times stay strings, as the user wrote them.
    """
    from kiln.yamlio import YamlError, load_yaml, plain

    try:
        data = plain(load_yaml(text, origin=origin))
    except YamlError as exc:
        raise ParameterError(exc.message) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = "list" if isinstance(data, list) else type(data).__name__
        raise ParameterError(
            f"{origin}: expected a mapping of parameter names to values (name: value), "
            f"got a YAML {kind}",
            expected="a mapping",
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        values[yaml_key(key, origin)] = check_plain_data(value, name=key, notebook=origin)
    return values


def yaml_key(key: Any, origin: str) -> str:
    """A parameter name read from YAML (``origin`` names the file or flag): a valid name."""
    if not isinstance(key, str):
        hint = ""
        if isinstance(key, bool) or key is None:
            hint = " (YAML reads yes/no/on/off/true/false/null as values; quote the name)"
        raise InvalidParameterName(
            f"{origin}: parameter name {_short(key)} is not a string{hint}",
            expected="an identifier",
        )
    try:
        validate_name(key)
    except InvalidParameterName as exc:
        raise InvalidParameterName(
            f"{origin}: {exc.message}", name=exc.name, expected=exc.expected
        ) from exc
    return key
