"""``kiln completion bash|zsh|fish``: the shell code that completes kiln's commands and flags.

Completion runs through argcomplete: the shell calls ``kiln`` with ``_ARGCOMPLETE`` set and
:func:`kiln.cli.main.run_main` answers before doing anything else.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

SHELLS = ("bash", "zsh", "fish")


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "completion",
        parents=parents,
        help="print shell completion code",
        description="Print the code that makes your shell complete kiln's commands and flags. "
        "bash: add 'eval \"$(kiln completion bash)\"' to ~/.bashrc; zsh: the same in ~/.zshrc; "
        "fish: 'kiln completion fish > ~/.config/fish/completions/kiln.fish'.",
    )
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(["kiln"], shell=args.shell))
    return 0
