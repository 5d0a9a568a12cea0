"""Secret finding, masking, high-entropy guesses and personal data: the scanners on strings."""

from __future__ import annotations

import pytest
from lintcorpus import make_corpus

from kiln.lint.personal import card_brand, find_cards, find_emails, find_phones, luhn_ok
from kiln.lint.secret_scan import find_secrets, high_entropy_tokens, is_candidate, mask

corpus = make_corpus()

SECRETS = {
    "aws-key-id": (f"key = '{corpus.AWS_ID}'", "AWS access key id", corpus.AWS_ID),
    "github": (f"token {corpus.GH_TOKEN}", "GitHub token", corpus.GH_TOKEN),
    "slack": (f"'{corpus.SLACK}'", "Slack token", corpus.SLACK),
    "google": (corpus.GOOGLE, "Google API key", corpus.GOOGLE),
    "stripe": (corpus.STRIPE, "Stripe live key", corpus.STRIPE),
    "private-key": (corpus.PEM, "private key", "-----BEGIN RSA PRIVATE KEY-----"),
    "connection-string": (corpus.DB_URL, "password in a connection string", "Vx9#mQ2pLr7w"),
    "keyword-password": (f"db_password = '{corpus.PASSWORD}'", "secret keyword", corpus.PASSWORD),
    "jwt-whole-token": (f"auth = '{corpus.JWT}'", "json web token", corpus.JWT),
}


@pytest.mark.parametrize(("text", "kind", "secret"), SECRETS.values(), ids=SECRETS.keys())
def test_finds_secret(text: str, kind: str, secret: str) -> None:
    hits = find_secrets(text)
    assert [(h.kind, h.secret) for h in hits] == [(kind, secret)]
    assert text[hits[0].start :].startswith(secret)


QUIET = {
    "env-lookup": "password = os.environ['DB_PASSWORD']",
    "empty": "password = ''",
    "placeholder": "api_key = 'changeme'",
    "template": "secret = '{secret}'",
    "angle-placeholder": "token = '<your-token>'",
    "label-name": "secret_name = 'prod/db-credentials'",
    "url-placeholder": "postgresql://user:password@localhost/db",
    "url-template": "mysql://{user}:{pw}@{host}/x",
    "masked": "AKIA**************** ghp_****",
    "hash": "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
}


@pytest.mark.parametrize("text", QUIET.values(), ids=QUIET.keys())
def test_no_secret(text: str) -> None:
    assert find_secrets(text) == []


def test_prefilter_never_hides_what_detect_secrets_finds() -> None:
    for text, _, _ in SECRETS.values():
        assert is_candidate(text)
    assert not is_candidate("<tr><td>0.123</td><td>EU</td></tr>")


@pytest.mark.parametrize(
    ("secret", "reveal", "shown"),
    [
        ("AKIAIOSFODNN7EXAMPLE", True, "AKIA************MPLE"),
        ("abcdefghijkl", True, "ab********kl"),
        ("short", True, "********"),
        ("hunter2-but-long-password", False, "****************"),
        ("-----BEGIN RSA PRIVATE KEY-----", True, "-----BEGIN RSA PRIVATE KEY-----"),
    ],
)
def test_mask(secret: str, reveal: bool, shown: str) -> None:
    assert mask(secret, reveal=reveal) == shown


@pytest.mark.parametrize(
    "token", ["q8Vz3kL0pT7wR2nY5bX9cF1m", "Zk4pQ9wX2mT7vR1bN6cY8d", "Qm9vV2lLk3z8Xp1Rt7Yb"]
)
def test_high_entropy_random_tokens(token: str) -> None:
    assert [h.secret for h in high_entropy_tokens(f"x = {token}", min_length=20)] == [token]


