"""``kiln run IN.ipynb [OUT.ipynb] -p NAME VALUE ...``: papermill's command line, validated and
recorded; and ``kiln run IN.ipynb --sweep grid.yaml -j N``: one run per parameter set.

Every papermill option is accepted with papermill's spelling and meaning (``--parameters_file``,
``-b``, ``--inject-paths``, ``--stdout-file``, ...). ``-`` reads the notebook from standard
input or writes the output notebook to standard output; URLs (``https://``, ``s3://``, ...)
are read and written through :mod:`kiln.remote`. Run options come from :mod:`kiln.options`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError
from kiln.flags import add_run_options, run_options_from
from kiln.units import parse_count

if TYPE_CHECKING:
    from kiln.request import RunRequest
    from kiln.store.records import Run
    from kiln.sweeps import SweepResult

LOG_LEVELS = ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Ordered(argparse.Action):
    """Collect -p/-r/-f/-y/-b into one list, in command-line order (later wins)."""

    def __call__(
        self, parser: Any, namespace: Any, values: Any, option_string: str | None = None
    ) -> None:
        items = list(getattr(namespace, "param_sources", None) or [])
        items.append((self.const, values))
        namespace.param_sources = items


def _retries(text: str) -> int:
    try:
        return parse_count(text, minimum=0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _jobs(text: str) -> int:
    try:
        return parse_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        parents=parents,
        help="run a notebook with parameters",
        description="Run a notebook with validated parameters, recording the run (history, "
        "log, output notebook). Accepts papermill's command line.",
    )
    p.add_argument(
        "notebook",
        help="the notebook to run (never modified); '-' reads it from standard input; a URL "
        "(https://, s3://, gs://, ...) is downloaded",
    )
    p.add_argument(
        "output",
        nargs="?",
        help="output notebook (default: in the run folder); '-' writes it to standard output; "
        "a URL (s3://, gs://, file://, ...) is uploaded when the run ends; with --sweep, a "
        "template such as 'out/{region}-{x}.ipynb' (parameter names and {index})",
    )
    g = p.add_argument_group("parameters (applied in command-line order; later wins)")
    for flags, const, nargs, metavar, text in (
        (("-p", "--parameters"), "p", 2, ("NAME", "VALUE"), "a value, typed by the schema"),
        (("-r", "--parameters-raw", "--parameters_raw"), "r", 2, ("NAME", "VALUE"), "a string"),
        (("-f", "--parameters-file", "--parameters_file"), "f", None, "FILE", "a YAML file"),
        (("-y", "--parameters-yaml", "--parameters_yaml"), "y", None, "YAML", "inline YAML"),
        (
            ("-b", "--parameters-base64", "--parameters_base64"),
            "b",
            None,
            "BASE64",
            "base64-encoded YAML",
        ),
    ):
        g.add_argument(
            *flags,
            nargs=nargs,
            metavar=metavar,
            action=_Ordered,
            const=const,
            dest="param_sources",
            help=text,
        )
    g.add_argument(
        "--inject-input-path",
        action="store_true",
        help="pass the input path as parameter PAPERMILL_INPUT_PATH (papermill)",
    )
    g.add_argument(
        "--inject-output-path",
        action="store_true",
        help="pass the output path as parameter PAPERMILL_OUTPUT_PATH (papermill)",
    )
    g.add_argument("--inject-paths", action="store_true", help="both of the above (papermill)")
    e = p.add_argument_group("run options")
    add_run_options(e)
    e.add_argument(
        "--prepare-execute",
        dest="prepare_only",
        action="store_false",
        default=argparse.SUPPRESS,
        help="execute the notebook (the default; papermill's opposite of --prepare-only)",
    )
    e.add_argument(
        "--no-report-mode",
        dest="report_mode",
        action="store_false",
        default=argparse.SUPPRESS,
        help="show cell inputs in the output (the default)",
    )
    q = p.add_argument_group("the queue")
    q.add_argument(
        "--queue",
        action="store_true",
        help="validate and submit the run to the queue, print its id and return at once "
        "(a worker runs it: kiln worker, kiln serve)",
    )
    q.add_argument(
        "--retries",
        type=_retries,
        default=0,
        metavar="N",
        help="with --queue: run again up to N times if the worker running it dies",
    )
    s = p.add_argument_group("sweeps")
    s.add_argument(
        "--sweep",
        metavar="GRID",
        help="run once per parameter set of this YAML file: a mapping of name -> list of "
        "values (their cartesian product) or a list of name: value mappings; -p/-r/-f/-y give "
        "shared values that each set overrides",
    )
    s.add_argument("-j", "--jobs", type=_jobs, metavar="N", help="runs at a time in a sweep")
    s.add_argument(
        "--allow-outside",
        action="store_true",
        help="let a relative output template write outside the working directory",
    )
    o = p.add_argument_group("what is shown")
    o.add_argument(
        "--log-output",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="echo each cell's start, its output and results live",
    )
    o.add_argument(
        "--progress-bar",
        dest="progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )
    o.add_argument("--stdout-file", metavar="FILE", help="also write the cells' stdout here")
    o.add_argument("--stderr-file", metavar="FILE", help="also write the cells' stderr here")
    o.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="WARNING",
        help="DEBUG/INFO also print what runs where; ERROR/CRITICAL hide warnings",
    )
    o.add_argument("--json", action="store_true", help="print the run record as JSON")
    o.add_argument(
        "--help-notebook",
        action="store_true",
        help="show the notebook's parameters and exit (papermill); see also kiln params",
    )
    c = p.add_argument_group("accepted from papermill (Kiln always saves as cells finish)")
    c.add_argument(
        "--request-save-on-cell-execute",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Kiln saves the output notebook atomically within 0.2 s of each cell's end",
    )
    c.add_argument(
        "--autosave-cell-every",
        type=_jobs,
        metavar="SECONDS",
        help="accepted; Kiln also saves a running cell's outputs as they arrive",
    )
    p.set_defaults(handler=handle, param_sources=[])


def collect_parameters(sources: list[tuple[str, Any]]) -> dict[str, Any]:
    """Turn -p/-r/-f/-y/-b occurrences into one mapping (CliValue for -p)."""
    from kiln.parameters import CliValue, load_yaml_values, validate_name

    values: dict[str, Any] = {}
    for kind, item in sources:
        if kind == "p":
            validate_name(item[0])
            values[item[0]] = CliValue(item[1])
        elif kind == "r":
            validate_name(item[0])
            values[item[0]] = item[1]
        elif kind == "y":
            values.update(load_yaml_values(item, origin="-y"))
        elif kind == "b":
            try:
                decoded = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise UsageError(f"-b: not base64 text: {item[:40]!r}") from None
            values.update(load_yaml_values(decoded, origin="-b"))
        elif kind == "f":
            values.update(load_yaml_values(_read_file(item), origin=item))
    return values


def _read_file(name: str) -> bytes:
    path = Path(name)
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"parameters file {path} is a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read parameters file {path}: {exc.strerror}") from None


def build_request(args: argparse.Namespace, *, output: str | None) -> RunRequest:
    """The RunRequest behind ``kiln run`` (and each set of ``--sweep``)."""
    from kiln import remote
    from kiln.parameters import Extra
    from kiln.request import RunRequest

    parameters = collect_parameters(args.param_sources)
    source: bytes | None = None
    notebook = args.notebook
    if notebook == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("'-' reads the notebook from standard input, but none was piped in")
        source, notebook = sys.stdin.buffer.read(), "<stdin>"
    elif remote.is_url(notebook):
        source = remote.read_bytes(notebook)
    if args.inject_paths or args.inject_input_path:
        parameters["PAPERMILL_INPUT_PATH"] = Extra(args.notebook)
    if args.inject_paths or args.inject_output_path:
        parameters["PAPERMILL_OUTPUT_PATH"] = Extra(args.output)
    local_output = None if output is None or output == "-" or remote.is_url(output) else output
    return RunRequest.build(
        notebook,
        parameters=parameters,
        output=local_output,
        source=source,
        **run_options_from(args),
    )


def handle(args: argparse.Namespace) -> int:
    from kiln.cli.remote import client_of

    if args.server and not args.queue:
        raise UsageError("--server submits to a server's queue: add --queue")
    client = client_of(args) if args.queue else None
    if client is not None:
        from kiln.cli.remote import submit

        return submit(client, args)
    if args.help_notebook:
        from kiln.cli.params_cmd import show_parameters

        return show_parameters(args.notebook, as_json=args.json)
    if args.queue:
        return handle_queue(args)
    _start_warm_parent(args)
    if args.sweep is not None:
        return handle_sweep(args)
    if args.jobs is not None or args.allow_outside:
        flag = "-j/--jobs" if args.jobs is not None else "--allow-outside"
        raise UsageError(f"{flag} is for sweeps: add --sweep GRID")
    from kiln.cli.console import Console
    from kiln.runner import Runner

    to_stdout = args.output == "-"
    if to_stdout and args.json:
        raise UsageError("'-' writes the output notebook to standard output: drop --json")
    request = build_request(args, output=args.output)
    quiet = bool(args.quiet) or args.log_level in ("ERROR", "CRITICAL")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    given = dict(request.parameters)  # values the run may declare Secret: masked when echoed
    console = Console(
        progress=progress,
        log_output=args.log_output,
        quiet=quiet,
        output_to_stderr=to_stdout,
        given=given,
    )
    observers = [console.observe]
    files = _StreamFiles(args.stdout_file, args.stderr_file, given)
    if files.active:
        observers.append(files.observe)
    if args.log_level in ("DEBUG", "INFO"):
        _describe(request, args)
    try:
        with Runner(observers=observers) as runner:
            run = runner.run(request, check=False)
    finally:
        console.close()
        files.close()
    _deliver(run, args.output)
    if args.json:
        print(json.dumps(run.to_json(), indent=2, default=str))
    if not run.state.ok:
        from kiln.runner import raise_for_state

        raise_for_state(run)
    if not quiet and not args.json:
        console.summary(run)
    return 0


def _start_warm_parent(args: argparse.Namespace) -> None:
    """Start the fork engine's warm parent now when the run may use it: it boots (Python and
    IPython, ~0.15 s of CPU) while this process imports the runner, reads the notebook and
    opens the history, instead of after. A run that ends up on a kernel leaves it unused; it
    is stopped at exit."""
    from kiln.engines import may_fork
    from kiln.options import RunOptions

    given = run_options_from(args)
    engine = given.get("engine", RunOptions.engine)
    if may_fork(engine, prepare_only=bool(given.get("prepare_only"))):
        from kiln.engines.forkspawn import start_early

        start_early(sys.executable)


def handle_queue(args: argparse.Namespace) -> int:
    """``kiln run NB --queue``: validated and committed ``queued``; prints the run id."""
    from kiln.queue import submit

    if args.sweep is not None or args.output == "-":
        raise UsageError("--queue submits one run with a file output: drop --sweep and '-'")
    from kiln import remote

    if args.output is not None and remote.is_url(args.output):
        raise UsageError("--queue writes the output on the worker's disk: give a local path")
    import getpass

    run = submit(
        build_request(args, output=args.output),
        retries=args.retries,
        submitted_by=getpass.getuser(),
    )
    if args.json:
        print(json.dumps(run.to_json(), indent=2, default=str))
    else:
        print(run.id)
    return 0


def _describe(request: RunRequest, args: argparse.Namespace) -> None:
    print(f"Input notebook:  {request.notebook_label}", file=sys.stderr)
    print(f"Output notebook: {args.output or '(in the run folder)'}", file=sys.stderr)
    print(f"Working directory: {request.run_cwd}", file=sys.stderr)


def _deliver(run: Run, output: str | None) -> None:
    """Write the output notebook where the user asked when that is not a local path."""
    from kiln import remote
    from kiln.store.artifacts import read_bytes

    if output is None or run.output_path is None:
        return
    if output == "-":
        data = read_bytes(run.output_path)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    elif remote.is_url(output):
        remote.write_bytes(output, read_bytes(run.output_path))


class _StreamFiles:
    """``--stdout-file`` / ``--stderr-file``: opens the files, then copies like papermill."""

    def __init__(
        self, stdout: str | None, stderr: str | None, given: dict[str, Any] | None = None
    ) -> None:
        from kiln.liveoutput import StreamFiles

        opened: dict[str, Any] = {}
        for name, path in (("stdout", stdout), ("stderr", stderr)):
            if path:
                try:
                    opened[name] = open(path, "w", encoding="utf-8")  # noqa: SIM115
                except OSError as exc:
                    for handle in opened.values():
                        handle.close()
                    raise UsageError(f"--{name}-file {path}: {exc.strerror}") from None
        self.copier = StreamFiles(opened.get("stdout"), opened.get("stderr"), given=given)
        self.active = self.copier.active
        self.observe = self.copier.observe

    def close(self) -> None:
        for handle in self.copier.files.values():
            handle.close()


def handle_sweep(args: argparse.Namespace) -> int:
    """``kiln run NB --sweep GRID -j N``: validate every set, run them, print a table."""
    from kiln.cli.console import SweepConsole
    from kiln.runner import Runner
    from kiln.sweeps import SweepObserver, SweepPlan, load_grid, plan_and_run_sweep

    if args.output == "-":
        raise UsageError("a sweep writes one notebook per set: '-' cannot be its output")
    sets = load_grid(args.sweep)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    console: SweepConsole | None = None  # made once the plan says how many sets

    def start(plan: SweepPlan) -> SweepObserver:
        nonlocal console
        console = SweepConsole(
            Path(args.notebook).name,
            len(plan.items),
            progress=progress and not args.quiet,
            log_output=args.log_output,
        )
        for text in plan.warnings:
            console.warn(text)
        return console.observe

    try:
        with Runner() as runner:  # one runner: its warm engines serve every run
            # the warm parent starts first and boots while the sets are checked
            result = plan_and_run_sweep(
                build_request(args, output=None),
                sets,
                runner=runner,
                jobs=args.jobs or 1,
                output=args.output,
                allow_outside=args.allow_outside,
                on_plan=start,
            )
    finally:
        if console is not None:
            console.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    elif not (args.quiet and result.ok):
        _print_sweep_table(result)
    _print_failures(result)
    if result.cancelled:
        return 130
    return 0 if result.ok else 1


def _print_sweep_table(result: SweepResult) -> None:
    from rich.table import Table

    from kiln.cli.runs_cmd import console

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in result.COLUMNS:
        table.add_column(column, overflow="fold", justify="right" if column == "#" else "left")
    for row in result.rows():
        table.add_row(*row)
    out = console()
    out.print(table)
    for line in result.footer():
        out.print(line, markup=False, highlight=False)


def _print_failures(result: SweepResult) -> None:
    """One line per set that did not succeed, with where to look (stderr)."""
    from kiln.sweeps.plan import short_values

    for item in result.items:
        if item.ok or (result.cancelled and item.run is None):
            continue
        head = f"set {item.index} ({short_values(item.values)})"
        run = item.run
        if run is None:
            print(f"{head}: {item.reason}", file=sys.stderr)
            continue
        why = run.reason or run.state.value
        if run.error and "ename" in run.error and "cell_index" in run.error:
            why = f"cell {run.error['cell_index']} raised {run.error['ename']}: "
            why += str(run.error.get("evalue", ""))
        print(f"{head} {run.state}: {why}\n  run {run.id}, log {run.log_path}", file=sys.stderr)
    if result.cancelled:
        print(f"Sweep {result.reason}: {result.counts()}", file=sys.stderr)
