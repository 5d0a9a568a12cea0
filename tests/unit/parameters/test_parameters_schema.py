"""Schema inference from the ``parameters`` cell, names, and the schema's JSON form."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from typing import Any

import nbformat
import pytest
from nbformat import NotebookNode

from kiln.errors import InvalidParameterName, ParameterError
from kiln.parameters import MISSING, Parameter, ParameterSchema, infer_schema, validate_name

NotebookFactory = Callable[..., NotebookNode]  # the `notebook` fixture (conftest.py)


def one(notebook: NotebookFactory, source: str, **kwargs: Any) -> Parameter:
    schema = infer_schema(notebook(source, **kwargs))
    assert len(schema.parameters) == 1, schema.parameters
    return schema.parameters[0]


# -- literal defaults ---------------------------------------------------------------------------

LITERALS = [
    ("int", "n = 3", "int", 3),
    ("negative-int", "n = -2", "int", -2),
    ("float", "x = 0.5", "float", 0.5),
    ("negative-float", "x = -1e-3", "float", -1e-3),
    ("bool-true", "flag = True", "bool", True),
    ("bool-false", "flag = False", "bool", False),
    ("str-single", "region = 'EU'", "str", "EU"),
    ("str-double", 'region = "EU"', "str", "EU"),
    ("str-triple", 'text = """a\nb"""', "str", "a\nb"),
    ("list", "xs = [1, 'a']", "list", [1, "a"]),
    ("tuple-as-list", "shape = (3, 4)", "list", [3, 4]),
    ("nested-tuple", "pts = [(1, 2), (3, 4)]", "list", [[1, 2], [3, 4]]),
    ("dict", "opts = {'a': 1, 'b': [True]}", "dict", {"a": 1, "b": [True]}),
]


@pytest.mark.parametrize(
    ("source", "ptype", "default"), [c[1:] for c in LITERALS], ids=[c[0] for c in LITERALS]
)
def test_literal_default_gives_type_and_value(
    notebook: NotebookFactory, source: str, ptype: str, default: Any
) -> None:
    param = one(notebook, source)
    assert (param.type, param.default) == (ptype, default)
    assert type(param.default) is type(default)
    assert param.default_source == source.split(" = ", 1)[1]
    assert not param.required and not param.optional
    assert param.annotation is None and param.line == 1


def test_none_default_is_optional_any(notebook: NotebookFactory) -> None:
    param = one(notebook, "out = None")
    assert (param.type, param.default, param.optional, param.default_source) == (
        "any",
        None,
        True,
        "None",
    )


@pytest.mark.parametrize(
    "source", ["xs = {1, 2}", "b = b'raw'", "z = 1+2j"], ids=["set", "bytes", "complex"]
)
def test_other_literals_are_type_any(notebook: NotebookFactory, source: str) -> None:
    param = one(notebook, source)
    assert param.type == "any"
    assert param.to_json()["default"] is None  # not JSON: consumers read default_source
    assert param.to_json()["default_source"] == source.split(" = ", 1)[1]


# -- annotations --------------------------------------------------------------------------------

ANNOTATED = [
    ("int", "n: int = 3", "int", False),
    ("float-with-int-default", "x: float = 1", "float", False),
    ("str", "s: str = 'a'", "str", False),
    ("bool", "b: bool = False", "bool", False),
    ("list", "xs: list = []", "list", False),
    ("list-of-int", "xs: list[int] = [1]", "list", False),
    ("typing-List", "xs: List[str] = []", "list", False),
    ("typing-dot-List", "xs: typing.List[str] = []", "list", False),
    ("Sequence", "xs: Sequence[int] = ()", "list", False),
    ("dict", "d: dict = {}", "dict", False),
    ("dict-generic", "d: dict[str, int] = {}", "dict", False),
    ("typing-Dict", "d: Dict[str, Any] = {}", "dict", False),
    ("Optional", "n: Optional[int] = 3", "int", True),
    ("typing-dot-Optional", "n: typing.Optional[int] = 3", "int", True),
    ("Union-with-None", "n: Union[int, None] = 3", "int", True),
    ("pipe-None", "n: int | None = 3", "int", True),
    ("None-pipe", "n: None | str = 'a'", "str", True),
    ("Optional-list", "xs: Optional[list[int]] = None", "list", True),
    ("int-or-float", "x: int | float = 1", "float", False),
    ("Union-of-two", "x: Union[int, str] = 1", "any", False),
    ("Any", "x: Any = 1", "any", False),
    ("unknown-class", "x: pd.Timestamp = 1", "any", False),
    ("string-annotation", "x: 'int | None' = 1", "int", True),
    ("Annotated", "x: Annotated[int, 'help'] = 1", "int", False),
    ("Literal", "x: Literal['a', 'b'] = 'a'", "str", False),
    ("int-default-None", "n: int = None", "int", True),
]


@pytest.mark.parametrize(
    ("source", "ptype", "optional"), [c[1:] for c in ANNOTATED], ids=[c[0] for c in ANNOTATED]
)
def test_annotation_gives_type(
    notebook: NotebookFactory, source: str, ptype: str, optional: bool
) -> None:
    param = one(notebook, source)
    assert (param.type, param.optional, param.required) == (ptype, optional, False)
    assert param.annotation == source.split(": ", 1)[1].split(" = ")[0]


def test_annotation_without_value_is_required(notebook: NotebookFactory) -> None:
    param = one(notebook, "region: str")
    assert param.required and param.default is MISSING and param.default_source is None
    assert (param.type, param.annotation) == ("str", "str")
    assert param.to_json()["default"] is None and param.to_json()["required"] is True


def test_required_optional_is_still_required(notebook: NotebookFactory) -> None:
    param = one(notebook, "limit: Optional[int]")
    assert param.required and param.optional and param.type == "int"


# -- non-literal defaults, multiple targets, ignored statements -----------------------------------


def test_expression_default_is_kept_as_text_not_run(notebook: NotebookFactory) -> None:
    param = one(notebook, "day = datetime.date.today()  # run date")
    assert param.default is None and param.default_source == "datetime.date.today()"
    assert (param.type, param.required, param.help) == ("any", False, "run date")


def test_expression_default_keeps_annotated_type(notebook: NotebookFactory) -> None:
    param = one(notebook, "n: int = len(sys.argv)")
    assert (param.type, param.default, param.default_source) == ("int", None, "len(sys.argv)")


def test_cell_is_never_executed(notebook: NotebookFactory, tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    source = f"x = open({str(marker)!r}, 'w').write('x')\nimport os; os.remove('/nonexistent')"
    infer_schema(notebook(source))
    assert not marker.exists()


def test_chained_and_tuple_assignments(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook("a = b = 1\nc, (d, e) = 'x', (2.5, None)\nf, g = pair()"))
    got = {p.name: (p.type, p.default) for p in schema}
    assert got == {
        "a": ("int", 1),
        "b": ("int", 1),
        "c": ("str", "x"),
        "d": ("float", 2.5),
        "e": ("any", None),
        "f": ("any", None),
        "g": ("any", None),
    }
    assert schema.get("f") is not None and schema.get("f").default_source == "pair()"  # type: ignore[union-attr]


def test_other_statements_are_ignored(notebook: NotebookFactory) -> None:
    source = (
        "import os\nfrom x import y\nprint('hi')\nobj.attr = 1\nitems[0] = 2\nn += 1\n"
        "def f():\n    inner = 1\nif True:\n    cond = 2\nfor i in []:\n    pass\nn = 5\n"
    )
    assert infer_schema(notebook(source)).names() == ["n"]


def test_reassignment_keeps_first_position_and_last_value(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook("a = 1\nb = 2\na = 'x'  # later"))
    assert schema.names() == ["a", "b"]
    a = schema.get("a")
    assert a is not None and (a.type, a.default, a.help, a.line) == ("str", "x", "later", 3)


def test_annotation_then_value_keeps_annotation(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook("n: float  # count\nn = 3"))
    n = schema.get("n")
    assert n is not None
    assert (n.type, n.default, n.required, n.help) == ("float", 3, False, "count")


def test_value_then_bare_annotation_keeps_value(notebook: NotebookFactory) -> None:
    n = infer_schema(notebook("n = 3\nn: int")).get("n")
    assert n is not None and (n.type, n.default, n.required) == ("int", 3, False)


# -- help comments ------------------------------------------------------------------------------

HELP = [
    ("trailing", "n = 3  # number of rows", "number of rows"),
    ("no-space", "n = 3 #rows", "rows"),
    ("many-hashes", "n = 3  ## rows ##", "rows ##"),
    ("hash-in-string", "s = 'a # b'", ""),
    ("hash-in-string-and-comment", 's = "a # b"  # the # sign', "the # sign"),
    ("comment-line-above-is-not-help", "# above\nn = 3", ""),
    ("multiline-value", "xs = [\n  1,  # one\n  2,\n]  # the list", "the list"),
    ("annotated-required", "region: str  # EU or US", "EU or US"),
]


@pytest.mark.parametrize(("source", "help_text"), [c[1:] for c in HELP], ids=[c[0] for c in HELP])
def test_help_is_the_trailing_comment(
    notebook: NotebookFactory, source: str, help_text: str
) -> None:
    assert one(notebook, source).help == help_text


def test_line_numbers_are_one_based_within_the_cell(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook("# comment\n\na = 1\nb = [\n  2,\n]\nc = 3"))
    assert [(p.name, p.line) for p in schema] == [("a", 3), ("b", 4), ("c", 7)]


# -- magics and syntax errors ---------------------------------------------------------------------


def test_magics_are_skipped_and_line_numbers_kept(notebook: NotebookFactory) -> None:
    source = "%%capture\n%matplotlib inline\n!pip list\nn = 3  # rows\nif n:\n    %time\nm = 1"
    schema = infer_schema(notebook(source))
    n = schema.get("n")
    assert schema.names() == ["n", "m"] and n is not None and (n.line, n.help) == (4, "rows")


def test_percent_inside_a_string_is_not_a_magic(notebook: NotebookFactory) -> None:
    param = one(notebook, 'fmt = """\n%d items\n"""')
    assert param.default == "\n%d items\n"


def test_syntax_error_names_cell_line_and_notebook(notebook: NotebookFactory) -> None:
    nb = notebook("a = 1\nb = (2,\nc = ]", before=2)
    with pytest.raises(ParameterError) as info:
        infer_schema(nb, notebook="report.ipynb")
    message = str(info.value)
    assert "cell 2 of report.ipynb" in message and "line 3" in message
    assert info.value.notebook == "report.ipynb"
    assert info.value.exit_code == 2


def test_null_byte_is_a_parameter_error(notebook: NotebookFactory) -> None:
    with pytest.raises(ParameterError, match="cell 1"):
        infer_schema(notebook("a = 1\x00"))


# -- where the cell is, languages -----------------------------------------------------------------


def test_no_parameters_cell_gives_empty_schema(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook(None))
    assert (schema.parameters, schema.cell_index, schema.language) == ((), None, "python")
    assert schema.to_json() == {"cell_index": None, "language": "python", "parameters": []}


def test_first_tagged_cell_is_used(notebook: NotebookFactory) -> None:
    nb = notebook("a = 1", before=3)
    nb.cells.append(nbformat.v4.new_code_cell("b = 2", metadata={"tags": ["parameters"]}))
    schema = infer_schema(nb)
    assert (schema.cell_index, schema.names()) == (3, ["a"])


def test_tag_among_others_and_markdown_parameters_cell(notebook: NotebookFactory) -> None:
    nb = notebook(None, before=0)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("a = 1", metadata={"tags": ["parameters"]}))
    schema = infer_schema(nb)
    assert (schema.cell_index, schema.names()) == (0, [])
    nb2 = notebook("a = 1")
    nb2.cells[1].metadata["tags"] = ["x", "parameters", "y"]
    assert infer_schema(nb2).names() == ["a"]


@pytest.mark.parametrize(
    ("metadata", "language"),
    [
        ({}, "python"),
        ({"kernelspec": {"language": "R", "name": "ir"}}, "R"),
        ({"language_info": {"name": "julia"}}, "julia"),
        ({"kernelspec": {"language": "bash"}, "language_info": {"name": "x"}}, "bash"),
        ({"kernelspec": {"name": "python3"}, "language_info": {"name": "python"}}, "python"),
    ],
    ids=["default", "kernelspec", "language_info", "kernelspec-wins", "no-kernelspec-language"],
)
def test_language_from_metadata(
    notebook: NotebookFactory, metadata: dict[str, Any], language: str
) -> None:
    nb = notebook("a = 1")
    nb.metadata.update(metadata)
    assert infer_schema(nb).language == language


TEXT_LANGUAGES = [
    ("R-equals-int", "R", "n = 3  # rows", "n", "int", 3, "rows"),
    ("R-arrow-float", "R", "x <- 1.5", "x", "float", 1.5, ""),
    ("R-TRUE", "R", "flag = TRUE", "flag", "bool", True, ""),
    ("R-string", "R", 'region <- "E#U" # code', "region", "str", "E#U", "code"),
    ("R-integer-suffix", "R", "n = 10L", "n", "int", 10, ""),
    ("R-NULL", "R", "out = NULL", "out", "any", None, ""),
    ("R-vector", "R", "xs = c(1, 2)", "xs", "list", None, ""),
    ("R-call", "R", "d = Sys.Date()", "d", "any", None, ""),
    ("bash-int", "bash", "n=3", "n", "int", 3, ""),
    ("bash-true", "bash", "flag=true", "flag", "bool", True, ""),
    ("bash-single", "bash", "s='a # b' # c", "s", "str", "a # b", "c"),
    ("bash-double", "bash", 's="it \\"x\\""', "s", "str", 'it "x"', ""),
    ("bash-bare-word", "bash", "region=EU", "region", "str", "EU", ""),
    ("bash-hash-in-word", "bash", "tag=a#b", "tag", "str", "a#b", ""),
    ("bash-empty", "bash", "s=", "s", "str", "", ""),
    ("bash-expansion", "bash", "d=$(date)", "d", "any", None, ""),
    ("bash-array", "bash", "xs=(a b)", "xs", "list", None, ""),
    ("bash-declare-A", "bash", "declare -A m=([a]=1)", "m", "dict", None, ""),
    ("bash-export", "bash", "export N=2", "N", "int", 2, ""),
    ("julia-float", "julia", "x = 2.5", "x", "float", 2.5, ""),
    ("julia-nothing", "julia", "x = nothing", "x", "any", None, ""),
    ("julia-string", "julia", 'x = "a"', "x", "str", "a", ""),
    ("julia-interpolated", "julia", 'x = "$a"', "x", "any", None, ""),
]


@pytest.mark.parametrize(
    ("language", "source", "name", "ptype", "default", "help_text"),
    [c[1:] for c in TEXT_LANGUAGES],
    ids=[c[0] for c in TEXT_LANGUAGES],
)
def test_other_languages_best_effort(
    notebook: NotebookFactory,
    language: str,
    source: str,
    name: str,
    ptype: str,
    default: Any,
    help_text: str,
) -> None:
    param = one(notebook, source, language=language)
    assert (param.name, param.type, param.default, param.help) == (name, ptype, default, help_text)


def test_other_language_skips_comments_and_non_identifiers(notebook: NotebookFactory) -> None:
    source = "# n = 1\nmy.var = 2\nlibrary(x)\nif (a == 1) b\nok = 3"
    schema = infer_schema(notebook(source, language="R"))
    assert [(p.name, p.line) for p in schema] == [("ok", 5)]


def test_unsupported_language_has_cell_but_no_parameters(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook("val n = 3", language="scala"))
    assert (schema.cell_index, schema.names(), schema.language) == (1, [], "scala")


# -- the schema object --------------------------------------------------------------------------


def test_schema_lookup_helpers(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook("date: str\nregion = 'EU'\nn = 3"))
    assert schema.names() == ["date", "region", "n"]
    assert "region" in schema and "nope" not in schema and 3 not in schema
    assert [p.name for p in schema] == schema.names()
    assert schema.get("nope") is None
    region = schema.get("region")
    assert region is not None and region.default == "EU"


def test_to_json_is_json_and_complete(notebook: NotebookFactory) -> None:
    source = "date: str  # day\nn: int = 3\nx = float('nan')\nbig = 1e400\nd = {1: 'a'}\nr = None"
    data = infer_schema(notebook(source)).to_json()
    text = json.dumps(data, allow_nan=False)  # strict JSON: no NaN, no Infinity
    assert json.loads(text) == data
    assert data["cell_index"] == 1 and data["language"] == "python"
    by_name = {p["name"]: p for p in data["parameters"]}
    assert by_name["date"] == {
        "name": "date",
        "type": "str",
        "default": None,
        "default_source": None,
        "optional": False,
        "required": True,
        "help": "day",
        "annotation": "str",
        "choices": None,
        "secret": False,
    }
    assert by_name["n"]["default"] == 3
    assert by_name["x"]["default"] is None and by_name["x"]["default_source"] == "float('nan')"
    assert by_name["big"]["default"] is None and by_name["big"]["default_source"] == "1e400"
    assert by_name["d"]["default"] is None and by_name["d"]["default_source"] == "{1: 'a'}"
    assert by_name["r"]["optional"] is True


def test_missing_sentinel_is_a_stable_singleton() -> None:
    assert repr(MISSING) == "MISSING" and not MISSING
    assert copy.deepcopy(MISSING) is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


def test_schema_is_frozen_data(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook("a = 1"))
    assert isinstance(schema, ParameterSchema)
    with pytest.raises(AttributeError):
        schema.cell_index = 3  # type: ignore[misc]
    assert schema == infer_schema(notebook("a = 1"))


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["x", "_x", "region_2", "match", "case", "type", "_", "café", "__x", "x__", "__"],
)
def test_valid_names(name: str) -> None:
    validate_name(name)


INVALID_NAMES = [
    ("digit-first", "1x", "not an identifier"),
    ("keyword-class", "class", "keyword"),
    ("keyword-None", "None", "keyword"),
    ("dunder-import", "__import__", "reserved"),
    ("dunder-builtins", "__builtins__", "reserved"),
    ("hyphen", "a-b", "not an identifier"),
    ("space", "a b", "not an identifier"),
    ("empty", "", "empty"),
    ("dot", "a.b", "not an identifier"),
    ("newline", "a\nb", "not an identifier"),
    ("nfkc-keyword", "ｃlass", "'class', which is reserved"),
    ("nfkc-dunder", "_＿import＿_", "'__import__', which is reserved"),
    ("nfkc-ligature", "ﬁle", "would read it as 'file'"),
]


@pytest.mark.parametrize(
    ("name", "reason"), [c[1:] for c in INVALID_NAMES], ids=[c[0] for c in INVALID_NAMES]
)
def test_invalid_names_are_refused(name: str, reason: str) -> None:
    with pytest.raises(InvalidParameterName) as info:
        validate_name(name, notebook="report.ipynb")
    assert repr(name) in str(info.value) and "report.ipynb" in str(info.value)
    assert reason in str(info.value)
    assert info.value.name == name and info.value.notebook == "report.ipynb"


def test_non_string_name_is_refused() -> None:
    with pytest.raises(InvalidParameterName, match="not a string"):
        validate_name(3)  # type: ignore[arg-type]


# -- Secret ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "required", "optional"),
    [
        ('api_key: Secret = ""', False, False),
        ("api_key: Secret", True, False),
        ('api_key: kiln.Secret = "x"', False, False),
        ("api_key: Secret | None = None", False, True),
        ("api_key: Optional[Secret] = None", False, True),
        ("api_key: 'Secret' = ''", False, False),
        ('api_key: Secret\napi_key = "dev"', False, False),
    ],
)
def test_a_secret_annotation_marks_the_parameter(
    notebook: NotebookFactory, source: str, required: bool, optional: bool
) -> None:
    param = one(notebook, "from kiln import Secret\n" + source)
    assert param.secret is True and param.type == "str"
    assert param.required is required and param.optional is optional
    assert param.to_json()["secret"] is True


@pytest.mark.parametrize("source", ['api_key: str = ""', 'api_key = ""', "SecretThing = 1"])
def test_other_parameters_are_not_secret(notebook: NotebookFactory, source: str) -> None:
    assert one(notebook, source).secret is False


def test_secret_is_a_plain_str_marker() -> None:
    import kiln

    assert issubclass(kiln.Secret, str) and kiln.Secret("v") == "v"
