"""``kiln --server URL --token T runs …`` and ``run --queue``: the same commands, answered by a
Kiln server's REST API instead of the local history (:mod:`kiln.server.client`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kiln.errors import UsageError

if TYPE_CHECKING:
    from kiln.server.client import Client


def client_of(args: argparse.Namespace) -> Client | None:
    """The client of ``--server`` (or ``$KILN_SERVER``); None for the local history."""
    url = getattr(args, "server", None) or os.environ.get("KILN_SERVER")
    if not url:
        return None
    from kiln.server.client import Client

    return Client(url, getattr(args, "token", None) or os.environ.get("KILN_TOKEN"))


def _run_path(key: str, tail: str = "") -> str:
    return f"/api/v1/runs/{quote(key, safe='')}{tail}"


def runs_list(client: Client, args: argparse.Namespace) -> int:
    from kiln.cli.runs_cmd import _print_table
    from kiln.server.client import run_from_json

    params: dict[str, Any] = {
        "notebook": args.notebook,
        "state": args.state or None,
        "param": args.param or None,
        "tag": args.tag or None,
    }
    if args.since is not None:
        params["since"] = args.since.isoformat()
    wanted = args.limit  # None: all
    items: list[dict[str, Any]] = []
    cursor = None
    while wanted is None or len(items) < wanted:
        size = 500 if wanted is None else min(500, wanted - len(items))
        page = client.json(
            "GET", "/api/v1/runs", params={**params, "limit": size, "cursor": cursor}
        )
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if args.json:
        print(json.dumps(items, indent=2, default=str))
        return 0
    if not items:
        print("No runs match.", file=sys.stderr)
        return 0
    _print_table([run_from_json(item) for item in items], args.records)
    return 0


def runs_show(client: Client, args: argparse.Namespace) -> int:
    data = client.json("GET", _run_path(args.id))
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    from kiln.server.client import run_from_json

    run = run_from_json(data)
    shown = [
        ("id", run.id),
        ("state", run.state.value),
        ("notebook", data.get("notebook")),
        ("parameters", json.dumps(run.parameters, default=str)),
        ("created", run.created_at),
        ("started", run.started_at),
        ("ended", run.ended_at),
        ("duration", f"{run.duration:.3f}s" if run.duration is not None else None),
        ("engine", run.engine),
        ("submitted by", run.submitted_by),
        ("reason", run.reason),
    ]
    from kiln.cli.runs_cmd import local_time

    lines = []
    for key, value in shown:
        if value in (None, ""):
            continue
        text = local_time(value) if hasattr(value, "astimezone") else value
        lines.append(f"{key:>15}: {text}")
    for name, value in run.record_values.items():
        text = json.dumps(value, default=str)
        lines.append(f"{'record':>15}: {name} = {text if len(text) <= 70 else text[:69] + '…'}")
    print("\n".join(lines))
    return 0


def runs_logs(client: Client, args: argparse.Namespace) -> int:
    if not args.follow:
        sys.stdout.write(client.text(_run_path(args.id, "/log")))
        return 0
    for kind, data in client.events(_run_path(args.id, "/log"), params={"follow": "true"}):
        if kind == "log":
            sys.stdout.write(data + "\n")
            sys.stdout.flush()
    return 0


def runs_cancel(client: Client, args: argparse.Namespace) -> int:
    from kiln.errors import ServerRefused

    for key in args.ids:
        try:
            data = client.json("POST", _run_path(key, "/cancel"))
        except ServerRefused as exc:
            if exc.status != 409:
                raise
            print(f"{key}: {exc.detail or exc.message}", file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{data['id']}: {data.get('detail', data['state'])}", file=sys.stderr)
    return 0


def submit(client: Client, args: argparse.Namespace) -> int:
    """``kiln run NB --queue`` on a server: the notebook is a path in the server's project."""
    from kiln.cli.run_cmd import collect_parameters
    from kiln.flags import run_options_from
    from kiln.parameters import CliValue

    if args.output is not None:
        raise UsageError("--server: the output notebook stays on the server; drop the output path")
    if args.inject_paths or args.inject_input_path or args.inject_output_path:
        raise UsageError("--server: --inject-paths needs local paths; pass the values with -p")
    body: dict[str, Any] = {"notebook": Path(args.notebook).as_posix(), "retries": args.retries}
    text: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in collect_parameters(args.param_sources).items():
        if isinstance(value, CliValue):
            text[name] = value.text
        else:
            values[name] = value
    body["parameters"], body["parameters_text"] = values, text
    for name, value in run_options_from(args).items():
        if name == "env":
            raise UsageError(
                "--server: --env is not accepted by the server (set run.env in "
                "the project's kiln.yaml)"
            )
        body[name] = str(value) if isinstance(value, Path) else value
    data = client.json("POST", "/api/v1/runs", body=json.loads(json.dumps(body, default=str)))
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(data["id"])
    return 0


def refuse(command: str) -> None:
    raise UsageError(f"{command} works on the local history only: drop --server")
