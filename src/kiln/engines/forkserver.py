"""The warm parent: ``python -m kiln.engines.forkserver FD``.

A small single-threaded process that has IPython ready and has imported what notebooks
import; for each run it forks a child (see :mod:`kiln.engines.forkchild`). It talks to its
supervisor over a SOCK_SEQPACKET socket (JSON messages; a run request carries the run's own
socket as an SCM_RIGHTS file descriptor), reaps every child and reports how it exited.

It holds no threads, no event loop and no database connection, so forking it is safe; after
each preload it checks that no import started a thread. When its supervisor goes away it
kills its children and exits.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
from typing import Any


def _send(ctl: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        ctl.send(json.dumps(message).encode("utf-8"))


#: library warm-ups run once in the parent after the module is imported: lazy imports and
#: caches every child would otherwise fill again (no user code, nothing in the user's
#: namespace; only module-level caches change)
WARMERS = {
    "pandas": (
        "import numpy as _np, pandas as _pd\n"
        "_f = _pd.DataFrame({'a': _np.arange(3), 'b': _np.linspace(0.0, 1.0, 3)})\n"
        "_f['c'] = _f.a * _f.b\n"
        "_f.describe()._repr_html_(); repr(_f)"
    ),
}


def _preload(modules: list[str]) -> dict[str, Any]:
    loaded, failed = [], {}
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
            warmer = WARMERS.get(name)
            if warmer:
                exec(compile(warmer, f"<kiln warm-up {name}>", "exec"), {})
        except BaseException as exc:  # a module may raise anything, SystemExit included
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    return {
        "t": "preloaded",
        "loaded": loaded,
        "failed": failed,
        "threads": threading.active_count(),
    }


def _exit_info(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return {"signal": sig, "signal_name": name, "code": None}
    return {"signal": None, "signal_name": None, "code": os.WEXITSTATUS(status)}


def serve(ctl: socket.socket) -> None:
    from kiln.engines.forkchild import child_main
    from kiln.engines.forkshell import make_shell

    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    shell = make_shell()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, str] = {}

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run_id = children.pop(pid, None)
            _send(ctl, {"t": "exit", "pid": pid, "id": run_id, **_exit_info(status)})

    _send(
        ctl,
        {
            "t": "hello",
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "ipython": _ipython_version(),
            "threads": threading.active_count(),
        },
    )
    try:
        while True:
            ready, _, _ = select.select([ctl.fileno(), wake_r], [], [])
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                reap()
            if ctl.fileno() not in ready:
                continue
            data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 20, 4)
            if not data:
                return  # the supervisor is gone
            message = json.loads(data)
            command = message.get("cmd")
            if command == "preload":
                _send(ctl, _preload(list(message.get("modules", []))))
            elif command == "run":
                if threading.active_count() > 1:
                    for fd in fds:
                        os.close(fd)
                    _send(
                        ctl,
                        {
                            "t": "refused",
                            "id": message["id"],
                            "error": "the warm parent has threads; it cannot fork safely",
                        },
                    )
                    continue
                pid = os.fork()
                if pid == 0:
                    ctl.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    child_main(fds[0], shell)
                for fd in fds:
                    os.close(fd)
                children[pid] = message["id"]
                _send(ctl, {"t": "forked", "id": message["id"], "pid": pid})
            elif command == "stop":
                return
    finally:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _ipython_version() -> str:
    import IPython

    return str(IPython.__version__)


def main() -> None:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(ctl)
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
