"""``kiln users`` and ``kiln tokens``: the server's accounts, roles and API tokens.

Changes are written to the audit log as made by ``<you> (cli)``. Passwords come from a prompt
or ``--password-stdin`` (never the command line); a token is printed once, as the last line.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

ROLES = ("viewer", "runner", "admin")


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from kiln.cli.main import help_of

    u = sub.add_parser(
        "users",
        parents=parents,
        help="accounts of kiln serve: add, list, remove, set roles",
        description="Accounts of the server. Roles: viewer reads; runner also starts and "
        "cancels runs and calls endpoints; admin also manages users and tokens.",
    )
    us = u.add_subparsers(dest="users_command", metavar="ACTION", parser_class=type(u))
    u.set_defaults(handler=help_of(u))
    add = us.add_parser("add", parents=parents, help="add an account")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    how = add.add_mutually_exclusive_group()
    how.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (else a prompt)",
    )
    how.add_argument(
        "--no-password",
        action="store_true",
        help="no password: signs in only with tokens or a trusted proxy header",
    )
    add.set_defaults(handler=handle_add)
    ls = us.add_parser("list", parents=parents, help="list accounts")
    ls.add_argument("--json", action="store_true", help="print them as JSON")
    ls.set_defaults(handler=handle_list)
    rm = us.add_parser("remove", parents=parents, help="remove an account (its tokens revoked)")
    rm.add_argument("name")
    rm.set_defaults(handler=handle_remove)
    role = us.add_parser("set-role", parents=parents, help="change an account's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    role.set_defaults(handler=handle_set_role)
    pw = us.add_parser("set-password", parents=parents, help="change an account's password")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true", help="read it from standard input")
    pw.set_defaults(handler=handle_set_password)

    t = sub.add_parser(
        "tokens",
        parents=parents,
        help="API tokens of kiln serve: create, list, revoke",
        description="Bearer tokens for the REST API (Authorization: Bearer TOKEN). A token "
        "acts with its user's role; only its SHA-256 is stored, so it is shown once.",
    )
    ts = t.add_subparsers(dest="tokens_command", metavar="ACTION", parser_class=type(t))
    t.set_defaults(handler=help_of(t))
    create = ts.add_parser("create", parents=parents, help="a new token (printed once, last)")
    create.add_argument("user")
    create.add_argument(
        "--expires",
        type=_duration,
        metavar="DURATION",
        help="lifetime, e.g. 30d (default: until revoked)",
    )
    create.add_argument("--label", help="what the token is for")
    create.set_defaults(handler=handle_token_create)
    tl = ts.add_parser("list", parents=parents, help="list tokens (never their secrets)")
    tl.add_argument("--user", help="only this user's")
    tl.add_argument("--json", action="store_true", help="print them as JSON")
    tl.set_defaults(handler=handle_token_list)
    revoke = ts.add_parser("revoke", parents=parents, help="revoke a token")
    revoke.add_argument("id")
    revoke.set_defaults(handler=handle_token_revoke)


def _duration(text: str) -> float:
    from kiln.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def actor() -> str:
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):
        return "cli"


def _store() -> RunStore:
    from kiln.cli.serve_cmd import require_server_packages
    from kiln.store.sql import RunStore

    require_server_packages()
    return RunStore()


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        text = sys.stdin.readline().rstrip("\r\n")
        if not text:
            raise UsageError("--password-stdin: standard input held no password")
        return text
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: pipe it in with --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise UsageError("the two passwords differ")
    return first


def handle_add(args: argparse.Namespace) -> int:
    from kiln.server.accounts import create_user
    from kiln.store.accounts import check_user_name

    check_user_name(args.name)
    password = None if args.no_password else read_password(args.password_stdin)
    with _store() as store:
        create_user(store, args.name, args.role, password, actor=actor(), address="local")
    if not args.quiet:
        print(f"added {args.name} ({args.role})", file=sys.stderr)
    return 0


def handle_list(args: argparse.Namespace) -> int:
    from kiln.store.accounts import list_users

    with _store() as store:
        users = list_users(store)
    if args.json:
        print(json.dumps([u.to_json() for u in users], indent=2))
        return 0
    if not users:
        print("No accounts yet (kiln serve creates 'admin' on its first start).", file=sys.stderr)
        return 0
    from rich.table import Table

    from kiln.cli.runs_cmd import console, local_time

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("USER", "ROLE", "PASSWORD", "CREATED"):
        table.add_column(column)
    for user in users:
        table.add_row(
            user.name, user.role, "yes" if user.has_password else "no", local_time(user.created_at)
        )
    console().print(table)
    return 0


def handle_remove(args: argparse.Namespace) -> int:
    from kiln.server.accounts import remove_user

    with _store() as store:
        remove_user(store, args.name, actor=actor(), address="local")
    if not args.quiet:
        print(f"removed {args.name} (its tokens are revoked)", file=sys.stderr)
    return 0


def handle_set_role(args: argparse.Namespace) -> int:
    from kiln.server.accounts import change_role

    with _store() as store:
        change_role(store, args.name, args.role, actor=actor(), address="local")
    if not args.quiet:
        print(f"{args.name} is now {args.role}", file=sys.stderr)
    return 0


def handle_set_password(args: argparse.Namespace) -> int:
    from kiln.server.accounts import change_password
    from kiln.store.accounts import get_user

    with _store() as store:
        get_user(store, args.name)  # no prompt for an account that does not exist
        password = read_password(args.password_stdin)
        change_password(store, args.name, password, actor=actor(), address="local")
    if not args.quiet:
        print(f"changed the password of {args.name} (its browser sessions ended)", file=sys.stderr)
    return 0


def handle_token_create(args: argparse.Namespace) -> int:
    from kiln.server.accounts import create_token

    with _store() as store:
        secret, token = create_token(
            store, args.user, expires=args.expires, label=args.label, actor=actor(), address="local"
        )
    if not args.quiet:
        until = f", expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else ""
        print(f"token {token.id} for {args.user}{until}; it is shown once, here:", file=sys.stderr)
    print(secret)
    return 0


def handle_token_list(args: argparse.Namespace) -> int:
    from kiln.store.accounts import list_tokens

    with _store() as store:
        tokens = list_tokens(store, user=args.user)
    if args.json:
        print(json.dumps([t.to_json() for t in tokens], indent=2))
        return 0
    if not tokens:
        print("No tokens.", file=sys.stderr)
        return 0
    from rich.table import Table

    from kiln.cli.runs_cmd import console, local_time

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "USER", "STATUS", "CREATED", "EXPIRES", "LAST USED", "LABEL"):
        table.add_column(column)
    for token in tokens:
        table.add_row(
            token.id,
            token.user_name,
            token.status,
            local_time(token.created_at),
            local_time(token.expires_at),
            local_time(token.last_used_at),
            token.label or "",
        )
    console().print(table)
    return 0


def handle_token_revoke(args: argparse.Namespace) -> int:
    from kiln.server.accounts import revoke_token

    with _store() as store:
        token = revoke_token(store, args.id, actor=actor(), address="local")
    if not args.quiet:
        print(f"revoked token {token.id} of {token.user_name}", file=sys.stderr)
    return 0
