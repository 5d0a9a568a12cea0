"""``kiln dag [PIPELINE] [--format svg|png|mermaid]``: draw a pipeline with each task's last
state (colour) and its last run's duration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dag",
        parents=parents,
        help="draw a pipeline: tasks, dependencies, last states and durations",
        description="Draw a pipeline of kiln.yaml with Graphviz (SVG or PNG), or as Mermaid "
        "text. Without Graphviz's dot program, Mermaid text is written instead.",
    )
    p.add_argument(
        "pipeline", nargs="?", help="the pipeline (may be left out when there is only one)"
    )
    p.add_argument(
        "--format", choices=("svg", "png", "mermaid"), default="svg", help="default: svg"
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write the picture (default: <home>/dags/PIPELINE.svg; Mermaid text "
        "goes to standard output)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from kiln.cli.status_cmd import read_builds
    from kiln.pipeline import load_pipeline
    from kiln.pipeline.dag import draw, task_marks
    from kiln.project import find_home

    pipeline = load_pipeline(args.pipeline)
    with read_builds() as builds:
        marks = task_marks(pipeline, builds)
    output = Path(args.output) if args.output else None
    if output is None and args.format != "mermaid":
        output = find_home(pipeline.root) / "dags" / f"{pipeline.name}.{args.format}"
    drawing = draw(pipeline, marks, fmt=args.format, output=output)
    if drawing.notice:
        print(f"Warning: {drawing.notice}", file=sys.stderr)
    if drawing.text is not None:
        sys.stdout.write(drawing.text)
    elif drawing.path is not None and not args.quiet:
        print(drawing.path)
    return 0
