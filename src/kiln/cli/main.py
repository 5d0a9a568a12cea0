"""``kiln`` command line: parse, call the library, print. The one place that exits.

Conventions every command follows:

- global options (``--debug``, ``--home``, ``-q/--quiet``, ``--color``) work before or after
  the command name;
- a usage error prints the command's own usage and exits 2; a command group run without a
  subcommand prints its help and exits 0;
- commands raise errors (:mod:`kiln.errors`) and this module prints them: one paragraph, no
  traceback unless ``--debug``; options are named by their flags (:mod:`kiln.flags`);
- a ``kiln.yaml`` above the working directory is validated before any command runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from kiln import __version__
from kiln.errors import KilnError, RunFailed, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (with this parser's usage) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n\n{self.format_usage().strip()}")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> argparse.Namespace:
        parsed: argparse.Namespace
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # reported by the (sub)command that was running, with its usage
            _chosen(self, parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand parser that ``args`` selected."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return _chosen(action.choices[name], args)
    return parser


#: command modules under kiln.cli, each with ``add_parser(subparsers, parents)``; in help order
COMMANDS = (
    "run_cmd",
    "params_cmd",
    "runs_cmd",
    "rerun_cmd",
    "queue_cmd",
    "worker_cmd",
    "schedules_cmd",
    "scheduler_cmd",
    "report_cmd",
    "health_cmd",
    "build_cmd",
    "status_cmd",
    "dag_cmd",
    "store_cmd",
    "serve_cmd",
    "users_cmd",
    "audit_cmd",
    "lint_cmd",
    "verify_cmd",
    "clean_cmd",
    "diff_cmd",
    "export_cmd",
    "git_cmd",
    "config_cmd",
    "completion_cmd",
)

#: commands that must not stop on a broken kiln.yaml (they report on it themselves)
_NO_PROJECT_CHECK = frozenset({"config", "completion"})


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks on errors"
    )
    parser.add_argument(
        "--home",
        metavar="DIR",
        default=default(None),
        help="Kiln's state folder (default: $KILN_HOME, else .kiln beside the nearest "
        "kiln.yaml, else ./.kiln)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="print only problems"
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        default=default(None),
        help="talk to this Kiln server for 'runs' and 'run --queue' (default: $KILN_SERVER; "
        "none: the local history)",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=default(None),
        help="API token for --server (default: $KILN_TOKEN)",
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default=default("auto"),
        help="colour in the output (auto: on a terminal, unless NO_COLOR is set)",
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``only`` names the one command to set up (the others' modules, and
    what they import, are then not loaded: start-up is what a quick command costs)."""
    import importlib

    parser = _Parser(
        prog="kiln",
        description="Run Jupyter notebooks as production work: typed parameters, real "
        "kernels, recorded runs.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"kiln {__version__}")
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        if only is None or name == f"{only}_cmd":
            importlib.import_module(f"kiln.cli.{name}").add_parser(sub, [common])
    parser.set_defaults(handler=help_of(parser))
    return parser


def help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The handler of a command group run without a subcommand: its help, exit 0."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stdout)
        return 0

    return show


def main(argv: Sequence[str] | None = None) -> NoReturn:
    code = run_main(argv)
    # the process ends here: spare the collector's passes over all a run left in memory at
    # exit (a 20,000-cell notebook: about a second, after a SIGTERM too); the OS frees it
    gc.freeze()
    end_process(code)


def end_process(code: int) -> NoReturn:
    """Exit with ``code`` without tearing the interpreter down object by object.

    Python's own exit clears every module and frees every object one at a time (10-20 ms
    after a run, more after a big notebook), which the OS does at once. When this thread is
    the only one left, the exit handlers run (logging's flush among them), the standard
    streams are flushed and the process ends; otherwise the usual exit waits for the other
    threads as it always does, and so does a process being traced or profiled (coverage,
    cProfile: they write their data at exit). Every file Kiln writes is closed by then."""
    import atexit
    import threading

    if threading.active_count() > 1 or sys.gettrace() is not None or sys.getprofile() is not None:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`kiln runs list | head`), a closed stream
            code = code or 1
    os._exit(code)


def run_main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by tests and ``main``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or os.environ.get("KILN_DEBUG") == "1"
    try:
        parser = build_parser(only=_command_of(args_list))
        _complete(parser)
        args = parser.parse_args(args_list)
        debug = debug or bool(args.debug)
        _apply_globals(args)
        handler: Any = args.handler
        return int(handler(args))
    except KilnError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(show_error(exc), file=sys.stderr)
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


#: global options that take a value (``--home DIR``)
_VALUED = frozenset({"--home", "--color"})


def _command_of(args: Sequence[str]) -> str | None:
    """The command a command line runs, when only its parser is needed: not for shell
    completion, top-level help, or a word that is no command (the full parser explains)."""
    if "_ARGCOMPLETE" in os.environ:
        return None
    names = {name.removesuffix("_cmd") for name in COMMANDS}
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _VALUED:
            skip = True
        elif arg.startswith("-"):
            if arg in ("-h", "--help", "-V", "--version"):
                return None
        else:
            return arg if arg in names else None
    return None


def _apply_globals(args: argparse.Namespace) -> None:
    if args.home:
        os.environ["KILN_HOME"] = os.path.abspath(args.home)
    if args.color == "never":
        os.environ["NO_COLOR"] = "1"
        os.environ.pop("FORCE_COLOR", None)
    elif args.color == "always":
        os.environ["FORCE_COLOR"] = "1"
        os.environ.pop("NO_COLOR", None)
    if args.command not in _NO_PROJECT_CHECK:
        from kiln.project import find_project_file

        if find_project_file() is not None:
            from kiln.project import load_project

            load_project()  # a broken kiln.yaml stops every command, with the same located error


def show_error(exc: KilnError) -> str:
    """The paragraph printed for an error: options named by their flags; a failed run shows
    its cell, the end of its traceback and where the log is."""
    from kiln.options import OptionError

    if isinstance(exc, OptionError):
        from kiln.flags import as_flag_error

        exc = as_flag_error(exc)
    if isinstance(exc, RunFailed) and exc.run is not None:
        from kiln.failure import failure_text, run_footer

        return f"Error: {failure_text(exc.run, traceback_lines=30)}\n{run_footer(exc.run)}"
    return exc.show()


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion (argcomplete), only when the shell asks for it."""
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parser)


if __name__ == "__main__":
    main()
