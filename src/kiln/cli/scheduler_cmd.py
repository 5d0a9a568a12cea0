"""``kiln scheduler``: fire the project's schedules until stopped (no web server needed)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from kiln.cli.worker_cmd import _count, _duration


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "scheduler",
        parents=parents,
        help="fire the schedules of kiln.yaml until stopped",
        description="Fire the schedules of the kiln.yaml above the working directory: each "
        "slot once (also with several schedulers on one database), into the queue; retries; "
        "reports, e-mail and webhooks after each run. Runs queued runs itself with "
        "--workers (default 1); --workers 0 leaves them to `kiln worker` or `kiln serve`. "
        "The builds of pipeline schedules run in this process (at most max(1, --workers) "
        "at once). SIGTERM or Ctrl-C stops it (a build under way ends cancelled).",
    )
    s.add_argument(
        "-w", "--workers", type=_count, default=1,
        help="runs at a time in this process (0: none; other workers run them)",
    )  # fmt: skip
    s.add_argument(
        "--poll", type=_duration, default=1.0, metavar="DURATION",
        help="longest wait between two steps (slots fire at their time regardless)",
    )  # fmt: skip
    s.set_defaults(handler=handle_scheduler)


def handle_scheduler(args: argparse.Namespace) -> int:
    import logging

    from kiln.project import load_project
    from kiln.scheduler.model import load_schedules
    from kiln.scheduler.service import SchedulerService

    project = load_project()
    schedules = load_schedules(project)  # a broken schedule stops here, with where it is
    if not schedules:
        from kiln.errors import UsageError

        raise UsageError(f"{project.origin} has no schedules section: nothing to fire")
    logging.basicConfig(level=logging.WARNING, format="kiln scheduler: %(message)s")

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    service = SchedulerService(project, workers=args.workers, poll=args.poll, on_tick=say)
    from kiln.scheduler.core import utcnow

    now = utcnow()
    for name, schedule in schedules.items():
        nexts = schedule.next_fires(now, 1)
        when = schedule.cron.local(nexts[0]).isoformat() if nexts else "never"
        say(f"{name}: next {when}")
    say(f"scheduler {service.name}: {len(schedules)} schedules, {args.workers} worker(s)")
    asyncio.run(service.run())
    say("scheduler stopped")
    return 0
