"""KernelEngine: executes a notebook on any installed Jupyter kernel.

Built on jupyter_client (kernel lifecycle) and nbclient (message handling, outputs, display
ids). Kiln drives the cell loop itself so that it can stop at the first failure, tell a cell
timeout from the whole-run timeout, report a dead kernel within about a second, and always
kill the kernel's whole process group when the run ends, whatever way it ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from typing import IO, Any, Literal

from kiln.engines.base import (
    CellFinished,
    CellOutput,
    CellStarted,
    EventSink,
    ExecuteOptions,
    ExecutionOutcome,
    KernelReady,
    failure_from_error_output,
)
from kiln.errors import CellFailure, EngineError, NoSuchKernel

#: the shortest timeout handed to nbclient (it treats 0 as "no timeout")
_MIN_TIMEOUT = 0.05


def kernel_spec(name: str) -> Any:
    """Return the kernelspec for ``name`` or raise NoSuchKernel listing the installed ones."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.kernelspec import NoSuchKernel as _NoSuchKernel

    ksm = KernelSpecManager()
    try:
        return ksm.get_kernel_spec(name)
    except _NoSuchKernel:
        installed = ", ".join(sorted(ksm.find_kernel_specs())) or "none"
        raise NoSuchKernel(
            f"no Jupyter kernel named {name!r} is installed (installed: {installed}); "
            "choose one with --kernel NAME"
        ) from None


def _client_class() -> type[Any]:
    from nbclient import NotebookClient

    class _EventClient(NotebookClient):
        """nbclient's client, reporting each new output as an event."""

        emit: EventSink | None = None

        def output(
            self, outs: list[Any], msg: dict[str, Any], display_id: str | None, cell_index: int
        ) -> Any:
            out = super().output(outs, msg, display_id, cell_index)
            if out is not None and self.emit is not None:
                self.emit(CellOutput(cell_index, out))
            return out

    return _EventClient