@pytest.mark.parametrize(
    "text",
    [
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # sha256
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",  # uuid
        "IPY_MODEL_5f3e2b1c9a8d4e7f6a5b4c3d2e1f0a9b",  # widget model id
        "ResNet50ImageClassifierV2 CamelCaseReportBuilder2024Final",  # identifiers
        "models/resnet50/Weights_v2/final data/raw/2023/Sales_Q4_v2",  # paths
        "https://drive.google.com/uc?id=1OtyxfwoRyVK23XHnmd9JR-crBgHBL5mt",  # URL ids
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk" * 4,  # embedded image
        "short1A2b",
    ],
)
def test_high_entropy_leaves_lookalikes(text: str) -> None:
    assert list(high_entropy_tokens(text, min_length=20)) == []


def test_emails() -> None:
    text = (
        "maria.garcia@acme-corp.com; team@example.com; git@github.com:o/r; icon@2x.png; "
        "postgres://u:p4ss@db.acme.io/x; pkg@1.2.3; ana@gmail.com"
    )
    found = [h.value for h in find_emails(text)]
    assert found == ["maria.garcia@acme-corp.com", "ana@gmail.com"]
    assert next(find_emails("x maria.garcia@acme-corp.com")).masked == "ma**********@acme-corp.com"
    assert list(find_emails("a@acme-corp.com", allow_domains=["acme-corp.com"])) == []


@pytest.mark.parametrize(
    "phone", ["+44 20 7946 0958", "(415) 555-0132", "415-555-0132", "+55 11 98765-4321"]
)
def test_phones(phone: str) -> None:
    (hit,) = find_phones(f"call {phone} now")
    assert hit.value == phone
    assert hit.masked.endswith(phone[-2:]) and phone[:-2] not in hit.masked


@pytest.mark.parametrize(
    "text", ["2024-05-17 12:30:45", "v1.2.3", "+0.125", "1234567890", "3.14159265358979"]
)
def test_not_phones(text: str) -> None:
    assert list(find_phones(text)) == []


@pytest.mark.parametrize(
    ("card", "brand"),
    [
        ("4111 1111 1111 1111", "Visa"),
        ("5500-0000-0000-0004", "Mastercard"),
        ("3782 822463 10005", "American Express"),
        ("6011111111111117", "Discover"),
        ("5555555555554444", "Mastercard"),
    ],
)
def test_cards(card: str, brand: str) -> None:
    (hit,) = find_cards(f"paid with {card}.")
    digits = card.replace(" ", "").replace("-", "")
    assert card_brand(digits) == brand and luhn_ok(digits)
    assert hit.masked == "*" * 12 + digits[-4:]


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "1234567812345678",  # no card network starts with 1
        "1700000000000000000",  # a nanosecond timestamp
        "0000000000000000",
        "41111111111111110000",  # too long
    ],
)
def test_not_cards(text: str) -> None:
    assert list(find_cards(text)) == []


# -- connection strings --------------------------------------------------------------------------

DB_PW = corpus.glue("Vx9mQ2", "pLr7wZk")
CONNECTIONS = {
    "url": f"postgresql://etl:{DB_PW}@db.acme.io:5432/sales",
    "redis-no-user": f"redis://:{DB_PW}@cache.acme.io:6379/0",
    "rediss": f"rediss://default:{DB_PW}@cache.acme.io:6380",
    "amqp": f"amqp://etl:{DB_PW}@mq.acme.io:5672/jobs",
    "jdbc-query": f"jdbc:postgresql://db.acme.io/sales?user=etl&password={DB_PW}",
    "jdbc-semicolon": f"jdbc:sqlserver://db.acme.io;databaseName=sales;user=etl;password={DB_PW}",
    "ado": f"Server=tcp:db.acme.io,1433;Database=sales;User Id=etl;Password={DB_PW};",
    "ado-spaces": f"Data Source=db; Initial Catalog=sales; User ID=etl; Password = {DB_PW}",
    "odbc-braces": f"DRIVER={{ODBC Driver 18}};SERVER=db;UID=etl;PWD={{{DB_PW}}}",
    "libpq": f"host=db.acme.io user=etl password={DB_PW} dbname=sales",
    "html-escaped-then-read": f"<td>Server=db;User Id=etl;Password={DB_PW};</td>",
}


