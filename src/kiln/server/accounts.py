"""Accounts as people use them: passwords (argon2), tokens (random, stored as SHA-256), roles,
each change written to the audit log. ``kiln users``/``kiln tokens`` and the server's routes
both call these functions, so a change is checked and audited the same way from either side.

::

    secret, token = create_token(store, "alice", expires=30 * 86400, actor="root (cli)")
    print(secret)                       # shown once; only its hash is stored
    authenticate_token(store, secret)   # -> (token, user) while it is valid
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from kiln.errors import AccountError, UsageError
from kiln.server.auditlog import record
from kiln.store import accounts
from kiln.store.accounts import Token, User

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

#: a token's secret starts with this, so a leaked one is recognisable (and scanners can find it)
TOKEN_PREFIX = "kiln_"
MIN_PASSWORD = 8


def _hasher() -> object:
    try:
        from argon2 import PasswordHasher
    except ImportError:  # pragma: no cover - the server extra is missing
        raise UsageError(
            "accounts need the server's packages: pip install 'kiln-notebooks[server]'"
        ) from None
    return PasswordHasher()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    from argon2 import PasswordHasher

    hasher = _hasher()
    assert isinstance(hasher, PasswordHasher)
    return hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; an account without a password never matches."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _hasher()
    assert isinstance(hasher, PasswordHasher)
    if password_hash is None:
        # as slow as a real check, so timing does not tell which accounts have passwords
        hasher.hash(password or "x")
        return False
    try:
        return bool(hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    """A generated password (the first admin's): 20 URL-safe characters."""
    return secrets.token_urlsafe(15)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# -- users ------------------------------------------------------------------------------------


def create_user(
    store: RunStore,
    name: str,
    role: str,
    password: str | None,
    *,
    actor: str | None,
    address: str | None = None,
) -> User:
    accounts.check_user_name(name)
    accounts.check_role(role)
    hashed = hash_password(password) if password is not None else None
    user = accounts.add_user(store, name, role, hashed)
    details = {"role": role, "password": password is not None}
    record(store, actor=actor, action="user.add", target=name, address=address, details=details)
    return user


def ensure_first_admin(store: RunStore) -> str | None:
    """On a server's first start (no account at all): create ``admin`` with a generated
    password and return the password; None when accounts exist."""
    if accounts.count_users(store):
        return None
    password = new_password()
    if not accounts.add_first_admin(store, "admin", hash_password(password)):
        return None
    record(
        store,
        actor="kiln serve",
        action="user.add",
        target="admin",
        details={"role": "admin", "first_start": True},
    )
    return password


def _keep_an_admin(store: RunStore, name: str) -> None:
    user = accounts.get_user(store, name)
    admins = [u for u in accounts.list_users(store) if u.role == "admin"]
    if user.role == "admin" and len(admins) == 1:
        raise AccountError(f"{name} is the last admin: make another user admin first")


def remove_user(
    store: RunStore, name: str, *, actor: str | None, address: str | None = None
) -> User:
    _keep_an_admin(store, name)
    user = accounts.remove_user(store, name)
    record(store, actor=actor, action="user.remove", target=name, address=address)
    return user


def change_role(
    store: RunStore, name: str, role: str, *, actor: str | None, address: str | None = None
) -> User:
    before = accounts.get_user(store, name)
    if role != "admin":
        _keep_an_admin(store, name)
    user = accounts.set_role(store, name, role)
    record(
        store,
        actor=actor,
        action="user.set_role",
        target=name,
        address=address,
        details={"from": before.role, "to": role},
    )
    return user


def change_password(
    store: RunStore,
    name: str,
    password: str | None,
    *,
    actor: str | None,
    address: str | None = None,
) -> User:
    hashed = hash_password(password) if password is not None else None
    user = accounts.set_password(store, name, hashed)
    # a new password ends the sessions made with the old one
    for token in accounts.list_tokens(store, user=name, kind="session"):
        if token.revoked_at is None:
            accounts.revoke_token(store, token.id)
    record(
        store,
        actor=actor,
        action="user.set_password",
        target=name,
        address=address,
        details={"password": password is not None},
    )
    return user


# -- tokens -----------------------------------------------------------------------------------


#: the longest lifetime a token may be given, in seconds (10 years)
MAX_TOKEN_LIFETIME = 10 * 366 * 86400


def create_token(
    store: RunStore,
    user: str,
    *,
    expires: float | None,
    label: str | None = None,
    actor: str | None,
    address: str | None = None,
    kind: str = "api",
) -> tuple[str, Token]:
    """A new token for ``user``: (its secret, shown once; the stored record)."""
    if expires is not None and not 0 < expires <= MAX_TOKEN_LIFETIME:
        raise AccountError(
            "a token's lifetime must be positive and at most 10 years "
            "(a token without a lifetime never expires)"
        )
    secret = new_token_secret()
    expires_at = (
        datetime.now(timezone.utc) + timedelta(seconds=expires) if expires is not None else None
    )
    token = accounts.add_token(
        store, user=user, sha256=token_hash(secret), kind=kind, label=label, expires_at=expires_at
    )
    if kind == "api":
        details = {"token": token.id, "expires_at": expires_at.isoformat() if expires_at else None}
        record(
            store, actor=actor, action="token.create", target=user, address=address, details=details
        )
    return secret, token


def revoke_token(
    store: RunStore, token_id: str, *, actor: str | None, address: str | None = None
) -> Token:
    token = accounts.revoke_token(store, token_id)
    record(
        store,
        actor=actor,
        action="token.revoke",
        target=token.user_name,
        address=address,
        details={"token": token_id},
    )
    return token


def authenticate_token(store: RunStore, secret: str, kind: str | None = None) -> tuple[Token, User]:
    """The token and user a secret stands for, while it is valid; AccountError otherwise
    (the message says why: unknown, expired, revoked)."""
    found = accounts.token_by_hash(store, token_hash(secret))
    if found is None or (kind is not None and found[0].kind != kind):
        raise AccountError("unknown token")
    token, user = found
    if token.revoked_at is not None:
        raise AccountError("the token was revoked")
    if not token.active():
        raise AccountError("the token has expired")
    return token, user
