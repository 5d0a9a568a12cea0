"""``kiln`` command line: parse, call the library, print. The one place that exits."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from kiln import __version__
from kiln.errors import KilnError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so errors render in one place."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n\n{self.format_usage().strip()}")


#: command modules under kiln.cli, each with ``add_parser(subparsers)``; data, in help order
COMMANDS = (
    "run_cmd",
    "params_cmd",
    "runs_cmd",
    "lint_cmd",
    "clean_cmd",
    "diff_cmd",
    "export_cmd",
    "git_cmd",
    "verify_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
        prog="kiln",
        description="Run Jupyter notebooks as production work: typed parameters, real "
        "kernels, recorded runs.",
    )
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--home", metavar="DIR", help="Kiln's state folder (default: $KILN_HOME or ./.kiln)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"kiln.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    code = run_main(argv)
    # the process ends here: spare the collector's passes over all a run left in memory at
    # exit (a 20,000-cell notebook: about a second, after a SIGTERM too); the OS frees it
    gc.freeze()
    sys.exit(code)


def run_main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by tests and ``main``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or os.environ.get("KILN_DEBUG") == "1"
    try:
        parser = build_parser()
        args = parser.parse_args(args_list)
        if args.home:
            os.environ["KILN_HOME"] = os.path.abspath(args.home)
        handler: Any = getattr(args, "handler", None)
        if handler is None:
            parser.print_help(sys.stderr)
            return 2
        return int(handler(args))
    except KilnError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(exc.show(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:
        if debug:
            raise
        print(
            f"Internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in Kiln; run again with --debug for the traceback.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    main()