@pytest.mark.parametrize("text", CONNECTIONS.values(), ids=CONNECTIONS.keys())
def test_connection_string_password(text: str) -> None:
    hits = find_secrets(f'dsn = "{text}"')
    assert [(h.kind, h.secret, h.reveal) for h in hits] == [
        ("password in a connection string", DB_PW, False)
    ]


def test_percent_encoded_password_is_found_and_masked_whole() -> None:
    # regression: `%40S` once matched the `%s` placeholder pattern (case-blind)
    encoded = DB_PW[:4] + "%40S" + DB_PW[4:]
    (hit,) = find_secrets(f"postgresql://etl:{encoded}@db.acme.io/sales")
    assert hit.secret == encoded and set(mask(hit.secret, reveal=hit.reveal)) == {"*"}


CONNECTIONS_QUIET = {
    "template-brace": "Server=db;User Id=etl;Password={password};",
    "template-env-brace": "Server=db;User Id=etl;PWD={DB_PASSWORD}",
    "template-dollar": "jdbc:postgresql://db/sales?user=etl&password=${DB_PASSWORD}",
    "template-percent": "host=db user=etl password=%s dbname=sales",
    "angle": "Server=db;User Id=etl;Password=<password>;",
    "prepared": "jdbc:mysql://db/sales?user=etl&password=?",
    "doc-my": "Server=myServerAddress;Database=myDataBase;User Id=myUsername;Password=myPassword;",
    "doc-your": "host=localhost user=postgres password=YourPassword dbname=x",
    "doc-secret": "jdbc:postgresql://localhost/test?user=fred&password=secret&ssl=true",
    "doc-domain": f"mongodb://reader:{DB_PW}@mongodb0.example.com:27017/",
    "doc-test-tld": f"postgresql://etl:{DB_PW}@db.staging.test/sales",
    "user-as-password": "amqp://guest:guest@localhost:5672//",
    "encoded-placeholder": "postgresql://u:%3Cpassword%3E@db/x",
    "stars": "redis://:***@cache:6379",
    "empty": "Server=db;User Id=etl;Password=;",
    "code-kwarg-name": "conn = connect(host=h, password=pw)",
    "code-kwarg-call": "conn = connect(host=h, password=os.environ['DB_PASSWORD'])",
    "code-concat": 'dsn = "Server=db;User Id=etl;Password=" + pw + ";"',
    "shell-variable": "PGPASSWORD=hunter2x psql -h db",
    "no-list": "the password=hunter2x was rotated",
    "f-string": "f\"redis://:{os.environ['REDIS_PW']}@cache:6379\"",
}


@pytest.mark.parametrize("text", CONNECTIONS_QUIET.values(), ids=CONNECTIONS_QUIET.keys())
def test_no_connection_password(text: str) -> None:
    assert [h for h in find_secrets(text) if h.kind == "password in a connection string"] == []


def test_default_and_example_logins_are_not_reported_by_any_scanner() -> None:
    assert find_secrets('uri = "postgresql://postgres:postgres@localhost:5432/pandas"') == []
    assert find_secrets(f'uri = "mongodb://reader:{DB_PW}@mongodb0.example.com/"') == []


def test_basic_auth_passwords_are_never_revealed() -> None:
    # the host is a shell variable: our URL pattern wants a host name, detect-secrets does not
    hits = find_secrets(f"curl https://etl:{DB_PW}@$API_HOST/v1")
    assert [(h.kind, h.secret, h.reveal) for h in hits] == [
        ("basic auth credentials", DB_PW, False)
    ]
    assert set(mask(hits[0].secret, reveal=hits[0].reveal)) == {"*"}


def test_keyword_in_a_call_on_a_line_with_an_assignment() -> None:
    # regression: the indirect-reference filter judged the whole line (`conn = connect(`)
    line = f"conn = psycopg2.connect(host='db', password='{DB_PW}')"
    assert [(h.kind, h.secret) for h in find_secrets(line)] == [("secret keyword", DB_PW)]
    assert find_secrets("secret = get_secret_key()") == []
    assert find_secrets("api_key = request.headers['apikey']") == []