class KernelEngine:
    """Run cells on a Jupyter kernel started for this run and stopped when it ends."""

    name = "kernel"

    async def execute(self, nb: Any, options: ExecuteOptions, emit: EventSink) -> ExecutionOutcome:
        with contextlib.ExitStack() as stack:
            kernel_log = None
            if options.process_log is not None:
                kernel_log = stack.enter_context(open(options.process_log, "a"))
            return await self._execute(nb, options, emit, kernel_log)

    async def _execute(
        self, nb: Any, options: ExecuteOptions, emit: EventSink, kernel_log: IO[str] | None
    ) -> ExecutionOutcome:
        from jupyter_client.manager import AsyncKernelManager

        # IPC (unix sockets) rather than TCP: no port races between concurrent runs and no
        # traffic on the network stack
        # the sockets live in a private folder with an absolute path: the kernel may run
        # in another working directory (--cwd)
        sockets = tempfile.mkdtemp(prefix="kiln-")
        km = AsyncKernelManager(
            kernel_name=options.kernel_name, transport="ipc", ip=os.path.join(sockets, "k")
        )
        env = dict(os.environ)
        if options.env:
            env.update(options.env)
        start_kw: dict[str, Any] = {"env": env}
        if options.cwd is not None:
            start_kw["cwd"] = str(options.cwd)
        if kernel_log is not None:
            start_kw["stdout"] = kernel_log
            start_kw["stderr"] = kernel_log
        try:
            await km.start_kernel(**start_kw)
        except Exception as exc:  # jupyter_client raises a variety of errors here
            raise EngineError(f"could not start the {options.kernel_name!r} kernel: {exc}") from exc
        pgid = getattr(km.provisioner, "pgid", None)
        outcome: ExecutionOutcome | None = None
        client: Any = None
        try:
            client = _client_class()(
                nb,
                km=km,
                timeout=None,
                allow_errors=options.allow_errors,
                skip_cells_with_tag=options.skip_tag,
                interrupt_on_timeout=False,
                record_timing=True,
                startup_timeout=int(_remaining(options, options.startup_timeout)) + 1,
            )
            client.emit = emit
            client.timeout_func = lambda cell: _cell_timeout(options)
            outcome = await self._start(client, km, options, emit)
            if outcome is None:
                outcome = await self._run_cells(client, nb, options, emit)
            return outcome
        finally:
            await _shutdown(km, client, graceful=outcome is not None and outcome.status == "ok")
            _kill_group(pgid)
            shutil.rmtree(sockets, ignore_errors=True)

    async def _start(
        self, client: Any, km: Any, options: ExecuteOptions, emit: EventSink
    ) -> ExecutionOutcome | None:
        try:
            kc = await client.async_start_new_kernel_client()
        except RuntimeError as exc:
            # nbclient has already shut the kernel down here; tell the cases apart by message
            if "died" in str(exc).lower():
                return ExecutionOutcome("dead", f"the kernel died while starting: {exc}")
            if _deadline_passed(options, slack=1.0):
                return ExecutionOutcome(
                    "timeout", "the run timed out while the kernel started", timeout_kind="run"
                )
            raise EngineError(
                f"the {options.kernel_name!r} kernel did not become ready: {exc}"
            ) from exc
        reply = await client.async_wait_for_reply(kc.kernel_info())
        content = (reply or {}).get("content", {})
        lang = content.get("language_info", {}) or {}
        client.nb.metadata["language_info"] = lang
        impl = content.get("implementation")
        impl_version = content.get("implementation_version")
        emit(
            KernelReady(
                kernel_name=options.kernel_name,
                language=str(lang.get("name", "")),
                kernel_version=f"{impl} {impl_version}" if impl else None,
                language_version=lang.get("version"),
                pid=getattr(km.provisioner, "pid", None),
            )
        )
        return None

    async def _run_cells(
        self, client: Any, nb: Any, options: ExecuteOptions, emit: EventSink
    ) -> ExecutionOutcome:
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        allowed: list[CellFailure] = []
        errored: dict[str, Any] = {}

        def on_error(cell: Any, cell_index: int, execute_reply: Mapping[str, Any]) -> None:
            errored["content"] = execute_reply.get("content", {})

        client.on_cell_error = on_error
        for index, cell in enumerate(nb.cells):
            if not _will_execute(cell, options.skip_tag):
                continue
            if _deadline_passed(options):
                return ExecutionOutcome(
                    "timeout",
                    _run_timeout_message(options),
                    failed_cell=index,
                    timeout_kind="run",
                )
            emit(CellStarted(index))
            errored.clear()
            t0 = time.monotonic()
            try:
                await client.async_execute_cell(cell, index)
            except CellExecutionError:
                emit(CellFinished(index, time.monotonic() - t0, "error"))
                failure = failure_from_error_output(cell, index, _error_of(cell, errored))
                return ExecutionOutcome(
                    "error",
                    f"cell {index} raised {failure.ename}: {failure.evalue}",
                    failed_cell=index,
                    failure=failure,
                    allowed_errors=allowed,
                )
            except CellTimeoutError:
                elapsed = time.monotonic() - t0
                emit(CellFinished(index, elapsed, "error"))
                kind: Literal["cell", "run"] = (
                    "run" if _deadline_passed(options, slack=0.2) else "cell"
                )
                message = (
                    _run_timeout_message(options)
                    if kind == "run"
                    else f"cell {index} did not finish within the cell timeout of "
                    f"{options.cell_timeout:g}s"
                )
                return ExecutionOutcome(
                    "timeout",
                    message,
                    failed_cell=index,
                    timeout_kind=kind,
                    allowed_errors=allowed,
                )
            except DeadKernelError:
                emit(CellFinished(index, time.monotonic() - t0, "error"))
                return ExecutionOutcome(
                    "dead",
                    f"the kernel died while running cell {index}",
                    failed_cell=index,
                    allowed_errors=allowed,
                )
            status: Any = "ok"
            if errored:
                status = "error"
                allowed.append(failure_from_error_output(cell, index, _error_of(cell, errored)))
            emit(CellFinished(index, time.monotonic() - t0, status))
        return ExecutionOutcome("ok", allowed_errors=allowed)


def _will_execute(cell: Any, skip_tag: str) -> bool:
    if cell.cell_type != "code" or not str(cell.source).strip():
        return False
    return skip_tag not in cell.get("metadata", {}).get("tags", [])


def _error_of(cell: Any, errored: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for out in reversed(cell.get("outputs", [])):
        if out.get("output_type") == "error":
            return dict(out)
    content = errored.get("content")
    return dict(content) if content else None


def _remaining(options: ExecuteOptions, default: float) -> float:
    if options.deadline is None:
        return default
    return max(_MIN_TIMEOUT, min(default, options.deadline - time.monotonic()))


def _cell_timeout(options: ExecuteOptions) -> float | None:
    limit = options.cell_timeout
    if options.deadline is not None:
        left = max(_MIN_TIMEOUT, options.deadline - time.monotonic())
        limit = left if limit is None else min(limit, left)
    return limit


def _deadline_passed(options: ExecuteOptions, slack: float = 0.0) -> bool:
    return options.deadline is not None and time.monotonic() >= options.deadline - slack


def _run_timeout_message(options: ExecuteOptions) -> str:
    return "the run did not finish within its time limit (--timeout)"


async def _shutdown(km: Any, client: Any, *, graceful: bool) -> None:
    with contextlib.suppress(Exception):
        if client is not None and getattr(client, "kc", None) is not None:
            client.kc.stop_channels()
    try:
        if await km.is_alive():
            await km.shutdown_kernel(now=not graceful)
    except Exception:
        with contextlib.suppress(Exception):
            await km.shutdown_kernel(now=True)
    with contextlib.suppress(Exception):
        await km.cleanup_resources()


def _kill_group(pgid: int | None) -> None:
    """Kill whatever is left in the kernel's process group (cells' own subprocesses)."""
    if not pgid or pgid == os.getpgrp():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
