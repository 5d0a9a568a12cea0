"""The supervisor's end of a run's channel: messages read in batches, none lost, the end seen
at once (:class:`kiln.engines.forkrun.RunChannel`, over a real socket pair)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kiln.engines import forkrun
from kiln.engines.forkrun import RunChannel


async def _until(check: Callable[[], Any], event: asyncio.Event, seconds: float = 10.0) -> None:
    """Wait for ``check()`` (re-checked whenever the channel wakes its reader)."""
    end = time.monotonic() + seconds
    while not check():
        left = end - time.monotonic()
        assert left > 0, "the channel did not deliver in time"
        event.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), left)


def _opened(mine: Any, event: asyncio.Event) -> RunChannel:
    channel = RunChannel(mine)
    channel.open(os.getpid(), event.set)  # the writer is this process
    return channel


def test_the_end_of_the_channel_is_seen_at_once_with_what_waited(monkeypatch):
    # a window far longer than the test may wait: only the child ending its side can wake it
    monkeypatch.setattr(forkrun, "BATCH_WINDOW", 3600.0)

    async def main() -> None:
        mine, theirs = RunChannel.pair()
        event = asyncio.Event()
        channel = _opened(mine, event)
        theirs.sendall(b'{"kind": "cell_start", "cell": 0, "count": 1}\n')
        theirs.sendall(b'{"kind": "done"}\n')
        theirs.shutdown(socket.SHUT_WR)  # what the child does after DONE
        await _until(lambda: channel.eof, event)
        assert [line[:20] for line in channel.lines] == [
            b'{"kind": "cell_start',
            b'{"kind": "done"}',
        ]
        channel.close()
        theirs.close()

    asyncio.run(main())


def test_messages_written_while_the_supervisor_waits_arrive_within_a_window(monkeypatch):
    monkeypatch.setattr(forkrun, "BATCH_WINDOW", 0.01)

    async def main() -> None:
        mine, theirs = RunChannel.pair()
        event = asyncio.Event()
        channel = _opened(mine, event)
        # spread over several windows: the channel goes from waiting to eager and back
        for i in range(5):
            theirs.sendall(f'{{"kind": "output", "n": {i}}}\n'.encode())
            await _until(lambda i=i: len(channel.lines) == i + 1, event)
            await asyncio.sleep(0.02)
        assert not channel.eof
        channel.close()
        theirs.close()

    asyncio.run(main())


@pytest.mark.parametrize("window", [0.003, 0.05])
def test_a_flood_larger_than_the_socket_buffer_is_not_held_up(monkeypatch, window):
    monkeypatch.setattr(forkrun, "BATCH_WINDOW", window)
    line = b'{"kind": "output", "text": "' + b"x" * 1000 + b'"}\n'
    count = 4000  # ~4 MB: many times what the socket holds, so the writer blocks on it

    async def main() -> None:
        mine, theirs = RunChannel.pair()
        event = asyncio.Event()
        channel = _opened(mine, event)

        def write() -> None:
            for _ in range(count):
                theirs.sendall(line)
            theirs.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=write)
        writer.start()
        await _until(lambda: channel.eof, event, seconds=60)
        writer.join()
        assert len(channel.lines) == count and channel.error is None
        channel.close()
        theirs.close()

    asyncio.run(main())
