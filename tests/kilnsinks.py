"""Real servers on 127.0.0.1 for the delivery tests: an SMTP server (aiosmtpd) that keeps
every message, and an HTTP server that keeps every POST; each can refuse its first N
deliveries, to test retries."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class MailSink:
    host: str
    port: int
    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    refuse_first: int = 0
    attempts: int = 0
    logins: list[tuple[str, str]] = field(default_factory=list)


@contextmanager
def smtp_sink(refuse_first: int = 0, *, auth: bool = False) -> Iterator[MailSink]:
    """An aiosmtpd server on a free port of 127.0.0.1; ``sink.messages`` holds
    (recipients, message) for each message accepted."""
    from aiosmtpd.controller import Controller

    sink = MailSink("127.0.0.1", 0, refuse_first=refuse_first)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            sink.attempts += 1
            if sink.attempts <= sink.refuse_first:
                return "451 4.3.0 try again later"
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            sink.messages.append((list(envelope.rcpt_tos), parsed))
            return "250 OK"

    import socket

    with socket.socket() as probe:  # aiosmtpd checks its port by connecting: it needs one
        probe.bind(("127.0.0.1", 0))
        sink.port = probe.getsockname()[1]

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        sink.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)

    options: dict[str, Any] = {}
    if auth:  # plain-text login on 127.0.0.1 only: the test checks the credentials arrive
        options = {"authenticator": authenticator, "auth_require_tls": False}
    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port, **options)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class HookSink:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    attempts: int = 0


@contextmanager
def webhook_sink(status: int = 200) -> Iterator[HookSink]:
    """An HTTP server on a free port of 127.0.0.1 answering POSTs with ``status`` and
    keeping their JSON bodies."""
    sink = HookSink("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            sink.attempts += 1
            if sink.status < 300:
                sink.posts.append(
                    {"json": json.loads(body), "content_type": self.headers["Content-Type"]}
                )
            self.send_response(sink.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.status = status
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
