"""Accounts of the server: users with a role, and tokens (API tokens and browser sessions).

Only hashes are stored: a user's password as an argon2 hash (made by the caller, which owns
the hashing library), a token as the SHA-256 of its secret. Tokens are looked up by that hash
and are only valid while their user exists, before ``expires_at`` and until revoked. Removing a
user revokes its tokens in the same transaction. Written in portable SQLAlchemy Core (SQLite and
PostgreSQL alike).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kiln.errors import AccountError, AccountExists, AccountNotFound
from kiln.store.schema import tokens, users

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

#: lowest first: each role may do what the ones before it may
ROLES: tuple[str, ...] = ("viewer", "runner", "admin")
#: kinds of token: made by ``kiln tokens create``, or by a browser's login
TOKEN_KINDS: tuple[str, ...] = ("api", "session")

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


#: a file in the Kiln home that every write taking access away rewrites (a token revoked, a
#: user removed, a role or a password changed), whichever process made it: a server that
#: trusts tokens it verified a moment ago (:class:`kiln.server.auth.Authenticator`) reads it
#: on each request and stops trusting them as soon as it changes
CHANGED_STAMP = "accounts.changed"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def changed_stamp(store: RunStore) -> str:
    """The stamp's current value ("" before the first change); a few microseconds to read."""
    try:  # read on every request: the bare system calls, not a buffered file object
        fd = os.open(Path(store.home) / CHANGED_STAMP, os.O_RDONLY)
    except OSError:
        return ""
    try:
        return os.read(fd, 64).decode("ascii", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _access_taken_away(store: RunStore) -> None:
    """Rewrite the stamp (a new random value, replaced atomically) after a committed change.
    A home that cannot take it leaves caches to their short trust period instead."""
    path = Path(store.home) / CHANGED_STAMP
    part = path.with_name(f".{CHANGED_STAMP}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        part.write_text(secrets.token_hex(16), encoding="ascii")
        os.replace(part, path)
    except OSError:
        part.unlink(missing_ok=True)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def check_user_name(name: str) -> str:
    """``name`` if it can name an account (letters, digits and ``._@+-``, up to 128)."""
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise AccountError(
            f"invalid user name {name!r}: use 1-128 letters, digits, '.', '_', '@', '+' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return role


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (admin > runner > viewer)."""
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    has_password: bool
    created_at: datetime | None
    updated_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "has_password": self.has_password,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True)
class Token:
    id: str
    user_name: str
    kind: str
    label: str | None
    created_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def active(self, now: datetime | None = None) -> bool:
        when = now or _now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > when)

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= _now():
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "user": self.user_name,
            "kind": self.kind,
            "label": self.label,
            "status": self.status,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


def _user(row: Any) -> User:
    return User(
        name=row.name,
        role=row.role,
        has_password=row.password_hash is not None,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _token(row: Any) -> Token:
    return Token(
        id=row.id,
        user_name=row.user_name,
        kind=row.kind,
        label=row.label,
        created_at=_utc(row.created_at),
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at),
        last_used_at=_utc(row.last_used_at),
    )


# -- users ------------------------------------------------------------------------------------


def add_user(store: RunStore, name: str, role: str, password_hash: str | None) -> User:
    """A new account; :class:`AccountExists` when the name is taken."""
    check_user_name(name)
    check_role(role)
    now = _now()
    values = {"name": name, "role": role, "password_hash": password_hash}
    with store._write() as conn:
        taken = conn.execute(sa.select(users.c.name).where(users.c.name == name)).first()
        if taken is not None:
            raise AccountExists(f"user {name!r} exists already")
        conn.execute(users.insert().values(**values, created_at=now, updated_at=now))
    return User(name, role, password_hash is not None, now, now)


def add_first_admin(store: RunStore, name: str, password_hash: str) -> bool:
    """Create ``name`` as an admin if, and only if, there is no account at all yet (checked
    and written in one transaction, so two servers starting at once make one admin)."""
    now = _now()
    with store._write() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(users)).scalar():
            return False
        conn.execute(
            users.insert().values(
                name=name,
                role="admin",
                password_hash=password_hash,
                created_at=now,
                updated_at=now,
            )
        )
    return True


def get_user(store: RunStore, name: str) -> User:
    with store._read() as conn:
        row = conn.execute(users.select().where(users.c.name == name)).first()
    if row is None:
        raise AccountNotFound(f"no user {name!r}")
    return _user(row)


def password_hash_of(store: RunStore, name: str) -> tuple[User, str | None] | None:
    """The account and its password hash, for a login; None when there is no such user."""
    with store._read() as conn:
        row = conn.execute(users.select().where(users.c.name == name)).first()
    return None if row is None else (_user(row), row.password_hash)


def list_users(store: RunStore) -> list[User]:
    with store._read() as conn:
        return [_user(row) for row in conn.execute(users.select().order_by(users.c.name))]


def count_users(store: RunStore) -> int:
    with store._read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar() or 0)


def set_role(store: RunStore, name: str, role: str) -> User:
    check_role(role)
    with store._write() as conn:
        done = conn.execute(
            users.update().where(users.c.name == name).values(role=role, updated_at=_now())
        ).rowcount
    if not done:
        raise AccountNotFound(f"no user {name!r}")
    _access_taken_away(store)
    return get_user(store, name)


def set_password(store: RunStore, name: str, password_hash: str | None) -> User:
    with store._write() as conn:
        done = conn.execute(
            users.update()
            .where(users.c.name == name)
            .values(password_hash=password_hash, updated_at=_now())
        ).rowcount
    if not done:
        raise AccountNotFound(f"no user {name!r}")
    _access_taken_away(store)
    return get_user(store, name)


def remove_user(store: RunStore, name: str) -> User:
    """Remove an account and revoke its tokens (one transaction)."""
    user = get_user(store, name)
    now = _now()
    with store._write() as conn:
        conn.execute(
            tokens.update()
            .where(tokens.c.user_name == name, tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if not conn.execute(users.delete().where(users.c.name == name)).rowcount:
            raise AccountNotFound(f"no user {name!r}")
    _access_taken_away(store)
    return user


# -- tokens -----------------------------------------------------------------------------------


def add_token(
    store: RunStore,
    *,
    user: str,
    sha256: str,
    kind: str = "api",
    label: str | None = None,
    expires_at: datetime | None = None,
) -> Token:
    """Record a token by the hash of its secret (the caller made the secret and shows it)."""
    if kind not in TOKEN_KINDS:
        raise AccountError(f"unknown token kind {kind!r}")
    now = _now()
    token = Token(secrets.token_hex(6), user, kind, label, now, expires_at, None, None)
    with store._write() as conn:
        if conn.execute(sa.select(users.c.name).where(users.c.name == user)).first() is None:
            raise AccountNotFound(f"no user {user!r}")
        conn.execute(
            tokens.insert().values(
                id=token.id,
                token_sha256=sha256,
                user_name=user,
                kind=kind,
                label=label,
                created_at=now,
                expires_at=expires_at,
            )
        )
    return token


def token_by_hash(store: RunStore, sha256: str) -> tuple[Token, User] | None:
    """The token with this hash and its user, if both exist (active or not: the caller
    checks :meth:`Token.active`)."""
    query = (
        sa.select(
            tokens,
            users.c.role,
            users.c.password_hash,
            users.c.created_at.label("uc"),
            users.c.updated_at.label("uu"),
        )
        .join(users, users.c.name == tokens.c.user_name)
        .where(tokens.c.token_sha256 == sha256)
    )
    with store._read() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    user = User(row.user_name, row.role, row.password_hash is not None, _utc(row.uc), _utc(row.uu))
    return _token(row), user


def list_tokens(
    store: RunStore, *, user: str | None = None, kind: str | None = "api"
) -> list[Token]:
    query = tokens.select().order_by(tokens.c.created_at, tokens.c.id)
    if user is not None:
        query = query.where(tokens.c.user_name == user)
    if kind is not None:
        query = query.where(tokens.c.kind == kind)
    with store._read() as conn:
        return [_token(row) for row in conn.execute(query)]


def get_token(store: RunStore, token_id: str) -> Token:
    with store._read() as conn:
        row = conn.execute(tokens.select().where(tokens.c.id == token_id)).first()
    if row is None:
        raise AccountNotFound(f"no token {token_id!r}")
    return _token(row)


def revoke_token(store: RunStore, token_id: str) -> Token:
    """Revoke a token (a revoked one stays revoked, with its first revocation time)."""
    with store._write() as conn:
        conn.execute(
            tokens.update()
            .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
    _access_taken_away(store)
    return get_token(store, token_id)


def revoke_by_hash(store: RunStore, sha256: str) -> None:
    """Revoke the token with this hash (a browser's logout)."""
    with store._write() as conn:
        conn.execute(
            tokens.update()
            .where(tokens.c.token_sha256 == sha256, tokens.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
    _access_taken_away(store)


def touch_token(store: RunStore, token_id: str, when: datetime | None = None) -> None:
    """Note when a token was last used (callers do this at most once a minute per token)."""
    with store._write() as conn:
        conn.execute(
            tokens.update().where(tokens.c.id == token_id).values(last_used_at=when or _now())
        )
