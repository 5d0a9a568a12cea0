"""The fork engine's wire protocol and the kernel's import path, as pure functions."""

from __future__ import annotations

import os

import pytest

from kiln.engines import forkproto as proto
from kiln.engines.imports import run_sys_path


def test_no_kind_is_accepted_by_two_receivers():
    receivers = (proto.FROM_SUPERVISOR, proto.FROM_PARENT, proto.TO_CHILD, proto.FROM_CHILD)
    assert sum(len(r) for r in receivers) == len(set().union(*receivers))


def test_a_known_kind_is_accepted():
    line = proto.encode_line({proto.KIND: proto.CELL_START, proto.CELL: 2, proto.COUNT: 1})
    message = proto.decode(line, proto.FROM_CHILD, "child")
    assert message == {"kind": "cell_start", "cell": 2, "count": 1}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"kind": "nonsense"}', "unknown kind 'nonsense'"),
        (b'{"kind": "spec"}', "unknown kind 'spec'"),  # a kind, but not one a child sends
        (b'{"t": "done"}', "unknown kind None"),
        (b"[1, 2]", "list, not a message object"),
        (b"{not json", "not JSON"),
    ],
    ids=["unknown", "wrong-direction", "no-kind", "not-an-object", "not-json"],
)
def test_anything_else_is_a_protocol_error(data, why):
    with pytest.raises(proto.ProtocolError, match=why.replace("(", r"\(").replace("[", r"\[")):
        proto.decode(data, proto.FROM_CHILD, "run's child")


STDLIB = "/usr/lib/python3.11"
SITE = "/venv/lib/python3.11/site-packages"


@pytest.mark.parametrize(
    ("base", "safe_path", "expected"),
    [
        ([STDLIB, SITE, "/src"], False, [STDLIB, "", SITE, "/src"]),
        ([STDLIB, "/opt/dist-packages"], False, [STDLIB, "", "/opt/dist-packages"]),
        ([STDLIB, "/src"], False, ["", STDLIB, "/src"]),
        ([STDLIB, SITE], True, [STDLIB, SITE]),
        (["", STDLIB, SITE], False, ["", STDLIB, SITE]),
    ],
    ids=["after-stdlib", "dist-packages", "no-site-packages", "safe-path", "already-there"],
)
def test_the_runs_sys_path_is_a_kernels(base, safe_path, expected):
    assert run_sys_path(base, safe_path=safe_path) == expected


BASE = {"HOME": "/home/a", "PATH": "/bin", "GONE": "1", "SAME": "x"}


@pytest.mark.parametrize(
    ("wanted", "changed", "removed"),
    [
        (BASE, {}, []),
        (BASE | {"KILN_RUN_ID": "r1"}, {"KILN_RUN_ID": "r1"}, []),
        (BASE | {"PATH": "/usr/bin"}, {"PATH": "/usr/bin"}, []),
        ({k: v for k, v in BASE.items() if k != "GONE"}, {}, ["GONE"]),
        ({"HOME": "", "NEW": "y"}, {"HOME": "", "NEW": "y"}, ["PATH", "GONE", "SAME"]),
    ],
    ids=["same", "added", "changed", "removed", "most-things"],
)
def test_a_run_environment_travels_as_changes_and_comes_back_whole(wanted, changed, removed):
    sent = proto.env_changes(BASE, wanted)
    assert sent == (changed, removed)
    # the child's environment meanwhile drifted from the base (a pre-import set a variable,
    # another was unset): what it ends with is exactly the run's
    environ = {k: v for k, v in BASE.items() if k != "SAME"} | {"DRIFT": "1", "PATH": "/x"}
    proto.apply_env(environ, BASE, *sent)
    assert environ == wanted


def test_held_messages_go_out_together_and_in_order():
    import socket

    from kiln.engines.forkshell import Channel

    mine, theirs = socket.socketpair()
    with mine, theirs:
        channel = Channel(theirs)
        channel.send({proto.KIND: proto.CELL_START, proto.CELL: 0})
        channel.hold()
        channel.send({proto.KIND: proto.CELL_END, proto.CELL: 0})
        mine.setblocking(False)
        first = mine.recv(4096)
        with pytest.raises(BlockingIOError):  # the end is held
            mine.recv(4096)
        channel.send({proto.KIND: proto.CELL_START, proto.CELL: 1})
        channel.release()
        held = mine.recv(4096)
    kinds = [proto.decode(m, proto.FROM_CHILD, "child")[proto.KIND] for m in held.splitlines()]
    assert proto.decode(first, proto.FROM_CHILD, "child")[proto.KIND] == proto.CELL_START
    assert kinds == [proto.CELL_END, proto.CELL_START]


def test_a_spec_longer_than_one_read_is_received_whole_and_a_cut_one_is_an_eof():
    import socket
    import threading

    from kiln.engines.forkshell import Channel

    spec = {proto.KIND: proto.SPEC, proto.CELLS: [{proto.INDEX: 0, proto.SOURCE: "x" * 200_000}]}
    mine, theirs = socket.socketpair()
    with mine, theirs:
        writer = threading.Thread(target=mine.sendall, args=(proto.encode_line(spec),))
        writer.start()  # more than a socket buffer: sendall waits for the reads
        assert Channel(theirs).receive() == spec
        writer.join()
        mine.sendall(b'{"kind": "spec"')
        mine.shutdown(socket.SHUT_WR)
        with pytest.raises(EOFError):
            Channel(theirs).receive()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"KILN_T_A": "run"}, {"KILN_T_A": "base-a"}, {"KILN_T_GONE": "back"}, {"NEW": "n"}],
    ids=["none", "override", "override-back-to-base", "override-removed", "new"],
)
def test_a_spec_gives_the_run_kilns_environment_now_with_its_own_variables(monkeypatch, overrides):
    from kiln.engines.fork import run_env_changes

    monkeypatch.setenv("KILN_T_A", "base-a")
    monkeypatch.setenv("KILN_T_GONE", "base-gone")
    base = dict(os.environ)
    assert run_env_changes(base, {}) == ({}, [])
    for _ in range(2):  # the second time from what was computed the first time
        monkeypatch.setenv("KILN_T_A", "now-a")
        monkeypatch.delenv("KILN_T_GONE", raising=False)
        environ = dict(base)
        proto.apply_env(environ, base, *run_env_changes(base, overrides))
        assert environ == dict(os.environ) | overrides
    monkeypatch.setenv("KILN_T_A", "later")  # a change after that is seen too
    environ = dict(base)
    proto.apply_env(environ, base, *run_env_changes(base, overrides))
    assert environ == dict(os.environ) | overrides
