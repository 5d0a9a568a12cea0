"""Secrets a text scan cannot see in Python cells (kiln.lint.pysecrets): values built from
literals, and literals under a secret's name; where they are reported, and what stays quiet."""

from __future__ import annotations

import ast
from typing import Any

import pytest
from lintcorpus import make_corpus

from kiln.lint import LintConfig, lint_notebook
from kiln.lint.pysecrets import (
    _BUILDS_STRINGS,
    credential_like,
    scan_code,
    secret_name,
)

corpus = make_corpus()
AWS = corpus.AWS_ID
PW = corpus.glue("Tr0ub4dor", "&3x!")  # in pieces: this file shows no secret whole
TOKEN = corpus.glue("Sup3rS3cret", "Tok9")


def kl301(*sources: str) -> list[tuple[int | None, int | None, int | None, str]]:
    """(cell, line, column, message) of every KL301 finding in a notebook of these cells."""
    cells: list[dict[str, Any]] = [corpus.code(source) for source in sources]
    nb = corpus.notebook(corpus.Case("t", cells))
    found = lint_notebook(nb, "t.ipynb", config=LintConfig())
    return [(f.cell, f.line, f.column, f.message) for f in found if f.rule == "KL301"]


def secrets(source: str) -> list[tuple[int, int, str, str]]:
    scan = scan_code(ast.parse(source), source)
    return [] if scan is None else [(s.line, s.column, s.kind, s.secret) for s in scan.secrets]


# -- folded strings ------------------------------------------------------------------------------

# source, and the line and column where the expression holding the key starts
EVASIONS = {
    "plus": (f'key = "{AWS[:4]}" + "{AWS[4:]}"', 1, 7),
    "implicit-lines": (f'key = (\n    "{AWS[:10]}"\n    "{AWS[10:]}"\n)', 2, 5),
    "implicit-comments": (
        f'key = ("{AWS[:4]}"  # the prefix\n    # the rest\n    "{AWS[4:]}")',
        1,
        8,
    ),
    "hex": ('key = "\\x41\\x4b' + AWS[2:] + '"', 1, 7),
    "unicode": ('key = "\\u0041' + AWS[1:] + '"', 1, 7),
    "octal": ('key = "\\101' + AWS[1:] + '"', 1, 7),
    "raw-and-normal": (f'key = r"{AWS[:4]}" "\\x{ord(AWS[4]):02x}{AWS[5:]}"', 1, 7),
    "join": (f"key = ''.join({[AWS[:4], AWS[4:12], AWS[12:]]!r})", 1, 7),
    "fstring": (f"key = f\"{{'{AWS[:4]}'}}{AWS[4:]}\"", 1, 7),
    "percent": (f'key = "{AWS[:4]}%s" % "{AWS[4:]}"', 1, 7),
    "format": (f'key = "{{}}{AWS[4:]}".format("{AWS[:4]}")', 1, 7),
    "bytes": (f'key = (b"{AWS[:4]}" + b"{AWS[4:]}").decode()', 1, 7),
    "run-in-chain": (f'key = prefix + "{AWS[:4]}" + "{AWS[4:]}"', 1, 16),
}


@pytest.mark.parametrize(("source", "line", "column"), EVASIONS.values(), ids=EVASIONS.keys())
def test_evasion_found_at_the_expression(source: str, line: int, column: int) -> None:
    assert _BUILDS_STRINGS.search(source), "the gate must let every foldable cell through"
    assert kl301(source) == [
        (
            0,
            line,
            column,
            "AWS access key id in the source (built from string literals): "
            + AWS[:4]
            + "*" * 12
            + AWS[-4:],
        )
    ]


def test_column_counts_characters_not_bytes() -> None:
    source = f'titre = "Clé d’accès"; key = "{AWS[:4]}" + "{AWS[4:]}"'
    ((_, line, column, _),) = kl301(source)
    assert (line, column) == (1, source.index('"' + AWS[:4]) + 1)


def test_magics_are_set_aside_and_lines_hold() -> None:
    source = f'%matplotlib inline\n!ls data\nx = 1\nkey = "{AWS[:4]}" + "{AWS[4:]}"'
    assert [(line, column) for _, line, column, _ in kl301(source)] == [(4, 7)]


