"""FakeEngine: executes Python cells in-process, for unit tests that must not start kernels.

Each run gets a fresh namespace; ``print`` output becomes stream outputs, the value of a final
expression an execute_result, an exception an error output, and ``kiln.record`` a record
output. Three cell magics simulate what only a real kernel can do:
``%%fake-die`` (the kernel dies), ``%%fake-hang`` (the cell never finishes: a timeout) and
``%%fake-cancel`` (the run is cancelled). It is not a production engine.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import time
import traceback
from typing import Any

from kiln import recording
from kiln.engines import outcomes
from kiln.engines.base import (
    CellFinished,
    CellOutput,
    CellStarted,
    EventSink,
    ExecuteOptions,
    ExecutionOutcome,
    KernelReady,
    failure_from_error_output,
    is_clean_exit,
)
from kiln.errors import CellFailure


class FakeEngine:
    name = "fake"

    def __init__(self) -> None:
        #: indexes of the cells executed, over all sessions (for assertions in tests)
        self.executed: list[int] = []
        #: "start", "execute", "close" in the order the runner called them
        self.calls: list[str] = []
        #: called at the start of execute (tests use it to look at the store mid-run)
        self.on_execute: Any = None

    def session(self, options: ExecuteOptions) -> FakeSession:
        return FakeSession(self, options)

    async def aclose(self) -> None:
        self.calls.append("aclose")


class FakeSession:
    def __init__(self, engine: FakeEngine, options: ExecuteOptions) -> None:
        self.engine = engine
        self.options = options

    async def start(self) -> None:
        self.engine.calls.append("start")

    async def close(self, *, graceful: bool) -> None:
        self.engine.calls.append("close")

    async def execute(self, nb: Any, emit: EventSink) -> ExecutionOutcome:
        self.engine.calls.append("execute")
        if self.engine.on_execute is not None:
            self.engine.on_execute()
        options = self.options
        emit(KernelReady(kernel_name=options.kernel_name, language="python", pid=None))
        nb.metadata["language_info"] = {"name": "python"}
        namespace: dict[str, Any] = {"__name__": "__main__"}
        allowed: list[CellFailure] = []
        count = 0
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            if options.skip_tag in cell.get("metadata", {}).get("tags", []):
                continue
            if options.deadline is not None and time.monotonic() >= options.deadline:
                return ExecutionOutcome("timeout", "run timed out", index, timeout_kind="run")
            count += 1
            emit(CellStarted(index))
            self.engine.executed.append(index)
            t0 = time.monotonic()
            cell.outputs = []
            cell.execution_count = count
            source = cell.source
            if source.startswith("%%fake-die"):
                emit(CellFinished(index, time.monotonic() - t0, "error"))
                return ExecutionOutcome("dead", outcomes.kernel_died(index), index)
            if source.startswith("%%fake-hang"):
                emit(CellFinished(index, time.monotonic() - t0, "error"))
                return ExecutionOutcome(
                    "timeout", f"cell {index} timed out", index, timeout_kind="cell"
                )
            if source.startswith("%%fake-cancel"):
                raise asyncio.CancelledError
            error = self._run_cell(cell, index, namespace, emit)
            status: Any = "ok"
            if error is not None:
                status = "error"
                failure = failure_from_error_output(cell, index, error)
                if is_clean_exit(failure):
                    emit(CellFinished(index, time.monotonic() - t0, "ok"))
                    return ExecutionOutcome("ok", outcomes.stopped_early(index))
                if not options.allow_errors:
                    emit(CellFinished(index, time.monotonic() - t0, "error"))
                    return ExecutionOutcome(
                        "error", f"cell {index} raised {failure.ename}", index, failure, allowed
                    )
                allowed.append(failure)
            emit(CellFinished(index, time.monotonic() - t0, status))
            await asyncio.sleep(0)
        return ExecutionOutcome("ok", allowed_errors=allowed)

    def _run_cell(
        self, cell: Any, index: int, namespace: dict[str, Any], emit: EventSink
    ) -> dict[str, Any] | None:
        def add(output: dict[str, Any]) -> None:
            from nbformat import from_dict

            node = from_dict(output)
            cell.outputs.append(node)
            emit(CellOutput(index, node))

        def sink(bundle: dict[str, Any]) -> None:
            add({"output_type": "display_data", "data": bundle, "metadata": {}})

        out = io.StringIO()
        previous = recording._sink
        recording._sink = sink
        try:
            tree = ast.parse(cell.source)
            last_expr = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last_expr = ast.Expression(tree.body.pop().value)
            with contextlib.redirect_stdout(out):
                exec(compile(tree, f"<cell {index}>", "exec"), namespace)
                value = (
                    eval(compile(last_expr, f"<cell {index}>", "eval"), namespace)
                    if last_expr is not None
                    else None
                )
        except (Exception, SystemExit) as exc:
            if out.getvalue():
                add({"output_type": "stream", "name": "stdout", "text": out.getvalue()})
            error = {
                "output_type": "error",
                "ename": type(exc).__name__,
                "evalue": str(exc),
                "traceback": traceback.format_exception(exc),
            }
            add(error)
            return error
        finally:
            recording._sink = previous
        if out.getvalue():
            add({"output_type": "stream", "name": "stdout", "text": out.getvalue()})
        if value is not None:
            add(
                {
                    "output_type": "execute_result",
                    "execution_count": cell.execution_count,
                    "data": {"text/plain": repr(value)},
                    "metadata": {},
                }
            )
        return None
