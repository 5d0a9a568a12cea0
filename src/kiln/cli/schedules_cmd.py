"""``kiln schedules``: list a project's schedules with their next fire times; pause, resume,
run one now."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "schedules",
        parents=parents,
        help="list, pause, resume or run the schedules of kiln.yaml",
        description="The schedules of the kiln.yaml above the working directory. `kiln "
        "scheduler` (or `kiln serve`) fires them.",
    )
    actions = s.add_subparsers(dest="action", metavar="ACTION")
    lst = actions.add_parser(
        "list", parents=parents, help="schedules, their next fire times and last slots"
    )
    lst.add_argument("-n", "--next", type=int, default=3, help="fire times to show (default 3)")
    lst.add_argument("--json", action="store_true", help="print them as JSON")
    lst.set_defaults(handler=handle_list)
    for action, text in (
        ("pause", "stop firing a schedule (until resumed)"),
        ("resume", "fire a paused schedule again (slots missed meanwhile are not run)"),
        ("run-now", "queue a run of a schedule now (a worker or kiln scheduler runs it)"),
    ):
        a = actions.add_parser(action, parents=parents, help=text, description=text)
        a.add_argument("name", help="the schedule's name")
        a.set_defaults(handler=handle_change, change=action)
    hist = actions.add_parser("history", parents=parents, help="the latest slots of a schedule")
    hist.add_argument("name", help="the schedule's name")
    hist.add_argument("-n", "--limit", type=int, default=20, help="slots to show")
    hist.add_argument("--json", action="store_true", help="print them as JSON")
    hist.set_defaults(handler=handle_history)
    s.set_defaults(handler=handle_list, next=3, json=False)


def _schedules() -> Any:
    from kiln.project import load_project
    from kiln.scheduler.views import schedules_of

    return schedules_of(load_project())


def handle_list(args: argparse.Namespace) -> int:
    from kiln.errors import HomeNotFound
    from kiln.scheduler.views import describe
    from kiln.store.sql import RunStore

    schedules = _schedules()
    try:
        store = RunStore(create=False)
    except HomeNotFound:
        store = None
    try:
        shown = describe(schedules, store, count=max(1, args.next))
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    if not shown:
        print("No schedules (kiln.yaml has no schedules section).", file=sys.stderr)
        return 0
    from rich.table import Table

    from kiln.cli.runs_cmd import console

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "CRON", "TIMEZONE", "NEXT", "LAST"):
        table.add_column(column, overflow="fold")
    for entry in shown:
        nexts = "paused" if entry["paused"] else "\n".join(entry["next"])
        last = entry["last"]
        last_text = "-" if last is None else f"{last['slot']} {last['state']}"
        table.add_row(entry["name"], entry["cron"], entry["timezone"], nexts, last_text)
    console().print(table)
    return 0


def handle_change(args: argparse.Namespace) -> int:
    import getpass

    from kiln.scheduler import views
    from kiln.store.sql import RunStore

    schedules = _schedules()
    views.known(schedules, args.name)
    by = getpass.getuser()
    with RunStore() as store:
        if args.change == "run-now":
            run_id = views.run_now(schedules, store, args.name, by=by)
            print(run_id)
            if not args.quiet and schedules[args.name].pipeline is not None:
                print(
                    f"queued build {run_id} of {args.name}; kiln scheduler (or kiln serve) runs it",
                    file=sys.stderr,
                )
            elif not args.quiet:
                print(
                    f"queued run {run_id} of {args.name}; a worker (kiln worker, kiln serve, "
                    "kiln scheduler) runs it",
                    file=sys.stderr,
                )
            return 0
        views.set_paused(schedules, store, args.name, args.change == "pause", by)
    if not args.quiet:
        print(f"{args.name}: {'paused' if args.change == 'pause' else 'resumed'}", file=sys.stderr)
    return 0


def handle_history(args: argparse.Namespace) -> int:
    from kiln.scheduler import views
    from kiln.store import slots
    from kiln.store.sql import RunStore

    views.known(_schedules(), args.name)
    with RunStore() as store:
        found = slots.slots(store, schedule=args.name, limit=args.limit)
    if args.json:
        print(json.dumps([s.to_json() for s in found], indent=2))
        return 0
    for slot in found:
        delivered = ""
        if slot.deliveries:
            delivered = " " + ", ".join(
                f"{d.get('kind')}:{'ok' if d.get('ok') else 'failed'}" for d in slot.deliveries
            )
        print(
            f"{slot.slot.isoformat()}  {slot.state:<9} {slot.run_id or slot.build_id or '-'}  "
            f"attempts {slot.attempts}{delivered}  {slot.reason or ''}".rstrip()
        )
    return 0
