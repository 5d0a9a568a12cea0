"""KernelEngine: executes a notebook on any installed Jupyter kernel.

Built on jupyter_client (kernel lifecycle) and nbclient (message handling, outputs, display
ids). Kiln drives the cell loop itself so that it can stop at the first failure, tell a cell
timeout from the whole-run timeout, report a dead kernel within about a second, and always
kill what the run started when it ends, whatever way it ends.

On Linux the kernel is started through a tiny launcher that makes it a child subreaper
(``PR_SET_CHILD_SUBREAPER``) before it execs the kernel's own command: processes a cell starts
in a new session, or daemonises, re-parent to the kernel instead of init, so they are still
below the kernel when the run ends and die with it (see :mod:`kiln.processes`). The kernel
leads its own session and process group, so its pid also names them (the store's recovery
uses that when Kiln itself was killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import IO, Any, Literal

from kiln import processes
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
from kiln.errors import CellFailure, EngineError, NoSuchKernel

#: seconds between two readings of the processes below a kernel
_WATCH_EVERY = 1.0

#: the shortest timeout handed to nbclient (it treats 0 as "no timeout")
_MIN_TIMEOUT = 0.05


_SPEC_CACHE: dict[str, tuple[float, Any]] = {}
_SPEC_TTL = 10.0


def kernel_spec(name: str) -> Any:
    """The kernelspec for ``name`` (cached for a few seconds: sweeps look it up per run)."""
    now = time.monotonic()
    hit = _SPEC_CACHE.get(name)
    if hit is not None and now - hit[0] < _SPEC_TTL:
        return hit[1]
    spec = _find_kernel_spec(name)
    _SPEC_CACHE[name] = (now, spec)
    return spec


def _find_kernel_spec(name: str) -> Any:
    """Return the kernelspec for ``name`` or raise NoSuchKernel listing the installed ones.

    Looks in the Jupyter data folders first (a file read); only when that fails does it ask
    jupyter_client's KernelSpecManager, whose lookup imports ipykernel and scans entry points
    (about 50 ms on every run otherwise).
    """
    from jupyter_core.paths import jupyter_path

    wanted = name.lower()
    for folder in jupyter_path("kernels"):
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(folder, entry)
            if entry.lower() == wanted and os.path.isfile(os.path.join(path, "kernel.json")):
                try:
                    return SpecFile.read(path)
                except (OSError, ValueError, TypeError):
                    break
    return _kernel_spec_slow(name)


class SpecFile:
    """A kernel's ``kernel.json`` as read from its folder: the fields Kiln reads before a run
    starts (language, argv), without importing jupyter_client (~0.15 s on the way of every
    fork-engine run). The kernel engine makes jupyter_client's ``KernelSpec`` from it."""

    def __init__(self, resource_dir: str, data: dict[str, Any]) -> None:
        if not isinstance(data.get("argv"), list) or not isinstance(data.get("display_name"), str):
            raise ValueError(f"{resource_dir}/kernel.json lacks argv or display_name")
        self.resource_dir = resource_dir
        self.data = data
        self.argv: list[str] = [str(a) for a in data["argv"]]
        self.display_name: str = data["display_name"]
        self.language: str = str(data.get("language") or "")

    @classmethod
    def read(cls, resource_dir: str) -> SpecFile:
        import json

        with open(os.path.join(resource_dir, "kernel.json"), encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError(f"{resource_dir}/kernel.json is not a JSON object")
        return cls(resource_dir, data)

    def kernel_spec(self) -> Any:
        """jupyter_client's ``KernelSpec`` (what launching a kernel needs)."""
        from jupyter_client.kernelspec import KernelSpec

        return KernelSpec(resource_dir=self.resource_dir, **self.data)


def _kernel_spec_slow(name: str) -> Any:
    from jupyter_client.kernelspec import NoSuchKernel as _NoSuchKernel

    ksm = _spec_manager()
    try:
        return ksm.get_kernel_spec(name)
    except _NoSuchKernel:
        installed = ", ".join(sorted(ksm.find_kernel_specs())) or "none"
        raise NoSuchKernel(
            f"no Jupyter kernel named {name!r} is installed (installed: {installed}); "
            "choose one of them as the run's kernel"
        ) from None


#: where a Jupyter server is told which kernel spec manager to use (nb_conda_kernels and other
#: environment managers set one of these)
_MANAGER_SETTINGS = (
    ("jupyter_server_config", "ServerApp"),
    ("jupyter_notebook_config", "NotebookApp"),
)


def _spec_manager() -> Any:
    """The KernelSpecManager Jupyter would use: ``KILN_KERNEL_SPEC_MANAGER`` (``module.Class``),
    else the ``kernel_spec_manager_class`` of the user's Jupyter server configuration, else
    jupyter_client's own (which also finds kernels of installed provisioners)."""
    from jupyter_client.kernelspec import KernelSpecManager

    name = os.environ.get("KILN_KERNEL_SPEC_MANAGER") or _configured_manager()
    if not name:
        return KernelSpecManager()
    from traitlets.utils.importstring import import_item

    try:
        cls = import_item(name.replace(":", "."))
    except (ImportError, AttributeError, ValueError) as exc:
        raise EngineError(f"cannot load the kernel spec manager {name!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, KernelSpecManager)):
        raise EngineError(f"{name!r} is not a jupyter_client KernelSpecManager")
    return cls()


def _configured_manager() -> str | None:
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config.loader import (
        ConfigFileNotFound,
        JSONFileConfigLoader,
        PyFileConfigLoader,
    )

    found: str | None = None
    for folder in reversed(jupyter_config_path()):  # the most specific folder wins
        for stem, section in _MANAGER_SETTINGS:
            for loader_cls, suffix in (
                (JSONFileConfigLoader, ".json"),
                (PyFileConfigLoader, ".py"),
            ):
                if not os.path.isfile(os.path.join(folder, stem + suffix)):
                    continue
                try:
                    config = loader_cls(stem + suffix, path=folder).load_config()
                except (ConfigFileNotFound, OSError, ValueError, SyntaxError):
                    continue
                setting = config.get(section, {}).get("kernel_spec_manager_class")
                if isinstance(setting, str) and setting:
                    found = setting
    return found


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


#: prepended to the kernel's command on Linux: become a child subreaper, then exec the kernel
#: (the pid stays the kernel's); ``-I -S`` keeps it to a few milliseconds
_SUBREAPER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def _manager_class() -> type[Any]:
    from jupyter_client.manager import AsyncKernelManager

    class _SubreaperKernelManager(AsyncKernelManager):
        """Starts the kernel as a child subreaper (see the module doc)."""

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd: list[str] = super().format_kernel_cmd(extra_arguments)
            if sys.platform.startswith("linux"):
                return [sys.executable, "-I", "-S", "-c", _SUBREAPER, *cmd]
            return cmd

    return _SubreaperKernelManager


class KernelEngine:
    """Run cells on a Jupyter kernel started for this run and stopped when it ends."""

    name = "kernel"

    def session(self, options: ExecuteOptions) -> KernelSession:
        return KernelSession(options)

    async def aclose(self) -> None:
        """Nothing to stop: every kernel belongs to one session and ends with it."""


class KernelSession:
    """One kernel for one run."""

    def __init__(self, options: ExecuteOptions) -> None:
        self.options = options
        self.km: Any = None
        self.client: Any = None
        self._pgid: int | None = None
        self._sockets: str | None = None
        self._stack = contextlib.ExitStack()
        #: processes seen below the kernel while the run went on: pid -> start time
        self._seen: dict[int, float | None] = {}
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Launch the kernel process; returns without waiting for it to be ready."""
        options = self.options
        kernel_log: IO[str] | None = None
        if options.process_log is not None:
            kernel_log = self._stack.enter_context(open(options.process_log, "a"))  # noqa: SIM115
        # IPC (unix sockets) rather than TCP: no port races between concurrent runs. The
        # sockets live in a private folder with an absolute path, as the kernel may run in
        # another working directory (cwd).
        self._sockets = tempfile.mkdtemp(prefix="kiln-")
        self.km = km = _manager_class()(
            kernel_name=options.kernel_name, transport="ipc", ip=os.path.join(self._sockets, "k")
        )
        # the spec was resolved (and validated) when the run was prepared: don't look it up
        # again through KernelSpecManager on the way to launching the process
        spec = kernel_spec(options.kernel_name)
        km._kernel_spec = spec.kernel_spec() if isinstance(spec, SpecFile) else spec
        env = dict(os.environ)
        if options.env:
            env.update(options.env)
        start_kw: dict[str, Any] = {"env": env}
        if options.cwd is not None:
            start_kw["cwd"] = str(options.cwd)
        if _is_ipykernel(km._kernel_spec):
            # keep each run's code out of the user's IPython history database (shared by
            # every run, and a place secrets would otherwise end up)
            start_kw["extra_arguments"] = ["--HistoryManager.hist_file=:memory:"]
        if kernel_log is not None:
            start_kw["stdout"] = kernel_log
            start_kw["stderr"] = kernel_log
        try:
            await km.start_kernel(**start_kw)
        except Exception as exc:  # jupyter_client raises a variety of errors here
            raise EngineError(f"could not start the {options.kernel_name!r} kernel: {exc}") from exc
        self._pgid = getattr(km.provisioner, "pgid", None)

    async def execute(self, nb: Any, emit: EventSink) -> ExecutionOutcome:
        if self.km is None:
            await self.start()
        options = self.options
        self.client = client = _client_class()(
            nb,
            km=self.km,
            timeout=None,
            allow_errors=options.allow_errors,
            skip_cells_with_tag=options.skip_tag,
            interrupt_on_timeout=False,
            record_timing=True,
            startup_timeout=int(_remaining(options, options.startup_timeout)) + 1,
        )
        client.emit = emit
        client.timeout_func = lambda cell: _cell_timeout(options)
        outcome = await self._start(client, self.km, options, emit)
        self._watch = asyncio.ensure_future(self._watch_descendants())
        if outcome is None:
            outcome = await self._run_cells(client, nb, options, emit)
        return outcome

    async def close(self, *, graceful: bool) -> None:
        if self._watch is not None:
            self._watch.cancel()
        # what the run started, read while the kernel still holds it (as a subreaper)
        self._note_descendants()
        try:
            if self.km is not None:
                await _shutdown(self.km, self.client, graceful=graceful)
        finally:
            _kill_group(self._pgid)
            for pid, started in self._seen.items():
                if processes.same_process(pid, started):
                    processes.kill_tree(pid)
            if self._sockets:
                shutil.rmtree(self._sockets, ignore_errors=True)
            self._stack.close()
            self.km = None

    def _note_descendants(self) -> None:
        pid = getattr(getattr(self.km, "provisioner", None), "pid", None)
        if pid and processes.pid_exists(pid):
            for child in processes.descendants(pid):
                if child not in self._seen:
                    self._seen[child] = processes.start_time(child)

    async def _watch_descendants(self) -> None:
        """Note what runs below the kernel every second: if the kernel dies, its orphans go
        to init, out of its tree, and this is how the run's end still finds them."""
        while True:
            await asyncio.sleep(_WATCH_EVERY)
            self._note_descendants()

    async def _start(
        self, client: Any, km: Any, options: ExecuteOptions, emit: EventSink
    ) -> ExecutionOutcome | None:
        try:
            kc = await client.async_start_new_kernel_client()
        except RuntimeError as exc:
            # nbclient has already shut the kernel down here; tell the cases apart by message
            if "died" in str(exc).lower():
                return ExecutionOutcome("dead", outcomes.kernel_died_starting(str(exc)))
            if _deadline_passed(options, slack=1.0):
                return ExecutionOutcome(
                    "timeout",
                    outcomes.run_timed_out(during="the kernel was starting"),
                    timeout_kind="run",
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
                    "timeout", outcomes.run_timed_out(), failed_cell=index, timeout_kind="run"
                )
            emit(CellStarted(index))
            errored.clear()
            t0 = time.monotonic()
            try:
                await client.async_execute_cell(cell, index)
            except CellExecutionError:
                failure = failure_from_error_output(cell, index, _error_of(cell, errored))
                if is_clean_exit(failure):
                    emit(CellFinished(index, time.monotonic() - t0, "ok"))
                    return ExecutionOutcome(
                        "ok", outcomes.stopped_early(index), allowed_errors=allowed
                    )
                emit(CellFinished(index, time.monotonic() - t0, "error"))
                return _cell_failed(failure, allowed)
            except CellTimeoutError:
                elapsed = time.monotonic() - t0
                emit(CellFinished(index, elapsed, "error"))
                kind: Literal["cell", "run"] = (
                    "run" if _deadline_passed(options, slack=0.2) else "cell"
                )
                message = (
                    outcomes.run_timed_out()
                    if kind == "run"
                    else outcomes.cell_timed_out(index, options.cell_timeout)
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
                    "dead", outcomes.kernel_died(index), failed_cell=index, allowed_errors=allowed
                )
            status: Any = "ok"
            shown = None if errored else outcomes.error_output(cell.get("outputs", []))
            if errored or shown is not None:
                # an error the kernel did not fail the cell for (a post-execute callback's)
                # fails it all the same, unless the cell is expected to raise
                failure = failure_from_error_output(cell, index, _error_of(cell, errored))
                status = "error"
                if shown is not None and not options.allow_errors and not _raises(cell):
                    emit(CellFinished(index, time.monotonic() - t0, status))
                    return _cell_failed(failure, allowed)
                if options.allow_errors and not _raises(cell):
                    allowed.append(failure)
            emit(CellFinished(index, time.monotonic() - t0, status))
        return ExecutionOutcome("ok", allowed_errors=allowed)


def _is_ipykernel(spec: Any) -> bool:
    argv = " ".join(getattr(spec, "argv", []) or [])
    return "ipykernel" in argv


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


def _raises(cell: Any) -> bool:
    return "raises-exception" in cell.get("metadata", {}).get("tags", [])


def _cell_failed(failure: CellFailure, allowed: list[CellFailure]) -> ExecutionOutcome:
    return ExecutionOutcome(
        "error",
        outcomes.cell_raised(failure.cell_index, failure.ename, failure.evalue),
        failed_cell=failure.cell_index,
        failure=failure,
        allowed_errors=allowed,
    )


async def _shutdown(km: Any, client: Any, *, graceful: bool) -> None:
    """Stop the kernel: a shutdown request first when the run went well (so the kernel
    flushes files and runs its exit handlers), polled every 10 ms rather than
    jupyter_client's 100 ms; a kill otherwise or when it does not exit in time."""
    with contextlib.suppress(Exception):
        if client is not None and getattr(client, "kc", None) is not None:
            client.kc.stop_channels()
    try:
        if await km.is_alive():
            if graceful:
                await km.request_shutdown()
                await km.finish_shutdown(waittime=6.0, pollinterval=0.01)
            else:
                await km.shutdown_kernel(now=True)
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
