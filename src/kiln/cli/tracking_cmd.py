"""``kiln runs compare|plot|prune|export|sync-mlflow``: runs as experiments, from the history.

Added to ``kiln runs`` by :mod:`kiln.cli.runs_cmd`; the work is done by :mod:`kiln.tracking`
and :mod:`kiln.store.retention`, this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError
from kiln.store.records import STATES, TERMINAL_STATES, Run

if TYPE_CHECKING:
    from kiln.store.sql import RunStore
    from kiln.tracking.compare import RunComparison


def add_actions(rs: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The tracking actions of ``kiln runs``."""
    compare = rs.add_parser(
        "compare",
        parents=parents,
        help="put runs side by side: parameters, records, timings, environment",
        description="Compare two or more runs: parameters, records (with the delta from the "
        "first run for numbers), metrics, per-cell timings, environment, git state, inputs, "
        "tags and state. What differs is highlighted.",
    )
    compare.add_argument("ids", nargs="+", metavar="ID", help="run ids, unique prefixes, 'last'")
    compare.add_argument("--all", action="store_true", help="also show what is the same")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.set_defaults(handler=handle_compare)

    plot = rs.add_parser(
        "plot",
        parents=parents,
        help="chart a record over time or against a parameter (PNG)",
        description="Draw one numeric record of a notebook's runs over time, or against a "
        "parameter (--by), as a PNG (needs matplotlib).",
    )
    plot.add_argument("notebook", help="the notebook (path or file name)")
    plot.add_argument("--record", required=True, metavar="NAME", help="the record to draw")
    plot.add_argument("--by", metavar="PARAM", help="draw against this parameter, not time")
    plot.add_argument("-o", "--output", required=True, metavar="FILE", help="the PNG to write")
    plot.add_argument(
        "--state",
        choices=STATES,
        action="append",
        help="only runs in this state (default: succeeded)",
    )
    plot.set_defaults(handler=handle_plot)

    prune = rs.add_parser(
        "prune",
        parents=parents,
        help="delete old runs, their folders and unused input copies",
        description="Delete finished runs (never a queued or running one) with their run "
        "folders; an input copy goes when no remaining run refers to it. Every criterion "
        "given must hold. Safe to interrupt: the next prune finishes the job.",
    )
    prune.add_argument(
        "--older-than", type=_duration, metavar="AGE", help="runs created more than AGE ago (30d)"
    )
    prune.add_argument(
        "--keep-last", type=_count, metavar="N", help="keep the N newest runs of each notebook"
    )
    prune.add_argument(
        "--state",
        choices=sorted(s.value for s in TERMINAL_STATES),
        action="append",
        help="only runs in this state (repeatable)",
    )
    prune.add_argument("--notebook", help="only runs of this notebook (path or file name)")
    prune.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    prune.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    prune.set_defaults(handler=handle_prune)

    export = rs.add_parser(
        "export",
        parents=parents,
        help="export the history (parameters, records, timings) for pandas",
        description="Write one row per run: its fields, param.*, record.*, metric.* (last "
        "point) and tag.* columns, and timings.",
    )
    export.add_argument("--format", choices=("csv", "json", "parquet"), default="csv")
    export.add_argument("-o", "--output", metavar="FILE", help="where (default: standard output)")
    export.add_argument("--notebook", help="only runs of this notebook (path or file name)")
    export.add_argument("--state", choices=STATES, action="append", help="only runs in this state")
    export.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="only runs with this tag"
    )
    export.set_defaults(handler=handle_export)

    sync = rs.add_parser(
        "sync-mlflow",
        parents=parents,
        help="record in MLflow the runs whose export failed or never happened",
        description="Export to MLflow every run whose export is pending or failed (MLflow "
        "was down, or Kiln was stopped before exporting).",
    )
    sync.add_argument("ids", nargs="*", metavar="ID", help="only these runs")
    sync.add_argument("--mlflow-uri", metavar="URI", help="export there instead")
    sync.add_argument("--json", action="store_true", help="print the results as JSON")
    sync.set_defaults(handler=handle_sync)


