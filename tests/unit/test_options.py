"""One set of run options: every entry point takes each of them, under the same name.

The options are enumerated from :data:`kiln.options.OPTIONS`; a new option that an entry point
does not pass on fails here (unless :data:`kiln.options.NOT_FOR` says why it does without).
"""

from __future__ import annotations

import argparse
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kiln
from kiln.cli.main import build_parser
from kiln.flags import flag_for, run_options_from
from kiln.options import (
    NOT_FOR,
    OPTION_NAMES,
    OPTIONS,
    OptionError,
    RunOptionArgs,
    RunOptions,
    make_options,
)
from kiln.request import RunRequest
from kiln.units import parse_duration, parse_size

#: a non-default value for every option (and how to write it on a command line)
SAMPLES: dict[str, tuple[Any, list[str]]] = {
    "kernel": ("python3", ["--kernel", "python3"]),
    "language": ("python", ["--language", "python"]),
    "engine": ("kernel", ["--engine", "kernel"]),
    "cwd": (Path("/tmp"), ["--cwd", "/tmp"]),
    "env": ({"A": "1"}, ["--env", "A=1"]),
    "cell_timeout": (5.0, ["--cell-timeout", "5s"]),
    "timeout": (540.0, ["--timeout", "9m"]),
    "start_timeout": (7.0, ["--start-timeout", "7"]),
    "memory_limit": (64 * 2**20, ["--memory-limit", "64M"]),
    "allow_errors": (True, ["--allow-errors"]),
    "allow_unknown": (True, ["--allow-unknown"]),
    "lint": (True, ["--lint"]),
    "report_mode": (True, ["--report-mode"]),
    "prepare_only": (True, ["--prepare-only"]),
    "tags": ({"team": "sales"}, ["--tag", "team=sales"]),
    "mlflow_uri": ("sqlite:///mlflow.db", ["--mlflow-uri", "sqlite:///mlflow.db"]),
}


def test_every_option_has_a_sample_help_and_flag() -> None:
    assert set(SAMPLES) == set(OPTION_NAMES)
    for f in OPTIONS:
        assert f.metadata["help"] and f.metadata["flags"], f.name


def test_keyword_form_mirrors_the_dataclass() -> None:
    hints = typing.get_type_hints(RunOptionArgs)
    assert list(hints) == list(OPTION_NAMES)


def test_misspelled_option_is_refused_with_a_suggestion() -> None:
    with pytest.raises(OptionError, match="timout: not a run option; did you mean 'timeout'"):
        make_options({"timout": 3})


def test_texts_are_converted_once_for_everyone() -> None:
    values = make_options({"timeout": "1h30m", "memory_limit": "2G", "engine": "nbclient"})
    assert values == {"timeout": 5400.0, "memory_limit": 2 * 2**30, "engine": "kernel"}
    with pytest.raises(OptionError, match="cell_timeout: expected a duration"):
        make_options({"cell_timeout": "soon"})
    with pytest.raises(OptionError, match="timeout: expected a positive number"):
        RunOptions(timeout=0)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), (90, 90.0), ("10s", 10.0), ("5m", 300.0), ("2h", 7200.0)]
)
def test_durations_everywhere(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert make_options({"timeout": text})["timeout"] == seconds


def test_sizes() -> None:
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("2GiB") == 2 * 2**30


# -- each entry point passes each option on ---------------------------------------------------


class Captured(Exception):
    def __init__(self, request: RunRequest) -> None:
        self.request = request


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], Any]], RunRequest]:
    """Call an entry point and return the RunRequest it hands to the runner."""
    from kiln import runner

    async def arun(self: Any, request: RunRequest, *, check: bool = True) -> Any:
        raise Captured(request)

    monkeypatch.setattr(runner.Runner, "arun", arun)

    def call(entry: Callable[[], Any]) -> RunRequest:
        with pytest.raises(Captured) as caught:
            entry()
        return caught.value.request

    return call


def _expect(request: RunRequest, skip: Any = ()) -> None:
    for name, (value, _flags) in SAMPLES.items():
        if name in skip:
            continue
        if name == "tags":  # triggers add their own (a sweep its id): the given ones are kept
            assert value.items() <= dict(request.tags or {}).items(), name
            continue
        assert getattr(request, name) == value, name


def _kwargs(skip: Any = ()) -> dict[str, Any]:
    return {name: value for name, (value, _) in SAMPLES.items() if name not in skip}


