"""``kiln audit``: the server's audit log (logins, runs submitted and cancelled, endpoint
calls, account and token changes), newest first. Read-only: nobody edits it through Kiln."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from kiln.cli.runs_cmd import _limit, _since

    p = sub.add_parser(
        "audit",
        parents=parents,
        help="show the audit log of kiln serve",
        description="Who did what, to what, when and from where: every login (success and "
        "failure) and every change (runs submitted or cancelled, endpoint calls, users and "
        "tokens), newest first. Secret values in parameters are masked.",
    )
    p.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only entries since: a duration ago (2d, 12h) or an ISO date/time",
    )
    p.add_argument("--user", help="only entries by this user")
    p.add_argument("--action", help="only this action (login, run.submit, token.create...)")
    p.add_argument(
        "-n", "--limit", type=_limit, default=50, help="at most this many (default 50; 0: all)"
    )
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from kiln.cli.runs_cmd import open_store
    from kiln.errors import HomeNotFound
    from kiln.store.audit import entries

    try:
        with open_store() as store:
            found = entries(
                store, since=args.since, actor=args.user, action=args.action, limit=args.limit
            )
    except HomeNotFound as exc:
        if args.json:
            print("[]")
        print(exc.message, file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps([e.to_json() for e in found], indent=2, default=str))
        return 0
    if not found:
        print("No audit entries match.", file=sys.stderr)
        return 0
    from rich.table import Table

    from kiln.cli.runs_cmd import console, local_time

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("WHEN", "WHO", "ACTION", "TARGET", "OUTCOME", "FROM", "DETAILS"):
        table.add_column(column, overflow="fold")
    for entry in found:
        details = json.dumps(entry.details, default=str) if entry.details else ""
        table.add_row(
            local_time(entry.at),
            entry.actor or "-",
            entry.action,
            entry.target or "",
            entry.outcome,
            entry.address or "-",
            details if len(details) <= 80 else details[:79] + "…",
        )
    console().print(table)
    return 0
