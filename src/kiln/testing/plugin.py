"""pytest plugin (entry point ``pytest11``): notebooks as tests.

::

    pytest --kiln notebooks/           # each notebook runs through Kiln; a cell error fails it
    pytest --kiln-compare notebooks/   # and its fresh outputs must match the saved ones
    pytest --kiln-lint notebooks/      # a lint item per notebook (errors fail)

Items per notebook:

- ``report.ipynb::run``: the notebook with its own defaults, when it declares no parameter sets;
- ``report.ipynb::region=EU``: one per parameter set declared in ``kiln.yaml`` or the
  notebook's metadata (see :mod:`kiln.testing.config`), instead of ``run``;
- ``report.ipynb::compare`` (``--kiln-compare``, replacing ``run``): the defaults, and the fresh
  outputs must match the saved ones after normalisation, like ``kiln verify``; a notebook's
  parameter sets still get their own (run-only) items, since saved outputs belong to one set;
- ``report.ipynb::lint`` (``--kiln-lint``).

Cells marked the nbval way (``# NBVAL_SKIP``, ``# NBVAL_RAISES_EXCEPTION``, their tags) run
as nbval would (:mod:`kiln.testing.markers`). Folders ``.ipynb_checkpoints`` and ``.kiln`` are
never collected. Runs are recorded in a Kiln home under pytest's temporary
folder (``--kiln-home DIR`` keeps them elsewhere), so tests never touch the project's history.

The ``kiln_run`` fixture runs a notebook from a test of your own::

    def test_report(kiln_run):
        run = kiln_run("report.ipynb", region="EU", n=3)   # path relative to this file
        assert run.records["total"] > 0

This module is imported by every pytest start-up where Kiln is installed: it imports only
pytest and the standard library until a Kiln option or the fixture is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kiln.store.records import Run
    from kiln.testing.session import NotebookSession

#: folders never collected, wherever they are
SKIPPED_DIRS = frozenset({".ipynb_checkpoints", ".kiln"})
_RESERVED = frozenset({"run", "compare", "lint"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kiln", "Kiln: notebooks as tests")
    group.addoption(
        "--kiln",
        action="store_true",
        help="collect .ipynb files: each runs through Kiln and fails on a cell error",
    )
    group.addoption(
        "--kiln-compare",
        action="store_true",
        help="like --kiln, and compare the fresh outputs with the saved ones (kiln verify)",
    )
    group.addoption("--kiln-lint", action="store_true", help="add a kiln lint item per notebook")
    from kiln.flags import add_run_options
    from kiln.options import NOT_FOR

    # the run options, as for `kiln run`, spelled --kiln-<flag> (--kiln-engine, ...)
    add_run_options(group, prefix="--kiln-", exclude=NOT_FOR["pytest"], absent=None)
    group.addoption(
        "--kiln-home",
        default=None,
        metavar="DIR",
        help="record notebook runs here (default: a folder under pytest's basetemp)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kiln: a notebook item collected by Kiln (--kiln, --kiln-compare, --kiln-lint)"
    )
    config.stash[_STATE] = _State(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".ipynb":
        return None
    options = _State.of(parent.config).options
    if not (options.run or options.lint):
        return None
    try:
        parts = file_path.relative_to(parent.config.rootpath).parts
    except ValueError:
        parts = file_path.parts
    if SKIPPED_DIRS.intersection(parts):
        return None
    notebook: NotebookFile = NotebookFile.from_parent(parent, path=file_path)
    return notebook


@dataclass(frozen=True)
class _Options:
    run: bool
    compare: bool
    lint: bool
    home: str | None
    #: the run options given as --kiln-<flag>
    run_options: Mapping[str, Any]


class _State:
    """Per pytest process: the options, the warm notebook session and the Kiln home."""

    def __init__(self, config: pytest.Config) -> None:
        get = config.getoption
        compare = bool(get("kiln_compare"))
        from kiln.flags import run_options_from

        self.options = _Options(
            run=bool(get("kiln")) or compare,
            compare=compare,
            lint=bool(get("kiln_lint")),
            home=get("kiln_home"),
            run_options=run_options_from(config, prefix="--kiln-"),
        )
        self.config = config
        self._session: NotebookSession | None = None
        self._home: Path | None = None

    @staticmethod
    def of(config: pytest.Config) -> _State:
        return config.stash[_STATE]

    def session(self) -> NotebookSession:
        if self._session is None:
            from kiln.testing.session import NotebookSession

            self._session = NotebookSession()
        return self._session

    def home(self) -> Path:
        """Where notebook items record their runs."""
        if self._home is None:
            if self.options.home:
                self._home = Path(self.options.home).resolve()
            else:
                factory = getattr(self.config, "_tmp_path_factory", None)
                if factory is not None:
                    self._home = Path(factory.mktemp("kiln-home"))
                else:
                    import tempfile

                    self._home = Path(tempfile.mkdtemp(prefix="kiln-home-"))
        return self._home

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


_STATE = pytest.StashKey[_State]()


class NotebookFailed(Exception):
    """A notebook item failed; the message is the whole report."""


class NotebookFile(pytest.File):
    """A notebook: run items (one per parameter set) and a lint item."""

    def collect(self) -> Iterator[pytest.Item]:
        options = _State.of(self.config).options
        if options.run:
            from kiln.testing.config import parameter_sets

            sets = parameter_sets(self.path)
            if sets is None or options.compare:
                name = "compare" if options.compare else "run"
                yield NotebookItem.from_parent(
                    self, name=name, parameters={}, compare=options.compare
                )
            for found in sets or []:
                name = f"{found.id}#set" if found.id in _RESERVED else found.id
                yield NotebookItem.from_parent(
                    self, name=name, parameters=found.values, compare=False
                )
        if options.lint:
            yield LintItem.from_parent(self, name="lint")

    def repr_failure(  # type: ignore[override]
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> Any:
        return _readable(excinfo) or super().repr_failure(excinfo)


def _readable(excinfo: pytest.ExceptionInfo[BaseException]) -> str | None:
    from kiln.errors import KilnError

    if isinstance(excinfo.value, NotebookFailed):
        return str(excinfo.value)
    if isinstance(excinfo.value, KilnError):
        return excinfo.value.show()
    return None


class _KilnItem(pytest.Item):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_marker("kiln")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        return _readable(excinfo) or super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # the failure heading; not a suffix of the node id, which pytest would rewrite
        # (``a.b`` -> ``a::b``) in verbose lines
        return self.path, None, f"{self.path.name}[{self.name}]"

    def note(self, text: str) -> None:
        self.add_report_section("call", "kiln", text)


class NotebookItem(_KilnItem):
    """Runs the notebook with one parameter set; with ``compare``, also compares outputs."""

    def __init__(self, *, parameters: Mapping[str, Any], compare: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parameters = dict(parameters)
        self.compare = compare

    def runtest(self) -> None:
        state = _State.of(self.config)
        options = state.options
        if self.compare:
            from kiln.options import NOT_FOR
            from kiln.testing.verify import verify_notebook

            run_options = {
                k: v for k, v in options.run_options.items() if k not in NOT_FOR["verify"]
            }
            result = verify_notebook(
                self.path,
                parameters=self.parameters,
                home=state.home(),
                session=state.session(),
                on_warning=self.note,
                **run_options,
            )
            _interrupted(result.run)
            if not result.ok:
                raise NotebookFailed(result.report())
            return
        from kiln.failure import failure_text, run_footer

        run = state.session().run(
            self.path,
            parameters=self.parameters,
            home=state.home(),
            nbval_markers=True,
            check=False,
            on_warning=self.note,
            **options.run_options,
        )
        _interrupted(run)
        if not run.state.ok:
            with_set = f" with {self.parameters}" if self.parameters else ""
            raise NotebookFailed(
                f"{self.path.name}{with_set}: {failure_text(run)}\n{run_footer(run)}"
            )


def _interrupted(run: Run) -> None:
    if run.state == "cancelled":  # Ctrl-C reached the run: stop the test session too
        raise KeyboardInterrupt(run.reason or "cancelled")


class LintItem(_KilnItem):
    """``kiln lint`` on the notebook: fails on findings of error severity."""

    def runtest(self) -> None:
        try:
            from kiln.lint import lint_notebook, load_lint_config
        except ImportError as exc:
            pytest.skip(f"kiln lint is not available in this Kiln installation ({exc})")
        from kiln.notebook import load_notebook

        nb = load_notebook(self.path)
        findings = lint_notebook(nb, self.path, config=load_lint_config(self.path.parent))
        if not findings:
            return
        shown = _display_path(self.path, self.config.rootpath)
        lines = []
        for f in findings:
            where = f.location().replace(str(f.path), shown, 1)
            lines.append(f"{where}: {f.rule} {f.severity}: {f.message}")
            if f.hint:
                lines.append(f"    hint: {f.hint}")
        text = "\n".join(lines)
        if any(f.severity == "error" for f in findings):
            raise NotebookFailed(f"kiln lint found errors in {self.path.name}:\n{text}")
        self.note(text)


def _display_path(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


class KilnRun:
    """The ``kiln_run`` fixture: run a notebook like :func:`kiln.run` from your own test.

    The notebook path is relative to the test file's folder. Keyword arguments named like a
    run option (``engine``, ``timeout``, ``cwd``, ... see :mod:`kiln.options`) are run
    options; the others are the notebook's parameters (or pass ``parameters={...}``, for
    names that clash with the options). Options given on pytest's command line
    (``--kiln-engine``, ...) are the defaults. Runs are recorded in a Kiln home under the
    test's ``tmp_path``, and a relative ``output`` lands there too. A failed run raises
    (``kiln.errors.CellExecutionError``, ...) unless ``check=False``. Returns the
    :class:`kiln.Run`.
    """

    def __init__(self, state: _State, *, base: Path, tmp_path: Path) -> None:
        self._state = state
        self.base = base
        self.tmp_path = tmp_path
        self.home = tmp_path / "kiln-home"

    def __call__(
        self,
        notebook: str | os.PathLike[str],
        /,
        *,
        parameters: Mapping[str, Any] | None = None,
        output: str | os.PathLike[str] | None = None,
        check: bool = True,
        **values: Any,
    ) -> Run:
        from kiln.options import OPTION_NAMES

        options = dict(self._state.options.run_options)
        options.update({k: v for k, v in values.items() if k in OPTION_NAMES})
        if options.get("cwd") is not None:
            options["cwd"] = self.base / options["cwd"]
        named = {k: v for k, v in values.items() if k not in OPTION_NAMES}
        return self._state.session().run(
            self.base / notebook,
            parameters={**(parameters or {}), **named},
            home=self.home,
            output=self.tmp_path / output if output is not None else None,
            check=check,
            **options,
        )


@pytest.fixture
def kiln_run(request: pytest.FixtureRequest, tmp_path: Path) -> KilnRun:
    """Run a notebook through Kiln: ``kiln_run("nb.ipynb", n=3)`` returns the ``kiln.Run``."""
    return KilnRun(_State.of(request.config), base=request.path.parent, tmp_path=tmp_path)
