"""The fork engine's wire protocol: every message kind and field name, defined once.

Two channels, both Unix sockets, every message a JSON object whose ``kind`` names it:

* **control** (supervisor <-> warm parent): a SOCK_SEQPACKET socket, one message per packet.
  A :data:`RUN` request carries the run's own socket as an SCM_RIGHTS file descriptor.
* **run** (supervisor <-> one child): a SOCK_STREAM socket pair created by the supervisor for
  that run, one message per line. The supervisor sends the :data:`SPEC`; the child reports.

Who sends what::

    supervisor -> parent   PRELOAD  RUN  SWEEP  STOP
    parent -> supervisor   HELLO  IMPORTING  PRELOADED  FORKED  REFUSED  EXITED
    supervisor -> child    SPEC
    child -> supervisor    CELL_START  OUTPUT  OUTPUTS  CELL_END  DONE  FATAL

A message of a kind its receiver does not expect is a :class:`ProtocolError`: the supervisor
fails the run as crashed and says why, and never drops a message silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from typing import Any

#: the field every message carries
KIND = "kind"

# -- control channel: supervisor -> warm parent
PRELOAD = "preload"  # MODULES, CWD, SAFE_PATH: import what notebooks import, before forking
RUN = "run"  # RUN_ID, OTHERS (+ the run's socket as a file descriptor): fork a child for it
SWEEP = "sweep"  # kill what dead children left re-parented to the warm parent
STOP = "stop"  # kill the children and exit

# -- control channel: warm parent -> supervisor
HELLO = "hello"  # PID, PYTHON, IPYTHON: ready
IMPORTING = "importing"  # MODULE: a pre-import started (how a hang is pinned on one module)
PRELOADED = "preloaded"  # LOADED, FAILED, LOCAL, THREADED: the pre-import is over
FORKED = "forked"  # RUN_ID, PID
REFUSED = "refused"  # RUN_ID, ERROR: the parent cannot fork safely
EXITED = "exited"  # RUN_ID, PID, CODE, SIGNAL, SIGNAL_NAME: a child was reaped

# -- run channel: supervisor -> child
SPEC = "spec"  # CELLS, ALLOW_ERRORS, CWD, ENV_SET, ENV_UNSET, ARGV, MEMORY_LIMIT

# -- run channel: child -> supervisor
CELL_START = "cell_start"  # CELL, COUNT
OUTPUT = "output"  # CELL, OUTPUT_NODE: one new output (stream chunks are merged on arrival)
OUTPUTS = "outputs"  # CELL, OUTPUT_LIST: the cell's outputs replaced (clear/update display)
CELL_END = "cell_end"  # CELL, COUNT, OUTPUT_LIST, ERROR
DONE = "done"  # every cell ran; the run's processes are gone
FATAL = "fatal"  # ERROR: the child itself broke

# -- field names
ALLOW_ERRORS = "allow_errors"
ARGV = "argv"
CELL = "cell"
CELLS = "cells"
CODE = "code"
COUNT = "count"
CWD = "cwd"
#: the run's environment as changes to the one the warm parent was started with
ENV_SET = "env_set"
ENV_UNSET = "env_unset"
ERROR = "error"
FAILED = "failed"
INDEX = "index"
IPYTHON = "ipython"
LOADED = "loaded"
LOCAL = "local"
MEMORY_LIMIT = "memory_limit"
MODULE = "module"
MODULES = "modules"
#: how many other runs of the supervisor are forking or running (a RUN request's field)
OTHERS = "others"
OUTPUT_LIST = "outputs"
OUTPUT_NODE = "output"
PID = "pid"
PYTHON = "python"
RAISES = "raises"
RUN_ID = "run"
SAFE_PATH = "safe_path"
SIGNAL = "signal"
SIGNAL_NAME = "signal_name"
SOURCE = "source"
THREADED = "threaded"

#: what each receiver accepts
FROM_SUPERVISOR = frozenset({PRELOAD, RUN, SWEEP, STOP})
TO_CHILD = frozenset({SPEC})
FROM_PARENT = frozenset({HELLO, IMPORTING, PRELOADED, FORKED, REFUSED, EXITED})
FROM_CHILD = frozenset({CELL_START, OUTPUT, OUTPUTS, CELL_END, DONE, FATAL})


class ProtocolError(Exception):
    """A message that breaks the protocol (not JSON, not an object, or an unknown kind)."""


def encode(msg: dict[str, Any]) -> bytes:
    """One control packet (no newline)."""
    return json.dumps(msg).encode("utf-8")


def encode_line(msg: dict[str, Any]) -> bytes:
    """One run-channel line; values JSON cannot carry become their ``repr``."""
    return (json.dumps(msg, default=repr) + "\n").encode("utf-8")


def decode(data: bytes | str, accepted: frozenset[str], sender: str) -> dict[str, Any]:
    """Parse one message from ``sender``; raise :class:`ProtocolError` unless its kind is one
    ``accepted`` from that sender."""
    try:
        msg = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"the {sender} sent a message that is not JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"the {sender} sent {type(msg).__name__}, not a message object")
    kind = msg.get(KIND)
    if kind not in accepted:
        raise ProtocolError(f"the {sender} sent a message of unknown kind {kind!r}")
    return msg


def env_changes(
    base: Mapping[str, str], wanted: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """What turns ``base`` (the warm parent's starting environment) into ``wanted`` (a run's):
    the variables to set and those to remove. A run spec carries these rather than the whole
    environment, which rarely differs from the parent's by more than the run's own variables."""
    changed = {k: v for k, v in wanted.items() if base.get(k) != v}
    return changed, [k for k in base if k not in wanted]


def apply_env(
    environ: MutableMapping[str, str],
    base: Mapping[str, str],
    changed: Mapping[str, str],
    removed: list[str],
) -> None:
    """Make ``environ`` exactly ``base`` with the changes of :func:`env_changes` applied,
    touching only the variables that differ (whatever else changed ``environ`` meanwhile,
    such as a pre-import, is undone)."""
    wanted = dict(base)
    wanted.update(changed)
    for name in removed:
        wanted.pop(name, None)
    for name in [k for k in environ if k not in wanted]:
        del environ[name]
    for name, value in wanted.items():
        if environ.get(name) != value:
            environ[name] = value
