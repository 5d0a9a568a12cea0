"""``kiln runs list|show|logs``: the run history."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kiln.store.records import STATES, Run


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "runs",
        help="list and inspect recorded runs",
        description="Query the run history in $KILN_HOME.",
    )
    rs = p.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=type(p))
    ls = rs.add_parser("list", help="list runs, newest first")
    ls.add_argument("--notebook", help="only runs of this notebook (path or file name)")
    ls.add_argument("--state", choices=STATES, action="append", help="only runs in this state")
    ls.add_argument("-n", "--limit", type=int, default=20, help="at most this many (default 20)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=handle_list)
    show = rs.add_parser("show", help="show one run")
    show.add_argument("id", help="run id, unique prefix, or 'last'")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=handle_show)
    logs = rs.add_parser("logs", help="print a run's log")
    logs.add_argument("id", help="run id, unique prefix, or 'last'")
    logs.set_defaults(handler=handle_logs)
    p.set_defaults(handler=lambda args: (p.print_help(sys.stderr), 2)[1])


def _store() -> Any:
    from kiln.store import RunStore

    store = RunStore()
    store.recover_orphans()
    return store


def handle_list(args: argparse.Namespace) -> int:
    with _store() as store:
        runs: list[Run] = store.list_runs(
            notebook=args.notebook, state=args.state, limit=args.limit
        )
    if args.json:
        print(json.dumps([r.to_json() for r in runs], indent=2, default=str))
        return 0
    if not runs:
        print("No runs recorded yet.", file=sys.stderr)
        return 0
    rows = [("ID", "STATE", "NOTEBOOK", "STARTED (UTC)", "DURATION", "PARAMETERS")]
    for r in runs:
        when = r.started_at or r.created_at
        rows.append(
            (
                r.id,
                r.state,
                Path(r.notebook_path).name,
                when.strftime("%Y-%m-%d %H:%M:%S") if when else "-",
                f"{r.duration:.2f}s" if r.duration is not None else "-",
                _short_params(r.parameters),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(row[i].ljust(widths[i]) for i in range(5)) + "  " + row[5])
    return 0


def _short_params(params: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in params.items())
    return text if len(text) <= 60 else text[:59] + "…"


def handle_show(args: argparse.Namespace) -> int:
    with _store() as store:
        run: Run = store.get_run(args.id)
    if args.json:
        print(json.dumps(run.to_json(), indent=2, default=str))
        return 0
    fields = [
        ("id", run.id),
        ("state", run.state),
        ("notebook", run.notebook_path),
        ("sha256", run.notebook_sha256),
        ("parameters", json.dumps(run.parameters, default=str)),
        ("created", run.created_at),
        ("started", run.started_at),
        ("ended", run.ended_at),
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
    for key, value in fields:
        if value not in (None, ""):
            print(f"{key:>15}: {value}")
    executed = [(i, d) for i, d in enumerate(run.cell_durations) if d is not None]
    if executed:
        slowest = sorted(executed, key=lambda x: -float(x[1] or 0))[:5]
        print(
            f"{'cells':>15}: {len(executed)} executed, slowest: "
            + ", ".join(f"cell {i} {d:.3f}s" for i, d in slowest)
        )
    if run.error:
        err = run.error
        if "ename" in err:
            print(
                f"{'error':>15}: cell {err.get('cell_index')}: {err.get('ename')}: "
                f"{err.get('evalue')}"
            )
    for rec in run.records_list:
        shown = json.dumps(rec.value, default=str) if rec.kind == "json" else f"<{rec.kind}>"
        if len(shown) > 70:
            shown = shown[:69] + "…"
        print(f"{'record':>15}: {rec.name} = {shown}")
    return 0


def handle_logs(args: argparse.Namespace) -> int:
    from kiln.errors import StoreError

    with _store() as store:
        run: Run = store.get_run(args.id)
    if not run.log_path:
        raise StoreError(f"run {run.id} has no log file")
    try:
        text = Path(run.log_path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StoreError(
            f"cannot read the log of run {run.id} ({run.log_path}): {exc.strerror}"
        ) from None
    sys.stdout.write(text)
    return 0
