"""The server's HTTP protocol acknowledges every read at once (``TCP_QUICKACK``), so a client
that writes a request's headers and body separately is not held back by a delayed ACK (the
latency itself is measured by ``bench/server_bench.py``, not asserted here)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from unittest import mock

import pytest

from kiln.server import quickack

pytestmark = pytest.mark.skipif(quickack.QUICKACK is None, reason="TCP_QUICKACK is Linux's")


class _Socket:
    def __init__(self, family: int) -> None:
        self.family = family
        self.options: list[tuple[int, int, int]] = []
        self.fail = False

    def setsockopt(self, level: int, name: int, value: int) -> None:
        if self.fail:
            raise OSError("the connection is gone")
        self.options.append((level, name, value))


class _Transport:
    def __init__(self, sock: _Socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


def _protocol(sock: _Socket) -> Any:
    """A protocol object whose uvicorn half only records what it is given."""
    cls = quickack.protocol_class()
    assert isinstance(cls, type)
    base = cls.__mro__[1]
    proto = object.__new__(cls)
    with mock.patch.object(base, "connection_made", lambda self, t: None):
        transport: Any = _Transport(sock)
        proto.connection_made(transport)
    return proto


def test_it_is_uvicorns_own_protocol_underneath() -> None:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    cls = quickack.protocol_class()
    assert isinstance(cls, type) and issubclass(cls, AutoHTTPProtocol)


def test_every_read_rearms_the_immediate_acknowledgement_before_uvicorn_parses_it() -> None:
    sock = _Socket(socket.AF_INET)
    proto = _protocol(sock)
    base = type(proto).__mro__[1]
    seen: list[tuple[bytes, int]] = []
    with mock.patch.object(
        base, "data_received", lambda self, data: seen.append((data, len(sock.options)))
    ):
        proto.data_received(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n")
        proto.data_received(b"{}")
    quick = (socket.IPPROTO_TCP, quickack.QUICKACK, 1)
    assert sock.options == [quick, quick]  # Linux clears it by itself: set at every read
    assert [n for _, n in seen] == [1, 2]  # set before the data is handed on
    assert [d for d, _ in seen][1] == b"{}"


def test_a_connection_going_away_is_not_an_error_and_not_retried() -> None:
    sock = _Socket(socket.AF_INET6)
    proto = _protocol(sock)
    base = type(proto).__mro__[1]
    sock.fail = True
    with mock.patch.object(base, "data_received", lambda self, data: None):
        proto.data_received(b"x")
        sock.fail = False
        proto.data_received(b"y")
    assert sock.options == []


def test_a_unix_socket_is_left_alone() -> None:
    sock = _Socket(socket.AF_UNIX)
    proto = _protocol(sock)
    base = type(proto).__mro__[1]
    with mock.patch.object(base, "data_received", lambda self, data: None):
        proto.data_received(b"x")
    assert sock.options == []


def test_kiln_serve_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from kiln.server import supervisor

    given: dict[str, Any] = {}

    class _Stop(Exception):
        pass

    def config(app: Any, **kwargs: Any) -> Any:
        given.update(kwargs)
        raise _Stop

    monkeypatch.setattr(uvicorn, "Config", config)
    monkeypatch.setattr(supervisor, "WorkerProcesses", lambda settings: mock.Mock())
    monkeypatch.setattr("kiln.server.app.build_app", lambda *a, **k: (None, None))
    settings = mock.Mock(schedules=None, root_path="", grace=1.0, host="127.0.0.1", port=0)
    with pytest.raises(_Stop):
        asyncio.run(supervisor._serve(settings, mock.Mock(), mock.Mock()))
    http = given["http"]
    assert isinstance(http, type) and http.__name__.startswith("QuickAck")
