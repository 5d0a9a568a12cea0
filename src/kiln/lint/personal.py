"""Personal data in outputs: e-mail addresses, phone numbers, payment card numbers.

Each finder errs towards silence: documentation domains are not people, a phone number needs
the separators people write, and a card number must pass the Luhn check and start like a card.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class PersonalHit:
    kind: str
    value: str
    start: int
    masked: str


_EMAIL = re.compile(
    r"(?<![\w.%+\-/])([A-Za-z0-9][A-Za-z0-9._%+\-]{0,63})@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})(?![\w\-])"
)
#: RFC 2606/6761 names and look-alikes that belong to no one
_DOC_DOMAINS = re.compile(
    r"(?:^|\.)(?:example\.(?:com|org|net)|[a-z0-9-]+\.(?:example|test|invalid|localhost|local)"
    r"|localhost)$",
    re.I,
)
_NOT_A_TLD = frozenset(
    [
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "webp",
        "ico",
        "bmp",
        "tif",
        "tiff",
        "pdf",
        "py",
        "ipynb",
        "js",
        "ts",
        "css",
        "html",
        "htm",
        "json",
        "csv",
        "txt",
        "md",
        "yaml",
        "yml",
        "toml",
        "xml",
        "zip",
        "gz",
        "tar",
        "whl",
        "so",
        "dll",
        "exe",
        "bin",
    ]
)
_ROLE_LOCAL = frozenset({"git", "noreply", "no-reply", "donotreply", "do-not-reply"})

_PHONE = re.compile(
    r"(?<![\w+\-./:])"
    r"(?:"
    r"\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]\d{2,5}){1,4}"  # +44 20 7946 0958
    r"|\(\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}"  # (415) 555-0132
    r"|\d{3}[.\-]\d{3}[.\-]\d{4}"  # 415-555-0132
    r")"
    r"(?![\w\-./:])"
)
_CARD = re.compile(
    r"(?<![\w.\-])"
    r"(?:\d{13,19}(?![ \-]\d)"  # 4111111111111111, not followed by more digit groups
    r"|\d{4}([ \-])\d{4}\1\d{4}\1\d{1,7}"  # 4111 1111 1111 1111
    r"|\d{4}([ \-])\d{6}\2\d{4,5})"  # 3782 822463 10005 (American Express)
    r"(?!\w|\.\d)"
)


def is_documentation_domain(domain: str) -> bool:
    """Whether ``domain`` is reserved for examples (``example.com``, ``*.test``, ``localhost``
    look-alikes): an address or URL there belongs to documentation, not to anyone."""
    return bool(_DOC_DOMAINS.search(domain))


def find_emails(text: str, *, allow_domains: Collection[str] = ()) -> Iterator[PersonalHit]:
    if "@" not in text:
        return
    allowed = {d.lower().lstrip("@") for d in allow_domains}
    for match in _EMAIL.finditer(text):
        local, domain = match.group(1), match.group(2).lower()
        word_start = max(text.rfind(c, 0, match.start()) for c in " \t\n\"'<>(") + 1
        if "://" in text[word_start : match.start()]:
            continue  # `scheme://user:password@host` is a URL (its password: KL301/KL302)
        if (
            _DOC_DOMAINS.search(domain)
            or domain.rsplit(".", 1)[-1] in _NOT_A_TLD
            or local.lower() in _ROLE_LOCAL
            or domain in allowed
            or any(domain.endswith("." + a) for a in allowed)
        ):
            continue
        masked = local[:2] + "*" * max(len(local) - 2, 3) + "@" + domain
        yield PersonalHit("e-mail address", match.group(0), match.start(), masked)


def find_phones(text: str) -> Iterator[PersonalHit]:
    for match in _PHONE.finditer(text):
        value = match.group(0)
        digits = re.sub(r"\D", "", value)
        if not 10 <= len(digits) <= 15 or len(set(digits)) < 3:
            continue
        masked = re.sub(r"\d", "*", value[:-2]) + value[-2:]
        yield PersonalHit("phone number", value, match.start(), masked)


def find_cards(text: str) -> Iterator[PersonalHit]:
    for match in _CARD.finditer(text):
        value = match.group(0)
        digits = re.sub(r"\D", "", value)
        if not 13 <= len(digits) <= 19 or len(set(digits)) < 2:
            continue
        if not (card_brand(digits) and luhn_ok(digits)):
            continue
        yield PersonalHit("payment card number", value, match.start(), "*" * 12 + digits[-4:])


def luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The card network an issuer prefix (IIN) belongs to, for lengths that network uses."""
    length = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4" and length in (13, 16, 19):
        return "Visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and length == 16:
        return "Mastercard"
    if two in (34, 37) and length == 15:
        return "American Express"
    if (digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649) and length in (16, 19):
        return "Discover"
    if 3528 <= four <= 3589 and 16 <= length <= 19:
        return "JCB"
    if (two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305) and 14 <= length <= 19:
        return "Diners Club"
    return None
