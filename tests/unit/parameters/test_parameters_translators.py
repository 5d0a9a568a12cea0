"""Translators write values as literals that read back exactly and never run code."""

from __future__ import annotations

import ast
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.errors import InvalidParameterName, NoTranslator, ParameterTypeError
from kiln.parameters import TRANSLATORS, Translator, get_translator
from kiln.parameters.translators import (
    BashTranslator,
    JuliaTranslator,
    PythonTranslator,
    RTranslator,
)

HOSTILE = [
    ("single-quote-escape", "'); import os #"),
    ("double-quote-escape", '"); import os #'),
    ("newline-statement", "\nimport os\n"),
    ("triple-quotes", "'''\"\"\"; x = 1"),
    ("backslash-end", "ends with \\"),
    ("backslashes", "C:\\temp\\new\\x41"),
    ("command-substitution", "$(touch pwned)"),
    ("backticks", "`touch pwned`"),
    ("variable", "$HOME ${PATH} $0"),
    ("bash-quote-break", "'; touch pwned; echo '"),
    ("crlf", "a\r\nb"),
    ("line-separators", "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg"),
    ("controls", "\x00\x01\x1b[31m\x7f"),
    ("bidi-override", "admin\u202e\u2066"),
    ("non-breaking-space", "a\u00a0b"),
    ("emoji", "snow ☃ 🎉 and 𝔘"),
    ("empty", ""),
    ("percent-format", "%s %(x)s {x} {0}"),
    ("brace-glob", "* ? [a] {a,b} ~ !! #"),
]
HOSTILE_IDS = [h[0] for h in HOSTILE]
HOSTILE_VALUES = [h[1] for h in HOSTILE]


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down; NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def run_python(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<injected-parameters>", "exec"), namespace)
    namespace.pop("__builtins__")
    return namespace


# -- the table ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "cls"),
    [
        ("python", PythonTranslator),
        ("python3", PythonTranslator),
        ("Python", PythonTranslator),
        ("ipython", PythonTranslator),
        ("R", RTranslator),
        ("r", RTranslator),
        ("bash", BashTranslator),
        ("sh", BashTranslator),
        ("julia", JuliaTranslator),
    ],
)
def test_get_translator_by_language(language: str, cls: type[Translator]) -> None:
    translator = get_translator(language)
    assert type(translator) is cls and isinstance(translator, Translator)


def test_translators_is_a_read_only_table() -> None:
    assert TRANSLATORS["python"] is PythonTranslator
    with pytest.raises(TypeError):
        TRANSLATORS["scala"] = PythonTranslator  # type: ignore[index]


def test_no_translator_names_language_and_supported_ones() -> None:
    with pytest.raises(NoTranslator) as info:
        get_translator("scala")
    assert str(info.value) == (
        "no parameter translator for kernel language 'scala'; "
        "supported languages: bash, ipython, julia, python, python3, r, sh"
    )
    assert info.value.exit_code == 2


# -- Python -------------------------------------------------------------------------------------


def test_python_render_layout() -> None:
    python = get_translator("python")
    assert python.render({"msg": "Hello"}) == '# Parameters\nmsg = "Hello"\n'
    assert python.render({}) == "# Parameters\n"
    assert python.render({"a": 1, "b": None}) == "# Parameters\na = 1\nb = None\n"


PYTHON_LITERALS = [
    ("int", 3, "3"),
    ("negative-int", -2, "-2"),
    ("big-int", 10**30, "1000000000000000000000000000000"),
    ("float", 0.1, "0.1"),
    ("float-exponent", 1e16, "1e+16"),
    ("negative-zero", -0.0, "-0.0"),
    ("inf", math.inf, 'float("inf")'),
    ("minus-inf", -math.inf, 'float("-inf")'),
    ("nan", math.nan, 'float("nan")'),
    ("true", True, "True"),
    ("false", False, "False"),
    ("none", None, "None"),
    ("str", "EU", '"EU"'),
    ("str-quote", 'say "hi"', '"say \\"hi\\""'),
    ("str-single-quote", "it's", '"it\'s"'),
    ("str-newline", "a\nb", '"a\\nb"'),
    ("str-tab-cr", "\t\r", '"\\t\\r"'),
    ("str-backslash", "a\\b", '"a\\\\b"'),
    ("str-nul", "\x00", '"\\x00"'),
    ("str-line-separator", "\u2028", '"\\u2028"'),
    ("str-astral-non-printable", "\U000e0001", '"\\U000e0001"'),
    ("str-surrogate", "\ud800", '"\\ud800"'),
    ("str-printable-unicode", "é☃", '"é☃"'),
    ("list", [1, "a", [None]], '[1, "a", [None]]'),
    ("tuple", (1, 2), "[1, 2]"),
    ("dict", {"a": {"b": [True]}}, '{"a": {"b": [True]}}'),
    ("empty-containers", [[], {}], "[[], {}]"),
]


