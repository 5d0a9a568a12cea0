"""Writing the audit log with secrets masked: the one way the server and the account commands
add entries (:func:`record` now; :class:`AuditWriter` for the endpoint calls' hot path).

Values are masked with the secret scanner of ``kiln lint`` (:mod:`kiln.lint.secret_scan`):
cloud keys, tokens, private keys, passwords in connection strings... keep a few characters
at each end or none (``AKIA************MPLE``, ``********``); a value under a name that says
it is secret (``password``, ``token``, ``api_key``...) is masked whole.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kiln.store import audit

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

log = logging.getLogger("kiln.server")

#: a parameter whose name says it holds a secret is masked whatever its value looks like
_SECRET_NAME = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|api_?key|private_?key|credential)", re.I
)
_MASK = "********"


def masked(value: Any, *, name: str | None = None) -> Any:
    """``value`` with every secret the scanner knows replaced by its mask (nested values
    too); the whole value when ``name`` says it is a secret."""
    if name is not None and isinstance(value, str) and value and _SECRET_NAME.search(name):
        return _MASK
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, dict):
        return {key: masked(item, name=str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(item) for item in value]
    return value


def _mask_text(text: str) -> str:
    if len(text) < 8:
        return text
    from kiln.lint.secret_scan import find_secrets, mask

    try:
        hits = find_secrets(text)
    except Exception:  # the scanner failed: mask the whole value rather than keep it
        return _MASK
    for hit in sorted(hits, key=lambda h: h.start, reverse=True):
        end = hit.start + len(hit.secret)
        text = text[: hit.start] + mask(hit.secret, reveal=hit.reveal) + text[end:]
    return text


#: the details that hold what callers sent (and so may hold secrets); the rest is Kiln's own
#: words (run ids, statuses, roles), never scanned: an endpoint call is the hot path
MASKED_DETAILS = frozenset({"parameters", "options"})


def record(
    store: RunStore,
    *,
    actor: str | None,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    address: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry, the values callers sent (:data:`MASKED_DETAILS`) masked."""
    audit.append(
        store,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        address=address,
        details=_masked_details(details),
    )


def _masked_details(details: dict[str, Any] | None) -> dict[str, Any] | None:
    if not details:
        return None
    return {k: masked(v) if k in MASKED_DETAILS else v for k, v in details.items()}


#: entries written in one transaction at most
_BATCH = 500
#: how long the writer waits for more entries once one came (seconds): the delay before an
#: entry is in the history, unless a reader asks for it (:meth:`AuditWriter.flush`)
_LINGER = 0.05
#: attempts at writing a batch before it is given up (logged, entry by entry)
_ATTEMPTS = 5


class AuditWriter:
    """Appends entries on a thread of its own, the ones that arrive together in one
    transaction, in the order they were given.

    For the endpoint calls: handing an entry over costs the event loop microseconds, where a
    transaction of its own (and a hop to a worker thread) cost each call about a millisecond
    of the API process's CPU. Every entry given is written, within 50 ms
    (:data:`_LINGER`): :meth:`flush` waits for the ones given so far (the audit log's readers
    in this process call it, so they see their own calls), :meth:`close` (the server's
    shutdown) writes the rest. A write that fails (the history away) is retried; one that
    still fails is logged with its entries, never dropped silently."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._changed = threading.Condition()
        self._given = 0
        self._done = 0
        self._closed = False
        self._hurry = False
        self._thread: threading.Thread | None = None

    def add(
        self,
        *,
        actor: str | None,
        action: str,
        target: str | None = None,
        outcome: str = "ok",
        address: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Hand one entry over (masked and written on the writer's thread)."""
        # stamped when it happened, not when written
        entry = audit.entry(
            actor, action, target, outcome, address, details, datetime.now(timezone.utc)
        )
        with self._changed:
            if not self._closed:
                self._pending.append(entry)
                self._given += 1
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="kiln-audit", daemon=True
                    )
                    self._thread.start()
                if len(self._pending) == 1 or len(self._pending) >= _BATCH:
                    self._changed.notify_all()  # the writer waits for a first entry
                return
        self._write([entry])  # after close: written here, not lost

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the entries given so far are written; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._given
            self._hurry = True
            self._changed.notify_all()
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._changed.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending and stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if not self._pending:
                    return
                # the entries of calls that come together go in one transaction, and the
                # thread wakes a few times a second, not once a call
                lingered = time.monotonic() + _LINGER
                while not self._closed and not self._hurry and len(self._pending) < _BATCH:
                    left = lingered - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                self._hurry = False
                batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            try:
                self._write(batch)
            finally:
                with self._changed:
                    self._done += len(batch)
                    self._changed.notify_all()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        rows = [{**entry, "details": _masked_details(entry["details"])} for entry in batch]
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                audit.append_many(self.store, rows)
                return
            except Exception as exc:  # the history is away: wait a little and try again
                if attempt == _ATTEMPTS:
                    for row in rows:
                        log.error(
                            "could not write an audit entry (%s): %s",
                            exc,
                            {k: (str(v) if k == "at" else v) for k, v in row.items()},
                        )
                    return
                time.sleep(0.2 * attempt)
