"""Coercing ``-p`` text, checking values against the schema, reading YAML values."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import pytest
from nbformat import NotebookNode

from kiln.errors import (
    InvalidParameterName,
    MissingParameter,
    ParameterError,
    ParameterTypeError,
    UnknownParameter,
)
from kiln.parameters import (
    CliValue,
    Parameter,
    ParameterSchema,
    coerce_cli_value,
    infer_schema,
    load_yaml_values,
    resolve_parameters,
)

NotebookFactory = Callable[..., NotebookNode]  # the `notebook` fixture (conftest.py)


def param(
    ptype: str, *, optional: bool = False, name: str = "p", annotated: bool = True
) -> Parameter:
    return Parameter(
        name=name,
        type=ptype,
        default=None,
        default_source=None,
        optional=optional,
        required=False,
        help="",
        annotation=ptype if annotated else None,
        line=1,
    )


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 != 1.0 != True here); NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- coerce_cli_value ---------------------------------------------------------------------------

COERCE = [
    # (id, type, optional, text, expected)
    ("unknown-int", None, False, "3", 3),
    ("unknown-negative-int", None, False, "-2", -2),
    ("unknown-float", None, False, "1.5", 1.5),
    ("unknown-exponent", None, False, "1e-3", 1e-3),
    ("unknown-True", None, False, "True", True),
    ("unknown-false", None, False, "false", False),
    ("unknown-None", None, False, "None", None),
    ("unknown-null", None, False, "null", None),
    ("unknown-text", None, False, "EU", "EU"),
    ("unknown-date-stays-text", None, False, "2024-01-01", "2024-01-01"),
    ("unknown-list-text-stays-text", None, False, "[1, 2]", "[1, 2]"),
    ("unknown-padded-number-stays-text", None, False, " 3", " 3"),
    ("any-int", "any", False, "7", 7),
    ("int", "int", False, "3", 3),
    ("int-negative", "int", False, "-2", -2),
    ("int-underscores", "int", False, "1_000", 1000),
    ("int-optional-None", "int", True, "None", None),
    ("int-optional-null", "int", True, "null", None),
    ("float", "float", False, "2.5", 2.5),
    ("float-from-int-text", "float", False, "1", 1.0),
    ("float-exponent", "float", False, "1e-3", 1e-3),
    ("float-inf", "float", False, "inf", math.inf),
    ("float-nan", "float", False, "nan", math.nan),
    ("float-optional-None", "float", True, "None", None),
    ("bool-true", "bool", False, "true", True),
    ("bool-True", "bool", False, "True", True),
    ("bool-YES", "bool", False, "YES", True),
    ("bool-on", "bool", False, "on", True),
    ("bool-1", "bool", False, "1", True),
    ("bool-false", "bool", False, "false", False),
    ("bool-no", "bool", False, "no", False),
    ("bool-Off", "bool", False, "Off", False),
    ("bool-0", "bool", False, "0", False),
    ("bool-optional-null", "bool", True, "null", None),
    ("str", "str", False, "EU", "EU"),
    ("str-number-stays-text", "str", False, "3", "3"),
    ("str-None-stays-text", "str", True, "None", "None"),
    ("str-empty", "str", False, "", ""),
    ("str-hostile", "str", False, "'); import os #", "'); import os #"),
    ("list-flow", "list", False, "[1, 2]", [1, 2]),
    ("list-of-str", "list", False, "[a, 'b c']", ["a", "b c"]),
    ("list-dates-stay-text", "list", False, "[2024-01-01]", ["2024-01-01"]),
    ("list-empty", "list", False, "[]", []),
    ("list-optional-null", "list", True, "null", None),
    ("dict-json", "dict", False, '{"a": 1}', {"a": 1}),
    ("dict-flow", "dict", False, "{a: [1, x]}", {"a": [1, "x"]}),
    ("dict-empty", "dict", False, "{}", {}),
]


@pytest.mark.parametrize(
    ("ptype", "optional", "text", "expected"),
    [c[1:] for c in COERCE],
    ids=[c[0] for c in COERCE],
)
def test_coerce_cli_value(ptype: str | None, optional: bool, text: str, expected: Any) -> None:
    target = None if ptype is None else param(ptype, optional=optional)
    assert same(coerce_cli_value(target, text), expected)


COERCE_ERRORS = [
    # (id, type, optional, text, message part)
    ("int-from-float", "int", False, "3.5", "expects int, got '3.5'"),
    ("int-from-word", "int", False, "abc", "expects int, got 'abc'"),
    ("int-empty", "int", False, "", "expects int, got ''"),
    ("int-None-not-optional", "int", False, "None", "expects int, got 'None'"),
    ("float-from-word", "float", False, "abc", "expects float, got 'abc'"),
    ("float-optional-says-so", "float", True, "x", "expects float or None, got 'x'"),
    ("bool-from-word", "bool", False, "maybe", "accepted: true/false, yes/no, on/off, 1/0"),
    ("bool-from-2", "bool", False, "2", "expects bool, got '2'"),
    ("list-from-scalar", "list", False, "a", "expects list, got 'a' (YAML flow style"),
    ("list-from-dict", "list", False, "{a: 1}", "expects list"),
    ("list-bad-yaml", "list", False, "[1, 2", "expects list, got '[1, 2'"),
    ("list-null-not-optional", "list", False, "null", "expects list"),
    ("dict-from-list", "dict", False, "[1]", "expects dict, got '[1]' (YAML flow style"),
]


@pytest.mark.parametrize(
    ("ptype", "optional", "text", "message"),
    [c[1:] for c in COERCE_ERRORS],
    ids=[c[0] for c in COERCE_ERRORS],
)
def test_coerce_cli_value_errors(ptype: str, optional: bool, text: str, message: str) -> None:
    with pytest.raises(ParameterTypeError) as info:
        coerce_cli_value(param(ptype, optional=optional, name="n"), text)
    assert message in str(info.value)
    assert str(info.value).startswith("parameter 'n' expects")
    assert (info.value.name, info.value.expected) == ("n", ptype)


def test_coerce_names_notebook_when_given() -> None:
    with pytest.raises(ParameterTypeError, match=r"^parameter 'n' of r\.ipynb expects int"):
        coerce_cli_value(param("int", name="n"), "x", notebook="r.ipynb")


def test_coerce_refuses_yaml_that_is_not_plain_data() -> None:
    with pytest.raises(ParameterTypeError, match="is a bytes"):
        coerce_cli_value(param("list"), "[!!binary aGk=]")


# -- resolve_parameters -------------------------------------------------------------------------

CELL = "date: str  # run date\nregion = 'EU'\nn = 3\nratio: float = 0.5\nopt: int | None = None\n"
CELL += "flag = False\nxs = [1]\nconf = {}\nanything = None\nday = today()\ncount: int = 3"


@pytest.fixture
def schema(notebook: NotebookFactory) -> ParameterSchema:
    return infer_schema(notebook(CELL))


def resolve(schema: ParameterSchema, values: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return resolve_parameters(schema, {"date": "2024-01-01", **values}, **kwargs)


def test_resolve_returns_coerced_values_in_given_order(schema: ParameterSchema) -> None:
    values = {
        "n": CliValue("5"),
        "ratio": 2,
        "region": CliValue("US"),
        "flag": CliValue("yes"),
        "xs": (1, (2, 3)),
        "conf": CliValue("{a: 1}"),
        "opt": None,
        "date": CliValue("2024-01-01"),
    }
    got = resolve_parameters(schema, values, notebook="report.ipynb")
    assert list(got) == list(values)
    expected = {
        "n": 5,
        "ratio": 2.0,
        "region": "US",
        "flag": True,
        "xs": [1, [2, 3]],
        "conf": {"a": 1},
        "opt": None,
        "date": "2024-01-01",
    }
    assert same(got, expected)


ACCEPTED = [
    ("int", "n", 4, 4),
    ("float-from-int", "ratio", 1, 1.0),
    ("float-nan", "ratio", math.nan, math.nan),
    ("float-inf", "ratio", -math.inf, -math.inf),
    ("optional-None", "opt", None, None),
    ("optional-int", "opt", 2, 2),
    ("bool", "flag", True, True),
    ("str", "region", "", ""),
    ("list", "xs", [], []),
    ("tuple-to-list", "xs", ("a",), ["a"]),
    ("dict", "conf", {"k": [None, 1.5]}, {"k": [None, 1.5]}),
    ("any-dict", "anything", {"k": 1}, {"k": 1}),
    ("any-None", "anything", None, None),
    ("non-literal-default-any", "day", "2024-02-02", "2024-02-02"),
]


@pytest.mark.parametrize(
    ("name", "value", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_resolve_accepts(schema: ParameterSchema, name: str, value: Any, expected: Any) -> None:
    assert same(resolve(schema, {name: value})[name], expected)


REFUSED = [
    ("int-from-str", "n", "abc", "parameter 'n' of report.ipynb expects int, got str 'abc'"),
    ("int-from-bool", "n", True, "expects int, got bool True"),
    ("annotated-int-from-float", "count", 3.0, "expects int, got float 3.0"),
    ("int-None", "n", None, "expects int, got None (the parameter is not optional)"),
    ("float-from-str", "ratio", "0.5", "expects float, got str '0.5'"),
    ("float-from-bool", "ratio", False, "expects float, got bool False"),
    ("float-too-large", "ratio", 10**400, "too large for a float"),
    ("optional-from-str", "opt", "x", "expects int or None, got str 'x'"),
    ("bool-from-int", "flag", 1, "expects bool, got int 1"),
    ("bool-from-str", "flag", "true", "expects bool, got str 'true'"),
    ("str-from-int", "region", 3, "expects str, got int 3"),
    ("list-from-str", "xs", "[1]", "expects list, got str '[1]'"),
    ("list-from-dict", "xs", {}, "expects list, got dict {}"),
    ("dict-from-list", "conf", [], "expects dict, got list []"),
    ("long-value-shortened", "n", "x" * 200, "got str 'xxxxxxxx"),
]


@pytest.mark.parametrize(
    ("name", "value", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_resolve_refuses_wrong_type(
    schema: ParameterSchema, name: str, value: Any, message: str
) -> None:
    with pytest.raises(ParameterTypeError) as info:
        resolve(schema, {name: value}, notebook="report.ipynb")
    assert message in str(info.value)
    assert info.value.name == name and info.value.notebook == "report.ipynb"
    assert len(str(info.value)) < 200


class Color(enum.IntEnum):
    RED = 1


NOT_PLAIN = [
    ("object", object(), "is a object"),
    ("set", {1}, "is a set"),
    ("bytes", b"x", "is a bytes"),
    ("int-subclass", Color.RED, "Color"),
    ("nested-set", [1, {"a": {2}}], "value[1]['a'] is a set"),
    ("int-key", {1: "a"}, "non-string key 1"),
]


@pytest.mark.parametrize(
    ("value", "message"), [c[1:] for c in NOT_PLAIN], ids=[c[0] for c in NOT_PLAIN]
)
def test_resolve_refuses_values_that_are_not_plain_data(
    schema: ParameterSchema, value: Any, message: str
) -> None:
    with pytest.raises(ParameterTypeError) as info:
        resolve(schema, {"anything": value}, notebook="report.ipynb")
    assert message in str(info.value) and "plain data" in str(info.value)
    assert "'anything' of report.ipynb" in str(info.value)


def test_resolve_refuses_a_list_that_contains_itself(schema: ParameterSchema) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ParameterTypeError, match="contains itself"):
        resolve(schema, {"xs": loop})


def test_same_object_twice_is_not_a_loop(schema: ParameterSchema) -> None:
    shared = [1]
    assert resolve(schema, {"xs": [shared, shared]})["xs"] == [[1], [1]]


def test_unknown_parameter_names_known_ones_and_suggests(schema: ParameterSchema) -> None:
    with pytest.raises(UnknownParameter) as info:
        resolve(schema, {"regoin": "EU"}, notebook="report.ipynb")
    assert str(info.value) == (
        "unknown parameter 'regoin' for notebook report.ipynb; known parameters: date, region, "
        "n, ratio, opt, flag, xs, conf, anything, day, count (did you mean 'region'?)"
    )
    assert info.value.name == "regoin" and info.value.notebook == "report.ipynb"


def test_unknown_parameter_without_close_match(schema: ParameterSchema) -> None:
    with pytest.raises(UnknownParameter) as info:
        resolve(schema, {"zzz": 1})
    assert "did you mean" not in str(info.value)
    assert str(info.value).startswith("unknown parameter 'zzz'; known parameters: date,")


def test_unknown_parameter_in_empty_parameters_cell(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook("# nothing yet"))
    with pytest.raises(UnknownParameter, match="known parameters: none"):
        resolve_parameters(schema, {"x": 1})


def test_allow_unknown_passes_values_through_inferred(schema: ParameterSchema) -> None:
    got = resolve(schema, {"extra": CliValue("2"), "other": {"a": 1}}, allow_unknown=True)
    assert got == {"date": "2024-01-01", "extra": 2, "other": {"a": 1}}


def test_no_parameters_cell_takes_any_name(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook(None))
    got = resolve_parameters(schema, {"x": CliValue("1.5"), "y": CliValue("EU")})
    assert got == {"x": 1.5, "y": "EU"}


def test_invalid_name_is_refused_before_anything_else(schema: ParameterSchema) -> None:
    with pytest.raises(InvalidParameterName, match=r"'__import__' for report\.ipynb"):
        resolve(schema, {"__import__": 1}, allow_unknown=True, notebook="report.ipynb")


def test_missing_required_parameter(schema: ParameterSchema) -> None:
    with pytest.raises(MissingParameter) as info:
        resolve_parameters(schema, {"n": 1}, notebook="report.ipynb")
    assert str(info.value) == (
        "missing required parameter 'date' (str) for report.ipynb; pass it with -p date VALUE"
    )
    assert (info.value.name, info.value.expected) == ("date", "str")
    assert info.value.exit_code == 2


def test_missing_several_required_parameters(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook("a: int\nb: str\nc = 1"))
    with pytest.raises(MissingParameter) as info:
        resolve_parameters(schema, {})
    assert str(info.value) == (
        "missing required parameters 'a' (int), 'b' (str); pass them with -p a VALUE -p b VALUE"
    )


def test_unknown_is_reported_before_missing(schema: ParameterSchema) -> None:
    # A typo in a required name explains the missing one: show the typo first.
    with pytest.raises(UnknownParameter, match="did you mean 'date'"):
        resolve_parameters(schema, {"data": "2024-01-01"})


def test_resolve_does_not_change_the_input(schema: ParameterSchema) -> None:
    values = {"date": "d", "xs": (1, 2)}
    resolve_parameters(schema, values)
    assert values == {"date": "d", "xs": (1, 2)}


# -- load_yaml_values ---------------------------------------------------------------------------


def test_yaml_values_keep_dates_as_text() -> None:
    text = "date: 2024-01-01\nwhen: 2024-01-01 10:00:00\ntagged: !!timestamp 2024-01-02\nn: 3"
    assert load_yaml_values(text, origin="-y") == {
        "date": "2024-01-01",
        "when": "2024-01-01 10:00:00",
        "tagged": "2024-01-02",
        "n": 3,
    }


def test_yaml_values_types() -> None:
    text = "a: 1.5\nb: true\nc: null\nd: [1, x]\ne: {k: v}\nf: .inf\ng: 'quoted'"
    got = load_yaml_values(text, origin="params.yaml")
    assert same(got, {"a": 1.5, "b": True, "c": None, "d": [1, "x"], "e": {"k": "v"},
                      "f": math.inf, "g": "quoted"})  # fmt: skip


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "null"], ids=["empty", "comment", "null"]
)
def test_empty_yaml_is_no_values(text: str) -> None:
    assert load_yaml_values(text, origin="-y") == {}


YAML_ERRORS = [
    ("unclosed-flow", "a: 1\nb: [1, 2\n", "params.yaml:3:1: invalid YAML"),
    ("bad-indent", "a: 1\n b: 2\n", "params.yaml:2:3: invalid YAML"),
    ("tab", "a:\n\t- 1\n", "params.yaml:2:1: invalid YAML"),
    ("two-documents", "a: 1\n---\nb: 2\n", "params.yaml:2:1: invalid YAML"),
    ("python-tag", "a: !!python/object:os.system x\n", "params.yaml:1:4: invalid YAML"),
    ("list", "- 1\n- 2\n", "params.yaml: expected a mapping of parameter names to values"),
    ("scalar", "hello\n", "got a YAML str"),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in YAML_ERRORS], ids=[c[0] for c in YAML_ERRORS]
)
def test_yaml_errors_name_origin_and_position(text: str, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        load_yaml_values(text, origin="params.yaml")
    assert message in str(info.value)
    assert info.value.exit_code == 2


YAML_BAD_KEYS = [
    ("invalid-name", "1x: 2", "params.yaml: invalid parameter name '1x'"),
    ("keyword", "class: 2", "params.yaml: invalid parameter name 'class'"),
    ("dunder", "__import__: 2", "params.yaml: invalid parameter name '__import__'"),
    ("int-key", "1: 2", "params.yaml: parameter name 1 is not a string"),
    ("yaml-bool-key", "on: 2", "quote the name"),
    ("date-key", "2024-01-01: 2", "invalid parameter name '2024-01-01'"),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in YAML_BAD_KEYS], ids=[c[0] for c in YAML_BAD_KEYS]
)
def test_yaml_keys_are_validated(text: str, message: str) -> None:
    with pytest.raises(InvalidParameterName) as info:
        load_yaml_values(text, origin="params.yaml")
    assert message in str(info.value)


def test_yaml_values_must_be_plain_data() -> None:
    with pytest.raises(ParameterTypeError, match="parameter 'a' of -y: the value is a bytes"):
        load_yaml_values("a: !!binary aGk=", origin="-y")


def test_yaml_then_resolve(schema: ParameterSchema) -> None:
    values = load_yaml_values("date: 2024-01-01\nratio: 1\nxs: [a]", origin="-f p.yaml")
    assert same(
        resolve_parameters(schema, values),
        {"date": "2024-01-01", "ratio": 1.0, "xs": ["a"]},
    )


def test_an_int_only_inferred_from_its_default_takes_a_float_with_a_notice(
    schema: ParameterSchema,
) -> None:
    notices: list[str] = []
    values = resolve(
        schema, {"n": CliValue("0.5"), "ratio": 1}, notebook="nb.ipynb", notices=notices
    )
    assert same(values["n"], 0.5) and same(values["ratio"], 1.0)
    (notice,) = notices
    assert "parameter 'n' of nb.ipynb" in notice and "'n: float'" in notice
    again: list[str] = []
    assert same(resolve(schema, {"n": 2.5}, notices=again)["n"], 2.5) and len(again) == 1
    with pytest.raises(ParameterTypeError, match=r"expects int, got '0\.5'"):
        resolve(schema, {"count": CliValue("0.5")})
    with pytest.raises(ParameterTypeError, match="expects int, got 'abc'"):
        resolve(schema, {"n": CliValue("abc")})
