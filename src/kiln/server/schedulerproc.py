"""The scheduler process of ``kiln serve``: the project's schedules fired into the queue
that the server's workers run, dying with its server.

Started by :mod:`kiln.server.supervisor` as ``python -m kiln.server.schedulerproc`` when
``kiln.yaml`` has schedules. Like the workers it asks the kernel to kill it when the server
dies (``PR_SET_PDEATHSIG``); a fire is one transaction, so a kill loses or doubles nothing.
SIGTERM stops it after the step it is in.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln-serve-scheduler")
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    from kiln.processes import set_parent_death_signal

    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != args.parent:  # the server died before the death signal was set
        return 1
    from kiln.project import load_project
    from kiln.scheduler.service import SchedulerService

    logging.basicConfig(level=logging.INFO, format="kiln scheduler: %(message)s")
    service = SchedulerService(load_project(), workers=0)
    asyncio.run(service.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
