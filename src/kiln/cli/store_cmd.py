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
        help="the run history's database (migrate, copy)",
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
    copy = commands.add_parser(
        "copy",
        parents=parents,
        help="copy a whole history into an empty database (SQLite -> PostgreSQL, ...)",
        description="Copy every table of a history (runs and their records, builds, users, "
        "tokens, the audit log, environments, exports) into an empty database, then check "
        "the copy: each table's row count and checksum, read back from the copy, must match "
        "the source's. Run folders and artefacts are not moved: the copied runs name them "
        "where they are.",
    )
    copy.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="the history to copy (default: $KILN_DATABASE_URL, else store.url in kiln.yaml, "
        "else SQLite in the home folder)",
    )
    copy.add_argument(
        "--to", dest="target", metavar="URL", required=True, help="the empty database"
    )
    copy.add_argument("--json", action="store_true", help="print the tables' checks as JSON")
    copy.set_defaults(handler=handle_copy)


def handle_copy(args: argparse.Namespace) -> int:
    import json

    from kiln.store import default_home
    from kiln.store.copy import TableCopy, copy_history
    from kiln.store.litedb import sqlite_url
    from kiln.store.paths import database_url

    source = args.source or database_url()
    if source is None:
        source = sqlite_url(default_home() / "kiln.db")

    def shown(table: TableCopy) -> None:
        if args.quiet or args.json:
            return
        check = "ok" if table.ok else "MISMATCH"
        print(
            f"{table.name:>15}: {table.rows:>9,} rows, checksum {table.source_sum[:16]}; "
            f"copy {table.copy_rows:,} rows, {table.copy_sum[:16]}: {check}",
            file=sys.stderr,
        )

    tables = copy_history(source, args.target, on_table=shown)
    if args.json:
        print(json.dumps([{**vars(t), "ok": t.ok} for t in tables], indent=2))
    bad = [t.name for t in tables if not t.ok]
    if bad:
        print(f"the copy differs from the source in: {', '.join(bad)}", file=sys.stderr)
        return 1
    if not args.quiet:
        rows = sum(t.rows for t in tables)
        print(f"copied {rows:,} rows in {len(tables)} tables; every check matches", file=sys.stderr)
    return 0


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
