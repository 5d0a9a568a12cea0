"""``kiln config check|schema``: validate the project file, print its JSON Schema."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from kiln.cli.main import help_of

    p = sub.add_parser(
        "config",
        parents=parents,
        help="check kiln.yaml, print its JSON Schema",
        description="The project file, kiln.yaml: found in the working directory or above.",
    )
    commands = p.add_subparsers(dest="config_command", metavar="ACTION", parser_class=type(p))
    p.set_defaults(handler=help_of(p))
    check = commands.add_parser(
        "check",
        parents=parents,
        help="validate kiln.yaml (exit 0 when valid, 2 with the located error)",
    )
    check.add_argument(
        "path", nargs="?", help="a kiln.yaml, or a folder to search from (default: here)"
    )
    check.add_argument("--json", action="store_true", help="print the sections as JSON")
    check.set_defaults(handler=handle_check)
    schema = commands.add_parser(
        "schema",
        parents=parents,
        help="print kiln.yaml's JSON Schema (for editors: the YAML language server)",
        description="Print the JSON Schema of kiln.yaml. Save it and point your editor at it, "
        "e.g. with the comment '# yaml-language-server: $schema=kiln.schema.json' on the "
        "first line of kiln.yaml.",
    )
    schema.set_defaults(handler=handle_schema)


def handle_check(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from kiln.errors import UsageError
    from kiln.project import PROJECT_FILE, find_project_file, load_project

    start = Path(args.path) if args.path else Path.cwd()
    if start.is_file():
        start = start.parent
    found = find_project_file(start)
    if found is None:
        raise UsageError(f"no {PROJECT_FILE} in {start.absolute()} or the folders above it")
    project = load_project(found.parent)
    if project.config.pipelines:
        from kiln.pipeline import load_pipeline

        for name in project.config.pipelines:  # a cycle, an unknown task: located errors
            load_pipeline(name, project=project)
    if project.config.schedules:
        from kiln.scheduler.model import load_schedules

        load_schedules(project)  # notebooks, templates, e-mail without smtp: as the scheduler
    if args.json:
        print(json.dumps(dataclasses.asdict(project.config), indent=2, default=str))
    elif not args.quiet:
        print(f"{project.origin}: valid", file=sys.stderr)
    return 0


def handle_schema(args: argparse.Namespace) -> int:
    from kiln.project import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0
