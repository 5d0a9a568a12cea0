"""The IPython shell a forked run executes in, and how it reports outputs.

Imported by the warm parent (the fork server) before it forks, so every child starts with
IPython ready. Outputs take the shapes a Jupyter kernel gives them (stream, display_data,
update_display_data, execute_result, error) and travel to the supervisor as JSON lines over
the socket the child inherited (messages in :mod:`kiln.engines.forkproto`): never through the
parent's objects.

Nothing here runs user code in the parent: the shell instance is created there untouched
and each child uses its own copy-on-write copy of it.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from typing import Any

from IPython.core.compilerop import CachingCompiler
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.inputtransformer2 import TransformerManager
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Type

from kiln.engines import forkproto as proto


class Channel:
    """The child's line-oriented JSON channel to its supervisor (thread-safe).

    Between :meth:`hold` and :meth:`release` messages are kept, in order, and written
    together: the end of a cell and the start of the next cost the supervisor one wake-up.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self._held: list[bytes] | None = None

    def send(self, message: dict[str, Any]) -> None:
        data = proto.encode_line(message)
        with self.lock:
            if self._held is not None:
                self._held.append(data)
            else:
                self.sock.sendall(data)

    def hold(self) -> None:
        """Keep what is sent from now on (no cell code runs until :meth:`release`)."""
        with self.lock:
            if self._held is None:
                self._held = []

    def release(self) -> None:
        """Write what was held, in one write."""
        with self.lock:
            held, self._held = self._held, None
            if held:
                self.sock.sendall(b"".join(held))

    def receive(self) -> dict[str, Any]:
        """The run's spec: the one line the supervisor sends. Read with ``recv`` rather than
        a ``makefile`` reader, whose buffered and text layers each child would build (and
        copy the pages of) to read a single line."""
        chunks: list[bytes] = []
        while not chunks or not chunks[-1].endswith(b"\n"):  # JSON has no raw newline
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("supervisor closed the channel")
            chunks.append(chunk)
        return proto.decode(b"".join(chunks), proto.TO_CHILD, "supervisor")