def test_a_cell_that_does_not_parse_falls_back_to_the_text_scan() -> None:
    visible = f"x = = 1\nkey = '{AWS}'"
    assert [line for _, line, _, _ in kl301(visible)] == [2]
    # built from pieces in a cell Python cannot parse: out of reach (documented)
    assert kl301(f'x = = 1\nkey = "{AWS[:4]}" + "{AWS[4:]}"') == []


def test_nested_and_decorated_statements_are_walked() -> None:
    source = (
        "import functools\n\n"
        f"@functools.lru_cache(maxsize=None)\ndef f(x):\n    if x:\n"
        f'        return "{AWS[:4]}" + "{AWS[4:]}"\n    return None\n\n'
        f"@retry(token={TOKEN!r})\ndef g():\n    pass\n"
    )
    found = sorted((line, kind) for line, _, kind, _ in secrets(source))
    assert found == [(6, "AWS access key id"), (9, "secret passed as token=")]


def test_no_duplicate_when_the_text_scan_sees_the_literal() -> None:
    # a docstring whose escapes differ from the source: the same example secret, not two
    source = 'def run():\n    """Example::\n\n        events={"password": "Wq9#zL2v\\\\n"}\n    """'
    assert [kind for _, _, kind, _ in secrets(source)] == ["secret keyword"]  # code scan
    assert [(line, m.split(" in ")[0]) for _, line, _, m in kl301(source)] == [
        (4, "secret keyword")
    ]


def test_a_piece_is_not_reported_beside_the_whole() -> None:
    found = kl301(f"db_password = {PW[:5]!r} + {PW[5:]!r}")
    assert [m for _, _, _, m in found] == [
        "password assigned to db_password in the source: " + "*" * 13
    ]


# -- named secrets -------------------------------------------------------------------------------

NAMED = {
    "kwarg": (
        f"conn = connect(host='db', user='etl', password={PW!r})",
        "password passed as password=",
    ),
    "passwd": (f"pymysql.connect(passwd={PW!r})", "password passed as passwd="),
    "pwd": (f"pyodbc.connect(pwd={PW!r})", "password passed as pwd="),
    "api_key": (f"OpenAI(api_key={TOKEN!r})", "secret passed as api_key="),
    "token": (f"Client(token={TOKEN!r})", "secret passed as token="),
    "secret": (f"Auth(client_secret={TOKEN!r})", "secret passed as client_secret="),
    "dict": (f"cfg = {{'host': 'db', 'password': {PW!r}}}", "password under the key 'password'"),
    "assign": (f"DB_PASSWORD = {PW!r}", "password assigned to DB_PASSWORD"),
    "attribute": (f"settings.api_key = {TOKEN!r}", "secret assigned to api_key"),
    "environ": (f"os.environ['DB_PASSWORD'] = {PW!r}", "password assigned to DB_PASSWORD"),
    "setdefault": (f"os.environ.setdefault('API_TOKEN', {TOKEN!r})", "secret set as API_TOKEN"),
    "default": (f"def connect(host, password={PW!r}):\n    pass", "password default of password="),
    "kwonly-default": (f"def f(*, token={TOKEN!r}):\n    pass", "secret default of token="),
    "folded": (f"connect(password={PW[:4]!r} {PW[4:]!r})", "password passed as password="),
    "annotated": (f"API_KEY: str = {TOKEN!r}", "secret assigned to API_KEY"),
}


@pytest.mark.parametrize(("source", "kind"), NAMED.values(), ids=NAMED.keys())
def test_named_secret(source: str, kind: str) -> None:
    found = [(k, s) for _, _, k, s in secrets(source)]
    assert found == [(kind, PW if kind.startswith("password") else TOKEN)]


def test_named_secret_is_masked_whole_and_placed_at_its_value() -> None:
    source = f"conn = connect(host='db', password={PW!r})"
    ((_, line, column, message),) = kl301(source)
    # detect-secrets' keyword plugin sees this one in the text: the value, inside its quotes
    assert (line, column) == (1, source.index(PW) + 1)
    assert PW not in message and PW[:4] not in message and message.endswith("*" * 13)
    built = f"conn = connect(host='db', password={PW[:4]!r} + {PW[4:]!r})"
    ((_, line, column, message),) = kl301(built)
    assert (line, column) == (1, built.index(repr(PW[:4])) + 1)  # only the code scan sees it
    assert message == "password passed as password= in the source: " + "*" * 13