def _duration(text: str) -> float:
    from kiln.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    from kiln.units import parse_count

    try:
        return parse_count(text, minimum=0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_tags(pairs: list[str]) -> dict[str, str]:
    """``--tag k=v`` filters (repeatable)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _unwritable(path: str, exc: OSError) -> str:
    return f"cannot write {path}: {exc.strerror or exc}"


def _open(write: bool = False) -> RunStore:
    from kiln.cli.runs_cmd import open_store

    return open_store(write=write)


# -- compare ------------------------------------------------------------------------------------


def handle_compare(args: argparse.Namespace) -> int:
    from kiln.errors import HomeNotFound, RunNotFound
    from kiln.tracking.compare import load_comparison

    if len(args.ids) < 2:
        raise UsageError("kiln runs compare needs at least two runs")
    try:
        with _open() as store:
            comparison = load_comparison(store, args.ids)
    except HomeNotFound as exc:
        raise RunNotFound(exc.message) from None
    if args.json:
        print(json.dumps(comparison.to_json(), indent=2, default=str))
        return 0
    print_comparison(comparison, everything=args.all)
    return 0


def print_comparison(comparison: RunComparison, *, everything: bool = False) -> None:
    """The comparison as a table: one column per run, what differs in yellow; sections whose
    values are all the same are folded unless ``everything``."""
    from rich.table import Table
    from rich.text import Text

    from kiln.cli.runs_cmd import console
    from kiln.tracking.compare import SECTIONS

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("", overflow="fold")
    for run in comparison.runs:
        table.add_column(run.id, overflow="fold")
    folded = []
    for section in SECTIONS:
        rows = comparison.section(section)
        shown = rows if everything or section == "run" else [r for r in rows if not r.same]
        if not shown:
            if rows:
                folded.append(section)
            continue
        table.add_row(Text(section, style="bold underline"))
        for row in shown:
            style = "" if row.same else "yellow"
            cells = []
            for index, value in enumerate(row.values):
                text = _shown(value)
                if row.deltas is not None and index > 0 and row.deltas[index] is not None:
                    text += f" ({_signed(row.deltas[index])})"
                cells.append(Text(text, style=style))
            table.add_row(Text(f"  {row.name}", style=style), *cells)
    out = console()
    out.print(table)
    for run, changes in zip(comparison.runs[1:], comparison.packages[1:], strict=True):
        if changes and any(changes.values()):
            out.print(
                f"packages of {run.id} against {comparison.runs[0].id}: {package_text(changes)}"
            )
    if folded:
        out.print(f"the same in every run: {', '.join(folded)} (--all shows them)")


def package_text(changes: dict[str, list[Any]], limit: int = 12) -> str:
    parts = [f"+{name}" for name in changes.get("added", [])]
    parts += [f"-{name}" for name in changes.get("removed", [])]
    parts += [f"{name} {old} -> {new}" for name, old, new in changes.get("changed", [])]
    if not parts:
        return "none changed"
    more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _signed(delta: float | None) -> str:
    return "-" if delta is None else f"{delta:+.6g}"


# -- plot ----------------------------------------------------------------------------------------


def handle_plot(args: argparse.Namespace) -> int:
    from kiln.errors import HomeNotFound
    from kiln.tracking.history import plot_record

    states = args.state or ["succeeded"]
    try:
        with _open() as store:
            runs = store.list_runs(notebook=args.notebook, state=states, limit=None)
    except HomeNotFound as exc:
        raise UsageError(exc.message) from None
    if not runs:
        raise UsageError(f"no {'/'.join(states)} runs of {args.notebook} in the history")
    try:
        drawn = plot_record(runs, args.record, args.output, by=args.by)
    except OSError as exc:
        raise UsageError(_unwritable(args.output, exc)) from None
    if not args.quiet:
        print(f"{args.output}: {args.record} of {drawn} runs", file=sys.stderr)
    return 0


# -- prune ---------------------------------------------------------------------------------------


def handle_prune(args: argparse.Namespace) -> int:
    from kiln.errors import HomeNotFound
    from kiln.store.retention import prune, select_runs

    if args.older_than is None and args.keep_last is None and not args.state:
        raise UsageError(
            "say what to prune: --older-than AGE, --keep-last N and/or --state STATE "
            "(add --dry-run to see what would go)"
        )
    try:
        with _open(write=not args.dry_run) as store:
            chosen = select_runs(
                store,
                older_than=args.older_than,
                keep_last=args.keep_last,
                states=args.state,
                notebook=args.notebook,
            )
            result = prune(store, chosen, dry_run=args.dry_run)
    except HomeNotFound as exc:
        print(exc.message, file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    if args.quiet:
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(result.runs)} run(s)", file=sys.stderr)
    for candidate in result.runs[:20]:
        when = candidate.created_at.strftime("%Y-%m-%d") if candidate.created_at else "-"
        print(
            f"  {candidate.id}  {candidate.state:<9}  {when}  {candidate.notebook_path}",
            file=sys.stderr,
        )
    if len(result.runs) > 20:
        print(f"  ... and {len(result.runs) - 20} more", file=sys.stderr)
    if not args.dry_run and (result.inputs or result.orphan_folders):
        print(
            f"also removed {len(result.inputs)} unused input copies and "
            f"{result.orphan_folders} folder(s) without a run",
            file=sys.stderr,
        )
    return 0


# -- export ---------------------------------------------------------------------------------------


def handle_export(args: argparse.Namespace) -> int:
    from kiln.errors import HomeNotFound
    from kiln.tracking.history import export_history

    try:
        with _open() as store:
            runs = store.list_runs(
                notebook=args.notebook, state=args.state, limit=None, tags=parse_tags(args.tag)
            )
    except HomeNotFound as exc:
        raise UsageError(exc.message) from None
    runs.reverse()  # oldest first: a time series reads in order
    try:
        count = export_history(runs, args.format, args.output)
    except OSError as exc:
        raise UsageError(_unwritable(args.output, exc)) from None
    if args.output and args.output != "-" and not args.quiet:
        print(f"{args.output}: {count} runs", file=sys.stderr)
    return 0


# -- sync-mlflow ----------------------------------------------------------------------------------


def handle_sync(args: argparse.Namespace) -> int:
    from kiln.errors import HomeNotFound
    from kiln.tracking.sync import sync_mlflow

    try:
        with _open(write=True) as store:
            ids = [store.get_run(key).id for key in args.ids] if args.ids else None
            results = sync_mlflow(store, run_ids=ids, uri=args.mlflow_uri)
    except HomeNotFound as exc:
        raise UsageError(exc.message) from None
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    elif not args.quiet:
        if not results:
            print("every run is recorded in MLflow already", file=sys.stderr)
        for result in results:
            what = "exported" if result.ok else ("skipped: " if result.skipped else "failed: ")
            print(f"{result.run_id}: {what}{result.message or ''}", file=sys.stderr)
    failed = [r for r in results if not r.ok and not r.skipped]
    return 1 if failed else 0


# -- runs show -------------------------------------------------------------------------------------


def tracking_lines(store: RunStore, run: Run) -> list[tuple[str, Any]]:
    """What ``kiln runs show`` adds: environment, git, inputs, metrics, artefacts, tags,
    origin, MLflow export."""
    from kiln.store.environments import get_environments
    from kiln.store.exports import export_state

    lines: list[tuple[str, Any]] = []
    if run.tags:
        lines.append(("tags", ", ".join(f"{k}={v}" for k, v in run.tags.items())))
    if run.submitted_by:
        lines.append(("submitted by", run.submitted_by))
    origin = run.origin or {}
    if origin.get("rerun_of"):
        overrides = origin.get("overrides") or {}
        extra = f" with {json.dumps(overrides, default=str)}" if overrides else ""
        lines.append(("rerun of", f"{origin['rerun_of']}{extra}"))
    env = get_environments(store, [run.environment_hash]).get(run.environment_hash or "")
    if env is not None:
        lines.append(
            (
                "environment",
                f"{env.hash[:12]}: {env.implementation} {env.version}".rstrip(": ")
                + f", {len(env.packages)} packages",
            )
        )
        lines.append(("os", f"{env.os} ({env.machine})"))
    git = run.git
    if git:
        state = (
            "dirty, diff " + str(git.get("diff_sha256", ""))[:12] if git.get("dirty") else "clean"
        )
        lines.append(
            (
                "git",
                f"{str(git.get('commit') or '(no commit)')[:12]} ({state}) in {git.get('root')}",
            )
        )
    for item in run.inputs:
        sha = item.get("sha256")
        digest = str(sha)[:12] if sha else f"(not hashed: {item.get('error') or 'unknown'})"
        lines.append(("input", f"{item.get('path')} {digest}"))
    for name, points in run.metric_series.items():
        last = _shown(points[-1][1]) if points else "-"
        lines.append(("metric", f"{name}: {len(points)} points, last {last}"))
    for artefact in run.artifacts:
        lines.append(("artifact", f"{artefact.get('path')} ({artefact.get('size')} bytes)"))
    exported = export_state(store, run.id)
    if exported is not None:
        text = f"{exported.state} to {exported.uri}"
        if exported.mlflow_run_id:
            text += f" (run {exported.mlflow_run_id})"
        if exported.error and exported.state != "done":
            text += f": {exported.error}; kiln runs sync-mlflow tries again"
        lines.append(("mlflow", text))
    return lines
