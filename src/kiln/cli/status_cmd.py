"""``kiln status [PIPELINE]``: each task up to date or outdated, and why.

Nothing runs and nothing is written: the reasons are what ``kiln build`` would act on ("code
changed in cell 3", "upstream clean is outdated", "product out/a.json missing").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.pipeline import Status
    from kiln.store.builds import BuildStore


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        parents=parents,
        help="which tasks of a pipeline are up to date, and why the others are not",
        description="Compare each task of a pipeline with its last successful run: its "
        "notebook's code (cell sources and tags), parameters, kernel, upstream products, "
        "inputs and products. Runs nothing.",
    )
    p.add_argument(
        "pipeline", nargs="?", help="the pipeline (may be left out when there is only one)"
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TASK",
        help="only this task and what it needs (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the tasks as JSON")
    p.set_defaults(handler=handle)


@contextlib.contextmanager
def read_builds() -> Iterator[BuildStore | None]:
    """The history's builds, or ``None`` when there is no history yet (nothing is created)."""
    from kiln.errors import HomeNotFound
    from kiln.store.builds import BuildStore

    try:
        builds = BuildStore.open(create=False)
    except HomeNotFound:
        yield None
        return
    with builds:
        yield builds


def handle(args: argparse.Namespace) -> int:
    from kiln.pipeline import BuildOptions, load_pipeline, plan

    pipeline = load_pipeline(args.pipeline)
    with read_builds() as builds:
        status = plan(pipeline, builds, BuildOptions(targets=tuple(args.target)))
    print_status(status, as_json=args.json, plan=False)
    return 0


def print_status(status: Status, *, as_json: bool, plan: bool) -> None:
    """The tasks as a table (``plan``: what a build would do) or as JSON."""
    if as_json:
        print(json.dumps(status.to_json(), indent=2, default=str))
        return
    from kiln.cli.style import table_text, use_color

    rows = []
    for task in status.tasks:
        if plan:
            label = {"run": "run", "skip": "up to date", "done": "done (resume)"}[task.action]
        else:
            label = "up to date" if task.up_to_date else "outdated"
        rows.append((task.name, label, task.reason))
    text = table_text(
        ("TASK", "ACTION" if plan else "STATUS", "REASON"),
        rows,
        colours=["dim" if task.up_to_date else "yellow" for task in status.tasks],
        color=use_color("auto", sys.stdout),
    )
    if plan:
        runs = sum(1 for t in status.tasks if t.action == "run")
        footer = (
            f"{len(status.tasks)} tasks: {runs} would run, {len(status.tasks) - runs} would not "
            "(dry run: nothing ran)"
        )
    else:
        footer = status.counts()
    sys.stdout.write(f"{text}{footer}\n")