QUIET = {
    "environ": "connect(password=os.environ['DB_PASSWORD'])",
    "getenv": "connect(password=os.getenv('PW', ''))",
    "getpass": "connect(password=getpass.getpass())",
    "name": "connect(password=pw)",
    "none": "connect(password=None)",
    "empty": "connect(password='')",
    "angle": "connect(password='<password>')",
    "stars": "connect(password='***')",
    "changeme": "connect(password='changeme')",
    "dollar": "connect(password='${PASSWORD}')",
    "brace": "connect(password='{password}')",
    "percent": "connect(password='%(pw)s')",
    "your": "client = Client(api_key='YOUR_API_KEY', token='your-token-here')",
    "env-name": "gh = dict(token='GITHUB_TOKEN', secret='AWS_SECRET_ACCESS_KEY')",
    "demo": "nasa = dict(api_key='DEMO_KEY')",
    "label-names": "cfg = {'secret_name': 'prod/db-credentials', 'password_field': 'pass2word'}",
    "word-value": "cfg = {'password': 'password', 'token': 'db_token'}",
    "file": "cfg = dict(token='~/.config/gh/token', api_key='keys/api_key.json')",
    "url": "cfg = dict(token='https://example.com/oauth/token')",
    "sentence": "form = {'password': 'Enter your password'}",
    "regex": "jsonnet_token = r'[^\\W\\d]\\w*'",
    "tokenizer": "tok = Tok(pad_token='<|endoftext|>', eos_token='</s>', mask_token='[MASK]')",
    "bearer": "headers = dict(token='Bearer')",
    "uuid": "cfg = dict(token='3f2504e0-4f89-11d3-9a0c-0305e82c3301')",
    "sequential": "cfg = dict(password='abcdefgh', token='12345678')",
    "short": "cfg = dict(password='pw1')",
    "comparison": "if password == 'Tr0ub4dor-cmp': pass",
}


@pytest.mark.parametrize("source", QUIET.values(), ids=QUIET.keys())
def test_not_a_named_secret(source: str) -> None:
    assert secrets(source) == []


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("password", "password"),
        ("DB_PASSWORD", "password"),
        ("db-passwd", "password"),
        ("pwd", "password"),
        ("api_key", "secret"),
        ("apikey", "secret"),
        ("aws_secret_access_key", "secret"),
        ("client_secret", "secret"),
        ("auth_token", "secret"),
        ("secret_name", None),
        ("password_field", None),
        ("pad_token", None),
        ("next_token", None),
        ("sort_key", None),
        ("keyword", None),
        ("dbpassword", None),
    ],
)
def test_secret_names(name: str, label: str | None) -> None:
    assert secret_name(name) == label


def test_credential_like_needs_more_of_a_token_than_of_a_password() -> None:
    assert credential_like("hunter2x", "password")
    assert credential_like("letmein!", "password")
    assert not credential_like("letmeinplease", "secret")  # no digit, one case: a word
    assert credential_like("q8Vz3kL0pT", "secret")


def test_cells_without_hints_are_not_walked() -> None:
    assert scan_code(ast.parse("x = 1\nprint(x)"), "x = 1\nprint(x)") is None
    # the hints decide whether to walk: a tree that does not match its source stays unread
    built = f"k = {AWS[:4]!r} + {AWS[4:]!r}"
    assert scan_code(ast.parse(built), "x = 1") is None
    assert scan_code(ast.parse(built), built, has_strings=False) is None  # no str literal
    assert scan_code(ast.parse(built), built) is not None


def test_a_cell_too_deep_for_the_parser_gets_the_text_scan() -> None:
    # regression: ast.parse's RecursionError escaped and `kiln lint` died with a traceback
    deep = "x = " + " + ".join(['"ab"'] * 5000)
    cells: list[dict[str, Any]] = [corpus.code(f"{deep}\nkey = '{AWS}'")]
    found = lint_notebook(corpus.notebook(corpus.Case("t", cells)), "t.ipynb", config=LintConfig())
    assert [(f.rule, f.line) for f in found] == [("KL108", None), ("KL301", 2)]
    assert "too deeply nested" in found[0].message
