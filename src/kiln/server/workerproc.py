"""A worker process of ``kiln serve``: one :class:`kiln.queue.Worker`, dying with its server.

Started by :mod:`kiln.server.supervisor` as ``python -m kiln.server.workerproc``. It asks the
kernel to kill it when the server's thread that started it ends (``PR_SET_PDEATHSIG``), so a
server killed with SIGKILL leaves no worker claiming runs behind it: the runs it held are
found on the next start (their owner is gone) and marked crashed, or retried. SIGTERM drains
as ``kiln worker`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

#: the signal that wakes a worker (ignored by default, unlike SIGUSR1, which would kill a
#: worker still starting)
WAKE = signal.SIGURG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln-serve-worker")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--name")
    args = parser.parse_args(argv)
    from kiln.processes import set_parent_death_signal

    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != args.parent:  # the server died before the death signal was set
        return 1
    from kiln.queue import Worker

    worker = Worker(lease=args.lease, poll=args.poll, grace=args.grace, name=args.name)

    async def serve() -> None:
        # the server signals WAKE when a run is submitted: it is claimed now, not at the next
        # poll (an app's answer waits for it). Its default action is to ignore it, so a
        # signal that comes before this handler is set changes nothing.
        asyncio.get_running_loop().add_signal_handler(WAKE, worker.wake)
        await worker.run()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
