"""``kiln worker``: claims queued runs and runs them, N at a time, until stopped."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from kiln.units import parse_count, parse_duration


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        return parse_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    w = sub.add_parser(
        "worker",
        parents=parents,
        help="run queued runs (kiln run --queue, the server, schedules)",
        description="Claim queued runs from the history's queue and run them, N at a time, "
        "until stopped. SIGTERM or Ctrl-C drains: no new runs, running runs get --grace to "
        "finish, then are cancelled; a second Ctrl-C cancels at once. Start more workers "
        "(here or on other machines sharing the database) to run more at once.",
    )
    w.add_argument("-c", "--concurrency", type=_count, default=1, help="runs at a time")
    w.add_argument(
        "--lease", type=_duration, default=30.0, metavar="DURATION",
        help="how long a claim lasts without renewal before others treat the worker as dead",
    )  # fmt: skip
    w.add_argument(
        "--grace", type=_duration, default=30.0, metavar="DURATION",
        help="on SIGTERM, how long running runs may go on before they are cancelled",
    )  # fmt: skip
    w.add_argument("--until-empty", action="store_true", help="stop once the queue is empty")
    w.set_defaults(handler=handle_worker)


def handle_worker(args: argparse.Namespace) -> int:
    from kiln.queue import Worker

    worker = Worker(concurrency=args.concurrency, lease=args.lease, grace=args.grace)
    if not args.quiet:
        print(f"worker {worker.name}: {args.concurrency} at a time", file=sys.stderr)
    finished = asyncio.run(worker.run(until_empty=args.until_empty))
    if not args.quiet:
        counts: dict[str, int] = {}
        for run in finished:
            counts[run.state.value] = counts.get(run.state.value, 0) + 1
        shown = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no runs"
        print(f"worker {worker.name} stopped: {shown}", file=sys.stderr)
    return 0
