"""``kiln schedules``: list a project's schedules with their next fire times; pause, resume,
run one now; add one to kiln.yaml or remove it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "schedules",
        parents=parents,
        help="list, add, remove, pause, resume or run the schedules of kiln.yaml",
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
    _add_add_parser(actions, parents)
    rm = actions.add_parser(
        "remove",
        parents=parents,
        help="take a schedule out of kiln.yaml",
        description="Take a schedule's lines out of kiln.yaml (the rest of the file, comments "
        "included, stays as written). Its slots stay in the history.",
    )
    rm.add_argument("name", help="the schedule's name")
    rm.set_defaults(handler=handle_remove)
    hist = actions.add_parser("history", parents=parents, help="the latest slots of a schedule")
    hist.add_argument("name", help="the schedule's name")
    hist.add_argument("-n", "--limit", type=int, default=20, help="slots to show")
    hist.add_argument("--json", action="store_true", help="print them as JSON")
    hist.set_defaults(handler=handle_history)
    s.set_defaults(handler=handle_list, next=3, json=False)


def _add_add_parser(actions: Any, parents: list[argparse.ArgumentParser]) -> None:
    add = actions.add_parser(
        "add",
        parents=parents,
        help="write a new schedule into kiln.yaml",
        description="Write a schedule into kiln.yaml, checked as kiln scheduler will load it "
        "(cron, time zone, notebook or pipeline, parameters against the notebook's parameters "
        "cell). The file's comments and order stay; nothing is written when the result would "
        "not load. Values of -p are typed by the notebook; text with {{ }} is a template "
        "filled at fire time, e.g. -p day '{{ yesterday }}'.",
    )
    add.add_argument("name", help="the new schedule's name (letters, digits, _ . -)")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--notebook", metavar="NB", help="the notebook to run (from the root)")
    target.add_argument("--pipeline", metavar="P", help="a pipeline of kiln.yaml to build")
    add.add_argument("--cron", required=True, metavar="EXPR", help="cron expression or @daily")
    add.add_argument("--timezone", metavar="TZ", help="IANA time zone (default UTC)")
    add.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter value (repeatable)",
    )
    add.add_argument("--retries", type=int, metavar="N", help="run a failed slot again N times")
    add.add_argument(
        "--email", action="append", default=[], metavar="ADDR", help="e-mail the report here"
    )
    add.add_argument(
        "--on", choices=("success", "failure", "always"), help="when to e-mail (default always)"
    )
    add.set_defaults(handler=handle_add)


def handle_add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.errors import UsageError
    from kiln.scheduler.edit import add_schedule, schedule_body

    if args.retries is not None and args.retries < 0:
        raise UsageError(f"--retries: expected 0 or more; got {args.retries}")
    parameters: dict[str, Any] = {}
    for name, value in args.parameters:
        parameters[name] = value
    body = schedule_body(
        notebook=args.notebook,
        pipeline=args.pipeline,
        cron=args.cron,
        timezone=args.timezone,
        parameters=parameters,
        retries=args.retries,
        email=args.email,
        on=args.on,
    )
    project = add_schedule(Path.cwd(), args.name, body)
    if not args.quiet:
        from kiln.scheduler.views import schedules_of

        schedule = schedules_of(project)[args.name]
        from kiln.scheduler.core import utcnow

        nexts = ", ".join(
            schedule.cron.local(s).isoformat() for s in schedule.next_fires(utcnow(), 2)
        )
        print(f"added schedule {args.name} to {project.file}; next: {nexts}", file=sys.stderr)
    return 0


def handle_remove(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.scheduler.edit import remove_schedule

    path = remove_schedule(Path.cwd(), args.name)
    if not args.quiet:
        print(f"removed schedule {args.name} from {path}", file=sys.stderr)
    return 0


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
