"""Notifications as a JSON POST (chat tools, alerting): the run's summary, masked."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kiln import __version__


def _masked(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v, mask) for k, v in value.items()}
    return value


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    timeout: float = 10.0,
    mask: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """POST ``payload`` (every text masked) to ``url``; raises unless the answer is 2xx."""
    import urllib.error
    import urllib.request

    body = dict(payload)
    if "text" not in body:  # what chat tools (Slack, Mattermost, Teams) show
        body["text"] = (
            f"kiln: {payload.get('schedule')} {payload.get('state')} "
            f"({payload.get('notebook')}, slot {payload.get('slot')})"
        )
    if mask is not None:
        body = _masked(body, mask)
    data = json.dumps(body, default=str).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"kiln/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise RuntimeError(f"cannot reach {url}: {exc.reason}") from None
    return {"url": url, "status": status}
