"""``kiln runs list|show|logs|cancel|rm`` (and, from :mod:`kiln.cli.tracking_cmd`,
``compare|plot|prune|export|sync-mlflow``): the run history.

These commands only read (``rm`` aside): on a home with no history they say so and create
nothing. Times are shown in the local timezone; ``--json`` gives UTC ISO-8601.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError
from kiln.store.records import STATES, Run

if TYPE_CHECKING:
    from kiln.store.sql import RunStore


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from kiln.cli.main import help_of

    p = sub.add_parser(
        "runs",
        parents=parents,
        help="list, inspect and remove recorded runs",
        description="Query the run history (in $KILN_HOME, else .kiln beside the nearest "
        "kiln.yaml, else ./.kiln).",
    )
    rs = p.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=type(p))
    p.set_defaults(handler=help_of(p))
    ls = rs.add_parser("list", parents=parents, help="list runs, newest first")
    ls.add_argument("--notebook", help="only runs of this notebook (path or file name)")
    ls.add_argument("--state", choices=STATES, action="append", help="only runs in this state")
    ls.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only runs created since: a duration ago (2d, 12h) or an ISO date/time",
    )
    ls.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="only runs with this parameter value (YAML-typed: n=3, flag=true; repeatable)",
    )
    ls.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs with this tag (repeatable)",
    )
    ls.add_argument(
        "--records",
        type=_names,
        default=[],
        metavar="NAMES",
        help="add a column per record, e.g. total,orders",
    )
    ls.add_argument(
        "-n", "--limit", type=_limit, default=20, help="at most this many (default 20; 0: all)"
    )
    ls.add_argument("--json", action="store_true", help="print the runs as JSON")
    ls.set_defaults(handler=handle_list)
    show = rs.add_parser("show", parents=parents, help="show one run")
    show.add_argument("id", help="run id, unique prefix, or 'last'")
    show.add_argument("--json", action="store_true", help="print the run as JSON")
    show.set_defaults(handler=handle_show)
    logs = rs.add_parser("logs", parents=parents, help="print a run's log")
    logs.add_argument("id", help="run id, unique prefix, or 'last'")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the run ends"
    )
    logs.set_defaults(handler=handle_logs)
    cancel = rs.add_parser("cancel", parents=parents, help="cancel queued or running runs")
    cancel.add_argument("ids", nargs="+", metavar="ID", help="run ids, unique prefixes, or 'last'")
    cancel.set_defaults(handler=handle_cancel)
    rm = rs.add_parser("rm", parents=parents, help="remove finished runs and their folders")
    rm.add_argument("ids", nargs="+", metavar="ID", help="run ids, unique prefixes, or 'last'")
    rm.add_argument("--json", action="store_true", help="print the removed runs' ids as JSON")
    rm.set_defaults(handler=handle_rm)
    from kiln.cli.tracking_cmd import add_actions

    add_actions(rs, parents)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected record names separated by commas")
    return names


def _since(text: str) -> datetime:
    from kiln.units import parse_since

    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit(text: str) -> int | None:
    from kiln.units import parse_count

    try:
        value = parse_count(text, minimum=0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value or None


def open_store(*, write: bool = False) -> RunStore:
    """The history of the current home; a read-only command never creates one."""
    from kiln.store.sql import RunStore

    store = RunStore(create=write)
    store.recover_orphans()
    return store


def _parameters(pairs: list[str]) -> dict[str, Any]:
    from kiln.yamlio import YamlError, load_yaml, plain

    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param expects NAME=VALUE, got {pair!r}")
        try:
            value = plain(load_yaml(text, origin=f"--param {name}")) if text else ""
        except YamlError:
            value = text
        out[name] = value
    return out


def handle_list(args: argparse.Namespace) -> int:
    from kiln.cli.remote import client_of, runs_list
    from kiln.cli.tracking_cmd import parse_tags
    from kiln.errors import HomeNotFound

    client = client_of(args)
    if client is not None:
        return runs_list(client, args)

    try:
        with open_store() as store:
            runs = store.list_runs(
                notebook=args.notebook,
                state=args.state,
                limit=args.limit,
                since=args.since,
                parameters=_parameters(args.param),
                tags=parse_tags(args.tag),
            )
    except HomeNotFound as exc:
        if args.json:
            print("[]")
        print(exc.message, file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps([_listed(r, args.records) for r in runs], indent=2, default=str))
        return 0
    if not runs:
        print("No runs match." if _filtered(args) else "No runs recorded yet.", file=sys.stderr)
        return 0
    _print_table(runs, args.records)
    return 0


def _listed(run: Run, records: list[str]) -> dict[str, Any]:
    data = run.to_json()
    if records:
        from kiln.tracking.history import record_cell

        data["columns"] = {name: record_cell(run, name) for name in records}
    return data


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.notebook or args.state or args.since or args.param or args.tag)


def _print_table(runs: list[Run], records: list[str] | None = None) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "STATE", "NOTEBOOK", "STARTED", "DURATION", "PARAMETERS"):
        table.add_column(column, overflow="fold")
    for name in records or []:
        table.add_column(name.upper(), overflow="fold", justify="right")
    table.add_column("OUTPUT", overflow="fold")
    if records:
        from kiln.tracking.history import record_cell
    for run in runs:
        extra = [_cell(record_cell(run, name)) for name in records or []]
        table.add_row(
            run.id,
            _state_text(run),
            Path(run.notebook_path).name,
            local_time(run.started_at or run.created_at),
            f"{run.duration:.2f}s" if run.duration is not None else "-",
            short_params(run.parameters),
            *extra,
            _short_path(run.output_path),
        )
    console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 30 else text[:29] + "…"


def console() -> Any:
    """A rich console on stdout, as wide as it needs when stdout is not a terminal."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=400, soft_wrap=True)


