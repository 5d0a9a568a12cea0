"""Writing the audit log with secrets masked: the one way the server and the account commands
add entries.

Values are masked with the secret scanner of ``kiln lint`` (:mod:`kiln.lint.secret_scan`):
cloud keys, tokens, private keys, passwords in connection strings... keep a few characters
at each end or none (``AKIA************MPLE``, ``********``); a value under a name that says
it is secret (``password``, ``token``, ``api_key``...) is masked whole.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from kiln.store import audit

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

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
    if details:
        details = {k: masked(v) if k in MASKED_DETAILS else v for k, v in details.items()}
    audit.append(
        store,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        address=address,
        details=details or None,
    )