class Outputs:
    """Outputs of every cell of the run, kept as a Jupyter frontend would keep them."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.cells: dict[int, list[dict[str, Any]]] = {}
        self.current = -1
        self.displays: dict[str, list[tuple[int, int]]] = {}
        self.clear_pending = False
        self.lock = threading.RLock()
        self.streams: Streams | None = None

    def begin(self, cell: int) -> None:
        with self.lock:
            self.current = cell
            self.cells[cell] = []
            self.clear_pending = False

    def _list(self) -> list[dict[str, Any]]:
        return self.cells.setdefault(self.current, [])

    def add(self, output: dict[str, Any], display_id: str | None = None) -> None:
        """A new output of the current cell (streams flushed first, to keep the order)."""
        if output["output_type"] != "stream" and self.streams is not None:
            self.streams.flush()
        with self.lock:
            outs = self._list()
            if self.clear_pending:
                outs.clear()
                self.clear_pending = False
                self._replace(self.current, [])
            if (
                output["output_type"] == "stream"
                and outs
                and outs[-1].get("output_type") == "stream"
                and outs[-1].get("name") == output["name"]
            ):
                outs[-1]["text"] += output["text"]
            else:
                if display_id:
                    self.displays.setdefault(display_id, []).append((self.current, len(outs)))
                outs.append(dict(output))
            self.channel.send(
                {proto.KIND: proto.OUTPUT, proto.CELL: self.current, proto.OUTPUT_NODE: output}
            )

    def _replace(self, cell: int, outputs: list[dict[str, Any]]) -> None:
        self.channel.send({proto.KIND: proto.OUTPUTS, proto.CELL: cell, proto.OUTPUT_LIST: outputs})

    def update(self, display_id: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        """``update_display``: every output shown with this display id changes in place."""
        if self.streams is not None:
            self.streams.flush()
        with self.lock:
            touched = set()
            for cell, pos in self.displays.get(display_id, []):
                outs = self.cells.get(cell, [])
                if pos < len(outs):
                    outs[pos]["data"] = data
                    outs[pos]["metadata"] = metadata
                    touched.add(cell)
            for cell in sorted(touched):
                self._replace(cell, self.cells[cell])

    def clear(self, wait: bool) -> None:
        if self.streams is not None:
            self.streams.flush()
        with self.lock:
            if wait:
                self.clear_pending = True
                return
            self.cells[self.current] = []
            self.displays = {
                k: [(c, p) for c, p in v if c != self.current] for k, v in self.displays.items()
            }
            self._replace(self.current, [])


class Streams:
    """Buffered stdout/stderr text of the current cell, flushed in order.

    Writes are buffered (a tight print loop must not become one message per print) and
    flushed before any other output, at the end of the cell, and every 100 ms by the IO
    thread so that live logs keep up with a cell that prints then sleeps.
    """

    def __init__(self, outputs: Outputs) -> None:
        self.outputs = outputs
        self.pending: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.flush_lock = threading.RLock()
        #: called before a Python-level write (the fd capture drains what came before)
        self.before_write: Any = None
        outputs.streams = self

    def write(self, name: str, text: str) -> None:
        if not text:
            return
        with self.lock:
            if self.pending and self.pending[-1][0] == name:
                self.pending[-1] = (name, self.pending[-1][1] + text)
            else:
                self.pending.append((name, text))
            big = sum(len(t) for _, t in self.pending) > 65536
        if big:
            self.flush()

    def flush(self) -> None:
        # one flusher at a time, so chunks taken in order are also sent in order
        with self.flush_lock:
            with self.lock:
                pending, self.pending = self.pending, []
            for name, text in pending:
                self.outputs.add({"output_type": "stream", "name": name, "text": text})


class StreamFile:
    """``sys.stdout`` / ``sys.stderr`` of a forked run."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, streams: Streams, name: str, fileno: int) -> None:
        self._streams = streams
        self.name = name
        self._fileno = fileno

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self._streams.before_write is not None:
            self._streams.before_write()
        self._streams.write(self.name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._streams.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fileno

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False


_outputs: Outputs | None = None


class KilnDisplayPublisher(DisplayPublisher):
    def publish(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        if _outputs is None:
            return
        display_id = (transient or {}).get("display_id")
        if update and display_id:
            _outputs.update(display_id, _jsonable(data), _jsonable(metadata or {}))
            return
        _outputs.add(
            {
                "output_type": "display_data",
                "data": _jsonable(data),
                "metadata": _jsonable(metadata or {}),
            },
            display_id=display_id,
        )

    def clear_output(self, wait: bool = False) -> None:
        if _outputs is not None:
            _outputs.clear(wait)


class KilnDisplayHook(DisplayHook):
    """The value of a cell's last expression becomes an execute_result."""

    def start_displayhook(self) -> None:
        self._bundle: tuple[dict[str, Any], dict[str, Any]] | None = None

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict[str, Any], md_dict: Any = None) -> None:
        self._bundle = (format_dict, md_dict or {})

    def finish_displayhook(self) -> None:
        bundle = getattr(self, "_bundle", None)
        if bundle is not None and _outputs is not None:
            _outputs.add(
                {
                    "output_type": "execute_result",
                    "execution_count": self.prompt_count,
                    "data": _jsonable(bundle[0]),
                    "metadata": _jsonable(bundle[1]),
                }
            )
        self._bundle = None


class KilnCompiler(CachingCompiler):
    """Cells get file names shaped like a kernel's (``/tmp/kiln_<pid>/<hash>.py``), which is
    what tracebacks and SyntaxError messages show, instead of ``<ipython-input-N-...>``."""

    def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        import os
        import tempfile
        import zlib

        digest = zlib.crc32(transformed_code.encode("utf-8", "surrogatepass"))
        return os.path.join(tempfile.gettempdir(), f"kiln_{os.getpid()}", f"{digest}.py")


#: matplotlib backends that render through a frontend's comm: a headless run cannot, and a
#: kernel run under nbclient saves a script that only a live kernel could answer; the fork
#: engine shows their figures inline (a real image in the output notebook) and says so
INTERACTIVE_BACKENDS = frozenset({"notebook", "nbagg", "widget", "ipympl"})


#: where IPython's static input transformations (``IPython.core.inputtransformer2``) could
#: change a cell: ``?`` anywhere (help), an escape or a prompt at a line's start (``!``, ``%``,
#: the autocall ``,;/``, ``>>>``, ``...``, ``In [``, vi-mode prompts), ``= !`` and ``= %``
#: (assignment from the shell or a magic), a line of blanks only (the leading-indent step's
#: ``dedent`` empties it), and line breaks other than ``\n`` (IPython splits lines on those too)
_MAY_TRANSFORM = re.compile(
    r"\?"
    r"|^[ \t]*(?:[!%,;/]|>>>|\.\.\.|In \[|\[(?:nav|ins)\])"
    r"|=[ \t]*[!%]"
    r"|^[ \t]+$"
    r"|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]",
    re.MULTILINE,
)


class KilnTransformerManager(TransformerManager):
    """IPython's static input transformations, not run where they cannot change the cell: a
    cell that starts at column 0 of its first line and has none of the text they act on
    (:data:`_MAY_TRANSFORM`), while the transformations are still the ones this manager was
    made with (a cell may register its own), is returned as IPython would return it, with
    its final newline. The tests compare both on every cell of the peers' notebooks.

    Why: in a freshly forked run, the first use of the transformations' machinery (tokenizer,
    ~20 transformer objects and their regular expressions) copies ~65 pages on write, ~1 ms
    of CPU per run on a quiet machine, for cells that almost always come out unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self._defaults = self._transforms()

    def _transforms(self) -> tuple[Any, ...]:
        return (
            *self.cleanup_transforms,
            None,
            *self.line_transforms,
            None,
            *self.token_transformers,
        )

    def transform_cell(self, cell: str) -> str:
        if (
            cell[:1] in (" ", "\t", "\n")
            or _MAY_TRANSFORM.search(cell) is not None
            or self._transforms() != self._defaults
        ):
            return str(super().transform_cell(cell))
        return cell if cell.endswith("\n") else cell + "\n"


class KilnShell(InteractiveShell):
    """An InteractiveShell whose outputs are reported like a Jupyter kernel's."""

    compiler_class = Type(KilnCompiler)

    #: the error of the cell being run, as a kernel would report it
    last_error: dict[str, Any] | None = None

    display_pub_class = Type(KilnDisplayPublisher)
    displayhook_class = Type(KilnDisplayHook)

    def init_virtualenv(self) -> None:  # the warm parent already runs in the environment
        pass

    def should_run_async(
        self,
        raw_cell: str,
        *,
        transformed_cell: str | None = None,
        preprocessing_exc_tuple: Any = None,
    ) -> bool:
        # IPython finds a top-level await by compiling the whole cell once more; a cell without
        # the words ``await`` and ``async`` has none, and is compiled once
        cell = raw_cell if transformed_cell is None else transformed_cell
        if "await" not in cell and "async" not in cell:
            return False
        return bool(
            super().should_run_async(
                raw_cell,
                transformed_cell=transformed_cell,
                preprocessing_exc_tuple=preprocessing_exc_tuple,
            )
        )

    def _showtraceback(self, etype: Any, evalue: Any, stb: list[str]) -> None:
        name = getattr(etype, "__name__", str(etype))
        self.last_error = {"ename": name, "evalue": str(evalue), "traceback": list(stb)}
        if _outputs is not None:
            _outputs.add(
                {
                    "output_type": "error",
                    "ename": name,
                    "evalue": str(evalue),
                    "traceback": list(stb),
                }
            )

    def show_usage_error(self, exc: BaseException) -> None:
        # a kernel prints the usage error on stderr and fails the cell with ename UsageError
        print(f"UsageError: {exc}", file=sys.stderr)
        self.last_error = {"ename": "UsageError", "evalue": str(exc), "traceback": []}

    def enable_matplotlib(self, gui: str | None = None) -> Any:
        if gui in INTERACTIVE_BACKENDS:
            from IPython.core.pylabtools import find_gui_and_backend

            # what a kernel refuses (ipympl not installed), this refuses the same way
            find_gui_and_backend(gui, self.pylab_gui_select)
            print(
                f"Kiln: `%matplotlib {gui}` draws through a live frontend, which this run does "
                "not have; figures are shown inline instead",
                file=sys.stderr,
            )
            gui = "inline"
        return super().enable_matplotlib(gui)

    def enable_gui(self, gui: str | None = None) -> None:
        # `%matplotlib inline` asks for no event loop; a headless run has none to give
        if gui not in (None, "inline"):
            from IPython.core.error import UsageError

            raise UsageError(f"a Kiln run has no {gui} event loop; use inline figures")

    def ask_exit(self) -> None:
        pass


def make_shell() -> KilnShell:
    """Create the shell (in the warm parent, before any fork)."""
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # no history thread, nothing on disk
    shell: KilnShell = KilnShell.instance(config=config)
    shell.last_error = None
    # the static input transformations, shortcut where they cannot change a cell
    shell.input_transformer_manager = KilnTransformerManager()
    _warm(shell)
    return shell


def _warm(shell: KilnShell) -> None:
    """Run an empty cell once in the parent, outside history: the first ``run_cell`` of a
    shell loads and compiles ~10 ms of machinery, which every child would otherwise redo.
    The user namespace is left exactly as it was (checked)."""
    before = dict(shell.user_ns)
    count = shell.execution_count
    shell.run_cell("pass", store_history=False, silent=True)
    # the static transformations' own first use (their shortcut skipped them just now)
    TransformerManager.transform_cell(shell.input_transformer_manager, "pass")
    # built on first use by a cell stored in the history (~1 ms of import in every child)
    _ = shell.logger
    shell.execution_count = count
    for key in set(shell.user_ns) - set(before):
        del shell.user_ns[key]
    shell.user_ns.update(before)


def rewarm(shell: KilnShell) -> None:
    """:func:`_warm` again, in a spare child before its run: the pages a first ``run_cell``
    writes are copied on write then, not during the run's first cell. Callbacks that
    pre-imported libraries registered (``pre_execute``, ``post_execute``) are not called:
    no run has started, and no cell ran."""
    callbacks = shell.events.callbacks
    shell.events.callbacks = {name: [] for name in callbacks}
    try:
        _warm(shell)
    finally:
        shell.events.callbacks = callbacks


def _jsonable(value: Any) -> Any:
    """Mime bundles as JSON: what a kernel would send (bytes become base64 text)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode("ascii")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