@pytest.mark.parametrize(
    ("value", "literal"), [c[1:] for c in PYTHON_LITERALS], ids=[c[0] for c in PYTHON_LITERALS]
)
def test_python_literals(value: Any, literal: str) -> None:
    assert PythonTranslator().literal(value) == literal


@given(st.text())
@settings(max_examples=500)
def test_python_str_literal_round_trips_any_text(text: str) -> None:
    literal = PythonTranslator().literal(text)
    assert ast.literal_eval(literal) == text
    assert len(literal.splitlines()) == 1 and "\n" not in literal
    assert literal.isprintable() or set(literal) <= {" "}  # nothing invisible in the cell


@given(st.text(st.characters(exclude_categories=())))  # surrogates included
@settings(max_examples=300)
def test_python_str_literal_round_trips_with_surrogates(text: str) -> None:
    literal = PythonTranslator().literal(text)
    literal.encode("utf-8")  # writable into the notebook file
    assert ast.literal_eval(literal) == text


plain_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(plain_data)
@settings(max_examples=300)
def test_python_render_round_trips_plain_data(value: Any) -> None:
    source = PythonTranslator().render({"x": value})
    assert same(run_python(source), {"x": value})


@pytest.mark.parametrize("hostile", HOSTILE_VALUES, ids=HOSTILE_IDS)
def test_python_hostile_string_is_only_data(
    hostile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = PythonTranslator().render({"x": hostile, "y": [hostile, {hostile: hostile}]})
    tree = ast.parse(source)
    assert [type(node) for node in tree.body] == [ast.Assign, ast.Assign]
    assert run_python(source) == {"x": hostile, "y": [hostile, {hostile: hostile}]}
    assert list(tmp_path.iterdir()) == []
    assert len(source.splitlines()) == 3


def test_python_refuses_what_is_not_plain_data() -> None:
    with pytest.raises(ParameterTypeError, match=r"cannot write \{1, 2\} as a python literal"):
        PythonTranslator().literal({1, 2})
    with pytest.raises(ParameterTypeError):
        PythonTranslator().literal([object()])


@pytest.mark.parametrize("name", ["__import__", "class", "1x", "a-b"])
@pytest.mark.parametrize("language", ["python", "R", "bash", "julia"])
def test_every_translator_refuses_bad_names(language: str, name: str) -> None:
    with pytest.raises(InvalidParameterName):
        get_translator(language).render({name: 1})


# -- bash, run by a real bash ---------------------------------------------------------------------

BASH = shutil.which("bash")
requires_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def run_bash(source: str, script: str, cwd: Path | None = None) -> bytes:
    assert BASH is not None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", source + script],
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    return done.stdout


def bash_value(source: str, name: str) -> str:
    return run_bash(source, f'printf %s "${name}"').decode("utf-8")


def test_bash_render_layout() -> None:
    bash = get_translator("bash")
    rendered = bash.render({"msg": "Hello", "n": 3, "x": 1.5, "ok": True, "none": None})
    assert rendered == "# Parameters\nmsg='Hello'\nn=3\nx=1.5\nok=true\nnone=''\n"
    assert bash.render({"xs": ["a", 1], "d": {"k": "v"}}) == (
        "# Parameters\nxs=('a' 1)\nunset -v d\ndeclare -A d=(['k']='v')\n"
    )


BASH_HOSTILE = [(i, v.replace("\x00", "")) for i, v in HOSTILE]  # NUL: refused, tested below


@requires_bash
@pytest.mark.parametrize("hostile", [h[1] for h in BASH_HOSTILE], ids=[h[0] for h in BASH_HOSTILE])
def test_bash_hostile_string_reads_back_and_runs_nothing(hostile: str, tmp_path: Path) -> None:
    source = BashTranslator().render({"x": hostile})
    assert run_bash(source, 'printf %s "$x"', cwd=tmp_path).decode() == hostile
    assert list(tmp_path.iterdir()) == []


@requires_bash
@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00")))
@settings(max_examples=100, deadline=None)
def test_bash_str_round_trips_any_text(text: str) -> None:
    assert bash_value(BashTranslator().render({"x": text}), "x") == text


@requires_bash
@pytest.mark.parametrize(
    ("value", "printed"),
    [(3, "3"), (-2.5, "-2.5"), (True, "true"), (False, "false"), (None, ""), (math.inf, "inf")],
    ids=["int", "float", "true", "false", "none", "inf"],
)
def test_bash_scalars(value: Any, printed: str) -> None:
    assert bash_value(BashTranslator().render({"x": value}), "x") == printed


@requires_bash
def test_bash_list_becomes_an_array() -> None:
    items = ["a b", "$(touch x)", "it's", "\n", 1, True, None, [1, "x"], {"k": 2}]
    source = BashTranslator().render({"xs": items})
    out = run_bash(source, 'printf "%s\\0" "${xs[@]}"').decode()
    assert out.split("\0")[:-1] == [
        "a b",
        "$(touch x)",
        "it's",
        "\n",
        "1",
        "true",
        "",
        '[1, "x"]',
        '{"k": 2}',
    ]


@requires_bash
def test_bash_dict_becomes_an_associative_array() -> None:
    value = {"k": "v", "a]b": "$(x)", "it's": "\n", "*": "1", "@": "2", " ": "3"}
    source = "xs=(1 2)\n" + BashTranslator().render({"xs": value})  # replaces an indexed array
    out = run_bash(source, 'for k in "${!xs[@]}"; do printf "%s\\0%s\\0" "$k" "${xs[$k]}"; done')
    parts = out.decode().split("\0")[:-1]
    assert dict(zip(parts[::2], parts[1::2], strict=True)) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\x00b", "cannot hold NUL"),
        ("\ud800", "surrogates"),
        ({"": 1}, "empty key"),
    ],
    ids=["nul", "surrogate", "empty-key"],
)
def test_bash_refuses_what_it_cannot_hold(value: Any, message: str) -> None:
    with pytest.raises(ParameterTypeError, match=message):
        BashTranslator().render({"x": value})


