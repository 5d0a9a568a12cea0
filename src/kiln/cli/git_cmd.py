"""``kiln git install [--uninstall]``: clean notebooks on commit and readable ``git diff``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kiln.cli.main import help_of


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "git",
        parents=parents,
        help="set up git for notebooks (clean filter, readable diffs)",
        description="Git integration for notebooks in the current repository.",
    )
    commands = p.add_subparsers(dest="git_command", metavar="COMMAND", parser_class=type(p))
    p.set_defaults(handler=help_of(p))
    install = commands.add_parser(
        "install",
        parents=parents,
        help="commit notebooks without outputs and show them as text in git diff",
        description="In the current repository: set a clean filter (git stages notebooks "
        "through 'kiln clean', so commits carry no outputs while your files keep them), a diff "
        "driver (git diff shows cells as text), and the attribute line "
        "'*.ipynb filter=kiln-clean diff=kiln' in .gitattributes. Running it again is harmless.",
    )
    install.add_argument(
        "--uninstall", action="store_true", help="remove the filter, diff driver and attributes"
    )
    install.add_argument(
        "--command",
        metavar="CMD",
        help="how git should run Kiln (default: the absolute path of this kiln executable, "
        "which works from IDEs without the virtual environment; 'kiln' uses PATH)",
    )
    install.add_argument(
        "--private",
        action="store_true",
        help="write the attribute line to .git/info/attributes (this clone only) instead of "
        "the committed .gitattributes",
    )
    install.set_defaults(handler=handle_install)


def handle_install(args: argparse.Namespace) -> int:
    from kiln.convert.gitsetup import install_git, uninstall_git

    if args.uninstall:
        setup = uninstall_git()
        for section in setup.config:
            print(f"removed git config section {section}")
        if setup.attributes_changed:
            print(f"removed the notebook line from {setup.attributes}")
        if not setup.config and not setup.attributes_changed:
            print(f"nothing to remove: Kiln's git set-up is not installed in {setup.repo}")
        return 0
    setup = install_git(command=args.command, private=args.private)
    for key, value in setup.config.items():
        print(f"git config {key} = {value}")
    where = setup.attributes
    print(f"{'added' if setup.attributes_changed else 'already in'} {where}: the notebook line")
    for note in setup.notes:
        print(f"Warning: {note}", file=sys.stderr)
    print(
        "Notebooks are now committed without outputs and diffed as text. To clean notebooks "
        "already committed: git add --renormalize . && git commit",
        file=sys.stderr,
    )
    return 0
