"""What every request and response goes through: a body size limit, security headers, and one
access log line.

Pure ASGI (no per-request objects beyond what the app builds), so it costs the hot path
(notebook endpoints) next to nothing and never buffers a streamed answer (Server-Sent Events).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("kiln.server.access")

#: for API answers (JSON, text): nothing may load, nothing may frame them
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: the rendered output of a run: scripts run in a sandbox with an opaque origin (no cookies,
#: no access to the API or the UI); only Kiln's own pages may frame it
SANDBOX_CSP = "sandbox allow-scripts; frame-ancestors 'self'"
#: Kiln's own pages (login, API docs)
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
    "https://fastapi.tiangolo.com; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


class ServerMiddleware:
    """Body limit, security headers, access log: one layer around the whole app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        log_json: bool = False,
        answered: Callable[[str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.log_json = log_json
        #: told the method and status of every answer (the request counter of /metrics)
        self.answered = answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 0, "sent": False}
        if _has_nul(scope):
            await _refuse(send, 400, "NUL characters are not accepted in a URL", state)
            self._log(scope, state, started)
            return
        limit = self.max_body
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = True
            if too_big:
                await _too_large(send, limit, state)
                self._log(scope, state, started)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            if state.get("refused"):
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # answer 413 now; the app sees the client go away
                    state["refused"] = True
                    if not state["sent"]:
                        await _too_large(send, limit, state)
                    return {"type": "http.disconnect"}
            return message

        async def secured_send(message: Message) -> None:
            if state.get("refused"):
                return  # the 413 went out instead
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["sent"] = True
                message["headers"] = _secure(list(message.get("headers") or []))
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except Exception:
            if not state.get("refused"):
                raise
        finally:
            self._log(scope, state, started)

    def _log(self, scope: Scope, state: dict[str, Any], started: float) -> None:
        if self.answered is not None:
            self.answered(str(scope.get("method", "")), int(state["status"]))
        if not access_log.isEnabledFor(logging.INFO):
            return
        took = (time.perf_counter() - started) * 1000
        client = scope.get("client") or ("-", 0)
        found = scope.get("state")
        user = getattr(found.get("principal"), "name", None) if isinstance(found, dict) else None
        path = scope.get("path", "")  # uvicorn puts the root path in front already
        access_log.info(
            "%s %s %s %d %.1fms",
            client[0],
            scope.get("method"),
            path,
            state["status"],
            took,
            extra={
                "kiln": {
                    "client": client[0],
                    "method": scope.get("method"),
                    "path": path,
                    "status": state["status"],
                    "ms": round(took, 2),
                    "user": user,
                }
            },
        )


def _secure(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in headers}
    out = list(headers)
    out.extend(pair for pair in _ALWAYS if pair[0] not in names)
    if b"content-security-policy" not in names:
        out.append((b"content-security-policy", API_CSP.encode()))
    if b"x-frame-options" not in names:
        out.append((b"x-frame-options", b"DENY"))
    if b"cache-control" not in names:
        out.append((b"cache-control", b"no-store"))
    return out


def _has_nul(scope: Scope) -> bool:
    """Whether the path or the query holds a NUL, raw or %-encoded: no name, id or path
    Kiln knows has one, and PostgreSQL refuses it in text (a 503 instead of a 404)."""
    raw = bytes(scope.get("raw_path") or b"") + b"?" + bytes(scope.get("query_string") or b"")
    return b"\0" in raw or b"%00" in raw or "\0" in scope.get("path", "")


async def _too_large(send: Send, limit: int, state: dict[str, Any]) -> None:
    detail = f"the request body is larger than the server accepts ({limit} bytes)"
    await _refuse(send, 413, detail, state)


async def _refuse(send: Send, status: int, detail: str, state: dict[str, Any]) -> None:
    payload = json.dumps({"detail": detail}).encode()
    state["status"], state["sent"] = status, True
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _secure(
                [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ]
            ),
        }
    )
    await send({"type": "http.response.body", "body": payload})