def test_bash_refuses_non_ascii_names() -> None:
    with pytest.raises(InvalidParameterName, match="for bash"):
        BashTranslator().render({"café": 1})


# -- R and Julia (no interpreter here: golden text) -----------------------------------------------


def test_r_render() -> None:
    values = {
        "s": 'say "hi"\\\n\t\u2028\U000e0001é🎉',
        "n": 3,
        "x": 0.5,
        "special": [math.inf, -math.inf, math.nan],
        "flag": True,
        "off": False,
        "none": None,
        "xs": [1, "a"],
        "d": {"key": 1, "odd name": {"in": None}},
        "_hidden": 1,
        "function": 2,
    }
    assert get_translator("R").render(values) == (
        "# Parameters\n"
        's = "say \\"hi\\"\\\\\\n\\t\\u{2028}\\U{000e0001}é🎉"\n'
        "n = 3\n"
        "x = 0.5\n"
        "special = list(Inf, -Inf, NaN)\n"
        "flag = TRUE\n"
        "off = FALSE\n"
        "none = NULL\n"
        'xs = list(1, "a")\n'
        'd = list("key" = 1, "odd name" = list("in" = NULL))\n'
        "`_hidden` = 1\n"
        "`function` = 2\n"
    )


@pytest.mark.parametrize("value", ["a\x00", "\udc00"], ids=["nul", "surrogate"])
def test_r_refuses_nul_and_surrogates(value: str) -> None:
    with pytest.raises(ParameterTypeError, match="R strings"):
        RTranslator().literal(value)


def test_julia_render() -> None:
    values = {
        "s": 'cost: $5 "x"\\\n\x00\U000e0001🎉',
        "n": 3,
        "x": [1.5, math.inf, -math.inf, math.nan],
        "flag": False,
        "none": None,
        "d": {"k": [True]},
        "empty": {},
    }
    assert get_translator("julia").render(values) == (
        "# Parameters\n"
        's = "cost: \\$5 \\"x\\"\\\\\\n\\u0000\\U000e0001🎉"\n'
        "n = 3\n"
        "x = [1.5, Inf, -Inf, NaN]\n"
        "flag = false\n"
        "none = nothing\n"
        'd = Dict{String, Any}("k" => [true])\n'
        "empty = Dict{String, Any}()\n"
    )


def test_julia_refuses_julia_keywords() -> None:
    with pytest.raises(InvalidParameterName, match="Julia keyword"):
        JuliaTranslator().render({"end": 1})


def test_comment_prefixes_every_line() -> None:
    assert PythonTranslator().comment("Parameters") == "# Parameters"
    assert PythonTranslator().comment("a\nb\u2028c") == "# a\n# b\n# c"
