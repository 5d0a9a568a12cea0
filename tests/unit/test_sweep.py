"""Sweeps on the fake engine: grids, validation of every set, N at a time, results, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import nbformat
import pytest

import kiln
import kiln.engines
from kiln.cli.main import run_main
from kiln.engines.fake import FakeEngine, FakeSession
from kiln.errors import (
    CellExecutionError,
    InvalidParameterName,
    MissingParameter,
    ParameterTypeError,
    RunCancelled,
    UnknownParameter,
    UsageError,
)
from kiln.parameters import CliValue
from kiln.runner import Runner, RunRequest
from kiln.store import RunStore
from kiln.sweeps import (
    SetDone,
    SetEvent,
    SweepResult,
    arun_sweep,
    load_grid,
    parameter_sets,
    plan_sweep,
    run_sweep,
)

from kilntest import build_notebook, read_nb

PARAMS = ('x: int = 0\nregion: str = "EU"\nratio: float = 0.5', ["parameters"])
RECORD = "import kiln\nkiln.record('key', f'{region}-{x}')\nkiln.record('ratio', ratio)"


def _write(tmp_path: Path, cells, name: str = "nb.ipynb") -> Path:
    path = tmp_path / name
    nbformat.write(build_notebook(cells), path)
    return path


@pytest.fixture
def nb(tmp_path: Path) -> Path:
    return _write(tmp_path, [PARAMS, RECORD, "assert x != 13, 'unlucky'"])


def _sweep(
    tmp_path: Path,
    notebook: Path,
    sets,
    *,
    engine: FakeEngine | None = None,
    jobs: int = 1,
    shared=None,
    output=None,
    observer=None,
    **options,
) -> SweepResult:
    request = RunRequest(notebook=notebook, parameters=shared or {}, engine="fake", **options)
    plan = plan_sweep(request, sets, output=output, engine_name="fake")
    with Runner(home=tmp_path / "home", engine=engine or FakeEngine()) as runner:
        return run_sweep(plan, runner=runner, jobs=jobs, observer=observer)


def _stored(tmp_path: Path):
    with RunStore(tmp_path / "home") as store:
        return store.list_runs(limit=None)


# -- grids --------------------------------------------------------------------------------------


def test_a_mapping_gives_the_cartesian_product_first_name_slowest():
    sets = parameter_sets({"x": [1, 2, 3], "region": ["EU", "US"]})
    assert sets == [
        {"x": 1, "region": "EU"},
        {"x": 1, "region": "US"},
        {"x": 2, "region": "EU"},
        {"x": 2, "region": "US"},
        {"x": 3, "region": "EU"},
        {"x": 3, "region": "US"},
    ]


def test_a_scalar_is_one_value_and_a_list_of_lists_sweeps_a_list_parameter():
    assert parameter_sets({"x": 5, "items": [[1, 2], []]}) == [
        {"x": 5, "items": [1, 2]},
        {"x": 5, "items": []},
    ]


def test_a_list_gives_the_sets_as_they_are():
    assert parameter_sets([{"x": 1}, {"region": "US", "x": 2}, None]) == [
        {"x": 1},
        {"region": "US", "x": 2},
        {},
    ]


@pytest.mark.parametrize(
    ("grid", "words"),
    [
        ({}, "grid is empty"),
        ([], "list of parameter sets is empty"),
        ({"x": [1], "region": []}, "'region' has an empty list"),
        ([{"x": 1}, 3], "set 1 is a int"),
        ("x", "a sweep grid is a mapping"),
    ],
    ids=["empty-mapping", "empty-list", "empty-values", "set-not-mapping", "scalar"],
)
def test_bad_grids_are_usage_errors(grid, words):
    with pytest.raises(UsageError) as info:
        parameter_sets(grid)
    assert words in str(info.value) and info.value.exit_code == 2


def test_grid_names_and_values_are_checked():
    with pytest.raises(InvalidParameterName, match="__x__"):
        parameter_sets({"__x__": [1]})
    with pytest.raises(InvalidParameterName, match="quote the name"):
        parameter_sets({True: [1]})
    with pytest.raises(ParameterTypeError, match="plain data"):
        parameter_sets([{"x": object()}])


def test_a_huge_product_is_refused_before_it_is_built():
    with pytest.raises(UsageError, match="parameter sets"):
        parameter_sets({f"p{i}": list(range(10)) for i in range(8)})


def test_load_grid_reads_typed_yaml_and_keeps_dates_as_text(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("x: [1, 2]\nwhen: 2024-01-31\nflag: [true]\n")
    assert load_grid(grid) == [
        {"x": 1, "when": "2024-01-31", "flag": True},
        {"x": 2, "when": "2024-01-31", "flag": True},
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x: [1, 2\nregion: a\n", ":2:7: invalid YAML"),
        ("", "is empty"),
        ("- x: 1\n- 7\n", "set 1 is a int"),
    ],
    ids=["syntax", "empty", "shape"],
)
def test_load_grid_errors_name_the_file(tmp_path, text, words):
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    with pytest.raises(UsageError) as info:
        load_grid(grid)
    assert str(grid) in str(info.value) and words in str(info.value)


def test_load_grid_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read sweep grid"):
        load_grid(tmp_path / "nope.yaml")


# -- validation before anything runs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "error", "words"),
    [
        ([{"x": 1}, {"x": "a"}], ParameterTypeError, 'sweep set 1 (x="a")'),
        ([{"x": 1}, {"y": 2}], UnknownParameter, "sweep set 1 (y=2)"),
        ([{"x": 1.5}], ParameterTypeError, "sweep set 0 (x=1.5)"),
    ],
    ids=["wrong-type", "unknown", "float-for-int"],
)
def test_one_bad_set_refuses_the_whole_sweep_naming_it(tmp_path, nb, sets, error, words):
    engine = FakeEngine()
    with pytest.raises(error) as info:
        _sweep(tmp_path, nb, sets, engine=engine)
    assert words in str(info.value) and info.value.name in str(info.value)
    assert info.value.exit_code == 2
    assert engine.calls == []
    assert not (tmp_path / "home" / "kiln.db").exists() or _stored(tmp_path) == []


def test_a_required_parameter_missing_from_one_set(tmp_path):
    notebook = _write(tmp_path, [("when: str\nx = 1", ["parameters"])])
    with pytest.raises(MissingParameter, match=r"sweep set 1 \(x=2\).*'when'"):
        _sweep(tmp_path, notebook, [{"when": "a", "x": 1}, {"x": 2}])


def test_shared_values_are_coerced_and_each_set_overrides_them(tmp_path, nb):
    result = _sweep(
        tmp_path,
        nb,
        [{"x": 1}, {"x": 2, "region": "US"}],
        shared={"region": CliValue("JP"), "ratio": CliValue("1")},
    )
    assert [run.parameters for run in result.runs] == [
        {"region": "JP", "ratio": 1.0, "x": 1},
        {"region": "US", "ratio": 1.0, "x": 2},
    ]
    assert [item.values for item in result.items] == [{"x": 1}, {"x": 2, "region": "US"}]
    assert [run.records["key"] for run in result.runs] == ["JP-1", "US-2"]


def test_an_int_is_accepted_for_a_float_as_with_yaml(tmp_path, nb):
    result = _sweep(tmp_path, nb, [{"ratio": 2}])
    assert result.runs[0].parameters == {"ratio": 2.0}


# -- running ------------------------------------------------------------------------------------


def test_every_set_is_a_recorded_run_in_set_order(tmp_path, nb):
    sets = parameter_sets({"x": [1, 2, 3], "region": ["EU", "US"]})
    result = _sweep(tmp_path, nb, sets, jobs=2)
    assert result.ok and not result.cancelled
    assert [run.parameters for run in result.runs] == sets
    assert [run.records["key"] for run in result.runs] == [
        "EU-1",
        "US-1",
        "EU-2",
        "US-2",
        "EU-3",
        "US-3",
    ]
    stored = {run.id: run for run in _stored(tmp_path)}
    assert len(stored) == 6 and set(stored) == {run.id for run in result.runs}
    for run in result.runs:
        assert stored[run.id].state == "succeeded"
        assert stored[run.id].parameters == run.parameters
        out = read_nb(run.output_path)
        assert Path(run.output_path).parent == Path(run.run_dir)
        assert out.metadata.kiln.parameters == run.parameters
        assert Path(run.log_path).is_file()


def test_one_failure_does_not_stop_the_others(tmp_path, nb):
    result = _sweep(tmp_path, nb, [{"x": 1}, {"x": 13}, {"x": 3}], jobs=1)
    assert [item.state for item in result.items] == ["succeeded", "failed", "succeeded"]
    assert not result.ok
    assert [run.parameters["x"] for run in result.failed] == [13]
    assert [run.parameters["x"] for run in result.succeeded] == [1, 3]
    assert result.failed[0].error["ename"] == "AssertionError"
    with pytest.raises(CellExecutionError, match="unlucky"):
        result.check()


@pytest.mark.parametrize("magic", ["%%fake-die", "%%fake-hang"], ids=["crash", "timeout"])
def test_crashes_and_timeouts_are_failures_too(tmp_path, magic):
    notebook = _write(tmp_path, [("x = 0", ["parameters"]), f"{magic}\nx == 1"])
    result = _sweep(tmp_path, notebook, [{"x": 0}, {"x": 1}], jobs=2)
    assert {run.state for run in result.failed} == {"crashed" if "die" in magic else "timed_out"}
    assert len(result.failed) == 2 and not result.ok


class _Counting(FakeEngine):
    """Tracks how many executes overlap; each waits a little so runs can overlap."""

    def __init__(self, *, hold: float = 0.02) -> None:
        super().__init__()
        self.hold = hold
        self.active = 0
        self.peak = 0

    def session(self, options):
        return _CountingSession(self, options)


class _CountingSession(FakeSession):
    engine: _Counting

    async def execute(self, nb, emit):
        self.engine.active += 1
        self.engine.peak = max(self.engine.peak, self.engine.active)
        try:
            await asyncio.sleep(self.engine.hold)
            return await super().execute(nb, emit)
        finally:
            self.engine.active -= 1


@pytest.mark.parametrize("jobs", [1, 3, 20], ids=["one", "three", "more-than-sets"])
def test_at_most_jobs_runs_at_a_time(tmp_path, nb, jobs):
    engine = _Counting()
    result = _sweep(tmp_path, nb, [{"x": i} for i in range(8)], engine=engine, jobs=jobs)
    assert result.ok and len(result.runs) == 8
    assert engine.peak == min(jobs, 8)


def test_jobs_must_be_positive(tmp_path, nb):
    with pytest.raises(UsageError, match="at least 1"):
        _sweep(tmp_path, nb, [{"x": 1}], jobs=0)


def test_an_engine_refusing_to_start_one_set_leaves_the_others_running(tmp_path, nb):
    from kiln.errors import EngineError

    class Refusing(FakeEngine):
        sessions = 0

        def session(self, options):
            session = super().session(options)
            self.sessions += 1
            if self.sessions == 2:

                async def start() -> None:
                    raise EngineError("no room for another kernel")

                session.start = start  # type: ignore[method-assign]
            return session

    result = _sweep(tmp_path, nb, [{"x": 1}, {"x": 2}, {"x": 3}], engine=Refusing())
    assert [item.state for item in result.items] == ["succeeded", "not_run", "succeeded"]
    assert result.items[1].reason == "no room for another kernel"
    assert not result.ok and len(_stored(tmp_path)) == 2


def test_observer_sees_each_sets_events_tagged_and_one_done_per_set(tmp_path, nb):
    seen = []
    _sweep(tmp_path, nb, [{"x": 1}, {"x": 2}], jobs=2, observer=seen.append)
    done = [e.item.index for e in seen if isinstance(e, SetDone)]
    assert sorted(done) == [0, 1]
    started = [
        e for e in seen if isinstance(e, SetEvent) and type(e.event).__name__ == "RunStarted"
    ]
    assert {e.index: e.event.run.parameters["x"] for e in started} == {0: 1, 1: 2}


def test_no_parameters_cell_warns_once_and_injects_at_the_top(tmp_path):
    notebook = _write(tmp_path, ["import kiln\nkiln.record('x', x)"])
    request = RunRequest(notebook=notebook, engine="fake")
    plan = plan_sweep(request, [{"x": 1}, {"x": 2}], engine_name="fake")
    assert len(plan.warnings) == 1 and "no cell tagged 'parameters'" in plan.warnings[0]
    with Runner(home=tmp_path / "home", engine=FakeEngine()) as runner:
        result = run_sweep(plan, runner=runner)
    assert [run.records["x"] for run in result.runs] == [1, 2]


# -- output templates ---------------------------------------------------------------------------


def test_output_template_names_each_runs_notebook(tmp_path, nb):
    template = str(tmp_path / "out" / "{region}-{x:02d}-{index}.ipynb")
    result = _sweep(tmp_path, nb, [{"x": 1, "region": "a/b"}, {"x": 2}], output=template)
    paths = [Path(run.output_path) for run in result.runs]
    assert paths == [tmp_path / "out" / "a_b-01-0.ipynb", tmp_path / "out" / "EU-02-1.ipynb"]
    assert all(p.is_file() for p in paths)


def test_output_template_uses_shared_values(tmp_path, nb):
    result = _sweep(
        tmp_path, nb, [{"x": 1}], shared={"region": "US"}, output=str(tmp_path / "{region}.ipynb")
    )
    assert Path(result.runs[0].output_path) == tmp_path / "US.ipynb"


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("out.ipynb", "the same for every set"),
        ("{ratio}.ipynb", "gives"),
        ("{nope}.ipynb", "uses {nope}"),
        ("{x.real}.ipynb", "not a parameter name"),
        ("{}.ipynb", "not a parameter name"),
        ("{x", "output template"),
    ],
    ids=["no-field", "not-unique", "unknown-field", "attribute", "positional", "unbalanced"],
)
def test_bad_output_templates_are_refused_before_anything_runs(tmp_path, nb, template, words):
    engine = FakeEngine()
    with pytest.raises(UsageError) as info:
        _sweep(tmp_path, nb, [{"x": 1}, {"x": 2}], output=str(tmp_path / template), engine=engine)
    assert words in str(info.value)
    assert engine.calls == []


def test_output_template_that_is_the_input_is_refused(tmp_path, nb):
    with pytest.raises(UsageError, match="input notebook"):
        _sweep(tmp_path, nb, [{"x": 1}, {"region": "nb"}], output=str(tmp_path / "{region}.ipynb"))


# -- cancellation -------------------------------------------------------------------------------


class _Hanging(FakeEngine):
    """Every execute waits forever; once ``signal_at`` runs execute, SIGINT this process."""

    def __init__(self, *, signal_at: int | None = None, slow_start_after: int | None = None):
        super().__init__()
        self.signal_at = signal_at
        self.slow_start_after = slow_start_after
        self.executing = 0

    def session(self, options):
        return _HangingSession(self, options)


class _HangingSession(FakeSession):
    engine: _Hanging

    async def start(self) -> None:
        await super().start()
        starts = self.engine.calls.count("start")
        if self.engine.slow_start_after is not None and starts > self.engine.slow_start_after:
            await asyncio.sleep(30)

    async def execute(self, nb, emit):
        self.engine.calls.append("execute")
        self.engine.executing += 1
        if self.engine.executing == self.engine.signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_sigint_cancels_running_runs_and_never_starts_the_rest(tmp_path, nb):
    engine = _Hanging(signal_at=2)
    result = _sweep(tmp_path, nb, [{"x": i} for i in range(6)], engine=engine, jobs=2)
    assert result.cancelled and result.reason == "cancelled by SIGINT"
    assert [item.state for item in result.items] == ["cancelled"] * 2 + ["not_run"] * 4
    assert all("cancelled by SIGINT" in (run.reason or "") for run in result.runs)
    assert all(
        item.reason == "not run: the sweep was cancelled by SIGINT" for item in result.not_run
    )
    assert {run.state for run in _stored(tmp_path)} == {"cancelled"} and len(_stored(tmp_path)) == 2
    assert engine.calls.count("close") == 2
    assert "never started and not recorded" in result.table()
    with pytest.raises(RunCancelled):
        result.check()


def test_sigint_cancels_a_run_still_starting_without_recording_it(tmp_path, nb):
    engine = _Hanging(signal_at=1, slow_start_after=1)
    result = _sweep(tmp_path, nb, [{"x": i} for i in range(4)], engine=engine, jobs=2)
    assert [item.state for item in result.items] == ["cancelled", "not_run", "not_run", "not_run"]
    assert len(_stored(tmp_path)) == 1
    assert engine.calls.count("start") == engine.calls.count("close") == 2
    assert len(list((tmp_path / "home" / "runs").iterdir())) == 1  # nothing left of set 1


def test_cancelling_the_sweep_task_ends_every_run_then_raises(tmp_path, nb):
    engine = _Hanging()
    plan = plan_sweep(
        RunRequest(notebook=nb, engine="fake"), [{"x": i} for i in range(5)], engine_name="fake"
    )

    async def main() -> None:
        with Runner(home=tmp_path / "home", engine=engine) as runner:
            task = asyncio.ensure_future(arun_sweep(plan, runner=runner, jobs=2))
            while engine.executing < 2:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert sorted(run.state for run in _stored(tmp_path)) == ["cancelled", "cancelled"]
    assert engine.calls.count("close") == 2


# -- result, table, JSON ------------------------------------------------------------------------


def test_table_and_json_show_each_set(tmp_path, nb):
    result = _sweep(tmp_path, nb, [{"x": 1}, {"x": 13, "region": "US"}])
    lines = result.table().splitlines()
    assert lines[0].split() == ["#", "STATE", "DURATION", "RUN", "PARAMETERS", "RECORDS"]
    assert lines[1].split()[:2] == ["0", "succeeded"] and 'key="EU-1", ratio=0.5' in lines[1]
    assert " x=1 " in lines[1]
    assert lines[2].split()[:2] == ["1", "failed"] and 'x=13, region="US"' in lines[2]
    assert result.runs[1].id in lines[2]
    assert lines[3] == "2 sets: 1 succeeded, 1 failed"
    data = json.loads(json.dumps(result.to_json(), default=str))
    assert [d["sweep"] for d in data] == [
        {"index": 0, "set": {"x": 1}},
        {"index": 1, "set": {"x": 13, "region": "US"}},
    ]
    assert data[0]["records"] == {"key": "EU-1", "ratio": 0.5} and data[0]["state"] == "succeeded"
    assert data[1]["id"] == result.runs[1].id and data[1]["parameters"] == {"x": 13, "region": "US"}


# -- the Python API -----------------------------------------------------------------------------


def test_kiln_sweep_api(tmp_path, nb):
    result = kiln.sweep(
        nb,
        {"x": [1, 13, 2]},
        parameters={"region": "US"},
        engine="fake",
        home=tmp_path / "home",
        jobs=2,
    )
    assert isinstance(result, SweepResult) and not result.ok
    assert [run.records["key"] for run in result.runs] == ["US-1", "US-13", "US-2"]
    assert len(result.succeeded) == 2 and len(result.failed) == 1
    with pytest.raises(CellExecutionError):
        kiln.sweep(nb, [{"x": 13}, {"x": 1}], engine="fake", home=tmp_path / "home", check=True)
    # check=True raises only after every run ended
    assert len(_stored(tmp_path)) == 5


def test_kiln_sweep_reads_a_grid_file(tmp_path, nb):
    grid = tmp_path / "grid.yaml"
    grid.write_text("- {x: 4}\n- {x: 5, region: US}\n")
    result = kiln.sweep(nb, str(grid), engine="fake", home=tmp_path / "home")
    assert result.ok and [run.records["key"] for run in result.runs] == ["EU-4", "US-5"]


def test_kiln_sweep_survives_importing_the_sweeps_package():
    import kiln.sweeps

    assert callable(kiln.sweep) and kiln.sweep.__module__ == "kiln.api"


# -- the command line (in process, fake engine) ---------------------------------------------------


@pytest.fixture
def fake_cli(monkeypatch, home):
    """``run_main`` with every engine name giving one shared fake engine."""
    engines = {"engine": FakeEngine()}
    monkeypatch.setattr(kiln.engines, "get_engine", lambda name: engines["engine"])

    def run(*args: str, engine: FakeEngine | None = None) -> int:
        if engine is not None:
            engines["engine"] = engine
        return run_main(["run", *args, "--engine", "kernel"])

    return run


def _grid(tmp_path: Path, text: str) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return str(path)


def test_cli_sweep_prints_a_table_and_exits_0(tmp_path, nb, fake_cli, capsys, home):
    code = fake_cli(str(nb), "--sweep", _grid(tmp_path, "x: [1, 2]\nregion: [EU, US]\n"), "-j", "2")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[-1] == "4 sets: 4 succeeded" and 'x=2, region="US"' in out
    with RunStore(home) as store:
        assert len(store.list_runs()) == 4


def test_cli_sweep_exit_1_when_one_fails_and_names_it(tmp_path, nb, fake_cli, capsys):
    code = fake_cli(str(nb), "--sweep", _grid(tmp_path, "x: [1, 13, 3]\n"))
    out, err = capsys.readouterr()
    assert code == 1
    assert "3 sets: 2 succeeded, 1 failed" in out
    assert "set 1 (x=13) failed: cell 3 raised AssertionError: unlucky" in err


def test_cli_sweep_json(tmp_path, nb, fake_cli, capsys):
    code = fake_cli(
        str(nb), "--sweep", _grid(tmp_path, "- {x: 1}\n- {x: 2}\n"), "--json", "-p", "region", "US"
    )
    out, _ = capsys.readouterr()
    assert code == 0
    data = json.loads(out)
    assert [d["parameters"] for d in data] == [{"region": "US", "x": 1}, {"region": "US", "x": 2}]
    assert [d["records"]["key"] for d in data] == ["US-1", "US-2"]
    assert [d["sweep"]["set"] for d in data] == [{"x": 1}, {"x": 2}]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-j", "2"], "add --sweep"),
        (["--sweep", "GRID", "-j", "0"], "at least 1"),
        (["out.ipynb", "--sweep", "GRID"], "the same for every set"),
        (["--sweep", "BAD"], 'sweep set 1 (x="a")'),
        (["--sweep", "EMPTY"], "is empty"),
    ],
    ids=["jobs-without-sweep", "zero-jobs", "plain-output", "bad-set", "empty-grid"],
)
def test_cli_sweep_usage_errors_exit_2(tmp_path, nb, fake_cli, capsys, args, words):
    files = {
        "GRID": _grid(tmp_path, "x: [1, 2]\n"),
        "BAD": str(tmp_path / "bad.yaml"),
        "EMPTY": str(tmp_path / "empty.yaml"),
    }
    (tmp_path / "bad.yaml").write_text("- {x: 1}\n- {x: a}\n")
    (tmp_path / "empty.yaml").write_text("")
    engine = FakeEngine()
    code = fake_cli(str(nb), *[files.get(a, a) for a in args], engine=engine)
    assert code == 2
    assert words in capsys.readouterr().err
    assert engine.calls == []


def test_cli_sweep_sigint_exits_130_and_says_what_was_not_run(tmp_path, nb, fake_cli, capsys):
    engine = _Hanging(signal_at=2)
    code = fake_cli(
        str(nb), "--sweep", _grid(tmp_path, "x: [1, 2, 3, 4]\n"), "-j", "2", engine=engine
    )
    out, err = capsys.readouterr()
    assert code == 130
    assert "4 sets: 2 cancelled, 2 not run" in out
    assert "2 not run (never started and not recorded)" in out
    assert "Sweep cancelled by SIGINT" in err


def test_cli_sweep_warns_once_and_log_output_is_prefixed(tmp_path, fake_cli, capsys):
    notebook = _write(tmp_path, ["print('value', x)"])
    code = fake_cli(str(notebook), "--sweep", _grid(tmp_path, "x: [1, 2]\n"), "--log-output")
    out, err = capsys.readouterr()
    assert code == 0
    assert err.count("no cell tagged 'parameters'") == 1
    assert "[0] value 1" in out and "[1] value 2" in out


# -- the warm parent boots while the sets are checked -----------------------------------------


@pytest.fixture
def watched(monkeypatch):
    """What happens, in order: the warm parent's launch, the plan, the engines' closing."""
    import kiln.sweeps.execute as execute

    order: list[str] = []
    real_plan, real_close = execute.plan_sweep, Runner.aclose_engines
    monkeypatch.setattr(Runner, "_launch_warm_parent", lambda self: order.append("warm parent"))

    def plan(*args, **kwargs):
        order.append("plan")
        return real_plan(*args, **kwargs)

    async def close(self):
        order.append("engines closed")
        await real_close(self)

    monkeypatch.setattr(execute, "plan_sweep", plan)
    monkeypatch.setattr(Runner, "aclose_engines", close)
    return order


def test_the_warm_parent_starts_before_the_sets_are_checked(tmp_path, nb, watched):
    from kiln.sweeps import plan_and_run_sweep

    fake = FakeEngine()
    request = RunRequest(notebook=nb, engine="auto")
    with Runner(home=tmp_path / "home", engines={"fork": fake, "kernel": fake}) as runner:
        result = plan_and_run_sweep(request, [{"x": 1}, {"x": 2}], runner=runner, jobs=2)
    assert result.ok and len(result.runs) == 2
    # (each run asks again; the real launch does nothing once the parent exists)
    assert list(dict.fromkeys(watched)) == ["warm parent", "plan", "engines closed"]


def test_a_refused_plan_still_closes_the_warm_parent(tmp_path, nb, watched):
    from kiln.sweeps import plan_and_run_sweep

    request = RunRequest(notebook=nb, engine="auto")
    with Runner(home=tmp_path / "home") as runner, pytest.raises(ParameterTypeError):
        plan_and_run_sweep(request, [{"x": 1}, {"x": "many"}], runner=runner)
    assert watched == ["warm parent", "plan", "engines closed"]
    assert not (tmp_path / "home").exists() or not _stored(tmp_path)


def test_a_kernel_only_or_prepare_only_sweep_starts_no_warm_parent(tmp_path, nb, watched):
    from kiln.sweeps import plan_and_run_sweep

    fake = FakeEngine()
    for request in (
        RunRequest(notebook=nb, engine="kernel"),
        RunRequest(notebook=nb, engine="auto", prepare_only=True),
    ):
        with Runner(home=tmp_path / "home", engines={"kernel": fake, "fork": fake}) as runner:
            assert plan_and_run_sweep(request, [{"x": 1}], runner=runner).ok
    assert "warm parent" not in watched
