"""Run notebooks for tests through Kiln's one run path, keeping engines warm between runs.

``kiln.run`` starts and stops its engines with each call. A test session runs many notebooks,
so :class:`NotebookSession` keeps one event loop and one set of engines (the fork engine's
warm parent, above all) for all of them, while each run still gets its own ``RunRequest``,
run row, log and output notebook, in the ``home`` the caller chooses.

>>> with NotebookSession() as session:
...     run = session.run("report.ipynb", parameters={"region": "EU"}, home=tmp / "kiln")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.engines.base import Engine
from kiln.events import Observer, RunEvent, RunWarning
from kiln.options import RunOptionArgs
from kiln.request import RunRequest
from kiln.runner import Runner
from kiln.store.records import Run

if TYPE_CHECKING:
    from typing_extensions import Unpack

PathLike = str | os.PathLike[str]


class NotebookSession:
    """One event loop and warm engines shared by many runs; close it when done."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engines: dict[str, Engine] = {}

    def __enter__(self) -> NotebookSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        notebook: PathLike,
        *,
        parameters: Mapping[str, Any] | None = None,
        home: PathLike | None = None,
        output: PathLike | None = None,
        nbval_markers: bool = False,
        check: bool = True,
        on_warning: Callable[[str], None] | None = None,
        **options: Unpack[RunOptionArgs],
    ) -> Run:
        """Run ``notebook`` like :func:`kiln.run` (same errors, same record).

        ``nbval_markers`` honours nbval's ``# NBVAL_SKIP`` / ``# NBVAL_RAISES_EXCEPTION``
        comments and tags: the notebook that runs is then a copy carrying Kiln's own
        ``skip-execution`` / ``raises-exception`` tags (the original is never modified; the
        run's working directory stays the original's folder)."""
        path = Path(notebook)
        if options.get("cwd") is None:
            options["cwd"] = path.resolve().parent  # the original's folder, even for a copy
        with _runnable(path, nbval_markers) as runnable:
            request = RunRequest.build(runnable, parameters=parameters, output=output, **options)
            observers: list[Observer] = []
            if on_warning is not None:
                warn = on_warning

                def observe(event: RunEvent) -> None:
                    if isinstance(event, RunWarning):
                        warn(event.text)

                observers.append(observe)
            return self._run(request, Path(home) if home is not None else None, observers, check)

    def _run(
        self, request: RunRequest, home: Path | None, observers: list[Observer], check: bool
    ) -> Run:
        if _loop_running():
            # called from async code (an async test): this thread's loop is busy, so the run
            # goes to a thread of its own, with its own engines
            from concurrent.futures import ThreadPoolExecutor

            def alone() -> Run:
                with Runner(home=home, observers=observers) as runner:
                    return runner.run(request, check=check)

            with ThreadPoolExecutor(1) as pool:
                return pool.submit(alone).result()
        loop = self._get_loop()
        with Runner(home=home, engines=self._engines, observers=observers) as runner:
            return loop.run_until_complete(runner.arun(request, check=check))

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    def close(self) -> None:
        """Stop the warm engines and close the loop (safe to call twice)."""
        loop, self._loop = self._loop, None
        engines, self._engines = list(self._engines.values()), {}
        if loop is None or loop.is_closed():
            return
        try:
            for engine in engines:
                loop.run_until_complete(engine.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def _runnable(path: Path, nbval_markers: bool) -> Iterator[Path]:
    """``path`` itself, or a temporary copy with nbval's markers as Kiln tags."""
    if not nbval_markers:
        yield path
        return
    from kiln.notebook import dumps, load_notebook
    from kiln.testing.markers import as_kiln_tags

    nb = load_notebook(path)
    if not as_kiln_tags(nb):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="kiln-test-")
    try:
        copy = Path(folder) / path.name
        copy.write_text(dumps(nb), encoding="utf-8")
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_notebook(
    notebook: PathLike,
    *,
    parameters: Mapping[str, Any] | None = None,
    home: PathLike | None = None,
    output: PathLike | None = None,
    nbval_markers: bool = True,
    check: bool = True,
    session: NotebookSession | None = None,
    **options: Unpack[RunOptionArgs],
) -> Run:
    """Run a notebook as a test would: like :func:`kiln.run`, and honouring nbval's
    ``NBVAL_SKIP``/``NBVAL_RAISES_EXCEPTION`` markers. Pass a ``session`` to keep engines
    warm across calls.

    >>> run = run_notebook("report.ipynb", parameters={"n": 3}, home=tmp_path)
    >>> run.records["total"]
    """
    own = session if session is not None else NotebookSession()
    try:
        return own.run(
            notebook,
            parameters=parameters,
            home=home,
            output=output,
            nbval_markers=nbval_markers,
            check=check,
            **options,
        )
    finally:
        if session is None:
            own.close()
