"""uvicorn's HTTP protocol with immediate TCP acknowledgements, so a request sent in two writes
is not held back 40 ms.

Many clients write a request's headers and its body separately. With Nagle's algorithm on
the client's socket (the default), the body waits until the headers are acknowledged, and a
Linux server acknowledges late (delayed ACK, up to 40 ms) when it has nothing to send yet: it
is waiting for the body. Measured on a notebook endpoint: p50 9-10 ms with a one-write client,
54-56 ms with a two-write one (Jupyter Kernel Gateway: 15-16 ms and 58-59 ms). Re-arming
``TCP_QUICKACK`` whenever data arrives (Linux clears it by itself) makes the kernel
acknowledge at once, and the body follows without the stall; the option costs one system
call per read. ``TCP_NODELAY`` on the server's own socket (``supervisor.listen``) is the
other half: it keeps the answer from waiting the same way.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

#: ``socket.TCP_QUICKACK`` where the platform has it (Linux); None elsewhere
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def _base() -> type[asyncio.Protocol]:
    """The protocol uvicorn's ``http="auto"`` would pick (httptools when installed, else h11)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return AutoHTTPProtocol


def protocol_class() -> type[asyncio.Protocol] | str:
    """The HTTP protocol class for ``uvicorn.Config(http=...)``: uvicorn's own, acknowledging
    at once where the platform can; ``"auto"`` where it cannot."""
    if QUICKACK is None:
        return "auto"
    base: Any = _base()

    class QuickAckProtocol(base):  # type: ignore[misc]  # a base chosen at run time
        _quickack_socket: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                self._quickack_socket = sock
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            sock = self._quickack_socket
            if sock is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
                except OSError:  # the connection is going away: nothing to acknowledge
                    self._quickack_socket = None
            super().data_received(data)

    QuickAckProtocol.__name__ = QuickAckProtocol.__qualname__ = f"QuickAck{base.__name__}"
    return QuickAckProtocol
