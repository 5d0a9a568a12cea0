"""Who is asking, and may they: bearer tokens, browser sessions, a trusted proxy's header,
roles, and the brute-force limit on logins.

Every route depends on :func:`principal` (or on :func:`requires`, which adds a role check)
except ``/health``, ``/metrics`` with ``--metrics-public`` and the login page. A request
without valid credentials is answered 401 (API routes) or redirected to the login page (pages);
a valid user whose role is too low gets 403, saying which role the action needs.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from fastapi import Request

from kiln.errors import AccountError, AccountNotFound
from kiln.server.errors import HTTPProblem
from kiln.store import accounts

if TYPE_CHECKING:
    from kiln.server.settings import ServerSettings
    from kiln.store.sql import RunStore

SESSION_COOKIE = "kiln_session"
#: failed logins a minute, per address and per user, before logins are refused (429)
MAX_FAILURES = 5
WINDOW = 60.0
#: a token's last use is written at most this often (seconds)
_TOUCH_EVERY = 60.0
#: how long a verified credential is trusted without asking the database again (seconds).
#: A change made by any Kiln process sharing the home (a revocation, a removed user, a new
#: role or password) ends the trust at once (:data:`kiln.store.accounts.CHANGED_STAMP`); one
#: made by a server on another machine sharing a PostgreSQL history is seen within this time.
TRUST_FOR = 2.0
#: verified credentials kept at most (a flood of distinct tokens cannot grow the cache)
_TRUSTED_MAX = 4096


@dataclass(frozen=True)
class Principal:
    """The user behind a request and how it proved it (``token``, ``session``, ``header``)."""

    name: str
    role: str
    via: str
    token_id: str | None = None

    def may(self, role: str) -> bool:
        return accounts.role_allows(self.role, role)


class NeedsLogin(HTTPProblem):
    """401 for the API; a page answers with a redirect to the login page instead."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Bearer realm="kiln"'})


class LoginThrottle:
    """Failed logins in the last minute, by address and by user name (in memory, bounded)."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, collections.deque[float]] = {}

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        found = self._failures.get(key)
        if found is None:
            return collections.deque()
        while found and found[0] <= now - self.window:
            found.popleft()
        if not found:
            self._failures.pop(key, None)
        return found

    def retry_after(self, address: str, user: str, now: float | None = None) -> float | None:
        """Seconds until a login may be tried again, or None when it may now."""
        now = time.monotonic() if now is None else now
        waits = []
        for key in (f"addr:{address}", f"user:{user}"):
            recent = self._recent(key, now)
            if len(recent) >= self.limit:
                waits.append(recent[0] + self.window - now)
        return max(waits) if waits else None

    def failed(self, address: str, user: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._failures) > 100_000:  # a flood of names: forget the oldest half
            for key in list(self._failures)[: len(self._failures) // 2]:
                del self._failures[key]
        for key in (f"addr:{address}", f"user:{user}"):
            self._failures.setdefault(key, collections.deque()).append(now)


@dataclass(frozen=True)
class _Trusted:
    """A credential verified against the store: trusted until ``until`` (monotonic), while
    the accounts stamp still reads ``stamp``, and never past the token's own expiry."""

    who: Principal
    until: float
    stamp: str
    expires_at: datetime | None