def _state_text(run: Run) -> Any:
    from rich.text import Text

    colour = {"succeeded": "green", "prepared": "green", "running": "cyan", "queued": "cyan"}
    return Text(run.state.value, style=colour.get(run.state.value, "red"))


def local_time(when: datetime | None) -> str:
    if when is None:
        return "-"
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short_path(path: str | None) -> str:
    if not path:
        return "-"
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def short_params(params: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in params.items())
    return text if len(text) <= 60 else text[:59] + "…"


def handle_show(args: argparse.Namespace) -> int:
    from kiln.cli.remote import client_of, runs_show
    from kiln.cli.tracking_cmd import tracking_lines
    from kiln.errors import HomeNotFound, RunNotFound

    client = client_of(args)
    if client is not None:
        return runs_show(client, args)

    try:
        with open_store() as store:
            run: Run = store.get_run(args.id)
            if args.json:
                data = run.to_json()
                _tracking_json(store, run, data)
                print(json.dumps(data, indent=2, default=str))
                return 0
            tracked = tracking_lines(store, run)
    except HomeNotFound as exc:
        raise RunNotFound(f"no run {args.id!r}: {exc.message}") from None
    fields = [
        ("id", run.id),
        ("state", run.state.value),
        ("notebook", run.notebook_path),
        ("sha256", run.notebook_sha256),
        ("parameters", json.dumps(run.parameters, default=str)),
        ("created", local_time(run.created_at)),
        ("started", local_time(run.started_at) if run.started_at else None),
        ("ended", local_time(run.ended_at) if run.ended_at else None),
        ("duration", f"{run.duration:.3f}s" if run.duration is not None else None),
        ("engine", run.engine),
        ("kernel", run.kernel_name),
        ("kernel version", run.kernel_version),
        ("python", run.python_version),
        ("kiln", run.kiln_version),
        ("input", run.input_path),
        ("output", run.output_path),
        ("log", run.log_path),
        ("reason", run.reason),
    ]
    lines = [f"{key:>15}: {value}" for key, value in fields if value not in (None, "")]
    executed = [(i, d) for i, d in enumerate(run.cell_durations) if d is not None]
    if executed:
        slowest = sorted(executed, key=lambda x: -float(x[1] or 0))[:5]
        cells = ", ".join(f"cell {i} {d:.3f}s" for i, d in slowest)
        lines.append(f"{'cells':>15}: {len(executed)} executed, slowest: {cells}")
    err = run.error or {}
    if "ename" in err and run.reason is None:
        lines.append(f"{'error':>15}: cell {err.get('cell_index')}: {err['ename']}")
    for rec in run.records_list:
        shown = json.dumps(rec.value, default=str) if rec.kind == "json" else f"<{rec.kind}>"
        if len(shown) > 70:
            shown = shown[:69] + "…"
        lines.append(f"{'record':>15}: {rec.name} = {shown}")
    lines += [f"{key:>15}: {value}" for key, value in tracked]
    print("\n".join(lines))
    return 0


