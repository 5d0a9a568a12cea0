"""Fold constant string expressions in parsed Python to the value they have at run time.

A secret split into pieces (``"AKIA" + "IOSF..."``) is invisible to a text scan; folded, it is
one string again. Nothing is run: each supported construct is evaluated here, on literals only.

Folded:

* string and bytes literals (the parser already resolves escapes such as ``\\x41``, ``\\u0041``
  and ``\\101``, raw prefixes and implicit concatenation, also across lines in parentheses);
* ``+`` of literals, and runs of literals inside a longer ``+`` chain (``x + "AK" + "IA..."``);
* ``sep.join([...])`` over a list or tuple of literals (or over one string);
* f-strings whose replacement fields are literals;
* ``%`` and ``str.format`` with literal arguments (simple fields and format specs only);
* ``bytes.decode()`` and ``str.encode()`` with a plain text encoding, ``str(b, "utf-8")``.

Not followed: names (no data flow, even within one cell) and runtime transformations (base64,
hex, ROT13, reversing or slicing, ``chr()`` arithmetic, compression): undoing those would mean
running the code. Every step is bounded (field widths, result length), so a hostile notebook
cannot make the linter build huge strings.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Sequence
from typing import TypeGuard

#: the longest value folded; longer expressions are left to the text scan
MAX_LENGTH = 100_000
_MAX_WIDTH = 1_000  # the widest field a format spec may ask for
_MAX_DEPTH = 40
_TEXT_ENCODINGS = frozenset(
    {"utf-8", "utf8", "ascii", "us-ascii", "latin-1", "latin1", "iso-8859-1", "cp1252"}
)
_ERRORS = frozenset({"strict", "ignore", "replace"})
_FOLDED_METHODS = frozenset({"join", "format", "decode", "encode"})
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FIELD_NAME = re.compile(r"^\w*$")
_DIGITS = re.compile(r"\d+")

Value = str | bytes | int | float


class _NotConstant(Exception):
    """The expression depends on something only running the code would tell."""


def fold(node: ast.AST) -> str | bytes | None:
    """The string (or bytes) ``node`` evaluates to, or None if that needs running code."""
    try:
        value = _value(node, 0)
    except (_NotConstant, RecursionError):
        return None
    return value if isinstance(value, (str, bytes)) else None


def fold_chain(
    node: ast.BinOp | ast.JoinedStr,
) -> tuple[str | bytes | None, list[tuple[ast.expr, str | bytes]], list[ast.expr]]:
    """``a + b + c`` or an f-string, part by part: the whole value when every part folds;
    otherwise None, each run of two or more adjacent parts that folds (``x + "AK" + "IA..."``),
    with the node it starts at, and the parts that do not fold (to be looked into)."""
    parts: Sequence[ast.expr] = _add_operands(node) if isinstance(node, ast.BinOp) else node.values
    values = [_part_value(node, part) for part in parts]
    kinds = {type(v) for v in values}
    if None not in values and len(kinds) == 1:
        joined = _join_run([v for v in values if v is not None])
        if len(joined) <= MAX_LENGTH:
            return joined, [], []
    runs: list[tuple[ast.expr, str | bytes]] = []
    rest: list[ast.expr] = []
    run: list[tuple[ast.expr, str | bytes]] = []
    for part, value in zip(parts, values, strict=True):
        if value is None or (run and type(run[0][1]) is not type(value)):
            if len(run) >= 2:
                runs.append((run[0][0], _join_run([v for _, v in run])))
            run = []
        if value is None:
            rest.append(part)
        else:
            run.append((part, value))
    if len(run) >= 2:
        runs.append((run[0][0], _join_run([v for _, v in run])))
    return None, runs, rest


def is_chain(node: ast.AST) -> TypeGuard[ast.BinOp | ast.JoinedStr]:
    """Whether ``node`` is a ``+`` chain or an f-string (see :func:`fold_chain`)."""
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
    )


def may_fold_call(node: ast.Call) -> bool:
    """A cheap first test: whether ``node`` is a call :func:`fold` knows (join, format,
    decode, encode, ``str``/``bytes``)."""
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr in _FOLDED_METHODS
    return isinstance(func, ast.Name) and func.id in ("str", "bytes")


def _part_value(whole: ast.AST, part: ast.expr) -> str | bytes | None:
    try:
        if isinstance(whole, ast.JoinedStr):
            return _fstring_part(part, 0)
        value = _value(part, 0)
    except (_NotConstant, RecursionError):
        return None
    return value if isinstance(value, (str, bytes)) else None


def _join_run(values: list[str | bytes]) -> str | bytes:
    if isinstance(values[0], bytes):
        return b"".join(v for v in values if isinstance(v, bytes))
    return "".join(v for v in values if isinstance(v, str))


def _value(node: ast.AST, depth: int) -> Value:
    if depth > _MAX_DEPTH:
        raise _NotConstant
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, (str, bytes, int, float)) and not isinstance(value, bool):
            return value
        raise _NotConstant
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Add):
            return _concat([_value(part, depth + 1) for part in _add_operands(node)])
        if isinstance(node.op, ast.Mod):
            return _percent(node, depth)
        raise _NotConstant
    if isinstance(node, ast.JoinedStr):
        return _checked("".join(_fstring_part(part, depth) for part in node.values))
    if isinstance(node, ast.Call):
        return _call(node, depth)
    raise _NotConstant


def _add_operands(node: ast.BinOp) -> list[ast.expr]:
    """``a + b + c`` (nested to the left) as ``[a, b, c]``, without recursion."""
    operands: list[ast.expr] = []
    stack: list[ast.expr] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.BinOp) and isinstance(item.op, ast.Add):
            stack.append(item.right)
            stack.append(item.left)
        else:
            operands.append(item)
    return operands


def _concat(values: list[Value]) -> str | bytes:
    if all(isinstance(v, str) for v in values):
        return _checked("".join(v for v in values if isinstance(v, str)))
    if all(isinstance(v, bytes) for v in values):
        return _checked(b"".join(v for v in values if isinstance(v, bytes)))
    raise _NotConstant  # numbers: arithmetic, not a string


def _checked(value: str | bytes) -> str | bytes:
    if len(value) > MAX_LENGTH:
        raise _NotConstant
    return value


def _text(value: Value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise _NotConstant


def _check_widths(spec: str) -> None:
    if any(int(d) > _MAX_WIDTH for d in _DIGITS.findall(spec)):
        raise _NotConstant


def _percent(node: ast.BinOp, depth: int) -> str | bytes:
    template = _value(node.left, depth + 1)
    if not isinstance(template, (str, bytes)):
        raise _NotConstant
    for match in _PERCENT_SPEC.finditer(_text(template)):
        for size in match.groups():
            if size is not None and (size == "*" or int(size) > _MAX_WIDTH):
                raise _NotConstant
    right = node.right
    args: Value | tuple[Value, ...] | dict[str, Value]
    if isinstance(right, ast.Tuple):
        args = tuple(_value(item, depth + 1) for item in right.elts)
    elif isinstance(right, ast.Dict):
        args = {}
        for key, item in zip(right.keys, right.values, strict=True):
            name = _value(key, depth + 1) if key is not None else None
            if not isinstance(name, str):
                raise _NotConstant
            args[name] = _value(item, depth + 1)
    else:
        args = _value(right, depth + 1)
    try:
        return _checked(template % args)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise _NotConstant from exc


def _fstring_part(part: ast.expr, depth: int) -> str:
    if isinstance(part, ast.Constant) and isinstance(part.value, str):
        return part.value
    if not isinstance(part, ast.FormattedValue):
        raise _NotConstant
    value = _value(part.value, depth + 1)
    spec = ""
    if part.format_spec is not None:
        spec = _text(_value(part.format_spec, depth + 1))
        _check_widths(spec)
    converted: Value = value
    if part.conversion == ord("s"):
        converted = str(value)
    elif part.conversion == ord("r"):
        converted = repr(value)
    elif part.conversion == ord("a"):
        converted = ascii(value)
    try:
        return format(converted, spec)
    except (TypeError, ValueError) as exc:
        raise _NotConstant from exc


def _call(node: ast.Call, depth: int) -> Value:
    func = node.func
    if any(isinstance(arg, ast.Starred) for arg in node.args):
        raise _NotConstant
    if isinstance(func, ast.Attribute):
        if func.attr == "join" and len(node.args) == 1 and not node.keywords:
            return _join(_value(func.value, depth + 1), node.args[0], depth)
        if func.attr == "format":
            return _format(_value(func.value, depth + 1), node, depth)
        if func.attr in ("decode", "encode"):
            base = _value(func.value, depth + 1)
            return _codec(base, node, depth, encode=func.attr == "encode")
    elif isinstance(func, ast.Name) and func.id in ("str", "bytes") and node.args:
        base = _value(node.args[0], depth + 1)
        if func.id == "str" and len(node.args) == 1 and not node.keywords:
            if isinstance(base, str):
                return base
            raise _NotConstant  # str(b"x") is "b'x'": not what anyone hides a key in
        rest = ast.Call(func=func, args=node.args[1:], keywords=node.keywords)
        return _codec(base, rest, depth, encode=func.id == "bytes")
    raise _NotConstant


def _join(separator: Value, items: ast.expr, depth: int) -> str | bytes:
    parts: list[Value]
    if isinstance(items, (ast.List, ast.Tuple)):
        if any(isinstance(item, ast.Starred) for item in items.elts):
            raise _NotConstant
        parts = [_value(item, depth + 1) for item in items.elts]
    else:
        whole = _value(items, depth + 1)
        if not isinstance(whole, str):
            raise _NotConstant
        parts = list(whole)
    if isinstance(separator, str) and all(isinstance(p, str) for p in parts):
        return _checked(separator.join(p for p in parts if isinstance(p, str)))
    if isinstance(separator, bytes) and all(isinstance(p, bytes) for p in parts):
        return _checked(separator.join(p for p in parts if isinstance(p, bytes)))
    raise _NotConstant


def _format(template: Value, node: ast.Call, depth: int) -> str:
    if not isinstance(template, str):
        raise _NotConstant
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise _NotConstant from exc
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        # `{0.attr}` and `{0[key]}` reach into objects: only plain fields are folded
        if not _FIELD_NAME.match(name) or "{" in (spec or "") or conversion not in (None, "s"):
            raise _NotConstant
        _check_widths(spec or "")
    args = [_value(arg, depth + 1) for arg in node.args]
    kwargs: dict[str, Value] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise _NotConstant
        kwargs[keyword.arg] = _value(keyword.value, depth + 1)
    try:
        return str(_checked(template.format(*args, **kwargs)))
    except (IndexError, KeyError, ValueError, TypeError) as exc:
        raise _NotConstant from exc


def _codec(base: Value, node: ast.Call, depth: int, *, encode: bool) -> str | bytes:
    """``b.decode(...)`` / ``s.encode(...)`` with a plain text encoding (never base64 & co.)."""
    if encode != isinstance(base, str) or not isinstance(base, (str, bytes)):
        raise _NotConstant
    options = {"encoding": "utf-8", "errors": "strict"}
    names = ["encoding", "errors"]
    if len(node.args) > len(names):
        raise _NotConstant
    given = [(names[i], arg) for i, arg in enumerate(node.args)]
    given += [(k.arg or "", k.value) for k in node.keywords]
    for name, arg in given:
        value = _value(arg, depth + 1)
        if name not in options or not isinstance(value, str):
            raise _NotConstant
        options[name] = value.lower().replace("_", "-")
    if options["encoding"] not in _TEXT_ENCODINGS or options["errors"] not in _ERRORS:
        raise _NotConstant
    try:
        if isinstance(base, str):
            return base.encode(options["encoding"], options["errors"])
        return base.decode(options["encoding"], options["errors"])
    except (UnicodeError, LookupError) as exc:
        raise _NotConstant from exc