class Authenticator:
    """Checks a request's credentials against the store (one per app).

    A credential verified in the last :data:`TRUST_FOR` seconds is trusted without asking the
    database again (:meth:`trusted`, cheap enough for the event loop), so that a client
    calling an endpoint in a loop costs one lookup every two seconds instead of one a call.
    Revoking a token, removing a user or changing a role or a password (from the API, the web
    UI or ``kiln tokens``/``kiln users``) rewrites the accounts stamp, which ends that trust
    at the next request; an expired token is never trusted."""

    def __init__(self, store: RunStore, settings: ServerSettings) -> None:
        self.store = store
        self.settings = settings
        self.throttle = LoginThrottle()
        self._touched: dict[str, float] = {}
        self._trusted: dict[tuple[str, str], _Trusted] = {}

    def trusted(self, request: Request) -> Principal | None:
        """The principal of a request whose credential was verified a moment ago, or None
        (then :meth:`identify` asks the store)."""
        if not self._trusted:
            return None
        key = self._key(request)
        found = self._trusted.get(key) if key is not None else None
        if found is None:
            return None
        now = time.monotonic()
        if now >= found.until or found.stamp != accounts.changed_stamp(self.store):
            return None
        if found.expires_at is not None and found.expires_at <= datetime.now(timezone.utc):
            return None
        token_id = found.who.token_id
        if token_id is not None and now - self._touched.get(token_id, 0.0) >= _TOUCH_EVERY:
            return None  # its last use is due to be written: the store's path does that
        return found.who

    def _key(self, request: Request) -> tuple[str, str] | None:
        """What a request's credential is looked up by: the header's user name, or the
        hash of its token (secrets are not kept)."""
        from kiln.server.accounts import token_hash

        header = self.settings.trusted_user_header
        if header is not None:
            name = request.headers.get(header)
            if name:
                return ("header", name)
        auth = request.headers.get("authorization")
        if auth:
            scheme, _, secret = auth.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                return None
            return ("api", token_hash(secret.strip()))
        cookie = request.cookies.get(SESSION_COOKIE)
        return ("session", token_hash(cookie)) if cookie else None

    def identify(self, request: Request) -> Principal:
        """The principal of a request, or :class:`NeedsLogin` saying what was wrong (asks
        the store: call it off the event loop)."""
        from kiln.server.accounts import authenticate_token

        # read before the store: a change committed during the lookup then ends the trust
        stamp = accounts.changed_stamp(self.store)
        header = self.settings.trusted_user_header
        if header is not None:
            name = request.headers.get(header)
            if name:
                try:
                    user = accounts.get_user(self.store, name)
                except AccountNotFound:
                    raise NeedsLogin(
                        f"user {name!r} (from the {header} header) has no Kiln account: an "
                        f"admin adds it with kiln users add {name} --role viewer|runner|admin"
                    ) from None
                who = Principal(user.name, user.role, "header")
                self._trust(("header", name), who, stamp, None)
                return who
        auth = request.headers.get("authorization")
        if auth:
            scheme, _, secret = auth.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise NeedsLogin("expected 'Authorization: Bearer <token>'")
            return self._token(secret.strip(), "api", authenticate_token, stamp)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return self._token(cookie, "session", authenticate_token, stamp)
        raise NeedsLogin(
            "authentication required: send 'Authorization: Bearer <token>' (kiln tokens create)"
        )

    def _token(self, secret: str, kind: str, check: Callable[..., Any], stamp: str) -> Principal:
        from kiln.server.accounts import token_hash

        try:
            token, user = check(self.store, secret, kind)
        except AccountError as exc:
            what = "session" if kind == "session" else "token"
            raise NeedsLogin(f"invalid {what}: {exc.message.replace('the token', 'it')}") from None
        now = time.monotonic()
        if now - self._touched.get(token.id, -_TOUCH_EVERY) >= _TOUCH_EVERY:
            self._touched[token.id] = now
            accounts.touch_token(self.store, token.id)
        who = Principal(user.name, user.role, kind if kind == "session" else "token", token.id)
        self._trust((kind, token_hash(secret)), who, stamp, token.expires_at)
        return who

    def _trust(
        self, key: tuple[str, str], who: Principal, stamp: str, expires_at: datetime | None
    ) -> None:
        if len(self._trusted) >= _TRUSTED_MAX:
            self._trusted.clear()
        self._trusted[key] = _Trusted(who, time.monotonic() + TRUST_FOR, stamp, expires_at)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def principal(request: Request) -> Principal:
    """The dependency every protected route has: the user the gate identified
    (:class:`kiln.server.app.AuthGate`)."""
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):  # a public route asked for a user
        raise NeedsLogin("authentication required")
    return found


_WHAT = {
    "runner": "starting and cancelling runs and calling endpoints",
    "admin": "managing users, tokens and the audit log",
}


def requires(role: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the principal, who must have ``role`` (or a higher one), else 403."""

    async def check(request: Request) -> Principal:
        who = await principal(request)
        if not who.may(role):
            raise HTTPProblem(
                403,
                f"{who.name} is a {who.role}: {_WHAT.get(role, 'this')} needs the {role} role",
            )
        return who

    check.__name__ = f"requires_{role}"
    return check
