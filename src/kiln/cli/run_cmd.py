"""``kiln run IN.ipynb [OUT.ipynb] -p NAME VALUE ...`` (papermill's common flags accepted),
and ``kiln run IN.ipynb --sweep grid.yaml -j N``: one run per parameter set."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError

if TYPE_CHECKING:
    from kiln.runner import RunRequest
    from kiln.sweeps import SweepEvent, SweepResult


class _Ordered(argparse.Action):
    """Collect -p/-r/-f/-y into one list, in command-line order (later wins)."""

    def __call__(
        self, parser: Any, namespace: Any, values: Any, option_string: str | None = None
    ) -> None:
        items = list(getattr(namespace, "param_sources", None) or [])
        items.append((self.const, values))
        namespace.param_sources = items


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a notebook with parameters",
        description="Run a notebook on a Jupyter kernel with validated parameters, recording "
        "the run (history, log, output notebook). Drop-in for papermill's common flags.",
    )
    p.add_argument("notebook", help="the notebook to run (never modified)")
    p.add_argument(
        "output",
        nargs="?",
        help="output notebook path (default: in the run folder); with --sweep, a template "
        "such as 'out/{region}-{x}.ipynb' (parameter names and {index})",
    )
    g = p.add_argument_group("parameters (applied in command-line order; later wins)")
    g.add_argument(
        "-p",
        "--parameters",
        nargs=2,
        metavar=("NAME", "VALUE"),
        action=_Ordered,
        const="p",
        dest="param_sources",
        help="a value, typed by the schema",
    )
    g.add_argument(
        "-r",
        "--parameters-raw",
        nargs=2,
        metavar=("NAME", "VALUE"),
        action=_Ordered,
        const="r",
        dest="param_sources",
        help="a raw string value",
    )
    g.add_argument(
        "-f",
        "--parameters-file",
        metavar="FILE",
        action=_Ordered,
        const="f",
        dest="param_sources",
        help="a YAML file of name: value",
    )
    g.add_argument(
        "-y",
        "--parameters-yaml",
        metavar="YAML",
        action=_Ordered,
        const="y",
        dest="param_sources",
        help="inline YAML of name: value",
    )
    g.add_argument(
        "--allow-unknown", action="store_true", help="pass parameters the notebook does not declare"
    )
    e = p.add_argument_group("execution")
    e.add_argument("-k", "--kernel", help="kernel name (default: the notebook's)")
    e.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "fork", "kernel"],
        help="fork: a child of a warm Python per run (fresh state, no kernel start-up); "
        "kernel: a Jupyter kernel; auto (default): fork for Python notebooks on Linux",
    )
    e.add_argument(
        "--memory-limit",
        type=_size,
        metavar="SIZE",
        help="cap the run's memory, e.g. 512M or 2G (fork engine)",
    )
    e.add_argument("--cwd", help="working directory of the kernel (default: notebook's folder)")
    e.add_argument(
        "--cell-timeout",
        "--execution-timeout",
        type=_seconds,
        dest="cell_timeout",
        metavar="SECONDS",
        help="time limit for each cell",
    )
    e.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="time limit for the whole run, kernel start included",
    )
    e.add_argument(
        "--start-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="accepted for papermill compatibility (kernel start is bounded by --timeout)",
    )
    e.add_argument("--allow-errors", action="store_true", help="keep going after a cell error")
    e.add_argument(
        "--lint",
        action="store_true",
        help="refuse to run a notebook with lint errors (see kiln lint, kiln.yaml)",
    )
    e.add_argument(
        "--prepare-only",
        action="store_true",
        help="inject parameters and write the output without executing",
    )
    s = p.add_argument_group("sweeps")
    s.add_argument(
        "--sweep",
        metavar="GRID",
        help="run once per parameter set of this YAML file: a mapping of name -> list of "
        "values (their cartesian product) or a list of name: value mappings; -p/-r/-f/-y give "
        "shared values that each set overrides",
    )
    s.add_argument(
        "-j", "--jobs", type=_jobs, metavar="N", help="runs at a time in a sweep (default 1)"
    )
    o = p.add_argument_group("output")
    o.add_argument("--log-output", action="store_true", help="stream cell output live")
    o.add_argument("--report-mode", action="store_true", help="hide cell inputs in the output")
    o.add_argument("--progress-bar", dest="progress", action="store_true", default=None)
    o.add_argument("--no-progress-bar", dest="progress", action="store_false")
    o.add_argument(
        "--json", action="store_true", help="print the run record (a sweep: a list) as JSON"
    )
    o.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(handler=handle, param_sources=[])


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _size(text: str) -> int:
    units = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    raw = text.strip().upper().removesuffix("IB").removesuffix("B") or "0"
    unit = raw[-1] if raw[-1] in units else ""
    number = raw[:-1] if unit else raw
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 2G, got {text!r}") from None
    if value < 16 * 1024**2:
        raise argparse.ArgumentTypeError(f"a memory limit under 16M cannot run Python: {text}")
    return int(value)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of runs, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 run at a time, got {value}")
    return value


def collect_parameters(sources: list[tuple[str, Any]]) -> dict[str, Any]:
    """Turn -p/-r/-f/-y occurrences into one mapping (CliValue for -p)."""
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
        elif kind == "f":
            path = Path(item)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read parameters file {path}: {exc.strerror}") from None
            values.update(load_yaml_values(text, origin=str(path)))
    return values


def _request(args: argparse.Namespace, *, output: str | None) -> RunRequest:
    from kiln.runner import RunRequest

    return RunRequest(
        notebook=Path(args.notebook),
        parameters=collect_parameters(args.param_sources),
        output=Path(output) if output else None,
        kernel=args.kernel,
        engine=args.engine,
        memory_limit=args.memory_limit,
        lint=args.lint,
        cwd=Path(args.cwd) if args.cwd else None,
        cell_timeout=args.cell_timeout,
        timeout=args.timeout,
        allow_errors=args.allow_errors,
        allow_unknown=args.allow_unknown,
        report_mode=args.report_mode,
        prepare_only=args.prepare_only,
    )


def handle(args: argparse.Namespace) -> int:
    if args.sweep is not None:
        return handle_sweep(args)
    if args.jobs is not None:
        raise UsageError("-j/--jobs sets how many runs of a sweep run at a time: add --sweep GRID")
    from kiln.cli.console import Console
    from kiln.runner import Runner

    request = _request(args, output=args.output)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    console = Console(progress=progress and not args.quiet, log_output=args.log_output)
    try:
        with Runner(observers=[console.observe]) as runner:
            run = runner.run(request, check=False)
    finally:
        console.close()
    if args.json:
        print(json.dumps(run.to_json(), indent=2, default=str))
    if run.state != "succeeded":
        from kiln.errors import KilnError
        from kiln.runner import raise_for_state

        try:
            raise_for_state(run)
        except KilnError as exc:
            print(exc.show(), file=sys.stderr)
            return exc.exit_code
    if not args.quiet and not args.json:
        console.summary(run)
    return 0


def handle_sweep(args: argparse.Namespace) -> int:
    """``kiln run NB --sweep GRID -j N``: validate every set, run them, print a table."""
    from kiln.runner import Runner
    from kiln.sweeps import load_grid, plan_sweep, run_sweep

    sets = load_grid(args.sweep)
    plan = plan_sweep(_request(args, output=None), sets, output=args.output)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    console = _SweepConsole(
        Path(args.notebook).name,
        len(plan.items),
        progress=progress and not args.quiet,
        log_output=args.log_output,
    )
    for text in plan.warnings:
        console.warn(text)
    try:
        with Runner() as runner:  # one runner: its warm engines serve every run
            result = run_sweep(plan, runner=runner, jobs=args.jobs or 1, observer=console.observe)
    finally:
        console.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    elif not (args.quiet and result.ok):
        print(result.table())
    _print_failures(result)
    if result.cancelled:
        return 130
    return 0 if result.ok else 1


def _print_failures(result: SweepResult) -> None:
    """One line per set that did not succeed, with where to look (stderr)."""
    from kiln.sweeps.plan import short_values

    for item in result.items:
        if item.state == "succeeded" or (result.cancelled and item.run is None):
            continue
        head = f"set {item.index} ({short_values(item.values)})"
        run = item.run
        if run is None:
            print(f"{head}: {item.reason}", file=sys.stderr)
            continue
        why = run.reason or run.state
        if run.error and "ename" in run.error and "cell_index" in run.error:
            why = f"cell {run.error['cell_index']} raised {run.error['ename']}: "
            why += str(run.error.get("evalue", ""))
        print(f"{head} {run.state}: {why}\n  run {run.id}, log {run.log_path}", file=sys.stderr)
    if result.cancelled:
        print(f"Sweep {result.reason}: {result.counts()}", file=sys.stderr)


class _SweepConsole:
    """One progress bar over the sweep's runs (on a terminal), warnings once each, and
    ``--log-output`` lines prefixed with their set's index."""

    def __init__(self, name: str, total: int, *, progress: bool, log_output: bool) -> None:
        self.name = name
        self.log_output = log_output
        self.failures = 0
        self.seen: set[str] = set()
        self._progress: Any = None
        self._task: Any = None
        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[red]{task.fields[failures]}"),
                TimeElapsedColumn(),
                transient=True,
            )
            self._task = self._progress.add_task(f"{name} sweep", total=total, failures="")
            self._progress.start()

    def observe(self, event: SweepEvent) -> None:
        from kiln.engines.base import CellOutput
        from kiln.runner import RunWarning
        from kiln.sweeps import SetDone, SetEvent

        if isinstance(event, SetDone):
            if event.item.state != "succeeded":
                self.failures += 1
            if self._progress is not None:
                failures = f"{self.failures} failed" if self.failures else ""
                self._progress.update(self._task, advance=1, failures=failures)
        elif isinstance(event, SetEvent):
            if isinstance(event.event, RunWarning):
                self.warn(event.event.text)
            elif isinstance(event.event, CellOutput) and self.log_output:
                self._echo(event.index, event.event)

    def warn(self, text: str) -> None:
        if text not in self.seen:
            self.seen.add(text)
            self._print(f"Warning: {text}", sys.stderr)

    def _echo(self, index: int, event: Any) -> None:
        out = event.output
        kind = out.get("output_type")
        stream = sys.stdout
        if kind == "stream":
            text = str(out.get("text", ""))
            stream = sys.stderr if out.get("name") == "stderr" else sys.stdout
        elif kind == "error":
            from kiln.textutil import strip_ansi

            text = strip_ansi("\n".join(out.get("traceback", [])))
            stream = sys.stderr
        elif kind == "execute_result":
            text = str(out.get("data", {}).get("text/plain", ""))
        else:
            return
        lines = text.splitlines()
        if lines:
            self._print("\n".join(f"[{index}] {line}" for line in lines), stream)

    def _print(self, text: str, stream: Any) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=stream, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