def test_kiln_run_takes_every_option(capture: Any, tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    _expect(capture(lambda: kiln.run(nb, home=tmp_path, **_kwargs())))


def test_kiln_sweep_takes_every_option(
    capture: Any, tmp_path: Path, make_nb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kiln.sweeps.execute

    async def arun_sweep(plan: Any, **_: Any) -> Any:
        raise Captured(plan.items[0].request)

    monkeypatch.setattr(kiln.sweeps.execute, "arun_sweep", arun_sweep)
    nb = make_nb([("x = 1", ["parameters"])])
    # the sweep's plan prepares each set: its kernel must exist and run Python
    skip = {"engine", "kernel", "language", "memory_limit", "lint"}
    request = capture(lambda: kiln.sweep(nb, {"x": [1]}, home=tmp_path, **_kwargs(skip)))
    _expect(request, skip)
    lint = capture(lambda: kiln.sweep(nb, {"x": [1]}, home=tmp_path, lint=True, engine="kernel"))
    assert lint.lint and lint.engine == "kernel"


def test_notebook_session_and_fixture_take_every_option(capture: Any, tmp_path: Path) -> None:
    from kiln.testing.session import NotebookSession

    nb = tmp_path / "nb.ipynb"
    with NotebookSession() as session:
        _expect(capture(lambda: session.run(nb, home=tmp_path, **_kwargs())))


def test_verify_takes_every_option_but_the_declared_ones(
    capture: Any, tmp_path: Path, make_nb: Any
) -> None:
    from kiln.testing.verify import verify_notebook

    skip = set(NOT_FOR["verify"])
    nb = make_nb(["x = 1"])
    _expect(capture(lambda: verify_notebook(nb, home=tmp_path, **_kwargs(skip))), skip)
    with pytest.raises(OptionError, match="prepare_only: verify must execute"):
        verify_notebook(nb, prepare_only=True)


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_kiln_run_has_a_flag_for_every_option(tmp_path: Path) -> None:
    from kiln.cli.run_cmd import build_request

    argv = ["run", str(tmp_path / "nb.ipynb")]
    for _value, flags in SAMPLES.values():
        argv += flags
    _expect(build_request(_parse(*argv), output=None))


def test_kiln_verify_has_a_flag_for_every_option_it_uses() -> None:
    argv = ["verify", "nb.ipynb"]
    for name, (_value, flags) in SAMPLES.items():
        if name not in NOT_FOR["verify"]:
            argv += flags
    given = run_options_from(_parse(*argv))
    assert set(given) == set(OPTION_NAMES) - set(NOT_FOR["verify"])


def test_pytest_plugin_has_a_flag_for_every_option_it_uses() -> None:
    from kiln.flags import add_run_options

    parser = argparse.ArgumentParser()
    add_run_options(parser, prefix="--kiln-", exclude=NOT_FOR["pytest"], absent=None)
    argv: list[str] = []
    for name, (_value, flags) in SAMPLES.items():
        if name not in NOT_FOR["pytest"]:
            argv += [flags[0].replace("--", "--kiln-", 1), *flags[1:]]
    given = run_options_from(parser.parse_args(argv), prefix="--kiln-")
    assert set(given) == set(OPTION_NAMES) - set(NOT_FOR["pytest"])


def test_each_options_help_is_written_once_and_shown_everywhere() -> None:
    run_help = build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    doc = inspect.getdoc(kiln.run) or ""
    sweep_doc = inspect.getdoc(kiln.sweep) or ""
    for f in OPTIONS:
        words = " ".join(str(f.metadata["help"]).split()[:4])
        assert words in " ".join(run_help.split()), f.name
        assert f"``{f.name}``" in doc and f"``{f.name}``" in sweep_doc, f.name


def test_errors_name_the_option_by_api_name_and_the_cli_by_flag(tmp_path: Path) -> None:
    from kiln.cli.main import show_error

    error = OptionError("cwd", "/nowhere is not a directory")
    assert error.message == "cwd: /nowhere is not a directory"
    assert show_error(error) == "Error: --cwd: /nowhere is not a directory"
    assert flag_for("cell_timeout") == "--cell-timeout"


def test_environment_variables_set_run_options_by_their_kiln_names() -> None:
    from kiln.options import environment_defaults

    found = environment_defaults(
        {
            "KILN_TIMEOUT": "10m",
            "KILN_ALLOW_ERRORS": "yes",
            "KILN_LINT": "0",
            "KILN_TAGS": "team=sales",
            "KILN_PREPARE_ONLY": "1",  # never from the environment: a run must run
            "KILN_NOT_AN_OPTION": "x",
        }
    )
    assert found == {
        "timeout": 600.0,
        "allow_errors": True,
        "lint": False,
        "tags": {"team": "sales"},
    }
    with pytest.raises(OptionError, match="KILN_ALLOW_ERRORS: expected 1/true or 0/false"):
        environment_defaults({"KILN_ALLOW_ERRORS": "maybe"})
    with pytest.raises(OptionError, match="KILN_TIMEOUT: expected a duration"):
        environment_defaults({"KILN_TIMEOUT": "later"})
