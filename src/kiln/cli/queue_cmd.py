"""``kiln worker`` runs queued runs; ``kiln queue`` shows what is queued and running."""

from __future__ import annotations

import argparse
import asyncio
import json
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
    q = sub.add_parser(
        "queue",
        parents=parents,
        help="show queued and running runs",
        description="Runs waiting in the queue (oldest first) and running, with the worker "
        "holding each.",
    )
    q.add_argument("--json", action="store_true", help="print the runs as JSON")
    q.set_defaults(handler=handle_queue)


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


def handle_queue(args: argparse.Namespace) -> int:
    from kiln.cli.runs_cmd import console, local_time, open_store, short_params
    from kiln.errors import HomeNotFound
    from kiln.store.records import RunState

    try:
        with open_store() as store:
            active = store.list_runs(state=[RunState.QUEUED, RunState.RUNNING], limit=None)
    except HomeNotFound as exc:
        if args.json:
            print("[]")
        print(exc.message, file=sys.stderr)
        return 0
    active.sort(key=lambda r: (r.state is not RunState.RUNNING, r.created_at))
    if args.json:
        print(json.dumps([r.to_json() for r in active], indent=2, default=str))
        return 0
    if not active:
        print("Nothing queued or running.", file=sys.stderr)
        return 0
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "STATE", "NOTEBOOK", "SUBMITTED", "WORKER", "ATTEMPT", "PARAMETERS"):
        table.add_column(column, overflow="fold")
    for run in active:
        attempt = f"{run.attempt or 1}/{(run.max_retries or 0) + 1}"
        table.add_row(
            run.id, run.state.value, run.notebook_path.rsplit("/", 1)[-1],
            local_time(run.created_at), run.lease_owner or "-", attempt,
            short_params(run.parameters),
        )  # fmt: skip
    console().print(table)
    return 0
