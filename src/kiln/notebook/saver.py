"""Saving a notebook while it runs: cost in proportion to what changed, off the event loop.

A run saves its output notebook as cells finish, so that a crash or a kill leaves what had
run. Re-serialising the whole notebook after every cell costs in proportion to the notebook
each time: quadratic over a run of 20,000 cells, and a cell that printed 100 MB made every
later save write it out again. :class:`NotebookSaver` keeps three promises instead:

- **Cost in proportion to what changed.** Each cell's JSON is kept, as bytes, from the save
  that serialised it; a save serialises only the cells that changed since, and writes the
  kept bytes of the others as they are.
- **Never more than a share of the run.** A save starts at least ``interval`` seconds after
  the previous one ended, and at least ``factor`` times as long as that one took, so saving
  takes at most ``1 / (1 + factor)`` of the run's time however large the notebook grows;
  a burst of quick cells costs one save.
- **Off the event loop.** The loop only takes a snapshot; serialising and writing happen on
  a worker thread, so engine messages and signals are handled while a save runs.

Every save is atomic (:func:`kiln.notebook.io.atomic_write`): a crash at any moment leaves
the last complete notebook, never a truncated file. A save still under way when the run ends
is waited for (its work is reused) and the final save is written after it.

**The snapshot.** The engine keeps changing the notebook while the worker serialises it, so
the worker never reads the live notebook: on the loop, each cell to serialise is copied,
dicts and lists all the way down (strings, numbers and bytes are immutable and shared, so
this costs in proportion to the cell's structure, not its bytes, even for a 100 MB output).

**What changed.** Engines change a cell while they run it, and the runner reports that
(:meth:`cell_started` .. :meth:`cell_finished`): a running cell is serialised at every save,
and once more when it finishes. The one change an engine makes to another cell, with no
event naming it, is ``update_display``, which replaces that cell's outputs list (the fork
engine) or an output's ``data`` and ``metadata`` (nbclient): cells showing a display or a
result are checked at every save by the identity of those objects (the saver holds them,
so an identity is never reused). A cell object the saver has not seen (a new cell, a
banner) is serialised; the notebook's own metadata always is. An engine that changed cells
otherwise would have to report them as started and finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.notebook.io import atomic_write, cell_json, notebook_frame

#: the shortest time between two saves (while saves are quick, a finished cell is on disk
#: within about this)
MIN_INTERVAL = 0.2
#: the wait after a save, in multiples of the time it took: saving takes at most
#: 1 / (1 + SAVE_FACTOR) of the run's time
SAVE_FACTOR = 4.0


@dataclass
class _Plan:
    """One save, as the worker needs it: the notebook's frame, and per cell either its kept
    JSON or ``(key, copy)`` to serialise; ``sources`` holds the live cells that were copied.
    ``abandon`` tells the worker not to write (a later save will)."""

    path: Path
    started: float
    frame: dict[str, Any]
    cells: list[bytes | tuple[int, Any]]
    sources: dict[int, Any]
    abandon: bool = False
    #: the file's permissions (exact), or None for the umask's
    mode: int | None = None
    #: what every piece of JSON goes through before it is written (the run's secrets)
    mask: Callable[[str], str] | None = None


class NotebookSaver:
    """Saves ``nb`` to ``path`` while a run changes it (see the module docstring).

    Used on the event loop that runs the engine::

        saver = NotebookSaver(nb, path)
        saver.changed()                  # the injected notebook: on disk within `interval`
        saver.cell_started(i)            # from the engine's events ...
        saver.cell_finished(i)           # ... which also asks for a save
        saver.stop()                     # the run is over: no more background saves
        saver.save()                     # the final notebook, written now
    """

    def __init__(
        self,
        nb: Any,
        path: Path,
        *,
        interval: float | None = None,
        factor: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        mode: int | None = None,
        mask: Callable[[str], str] | None = None,
    ) -> None:
        self.nb = nb
        self.path = path
        #: masks the run's secret values in what is written (the notebook in memory, which
        #: the kernel runs, keeps them)
        self.mask = mask
        #: the file's permissions (exact), or None for the umask's
        self.mode = mode
        self.interval = MIN_INTERVAL if interval is None else interval
        self.factor = SAVE_FACTOR if factor is None else factor
        #: told of a background save that failed, on the loop (the next save tries again;
        #: the final save raises its own error)
        self.on_error = on_error
        #: the last error of a background save
        self.error: BaseException | None = None
        #: background saves written so far
        self.saves = 0
        # id(cell) -> (cell, its JSON as bytes); holding the cell keeps its id unique
        self._kept: dict[int, tuple[Any, bytes]] = {}
        # id(cell) -> (cell, the objects update_display replaces, as last copied)
        self._watched: dict[int, tuple[Any, tuple[Any, ...]]] = {}
        self._running: dict[int, Any] = {}
        self._finished: dict[int, Any] = {}
        self._next = time.monotonic() + self.interval
        self._timer: asyncio.TimerHandle | None = None
        self._job: concurrent.futures.Future[dict[int, bytes]] | None = None
        self._plan: _Plan | None = None
        self._pending = False
        self._stopped = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what the runner reports -------------------------------------------------------

    def cell_started(self, index: int) -> None:
        """The engine runs this cell: serialise it at every save until it finishes."""
        cell = self._cell(index)
        if cell is not None:
            self._running[id(cell)] = cell

    def cell_finished(self, index: int) -> None:
        """The cell is done: serialise it once more, and save soon."""
        cell = self._cell(index)
        if cell is not None:
            self._running.pop(id(cell), None)
            self._finished[id(cell)] = cell
        self.changed()

    def changed(self) -> None:
        """Ask for a save: now, or as soon as the rate limit allows (one timer at most)."""
        if self._stopped:
            return
        if self._job is not None:
            self._pending = True
            return
        if self._timer is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        wait = self._next - time.monotonic()
        if wait <= 0:
            self._start()
        else:
            self._timer = loop.call_later(wait, self._start)

    # -- the end of the run ------------------------------------------------------------

    def stop(self) -> None:
        """No more background saves; waits for one under way (its serialised cells are
        kept for :meth:`save`, its write is abandoned if it is not finished)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        job, plan = self._job, self._plan
        if job is not None and plan is not None:
            plan.abandon = True
            concurrent.futures.wait([job])
            self._done(job, plan)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def save(self) -> None:
        """Write the notebook as it is now, in this thread (the final save); raises what
        the write raises."""
        self.stop()
        plan = self._snapshot(copy=False)  # serialised here and now: nothing changes meanwhile
        self._take(plan, _serialise_and_write(plan))

    # -- inside --------------------------------------------------------------------------

    def _cell(self, index: int) -> Any:
        cells = self.nb.get("cells", [])
        return cells[index] if 0 <= index < len(cells) else None

    def _start(self) -> None:
        self._timer = None
        if self._stopped or self._job is not None:
            return
        plan = self._snapshot()
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="kiln-save"
            )
        job = self._pool.submit(_serialise_and_write, plan)
        self._job, self._plan = job, plan
        loop = self._loop
        assert loop is not None

        def back_on_the_loop(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: stop() took it
                loop.call_soon_threadsafe(self._done, job, plan)

        job.add_done_callback(back_on_the_loop)

    def _done(self, job: concurrent.futures.Future[dict[int, bytes]], plan: _Plan) -> None:
        """On the loop (or in :meth:`stop`): keep the job's cells, schedule the next save."""
        if job is not self._job:
            return  # already taken by stop()
        self._job = self._plan = None
        exc = job.exception()
        if exc is not None:
            self.error = exc
            if self.on_error is not None:
                self.on_error(exc)
        else:
            self._take(plan, job.result())
            if not plan.abandon:
                self.saves += 1
        ended = time.monotonic()
        self._next = ended + max(self.interval, self.factor * (ended - plan.started))
        if self._pending and not self._stopped:
            self._pending = False
            self.changed()

    def forget(self) -> None:
        """Serialise every cell again at the next save (cells were changed in place outside
        the engine's events, e.g. masked)."""
        self._kept.clear()

    def _take(self, plan: _Plan, fresh: dict[int, bytes]) -> None:
        for key, data in fresh.items():
            self._kept[key] = (plan.sources[key], data)

    def _snapshot(self, *, copy: bool = True) -> _Plan:
        """On the loop: what the worker needs, copied so the engine may change the rest
        (``copy=False``: the live objects, for a save made at once on the loop)."""
        started = time.monotonic()
        nb = self.nb
        frame = {k: v for k, v in nb.items() if k != "cells"}
        if copy:
            frame = _copy(frame)
        kept, watched, running, finished = self._kept, self._watched, self._running, self._finished
        sources: dict[int, Any] = {}
        cells: list[bytes | tuple[int, Any]] = []
        for cell in nb.get("cells", []):
            key = id(cell)
            entry = kept.get(key)
            if (
                entry is None
                or key in running
                or key in finished
                or (key in watched and not _same(watched[key][1], _displayed(cell)))
            ):
                # until the worker's JSON of this copy is kept, the cell counts as unseen
                kept.pop(key, None)
                cells.append((key, _copy(cell) if copy else cell))
                sources[key] = cell
                shown = _displayed(cell)
                if shown:
                    watched[key] = (cell, shown)
                else:
                    watched.pop(key, None)
            else:
                cells.append(entry[1])
        finished.clear()
        return _Plan(self.path, started, frame, cells, sources, mode=self.mode, mask=self.mask)


def _serialise_and_write(plan: _Plan) -> dict[int, bytes]:
    """On the worker (or the caller, for the final save): serialise the copied cells, then
    write the notebook unless the save was abandoned. Returns the cells' new JSON."""
    fresh: dict[int, bytes] = {}
    parts: list[bytes] = []
    for item in plan.cells:
        if isinstance(item, bytes):
            parts.append(item)
        else:
            key, cell = item
            text = cell_json(cell)
            data = fresh[key] = (plan.mask(text) if plan.mask else text).encode("utf-8")
            parts.append(data)
    if plan.abandon:
        return fresh
    head, tail = notebook_frame(plan.frame)
    if plan.mask is not None:
        head, tail = plan.mask(head), plan.mask(tail)

    def chunks() -> Iterator[bytes]:
        if not parts:
            yield f"{head}]{tail}".encode()
            return
        yield (head + "\n").encode("utf-8")
        for i, part in enumerate(parts):
            if plan.abandon:
                raise _Abandoned
            if i:
                yield b",\n"
            yield part
        yield ("\n ]" + tail).encode("utf-8")

    with contextlib.suppress(_Abandoned):
        atomic_write(plan.path, chunks(), mode=plan.mode)
    return fresh


class _Abandoned(Exception):
    """The run ended while this save was writing: the final save writes instead."""


_CONTAINERS = (dict, list, tuple)


def _copy(value: Any) -> Any:
    """A dict or list copied all the way down (as plain ones); everything else is shared."""
    if isinstance(value, dict):
        return {k: _copy(v) if isinstance(v, _CONTAINERS) else v for k, v in value.items()}
    return [_copy(v) if isinstance(v, _CONTAINERS) else v for v in value]


def _displayed(cell: Any) -> tuple[Any, ...]:
    """The objects ``update_display`` replaces in this cell (empty: nothing it can target)."""
    outputs = cell.get("outputs")
    if not outputs:
        return ()
    if not any(o.get("output_type") in ("display_data", "execute_result") for o in outputs):
        return ()
    shown: list[Any] = [outputs]
    for o in outputs:
        shown += (o, o.get("data"), o.get("metadata"))
    return tuple(shown)


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
