"""``kiln store migrate``: upgrade the runs database's schema, on purpose.

A SQLite history in the home folder is upgraded whenever a newer Kiln opens it; a shared
PostgreSQL database is only set up when empty, and upgraded by this command (workers of an
older Kiln may still use it: the upgrade is the operator's decision).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from kiln.cli.main import help_of

    p = sub.add_parser(
        "store",
        parents=parents,
        help="the run history's database (migrate)",
        description="The run history's database: SQLite in the home folder, or the "
        "database named by KILN_DATABASE_URL or store.url in kiln.yaml.",
    )
    commands = p.add_subparsers(dest="store_command", metavar="ACTION", parser_class=type(p))
    p.set_defaults(handler=help_of(p))
    migrate = commands.add_parser(
        "migrate",
        parents=parents,
        help="upgrade the database to this Kiln's schema (sets up a new one)",
        description="Create Kiln's tables in a new database, or upgrade an existing one to "
        "the schema this Kiln needs. Safe to run from several places at once (they take "
        "turns) and to run again (it then changes nothing). On a shared PostgreSQL database, "
        "upgrade Kiln everywhere that uses it.",
    )
    migrate.add_argument(
        "--url",
        metavar="URL",
        help="the database (default: $KILN_DATABASE_URL, else store.url in kiln.yaml, else "
        "SQLite in the home folder)",
    )
    migrate.set_defaults(handler=handle_migrate)


def handle_migrate(args: argparse.Namespace) -> int:
    from kiln.store.sql import migrate_store

    where, before, after = migrate_store(url=args.url)
    if not args.quiet:
        was = ", ".join(sorted(before)) or "empty"
        now = ", ".join(sorted(after))
        if before == after:
            print(f"{where}: already at schema version {now}", file=sys.stderr)
        else:
            print(f"{where}: schema version {was} -> {now}", file=sys.stderr)
    return 0
