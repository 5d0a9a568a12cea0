"""The endpoint calls' hot path in the API process: credentials verified a moment ago are
trusted without the store until access is taken away, and audit entries are handed to a writer
that appends every one of them, in order, off the event loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from kiln import errors
from kiln.server import accounts, auditlog, auth
from kiln.server.auth import SESSION_COOKIE, Authenticator, NeedsLogin
from kiln.server.settings import ServerSettings
from kiln.store import RunStore, audit
from kiln.store import accounts as store_accounts


@pytest.fixture
def store(tmp_path: Path, database_url: str | None) -> Iterator[RunStore]:
    opened = RunStore(tmp_path / "home")
    try:
        yield opened
    finally:
        opened.close()


def _settings(store: RunStore, header: str | None = None) -> ServerSettings:
    return ServerSettings(root=store.home, home=store.home, trusted_user_header=header)


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


def _bearer(secret: str) -> Request:
    return _request({"Authorization": f"Bearer {secret}"})


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The token lookups that reach the store."""
    seen: list[str] = []
    real = store_accounts.token_by_hash

    def counted(store: RunStore, sha256: str) -> Any:
        seen.append(sha256)
        return real(store, sha256)

    monkeypatch.setattr(store_accounts, "token_by_hash", counted)
    return seen


def test_a_verified_token_is_trusted_without_asking_the_store_again(
    store: RunStore, lookups: list[str]
) -> None:
    accounts.create_user(store, "ann", "runner", None, actor="t")
    secret, token = accounts.create_token(store, "ann", expires=3600, actor="t")
    gate = Authenticator(store, _settings(store))
    assert gate.trusted(_bearer(secret)) is None  # never verified yet
    who = gate.identify(_bearer(secret))
    assert (who.name, who.role, who.token_id) == ("ann", "runner", token.id)
    for _ in range(20):
        assert gate.trusted(_bearer(secret)) == who
    assert len(lookups) == 1
    other, _ = accounts.create_token(store, "ann", expires=3600, actor="t")
    assert gate.trusted(_bearer(other)) is None  # trust is per credential
    assert gate.trusted(_bearer(secret + "x")) is None
    assert gate.trusted(_request({})) is None
    assert store_accounts.get_token(store, token.id).last_used_at is not None


# each changes the store and says the role the token has afterwards (None: refused)


def _revoke(store: RunStore, token_id: str) -> str | None:
    store_accounts.revoke_token(store, token_id)
    return None


def _remove_user(store: RunStore, token_id: str) -> str | None:
    accounts.create_user(store, "other-admin", "admin", None, actor="t")
    store_accounts.remove_user(store, "ann")
    return None


def _new_role(store: RunStore, token_id: str) -> str | None:
    store_accounts.set_role(store, "ann", "viewer")
    return "viewer"


def _new_password(store: RunStore, token_id: str) -> str | None:
    store_accounts.set_password(store, "ann", None)
    return "runner"  # API tokens outlive a password change; it is checked again all the same


@pytest.mark.parametrize("take_away", [_revoke, _remove_user, _new_role, _new_password])
def test_trust_ends_at_once_when_access_is_taken_away(
    store: RunStore, lookups: list[str], take_away: Callable[[RunStore, str], str | None]
) -> None:
    # the store's own functions: what `kiln tokens revoke` or `kiln users` do in another
    # process, as much as what the API and the web UI do in the server's
    accounts.create_user(store, "ann", "runner", None, actor="t")
    secret, token = accounts.create_token(store, "ann", expires=3600, actor="t")
    gate = Authenticator(store, _settings(store))
    gate.identify(_bearer(secret))
    assert gate.trusted(_bearer(secret)) is not None
    role = take_away(store, token.id)
    assert gate.trusted(_bearer(secret)) is None
    if role is None:
        with pytest.raises(NeedsLogin):
            gate.identify(_bearer(secret))
    else:
        assert gate.identify(_bearer(secret)).role == role
        assert gate.trusted(_bearer(secret)) is not None  # trusted again once verified
    assert len(lookups) == 2


def test_a_session_ends_at_once_when_it_is_logged_out(store: RunStore) -> None:
    accounts.create_user(store, "ann", "viewer", None, actor="t")
    secret, _ = accounts.create_token(store, "ann", expires=3600, actor="t", kind="session")
    gate = Authenticator(store, _settings(store))
    browser = _request({"Cookie": f"{SESSION_COOKIE}={secret}"})
    assert gate.identify(browser).via == "session"
    assert gate.trusted(browser) is not None
    store_accounts.revoke_by_hash(store, accounts.token_hash(secret))
    assert gate.trusted(browser) is None
    with pytest.raises(NeedsLogin, match="revoked"):
        gate.identify(browser)


