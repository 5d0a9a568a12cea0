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
