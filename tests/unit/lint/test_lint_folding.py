"""Constant folding of string expressions (kiln.lint.folding): what it folds, what it leaves
alone, and the bounds that keep a hostile notebook from making the linter build huge strings."""

from __future__ import annotations

import ast

import pytest

from kiln.lint.folding import MAX_LENGTH, fold, fold_chain

# The values are harmless words: these tests are about folding, not about secrets.
FOLDS = {
    "plus": ('"AB" + "CD"', "ABCD"),
    "plus-chain": ('"A" + "B" + "C" + "D"', "ABCD"),
    "implicit": ('"AB" "CD"', "ABCD"),
    "implicit-lines": ('(\n    "AB"\n    "CD"\n)', "ABCD"),
    "hex-escape": ('"\\x41BCD"', "ABCD"),
    "unicode-escape": ('"\\u0041BCD"', "ABCD"),
    "octal-escape": ('"\\101BCD"', "ABCD"),
    "named-escape": ('"\\N{LATIN CAPITAL LETTER A}BCD"', "ABCD"),
    "raw-keeps-backslash": ('r"\\x41" "BC"', "\\x41BC"),
    "raw-and-normal": ('r"AB" "\\x43D"', "ABCD"),
    "join-list": ('"".join(["AB", "CD"])', "ABCD"),
    "join-tuple-separator": ('"-".join(("AB", "CD"))', "AB-CD"),
    "join-string": ('"-".join("ABC")', "A-B-C"),
    "fstring": ("f\"{'AB'}CD\"", "ABCD"),
    "fstring-spec": ("f\"{'AB':>4}|{'x'!r}\"", "  AB|'x'"),
    "percent": ('"AB%s" % "CD"', "ABCD"),
    "percent-tuple": ('"%s%s" % ("AB", "CD")', "ABCD"),
    "percent-dict": ('"%(a)s%(b)s" % {"a": "AB", "b": "CD"}', "ABCD"),
    "format": ('"AB{}".format("CD")', "ABCD"),
    "format-named": ('"{x}{y}".format(x="AB", y="CD")', "ABCD"),
    "bytes-decode": ('b"ABCD".decode()', "ABCD"),
    "bytes-concat-decode": ('(b"AB" + b"\\x43D").decode("ascii")', "ABCD"),
    "bytes-str-call": ('str(b"ABCD", "utf-8")', "ABCD"),
    "nested": ('"".join(["A" + "B", f"{\'C\'}D"])', "ABCD"),
}


@pytest.mark.parametrize(("source", "value"), FOLDS.values(), ids=FOLDS.keys())
def test_folds(source: str, value: str) -> None:
    assert fold(ast.parse(source, mode="eval").body) == value


def test_bytes_stay_bytes_until_decoded() -> None:
    assert fold(ast.parse('b"AB" + b"CD"', mode="eval").body) == b"ABCD"
    assert fold(ast.parse('"AB".encode()', mode="eval").body) == b"AB"


NOT_CONSTANT = {
    "name": 'prefix + "CD"',
    "call": 'get() + "CD"',
    "repeat": '"AB" * 3',
    "str-plus-bytes": '"AB" + b"CD"',
    "number-sum": "1 + 2",
    "attribute-field": '"{0.__class__}".format("x")',
    "index-field": '"{0[0]}".format("xy")',
    "starred-format": '"{}{}".format(*parts)',
    "base64": 'base64.b64decode("QUJDRA==").decode()',
    "base64-codec": 'b"QUJDRA==".decode("base64")',
    "rot13": 'codecs.decode("NOPQ", "rot13")',
    "hex": 'bytes.fromhex("41424344").decode()',
    "reversed": '"DCBA"[::-1]',
    "chr": '"".join(chr(c) for c in (65, 66))',
    "set-join": '"".join({"AB", "CD"})',
    "fstring-name": 'f"{prefix}CD"',
}


@pytest.mark.parametrize("source", NOT_CONSTANT.values(), ids=NOT_CONSTANT.keys())
def test_leaves_what_needs_running(source: str) -> None:
    assert fold(ast.parse(source, mode="eval").body) is None


@pytest.mark.parametrize(
    "source",
    [
        '"%1000000000s" % "x"',  # a width from the format string
        '"%*s" % (1000000000, "x")',  # a width from the arguments
        '"{:1000000000}".format("x")',
        "f\"{'x':>1000000000}\"",
        '"{:{}}".format("x", 1000000000)',  # a nested spec
    ],
)
def test_wide_fields_are_not_built(source: str) -> None:
    assert fold(ast.parse(source, mode="eval").body) is None


def test_results_are_bounded() -> None:
    piece = "x" * (MAX_LENGTH // 2 + 1)
    assert fold(ast.parse(f'"{piece}" + "{piece}"', mode="eval").body) is None


def test_a_long_chain_folds_without_recursion() -> None:
    source = " + ".join(['"ab"'] * 800)  # about as long as the parser takes
    assert fold(ast.parse(source, mode="eval").body) == "ab" * 800


def test_chain_runs_around_names() -> None:
    node = ast.parse('x + "AB" + "CD" + y + "E" + "F"', mode="eval").body
    assert isinstance(node, ast.BinOp)
    whole, runs, rest = fold_chain(node)
    assert whole is None
    assert [value for _, value in runs] == ["ABCD", "EF"]
    assert [ast.unparse(part) for part in rest] == ["x", "y"]
    start, _ = runs[0]
    assert (start.lineno, start.col_offset) == (1, 4)


def test_fstring_runs() -> None:
    node = ast.parse("f\"{name}AB{'CD'}\"", mode="eval").body
    assert isinstance(node, ast.JoinedStr)
    whole, runs, rest = fold_chain(node)
    assert whole is None and [v for _, v in runs] == ["ABCD"] and len(rest) == 1