def test_a_user_named_by_the_proxy_is_trusted_until_removed(store: RunStore) -> None:
    accounts.create_user(store, "ann", "runner", None, actor="t")
    gate = Authenticator(store, _settings(store, header="X-Forwarded-User"))
    proxied = _request({"X-Forwarded-User": "ann"})
    assert gate.identify(proxied).via == "header"
    assert gate.trusted(proxied) is not None
    assert gate.trusted(_request({"X-Forwarded-User": "bob"})) is None
    accounts.create_user(store, "other-admin", "admin", None, actor="t")
    store_accounts.remove_user(store, "ann")
    assert gate.trusted(proxied) is None
    with pytest.raises(NeedsLogin, match="no Kiln account"):
        gate.identify(proxied)


def test_trust_lasts_a_moment_and_never_past_the_token_s_expiry(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts.create_user(store, "ann", "runner", None, actor="t")
    secret, _ = accounts.create_token(store, "ann", expires=3600, actor="t")
    gate = Authenticator(store, _settings(store))
    monkeypatch.setattr(auth, "TRUST_FOR", 0.0)
    gate.identify(_bearer(secret))
    assert gate.trusted(_bearer(secret)) is None  # trusted for no time at all
    monkeypatch.setattr(auth, "TRUST_FOR", 3600.0)
    gate.identify(_bearer(secret))
    assert gate.trusted(_bearer(secret)) is not None

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + timedelta(hours=2)

    monkeypatch.setattr(auth, "datetime", Later)
    assert gate.trusted(_bearer(secret)) is None  # the token has expired meanwhile


def test_a_token_s_last_use_is_still_written_once_a_minute(
    store: RunStore, lookups: list[str]
) -> None:
    accounts.create_user(store, "ann", "runner", None, actor="t")
    secret, token = accounts.create_token(store, "ann", expires=3600, actor="t")
    gate = Authenticator(store, _settings(store))
    gate.identify(_bearer(secret))
    gate._touched[token.id] -= 61  # a minute later
    assert gate.trusted(_bearer(secret)) is None  # the store's path writes its last use


# -- the audit writer ----------------------------------------------------------------------------

AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"


def test_every_entry_handed_to_the_writer_is_appended_in_order_and_masked(
    store: RunStore,
) -> None:
    writer = auditlog.AuditWriter(store)
    threads = [
        threading.Thread(
            target=lambda k=k: [
                writer.add(
                    actor=f"t{k}",
                    action="endpoint.call",
                    target="double",
                    details={"run": f"{k}-{i}", "parameters": {"key": AWS_KEY, "i": i}},
                )
                for i in range(50)
            ]
        )
        for k in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.flush()
    entries = audit.entries(store, limit=None)
    assert len(entries) == 200
    for k in range(4):  # each caller's entries in the order it gave them
        runs = [e.details["run"] for e in reversed(entries) if e.actor == f"t{k}"]
        assert runs == [f"{k}-{i}" for i in range(50)]
    assert AWS_KEY not in str([e.details for e in entries])
    writer.close()


def test_closing_the_writer_appends_what_is_pending_and_later_entries_too(
    store: RunStore,
) -> None:
    writer = auditlog.AuditWriter(store)
    for i in range(3):
        writer.add(actor="ann", action="endpoint.call", details={"run": str(i)})
    writer.close()  # no flush: the server's shutdown
    assert audit.count(store) == 3
    writer.add(actor="ann", action="endpoint.call", details={"run": "late"})
    assert audit.count(store) == 4


def test_a_failed_write_is_retried_and_one_that_keeps_failing_is_logged(
    store: RunStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = audit.append_many
    failures = [1]

    def flaky(store: RunStore, rows: list[dict[str, Any]]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise errors.StoreError("the history is away")
        real(store, rows)

    monkeypatch.setattr(audit, "append_many", flaky)
    monkeypatch.setattr(auditlog.time, "sleep", lambda seconds: None)
    writer = auditlog.AuditWriter(store)
    writer.add(actor="ann", action="endpoint.call", details={"run": "r1"})
    assert writer.flush()
    assert [e.details for e in audit.entries(store)] == [{"run": "r1"}]
    failures[0] = 1000
    with caplog.at_level(logging.ERROR, logger="kiln.server"):
        writer.add(actor="ann", action="endpoint.call", details={"run": "r2"})
        assert writer.flush()  # given up after its attempts: flush does not hang
    assert "could not write an audit entry" in caplog.text and "r2" in caplog.text
    writer.close()


def test_appending_many_entries_is_one_ordered_append(store: RunStore) -> None:
    at = datetime(2026, 1, 2, tzinfo=timezone.utc)
    audit.append_many(
        store,
        [
            {"actor": "ann", "action": "a0", "at": at},
            {"actor": "bob", "action": "a1", "outcome": "failed", "details": {"x": 1}},
        ],
    )
    newest, oldest = audit.entries(store)
    assert (oldest.action, oldest.at, newest.action, newest.outcome) == ("a0", at, "a1", "failed")
    assert newest.details == {"x": 1}
    with pytest.raises(ValueError, match="unknown audit outcome"):
        audit.append_many(store, [{"action": "a2", "outcome": "maybe"}])
    audit.append_many(store, [])
    assert audit.count(store) == 2