def _tracking_json(store: RunStore, run: Run, data: dict[str, Any]) -> None:
    """``runs show --json`` adds the environment and the MLflow export."""
    from kiln.store.environments import get_environments
    from kiln.store.exports import export_state

    env = get_environments(store, [run.environment_hash]).get(run.environment_hash or "")
    data["environment"] = env.to_json() if env is not None else None
    exported = export_state(store, run.id)
    data["mlflow"] = exported.to_json() if exported is not None else None


def handle_logs(args: argparse.Namespace) -> int:
    from kiln.cli.remote import client_of, runs_logs
    from kiln.errors import HomeNotFound, RunNotFound, StoreError

    client = client_of(args)
    if client is not None:
        return runs_logs(client, args)

    try:
        with open_store() as store:
            run: Run = store.get_run(args.id)
            if not run.log_path:
                raise StoreError(f"run {run.id} has no log file")
            # a run of this home still going on here: its local log is the live one
            live = store.run_folder(run.id) / "run.log"
            if args.follow:
                return _follow(store, run, live)
    except HomeNotFound as exc:
        raise RunNotFound(f"no run {args.id!r}: {exc.message}") from None
    from kiln.store.artifacts import read_range

    try:
        sys.stdout.write(read_range(run.log_path, live=live).decode("utf-8", errors="replace"))
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise StoreError(f"cannot read the log of run {run.id} ({run.log_path}): {why}") from None
    return 0


def _follow(store: RunStore, run: Run, live: Path, interval: float = 0.2) -> int:
    """Print the log as it grows until the run has ended and everything is printed (a log in
    the artefact store grows with each copy, every few seconds)."""
    from kiln.store.artifacts import read_range

    position = 0
    while True:
        now = store.get_run_exact(run.id)  # read first: then drain what remains
        finished = now.finished
        try:
            data = read_range(now.log_path or str(live), position, live=live)
        except FileNotFoundError:
            data = b""
        if data:
            position += len(data)
            sys.stdout.write(data.decode("utf-8", errors="replace"))
            sys.stdout.flush()
        if finished:
            return 0
        time.sleep(interval)


def handle_rm(args: argparse.Namespace) -> int:
    from kiln.cli.remote import client_of, refuse
    from kiln.errors import HomeNotFound, RunNotFound

    if client_of(args) is not None:
        refuse("kiln runs rm")

    try:
        with open_store() as store:
            found = [store.get_run(key) for key in args.ids]  # every id checked before removing
            removed = [store.delete_run(run.id).id for run in found]
    except HomeNotFound as exc:
        raise RunNotFound(exc.message) from None
    if args.json:
        print(json.dumps(removed))
    elif not args.quiet:
        for run_id in removed:
            print(f"removed {run_id}", file=sys.stderr)
    return 0


def handle_cancel(args: argparse.Namespace) -> int:
    """A queued run ends ``cancelled`` now; a running one is stopped by its worker."""
    import getpass

    from kiln.cli.remote import client_of, runs_cancel
    from kiln.errors import HomeNotFound, RunNotFound
    from kiln.store.queue import request_cancel

    client = client_of(args)
    if client is not None:
        return runs_cancel(client, args)

    try:
        with open_store(write=True) as store:
            found = [store.get_run(key) for key in args.ids]
            for run in found:
                if run.finished:
                    print(f"{run.id} already ended: {run.state}", file=sys.stderr)
                    continue
                now = request_cancel(store, run.id, reason=f"cancelled by {getpass.getuser()}")
                what = "cancelled" if now.finished else "cancel requested (its worker stops it)"
                if not now.finished and now.lease_owner is None:
                    what = _signal_owner(now)
                if not args.quiet:
                    print(f"{run.id}: {what}", file=sys.stderr)
    except HomeNotFound as exc:
        raise RunNotFound(exc.message) from None
    return 0


def _signal_owner(run: Run) -> str:
    """A run started directly (``kiln run``, not a worker) stops when its Kiln process gets
    SIGTERM, as with Ctrl-C: send it, if that process is still the one that started the run."""
    import os
    import signal

    from kiln.store.process import current_owner, same_process

    _, host, _ = current_owner()
    if run.owner_pid is None or run.owner_host != host:
        return f"cannot stop it from here: it runs in process {run.owner_pid} on {run.owner_host}"
    if same_process(run.owner_pid, run.owner_started) is not True:
        return "its Kiln process is gone; the next command marks the run crashed"
    try:
        os.kill(run.owner_pid, signal.SIGTERM)
    except OSError as exc:
        return f"cannot signal its Kiln process {run.owner_pid}: {exc.strerror}"
    return f"sent SIGTERM to its Kiln process {run.owner_pid} (every run of that process stops)"
