"""``kiln queue``: what is queued and running, and which worker holds each run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    q = sub.add_parser(
        "queue",
        parents=parents,
        help="show queued and running runs",
        description="Runs waiting in the queue (oldest first) and running, with the worker "
        "holding each.",
    )
    q.add_argument("--json", action="store_true", help="print the runs as JSON")
    q.set_defaults(handler=handle_queue)


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
