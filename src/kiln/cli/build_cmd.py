"""``kiln build [PIPELINE]``: run a pipeline of kiln.yaml, only what is not up to date.

Tasks run in dependency order, ``-j N`` at a time, each a normal recorded run linked to one
recorded build. The summary says what ran, what was up to date, what failed and why (a table,
or ``--json``); the exit code is 1 when a task failed, 130 when the build was cancelled.
``--to kfp FILE --image IMAGE`` runs nothing: it compiles the pipeline to a Kubeflow
Pipelines spec (:mod:`kiln.integrations.kubeflow`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from kiln.units import parse_count

if TYPE_CHECKING:
    from kiln.pipeline import Build, Pipeline


def _jobs(text: str) -> int:
    try:
        return parse_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "build",
        parents=parents,
        help="run a pipeline of kiln.yaml (only what is not up to date)",
        description="Run a pipeline declared in kiln.yaml: its tasks in dependency order, "
        "independent ones in parallel, skipping every task that is up to date (same code, "
        "parameters, upstream products, inputs, products and kernel as its last successful "
        "run). Each task is a recorded run; the build is recorded too.",
    )
    p.add_argument(
        "pipeline", nargs="?", help="the pipeline (may be left out when there is only one)"
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TASK",
        help="build only this task and what it needs (repeatable; a grid task's name means "
        "all its members)",
    )
    p.add_argument("--force", action="store_true", help="run the tasks even when up to date")
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish the last build: run only what failed or never ran in it",
    )
    p.add_argument("-j", "--jobs", type=_jobs, default=1, metavar="N", help="tasks at a time")
    p.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="local: on this machine (default); dask: on a Dask cluster",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="the Dask scheduler (tcp://HOST:PORT) for --executor dask; default: a local "
        "Dask cluster started for the build",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would run and why; run nothing"
    )
    p.add_argument("--json", action="store_true", help="print the build (or plan) as JSON")
    p.add_argument(
        "--to",
        nargs=2,
        metavar=("TARGET", "FILE"),
        help="run nothing: compile the pipeline for an orchestrator and write it to FILE; "
        "TARGET kfp is a Kubeflow Pipelines v2 spec (needs kiln-notebooks[kubeflow] and "
        "--image)",
    )
    p.add_argument(
        "--image",
        metavar="IMAGE",
        help="with --to kfp: the container image that runs each task (holds Kiln, the "
        "notebooks' packages and the project at its working directory)",
    )
    p.add_argument(
        "--progress-bar",
        dest="progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from kiln.errors import UsageError
    from kiln.pipeline import BuildOptions, load_pipeline

    if args.scheduler and args.executor != "dask":
        raise UsageError("--scheduler is for the dask executor: add --executor dask")
    if args.resume and (args.force or args.target):
        raise UsageError("--resume repeats the last build's selection: drop --force and --target")
    options = BuildOptions(
        targets=tuple(args.target),
        force=args.force,
        resume=args.resume,
        jobs=args.jobs,
        executor=args.executor,
        scheduler=args.scheduler,
    )
    if args.to is not None:
        return _compile(args)
    if args.image is not None:
        raise UsageError("--image is for --to kfp: add --to kfp FILE")
    pipeline = load_pipeline(args.pipeline)
    if args.dry_run:
        from kiln.cli.status_cmd import print_status, read_builds

        with read_builds() as builds:
            from kiln.pipeline import plan

            status = plan(pipeline, builds, options)
        print_status(status, as_json=args.json, plan=True)
        return 0
    from kiln.cli.console import BuildConsole
    from kiln.pipeline import run_build

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    console = BuildConsole(progress=progress, quiet=args.quiet)
    try:
        build = run_build(pipeline, options=options, observer=console.observe)
    finally:
        console.close()
    alerted = _alert(pipeline, build)
    if args.json:
        shown = build.to_json()
        if alerted:
            shown["alerts"] = alerted
        print(json.dumps(shown, indent=2, default=str))
    elif not (args.quiet and build.ok):
        print_build(build)
    _print_failures(build)
    for result in alerted:
        if not result.get("ok"):  # the build's state stands; the alert's failure is shown
            print(f"alert by {result['kind']} failed: {result.get('error')}", file=sys.stderr)
    if build.cancelled:
        return 130
    return 0 if build.ok else 1


#: what ``--to`` compiles to
TARGETS = ("kfp",)


def _compile(args: argparse.Namespace) -> int:
    """``--to kfp FILE --image IMAGE``: the pipeline as a Kubeflow Pipelines spec."""
    from kiln.errors import UsageError
    from kiln.pipeline import load_pipeline

    target, output = args.to
    if target not in TARGETS:
        raise UsageError(f"--to: unknown target {target!r} (targets: {', '.join(TARGETS)})")
    clashing = [
        flag
        for flag, given in (
            ("--dry-run", args.dry_run),
            ("--force", args.force),
            ("--resume", args.resume),
            ("--executor", args.executor != "local"),
            ("--json", args.json),
        )
        if given
    ]
    if clashing:
        raise UsageError(f"--to compiles and runs nothing: drop {', '.join(clashing)}")
    if not args.image:
        raise UsageError("--to kfp needs --image IMAGE: the container image that runs the tasks")
    pipeline = load_pipeline(args.pipeline)
    from kiln.integrations.kubeflow import compile_pipeline

    written = compile_pipeline(pipeline, output, image=args.image, targets=args.target)
    if not args.quiet:
        count = len(pipeline.select(args.target))
        print(f"Wrote {written}: pipeline {pipeline.name}, {count} task(s), image {args.image}")
    return 0


def _alert(pipeline: Pipeline, build: Build) -> list[dict[str, Any]]:
    """The alert of a failed build when kiln.yaml's alerts section asks for it (recorded on
    the build; a delivery failure never changes the build or the exit code)."""
    if pipeline.project.config.alerts is None or build.state not in ("failed", "crashed"):
        return []
    from kiln.report.alerts import build_failed_alert

    return build_failed_alert(pipeline.project, build)


def print_build(build: Build) -> None:
    """The summary: a row per task (state, duration, run, reason), the counts, the build."""
    from kiln.cli.style import table_text, use_color

    colours = {"ran": "green", "up to date": "dim", "failed": "red", "crashed": "red"}
    rows = build.rows()
    states = [row[1].split(" (")[0] for row in rows]
    text = table_text(
        build.COLUMNS,
        rows,
        colours=[
            colours.get(s, "yellow" if s in ("blocked", "cancelled") else None) for s in states
        ],
        right={2},
        color=use_color("auto", sys.stdout),
    )
    took = f" in {build.duration:.2f}s" if build.duration is not None else ""
    sys.stdout.write(f"{text}{build.counts()}\nBuild {build.id} {build.state}{took}\n")


def _print_failures(build: Build) -> None:
    """One paragraph per failed task, with where to look (stderr)."""
    for result in build.tasks.values():
        if result.state not in ("failed", "crashed"):
            continue
        run = result.run
        where = f"\n  run {run.id}, log {run.log_path}" if run is not None else ""
        print(f"{result.name} {result.state}: {result.reason}{where}", file=sys.stderr)
    if build.cancelled:
        print(f"Build {build.id} {build.reason or 'cancelled'}: {build.counts()}", file=sys.stderr)
