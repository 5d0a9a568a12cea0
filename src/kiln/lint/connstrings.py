"""Passwords in connection strings: URLs with credentials and ``key=value`` lists.

Two forms, in any text (sources, outputs, metadata):

* URLs: ``postgresql://user:pw@host``, ``redis://:pw@host`` (no user name), ``rediss://``,
  ``amqp://``, ``jdbc:mysql://user:pw@host``; percent-encoded passwords (``p%40ss``) included.
* ``key=value`` lists: JDBC parameters (``?user=u&password=pw``, ``;password=pw``), ADO.NET and
  ODBC (``Server=...;User Id=...;Password=pw;``, ``PWD={pw}``) and libpq keyword strings
  (``host=db user=u password=pw``). A ``password=`` only counts in such a list: a URL query, or
  next to a ``host=``/``server=``/``user=``-style key, and ending where a list item ends (a
  ``password=pw)`` or ``password=os.environ[...]`` in code is not a connection string).

Placeholders are not secrets: empty values, ``<password>``, ``{password}``, ``${PASSWORD}``,
``%s``, ``***``, ``?``, ``changeme``, ``myPassword``/``YourPassword`` and the other words
:data:`PLACEHOLDER` lists, also when percent-encoded (``%3Cpassword%3E``); a password equal to
the user name (``guest:guest``, ``postgres:postgres``: the documented defaults of local
servers); and URLs to hosts reserved for documentation (``db.example.com``, ``*.test``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote

from kiln.lint.personal import is_documentation_domain

KIND = "password in a connection string"

PLACEHOLDER = re.compile(
    r"^(?:x+|\*+|\.+|-+|#+|0+|\?+|none|null|nil|true|false|undefined|changeme|change_me|secret|"
    r"password|passwd|pass|pwd|token|key|test|testing|dummy|example|sample|foo|bar|todo|tbd|"
    r"redacted|hidden|masked|placeholder|your[-_ ].*|my[-_ ].*|(?-i:(?:[Mm]y|[Yy]our)[A-Z]\w*)|"
    r".*\{.*\}.*|"
    r".*(?-i:%(?:\(\w+\))?[sdr]).*|.*<[^>]*>.*|\$.*|\.\.\.)$",
    re.I,
)


def is_placeholder(value: str) -> bool:
    """Whether ``value`` stands for a secret rather than being one (also percent-encoded)."""
    if PLACEHOLDER.match(value):
        return True
    return "%" in value and bool(PLACEHOLDER.match(unquote(value)))


_URL = re.compile(
    r"\b[a-z][a-z0-9+.\-]{1,30}://([^\s:/@'\"<>]{0,100}):([^\s@/'\"<>]{1,200})@([\w.\-\[\]]+)",
    re.I,
)
_KEY_VALUE = re.compile(
    r"(?<![\w\-])(?:password|passwd|pwd)[ \t]*=[ \t]*(\{(?:[^}]|\}\})*\}|[^;&\s'\"<>,()\[\]{}]*)",
    re.I,
)
#: another key of the same list: the sign that a `password=` is part of a connection string
_CONNECTION_KEY = re.compile(
    r"(?<![\w\-])(?:server|host|hostname|address|data source|database|dbname|initial catalog|"
    r"uid|user|user id|username|port|driver|dsn|sslmode)[ \t]*=",
    re.I,
)
_TEMPLATE_FIELD = re.compile(r"[a-z_][a-z0-9_]*|[A-Z_][A-Z0-9_]*|\d*")
_ITEM_END = frozenset(";&'\"<> \t\r\n")
_URL_TRIGGER = "://"
_KEY_TRIGGERS = ("assw", "ASSW", "pwd", "PWD", "Pwd")


def is_example_login(text: str, secret: str) -> bool:
    """Whether ``secret`` is the password of a ``scheme://user:secret@host`` URL in ``text``
    that only an example has: the user name as password (``guest:guest``) or a documentation
    host. For other scanners' hits on the same URL."""
    return any(m.group(2) == secret and _example_url(m) for m in _URL.finditer(text))


def _example_url(match: re.Match[str]) -> bool:
    user, secret, host = match.groups()
    return unquote(secret) == unquote(user) or is_documentation_domain(host.rstrip("."))


def find_connection_passwords(text: str) -> Iterator[tuple[str, int]]:
    """``(password, offset)`` for every password in a connection string in ``text``."""
    if _URL_TRIGGER in text:
        for match in _URL.finditer(text):
            secret = match.group(2)
            if not is_placeholder(secret) and not _example_url(match):
                yield secret, match.start(2)
    if "=" in text and any(trigger in text for trigger in _KEY_TRIGGERS):
        for match in _KEY_VALUE.finditer(text):
            found = _key_value_secret(text, match)
            if found is not None:
                yield found


def _key_value_secret(text: str, match: re.Match[str]) -> tuple[str, int] | None:
    value, start = match.group(1), match.start(1)
    if value.startswith("{"):
        value, start = value[1:-1].replace("}}", "}"), start + 1
        if not value or _TEMPLATE_FIELD.fullmatch(value):
            return None  # `{password}`, `{DB_PW}`, `{0}`: a template field, not ODBC quoting
    end = match.end()
    if not value or (end < len(text) and text[end] not in _ITEM_END):
        return None  # `password=pw)`, `password=os.environ[...]`: code, not a list item
    before = text[: match.start()].rstrip(" \t")[-1:]
    if before not in ("?", "&") and not _in_connection_list(text, match.start(), end):
        return None
    if is_placeholder(value):
        return None
    return value, start


def _in_connection_list(text: str, start: int, end: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    window = text[max(line_start, start - 300) : min(line_end, end + 300)]
    return bool(_CONNECTION_KEY.search(window))
