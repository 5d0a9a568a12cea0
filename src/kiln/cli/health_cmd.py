"""``kiln health``: whether the project's scheduler is alive, for an external monitor."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kiln.cli.worker_cmd import _duration


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    h = sub.add_parser(
        "health",
        parents=parents,
        help="check that a scheduler is alive (exit 1 if not), for monitors",
        description="Exit 0 when a scheduler of this history (kiln scheduler, kiln serve) "
        "beat within --max-age, 1 otherwise; prints the last heartbeat's age and the open "
        "slots. Schedulers beat every 5 seconds.",
    )
    h.add_argument(
        "--max-age", type=_duration, default=None, metavar="DURATION",
        help="the oldest heartbeat that counts as alive (default 60s, or with --alert the "
        "alerts section's heartbeat limit)",
    )  # fmt: skip
    h.add_argument("--json", action="store_true", help="print the check as JSON")
    h.add_argument(
        "--alert", action="store_true",
        help="send kiln.yaml's alerts (e-mail, webhook) when no scheduler beat within the "
        "alerts section's heartbeat limit (default: --max-age)",
    )  # fmt: skip
    h.set_defaults(handler=handle_health)


def handle_health(args: argparse.Namespace) -> int:
    from kiln.errors import HomeNotFound
    from kiln.scheduler.service import heartbeat_age
    from kiln.store import slots
    from kiln.store.sql import RunStore

    try:
        with RunStore(create=False) as store:
            age = heartbeat_age(store)
            open_slots = len(slots.slots(store, states=slots.OPEN))
    except HomeNotFound:
        age, open_slots = None, 0
    limit = 60.0 if args.max_age is None else args.max_age
    if args.alert:
        from kiln.project import load_project

        project = load_project()
        if project.config.alerts is not None and args.max_age is None:
            limit = project.config.alerts.heartbeat
    alive = age is not None and age.total_seconds() <= limit
    shown = {
        "scheduler_alive": alive,
        "heartbeat_age_s": None if age is None else round(age.total_seconds(), 1),
        "max_age_s": limit,
        "open_slots": open_slots,
    }
    if args.json:
        print(json.dumps(shown))
    elif age is None:
        print("no scheduler has run on this history (or all stopped)", file=sys.stderr)
    else:
        state = "alive" if alive else "NOT alive"
        print(f"scheduler {state}: last heartbeat {age.total_seconds():.1f}s ago "
              f"(limit {limit:g}s); {open_slots} open slot(s)")  # fmt: skip
    if args.alert and not alive:
        from kiln.report.alerts import send_alert

        text = (
            "no scheduler has beaten on this history"
            if age is None
            else f"the last scheduler heartbeat is {age.total_seconds():.0f}s old "
            f"(limit {limit:g}s)"
        )
        sent = send_alert(project, "heartbeat", {"text": text, **shown})
        if not sent:
            print("--alert: kiln.yaml has no alerts section: nothing sent", file=sys.stderr)
    return 0 if alive else 1
