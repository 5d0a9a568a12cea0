"""Find secrets in text: Kiln's own patterns plus detect-secrets' plugins, and mask them.

Two sources, merged:

* :data:`PATTERNS`, Kiln's table of formats it knows precisely (cloud keys, tokens, private
  key blocks), and passwords in connection strings (:mod:`kiln.lint.connstrings`). They run on
  the whole text at once.
* detect-secrets' plugins (:data:`DETECT_SECRETS_PLUGINS`), called directly on strings (never
  its CLI or its baseline machinery). They are slower, so they only see the lines a cheap
  pre-filter lets through: lines with a long token-like run or a secret-ish keyword. Every
  pattern of the plugins used needs one of the two, so the pre-filter loses nothing they find.

A :class:`SecretHit` keeps the raw secret for the caller to locate and mask it; nothing here
prints it. :func:`mask` keeps a few characters at each end of tokens with a recognisable prefix
(``AKIA************MPLE``) and nothing of passwords.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from kiln.lint.connstrings import KIND as CONNECTION_KIND
from kiln.lint.connstrings import find_connection_passwords, is_example_login, is_placeholder


@dataclass(frozen=True)
class SecretHit:
    kind: str
    secret: str
    start: int  # offset of the secret in the scanned text
    reveal: bool  # whether a few characters at each end may be shown


class Pattern(NamedTuple):
    kind: str
    regex: re.Pattern[str]
    group: int
    reveal: bool
    #: substrings one of which every match contains: a cheap test before the regex runs
    triggers: tuple[str, ...]


def _p(
    kind: str,
    triggers: str,
    regex: str,
    group: int = 0,
    reveal: bool = True,
    flags: int = 0,
) -> Pattern:
    return Pattern(kind, re.compile(regex, flags), group, reveal, tuple(triggers.split()))


_T = r"(?<![A-Za-z0-9_])"  # a token starts here
_E = r"(?![A-Za-z0-9_])"  # and ends here

PATTERNS: tuple[Pattern, ...] = (
    _p(
        "AWS access key id",
        "AKIA ASIA ABIA ACCA A3T",
        _T + r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}" + _E,
    ),
    _p(
        "AWS secret access key",
        "aws AWS Aws",
        r"aws.{0,20}?secret.{0,20}?[=:]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        1,
        reveal=False,
        flags=re.I,
    ),
    _p("GitHub token", "ghp_ gho_ ghu_ ghs_ ghr_", _T + r"gh[pousr]_[A-Za-z0-9]{36,255}" + _E),
    _p("GitHub token", "github_pat_", _T + r"github_pat_[A-Za-z0-9_]{50,255}" + _E),
    _p(
        "GitLab token",
        "glpat- gldt- glrt- glptt- glsoat- glft- glimt- glagent-",
        _T + r"gl(?:pat|dt|rt|ptt|soat|ft|imt|agent)-[A-Za-z0-9_\-]{20,}" + _E,
    ),
    _p("Slack token", "xox", _T + r"xox[abposr]-(?:[0-9]+-)*[A-Za-z0-9-]{10,}" + _E),
    _p(
        "Slack webhook",
        "hooks.slack.com",
        r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,}",
    ),
    _p("Google API key", "AIza", _T + r"AIza[0-9A-Za-z_\-]{35}" + _E),
    _p("Stripe live key", "_live_", _T + r"(?:sk|rk)_live_[0-9A-Za-z]{20,}" + _E),
    _p(
        "private key",
        "PRIVATE",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    ),
)

#: detect-secrets plugins used, by module and class. Left out: high-entropy (ours is stricter
#: about hashes and images), Artifactory (matches ordinary words such as "APACHE..."), public IP
#: addresses, and the IBM/SoftLayer/Cloudant keyword detectors (rare, noisy on prose).
DETECT_SECRETS_PLUGINS: tuple[tuple[str, str], ...] = (
    ("aws", "AWSKeyDetector"),
    ("azure_storage_key", "AzureStorageKeyDetector"),
    ("basic_auth", "BasicAuthDetector"),
    ("discord", "DiscordBotTokenDetector"),
    ("github_token", "GitHubTokenDetector"),
    ("gitlab_token", "GitLabTokenDetector"),
    ("jwt", "JwtTokenDetector"),
    ("keyword", "KeywordDetector"),
    ("mailchimp", "MailchimpDetector"),
    ("npm", "NpmDetector"),
    ("openai", "OpenAIDetector"),
    ("private_key", "PrivateKeyDetector"),
    ("pypi_token", "PypiTokenDetector"),
    ("sendgrid", "SendGridDetector"),
    ("slack", "SlackDetector"),
    ("square_oauth", "SquareOAuthDetector"),
    ("stripe", "StripeDetector"),
    ("telegram_token", "TelegramBotTokenDetector"),
    ("twilio", "TwilioKeyDetector"),
)

# A line worth showing to detect-secrets: a long token-like run, or a secret-ish word.
_JWT_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=]+")
_LONG_RUN = re.compile(r"[A-Za-z0-9+/=_.\-]{20,}")
_SECRET_WORDS = ("key", "pass", "pwd", "secret", "token", "contrase", "auth", "begin", "://")


def is_candidate(text: str) -> bool:
    """Whether any detect-secrets plugin used could match in ``text`` (a cheap superset test:
    one regex for long runs plus substring tests, about 20x faster than one combined regex)."""
    lowered = text.lower()
    return any(word in lowered for word in _SECRET_WORDS) or bool(_LONG_RUN.search(text))


# a name such as `secret_name` or `password_field` holds a label, not a secret
_LABEL_NAME = re.compile(
    r"(?:name|names|id|ids|path|file|filename|dir|url|uri|env|var|type|arn|header|field|"
    r"column|col|len|length|prompt|label|policy|scope|kind|regex|pattern|hint|help)$",
    re.I,
)
_LAST_IDENTIFIER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[\]\"' ]*[:=!]{1,3}\s*[@]?[\"'`]?$")


def find_secrets(text: str) -> list[SecretHit]:
    """Every secret found in ``text``, one hit per distinct place, in order."""
    hits: list[SecretHit] = []
    for pattern in PATTERNS:
        if not any(trigger in text for trigger in pattern.triggers):
            continue
        for match in pattern.regex.finditer(text):
            secret = match.group(pattern.group)
            if pattern.reveal or not is_placeholder(secret):
                hits.append(
                    SecretHit(pattern.kind, secret, match.start(pattern.group), pattern.reveal)
                )
    for secret, start in find_connection_passwords(text):
        hits.append(SecretHit(CONNECTION_KIND, secret, start, False))
    hits.extend(_detect_secrets_hits(text, hits))
    hits.sort(key=lambda h: h.start)
    return _dedupe(hits)


def _dedupe(hits: Sequence[SecretHit]) -> list[SecretHit]:
    kept: list[SecretHit] = []
    for hit in hits:
        end = hit.start + len(hit.secret)
        if any(k.start <= hit.start and end <= k.start + len(k.secret) for k in kept):
            continue
        kept = [k for k in kept if not (hit.start <= k.start and k.start + len(k.secret) <= end)]
        kept.append(hit)
    return kept


def _detect_secrets_hits(text: str, known: Sequence[SecretHit]) -> Iterator[SecretHit]:
    if not is_candidate(text):
        return
    plugins = _plugins()
    known_secrets = {h.secret for h in known}
    offset = 0
    for line in text.split("\n"):
        if len(line) <= 4000 and is_candidate(line):
            for kind, secret in _scan_line(plugins, line):
                if secret in known_secrets or any(secret in s for s in known_secrets):
                    continue
                position = line.find(secret)
                tail = _JWT_TAIL.match(line, position) if kind == "json web token" else None
                if tail is not None:
                    secret = tail.group(0)  # detect-secrets stops before the signature
                if position >= 0:
                    yield SecretHit(kind, secret, offset + position, kind not in _NEVER_SHOWN)
        offset += len(line) + 1


#: detect-secrets kinds that are passwords: never a character of them in a report
_NEVER_SHOWN = frozenset({"secret keyword", "basic auth credentials"})


def _scan_line(plugins: Sequence[Any], line: str) -> Iterator[tuple[str, str]]:
    for plugin in plugins:
        for secret in plugin.analyze_string(line):
            if not isinstance(secret, str) or not secret:
                continue
            kind = str(plugin.secret_type).lower()
            if kind == "secret keyword" and _weak_keyword_hit(secret, line):
                continue
            if kind == "basic auth credentials" and (
                is_placeholder(secret) or is_example_login(line, secret)
            ):
                continue
            yield kind, secret


def _weak_keyword_hit(secret: str, line: str) -> bool:
    from detect_secrets.filters import heuristic

    if (
        is_placeholder(secret)
        or heuristic.is_templated_secret(secret)
        or heuristic.is_sequential_string(secret)
        or heuristic.is_potential_uuid(secret)
        or heuristic.is_not_alphanumeric_string(secret)
    ):
        return True
    position = line.find(secret)
    name = _LAST_IDENTIFIER.search(line, 0, position)
    if name is None:
        return heuristic.is_indirect_reference(line)
    if _LABEL_NAME.search(name.group(1)):
        return True
    # `name = "secret"` right before the value: judge that assignment, not the whole line
    # (`conn = connect(host="db", password="...")` is a call on the left, a literal here)
    return heuristic.is_indirect_reference(line[name.start() : position + len(secret)])


def warm_up() -> None:
    """Create the detect-secrets plugins now (before forking workers, say)."""
    _plugins()


@lru_cache(maxsize=1)
def _plugins() -> tuple[Any, ...]:
    """The plugin instances, created once per process (importing detect-secrets costs ~0.15 s)."""
    import importlib

    found = []
    for module, name in DETECT_SECRETS_PLUGINS:
        plugin_module = importlib.import_module(f"detect_secrets.plugins.{module}")
        found.append(getattr(plugin_module, name)())
    return tuple(found)


# -- high entropy -------------------------------------------------------------------------------

_TOKEN = re.compile(r"(?<![A-Za-z0-9+/=_\-])[A-Za-z0-9+/_\-]{20,120}={0,2}(?![A-Za-z0-9+/=_\-])")
_HEX = re.compile(r"^(?:0x)?[0-9a-fA-F]+$")
_PREFIXED_HEX = re.compile(r"^(?:[A-Za-z]+[_\-])+[0-9a-fA-F]{16,}$")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_WORDISH = re.compile(r"[A-Za-z][a-z]{2,}")
_URL_START = re.compile(r"[a-z][a-z0-9+.\-]*://\S*$", re.I)


def high_entropy_tokens(text: str, *, min_length: int) -> Iterator[SecretHit]:
    """Random-looking tokens: long, mixed case and digits, high Shannon entropy.

    Hex strings (hashes, ids, ``IPY_MODEL_<hex>``), UUIDs, file paths, identifiers made of
    words, parts of URLs (file ids, cache keys) and embedded data (longer than 120 characters)
    are left out: they look random without being secrets. Keys and tokens in URLs that are
    secrets have known formats, which :func:`find_secrets` reports.
    """
    for match in _TOKEN.finditer(text):
        token = match.group(0).rstrip("=")
        if len(token) < min_length or not looks_random(token):
            continue
        line_start = text.rfind("\n", 0, match.start()) + 1
        if _URL_START.search(text, line_start, match.start()):
            continue
        yield SecretHit("high-entropy string", token, match.start(), True)


def looks_random(token: str) -> bool:
    if _HEX.match(token) or _PREFIXED_HEX.match(token) or _UUID.search(token):
        return False
    if not (any(c.islower() for c in token) and any(c.isupper() for c in token)):
        return False
    digits = sum(c.isdigit() for c in token)
    if digits < 2:
        return False
    words = sum(len(w) for w in _WORDISH.findall(token))
    if words > len(token) * 0.5:
        return False  # mostly words: CamelCaseNames123, pandoc-Version-x86_64, some/path_v2
    return shannon_entropy(token) >= min(4.2, 0.85 * math.log2(len(token)))


def shannon_entropy(text: str) -> float:
    counts: dict[str, int] = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


# -- masking ------------------------------------------------------------------------------------


def mask(secret: str, *, reveal: bool = True) -> str:
    """``AKIAIOSFODNN7EXAMPLE`` -> ``AKIA************MPLE``; passwords -> ``********``."""
    if secret.startswith("-----BEGIN"):
        return secret  # a private key's header names the block; the key itself is never shown
    length = len(secret)
    if not reveal or length < 12:
        return "*" * min(max(length, 8), 16)
    keep = 4 if length >= 16 else 2
    return secret[:keep] + "*" * (length - 2 * keep) + secret[-keep:]
