"""``kiln rerun ID [-p NAME VALUE ...]``: run a recorded run again from its stored input copy,
saying first what differs from then, and after, how the new run compares with it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from kiln.flags import add_run_options, run_options_from

if TYPE_CHECKING:
    from kiln.tracking.rerun import RerunPlan, RerunReport


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from kiln.cli.run_cmd import _Ordered

    p = sub.add_parser(
        "rerun",
        parents=parents,
        help="run a recorded run again, exactly, and compare",
        description="Run a recorded run again: the exact notebook that ran (its stored copy), "
        "the same parameters and options; -p and the other flags override them, and the "
        "overrides are recorded. Says first what differs from the original (packages, input "
        "files, git commit), then compares the new run with it (records, outputs).",
    )
    p.add_argument("id", help="run id, unique prefix, or 'last'")
    g = p.add_argument_group("parameters (override the original's)")
    for flags, const, nargs, metavar in (
        (("-p", "--parameters"), "p", 2, ("NAME", "VALUE")),
        (("-r", "--parameters-raw"), "r", 2, ("NAME", "VALUE")),
        (("-f", "--parameters-file"), "f", None, "FILE"),
        (("-y", "--parameters-yaml"), "y", None, "YAML"),
    ):
        g.add_argument(
            *flags, nargs=nargs, metavar=metavar, action=_Ordered, const=const, dest="param_sources"
        )
    e = p.add_argument_group("run options (override the original's)")
    add_run_options(e)
    p.add_argument("--dry-run", action="store_true", help="only say what differs; do not run")
    p.add_argument("--json", action="store_true", help="print the plan, run and comparison as JSON")
    p.set_defaults(handler=handle, param_sources=[])


def handle(args: argparse.Namespace) -> int:
    from kiln.cli.console import Console
    from kiln.cli.run_cmd import collect_parameters
    from kiln.cli.runs_cmd import open_store
    from kiln.errors import HomeNotFound, RunNotFound
    from kiln.runner import Runner, raise_for_state
    from kiln.tracking.rerun import plan_rerun, rerun_report

    overrides = collect_parameters(args.param_sources)
    try:
        store = open_store(write=not args.dry_run)
    except HomeNotFound as exc:
        raise RunNotFound(f"no run {args.id!r}: {exc.message}") from None
    with store:
        plan = plan_rerun(store, args.id, parameters=overrides, **run_options_from(args))
        if args.json and args.dry_run:
            print(json.dumps({"plan": plan.to_json()}, indent=2, default=str))
            return 0
        if not args.json:
            print_plan(plan)
        if args.dry_run:
            return 0
        progress = sys.stderr.isatty() and not args.json
        console = Console(progress=progress, log_output=False, quiet=bool(args.quiet or args.json))
        try:
            with Runner(store=store, observers=[console.observe]) as runner:
                new = runner.run(plan.request, check=False)
        finally:
            console.close()
        report = rerun_report(store, plan.original, new)
    if args.json:
        data = {"plan": plan.to_json(), "run": new.to_json(), "comparison": report.to_json()}
        print(json.dumps(data, indent=2, default=str))
    else:
        print_report(report)
    if not new.state.ok:
        raise_for_state(new)
    return 0


def print_plan(plan: RerunPlan) -> None:
    from kiln.cli.tracking_cmd import package_text

    original = plan.original
    lines = [f"Rerunning {original.id} ({original.notebook_path}) from its stored input copy"]
    if plan.overrides:
        lines.append(f"  overrides: {json.dumps(plan.overrides, default=str)}")
    if plan.packages is None:
        lines.append("  packages: the original run's environment was not recorded")
    elif any(plan.packages.values()):
        lines.append(f"  packages changed: {package_text(plan.packages)}")
    for item in plan.inputs:
        now = item["now"][:12] if item.get("now") else item.get("error") or "missing"
        before = str(item.get("before") or "?")[:12]
        lines.append(f"  input changed: {item['path']} ({before} -> {now})")
    if plan.git is not None:
        lines.append(
            f"  git: {_git_text(plan.git.get('before'))} -> {_git_text(plan.git.get('now'))}"
        )
    for note in plan.notes:
        lines.append(f"  note: {note}")
    if plan.same:
        lines.append("  nothing recorded has changed since (packages, inputs, git)")
    print("\n".join(lines), file=sys.stderr)


def _git_text(state: dict[str, Any] | None) -> str:
    if not state:
        return "(no repository)"
    commit = str(state.get("commit") or "(no commit)")[:12]
    if state.get("dirty"):
        return f"{commit} + changes {str(state.get('diff_sha256') or '')[:8]}"
    return commit


def print_report(report: RerunReport) -> None:
    """One screen: states, records (with deltas), outputs down to the first diverging cell."""
    from rich.table import Table
    from rich.text import Text

    from kiln.cli.runs_cmd import console
    from kiln.cli.tracking_cmd import _shown, _signed

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("")
    table.add_column(f"original {report.original.id}", overflow="fold")
    table.add_column(f"rerun {report.rerun.id}", overflow="fold")
    table.add_column("")
    states = [report.original.state.value, report.rerun.state.value]
    table.add_row("state", *states, _verdict(states[0] == states[1]))
    for row in report.comparison.section("records"):
        rerun = _shown(row.values[1])
        if row.deltas is not None and row.deltas[1] is not None:
            rerun += f" ({_signed(row.deltas[1])})"
        table.add_row(f"record {row.name}", _shown(row.values[0]), rerun, _verdict(row.same))
    out = console()
    out.print(table)
    if report.outputs is None:
        out.print(Text(f"outputs: {report.outputs_note}", style="yellow"))
    elif report.outputs.ok:
        out.print(
            Text(f"outputs: the same ({report.outputs.compared} cells compared)", style="green")
        )
    else:
        divergence = report.outputs.divergence
        assert divergence is not None
        out.print(Text(f"outputs: differ from cell {divergence.cell_index}", style="yellow"))
        out.print(divergence.diff, markup=False, highlight=False)


def _verdict(same: bool) -> Any:
    from rich.text import Text

    return Text("same", style="green") if same else Text("differs", style="yellow")
