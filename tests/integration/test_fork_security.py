"""Runs cannot take over the fork engine: not the warm parent's memory, not its control socket,
not another process's words on a run's channel; and the channel's protocol is enforced.

The attacks on the warm parent must fail when Kiln runs without root's ptrace privilege (a
root process with CAP_SYS_PTRACE passes every ptrace check: see
docs/fork-engine-threat-model.md), so they run Kiln as ``nobody``, or, when ``nobody`` cannot
run this environment's Python, as root without CAP_SYS_PTRACE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from kilntest import KILN, build_notebook

pytestmark = pytest.mark.kernel

_PTRACE_BIT = 1 << 19  # CAP_SYS_PTRACE


def _cap_eff(prefix: list[str], env: dict[str, str]) -> int | None:
    probe = (
        "import kiln.engines.forkserver, IPython\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    )
    try:
        res = subprocess.run(
            [*prefix, sys.executable, "-c", probe], env=env, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return int(res.stdout, 16) if res.returncode == 0 else None


@pytest.fixture(scope="module")
def unprivileged() -> Iterator[tuple[list[str], Path, dict[str, str]]]:
    """(command prefix, a folder that user can write, its environment)."""
    folder = Path(tempfile.mkdtemp(prefix="kiln-unprivileged-"))
    folder.chmod(0o777)
    home = folder / "kiln-home"
    home.mkdir()
    home.chmod(0o777)
    env = dict(os.environ, HOME=str(folder), KILN_HOME=str(home))
    candidates = [["runuser", "-u", "nobody", "--"]]
    candidates.append(["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace", "--"])
    chosen = [] if os.geteuid() != 0 else None
    for prefix in candidates if chosen is None else []:
        caps = _cap_eff(prefix, env) if shutil.which(prefix[0]) else None
        if caps is not None and not caps & _PTRACE_BIT:
            chosen = prefix
            break
    try:
        if chosen is None:
            pytest.skip(
                "cannot drop root's ptrace privilege here: neither `runuser -u nobody` (it "
                "must be able to run this Python) nor `setpriv` without CAP_SYS_PTRACE works"
            )
        yield chosen, folder, env
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _sweep_as(unprivileged: tuple[list[str], Path, dict[str, str]], name: str, attack: str) -> dict:
    """Three runs on one warm parent, run 1 attacking it; each run's records by n."""
    prefix, folder, env = unprivileged
    nb = folder / f"{name}.ipynb"
    nbformat.write(
        build_notebook(
            [
                ("n = 0", ["parameters"]),
                f"if n == 1:\n{_indent(attack)}",
                "import string, kiln\nkiln.record('letters', string.ascii_letters)",
            ]
        ),
        nb,
    )
    nb.chmod(0o666)
    grid = folder / f"{name}.yaml"
    grid.write_text("n: [1, 2, 3]\n")
    grid.chmod(0o666)
    home = Path(env["KILN_HOME"]) / name
    run_env = dict(env, KILN_HOME=str(home))
    res = subprocess.run(
        [*prefix, KILN, "run", str(nb), "--sweep", str(grid), "-j", "1", "--engine", "fork"],
        env=run_env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    listing = subprocess.run(
        [KILN, "runs", "list", "--json"], env=run_env, capture_output=True, text=True, check=True
    )
    return {r["parameters"]["n"]: r["records"] for r in json.loads(listing.stdout)}


def _indent(code: str) -> str:
    return "".join(f"    {line}\n" for line in code.splitlines())


MEM_ATTACK = """\
import os, string, sys, kiln
target = string.ascii_letters
where = id(target) + sys.getsizeof(target) - len(target) - 1  # a compact str's characters
try:
    with open(f'/proc/{os.getppid()}/mem', 'r+b', buffering=0) as mem:
        mem.seek(where)
        mem.write(b'Z' * len(target))
    kiln.record('attack', 'written')
except OSError as exc:
    kiln.record('attack', type(exc).__name__)
"""


def test_a_run_cannot_write_the_warm_parents_memory(unprivileged):
    runs = _sweep_as(unprivileged, "mem", MEM_ATTACK)
    assert runs[1]["attack"] == "PermissionError"
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert [runs[n]["letters"] for n in (1, 2, 3)] == [letters] * 3


SPARE_MEM_ATTACK = """\
import os, string, sys, time, kiln
target = string.ascii_letters
where = id(target) + sys.getsizeof(target) - len(target) - 1
def siblings():
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f'/proc/{entry}/stat') as fh:
                    if int(fh.read().rpartition(')')[2].split()[1]) == os.getppid():
                        found.append(int(entry))
            except OSError:
                pass
    return found
end = time.monotonic() + 10
while not siblings() and time.monotonic() < end:
    time.sleep(0.02)
results = []
for pid in siblings():
    try:
        with open(f'/proc/{pid}/mem', 'r+b', buffering=0) as mem:
            mem.seek(where)
            mem.write(b'Z' * len(target))
        results.append('written')
    except OSError as exc:
        results.append(type(exc).__name__)
kiln.record('attack', results)
"""


def test_a_run_cannot_write_the_spare_that_the_next_run_will_run_in(unprivileged):
    # the warm parent forks the next run's child ahead, while this run is running
    runs = _sweep_as(unprivileged, "spare", SPARE_MEM_ATTACK)
    assert runs[1]["attack"] == ["PermissionError"]
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert [runs[n]["letters"] for n in (1, 2, 3)] == [letters] * 3


GETFD_ATTACK = """\
import ctypes, os, kiln
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(os.getppid())
stolen, errors = [], set()
for fd in range(64):
    got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
    if got >= 0:
        stolen.append(fd)
        os.close(got)
    else:
        errors.add(os.strerror(ctypes.get_errno()))
kiln.record('stolen', stolen)
kiln.record('errors', sorted(errors))
"""


def test_a_run_cannot_take_the_warm_parents_file_descriptors(unprivileged):
    runs = _sweep_as(unprivileged, "getfd", GETFD_ATTACK)
    assert runs[1]["stolen"] == []
    assert runs[1]["errors"] == [os.strerror(1)]  # EPERM: not a ptrace-able process


FIND_SOCKET = """\
import os
def is_socket(fd):
    try:
        return os.readlink(f'/proc/self/fd/{fd}').startswith('socket:')
    except OSError:
        return False
sockets = [int(fd) for fd in os.listdir('/proc/self/fd') if is_socket(fd)]
"""


def test_a_run_holds_only_its_own_socket_and_commands_do_not_inherit_it(make_nb, kiln_cli):
    nb = make_nb(
        [
            FIND_SOCKET + "import kiln\nkiln.record('sockets', len(sockets))\n"
            "kiln.record('inheritable', os.get_inheritable(sockets[0]))"
        ]
    )
    res = kiln_cli("run", str(nb), "--engine", "fork", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["records"] == {"sockets": 1, "inheritable": False}


def _line(kind: str) -> bytes:
    """A message of ``kind`` on a run's channel (under the protocol's field name and the
    one-letter one it replaced, so that the test means the same against both)."""
    return json.dumps({"kind": kind, "t": kind}).encode() + b"\n"


def test_an_unknown_message_kind_fails_the_run_as_crashed(make_nb, kiln_cli):
    nb = make_nb(
        [
            FIND_SOCKET + f"os.write(sockets[0], {_line('nonsense')!r})",
            "import kiln\nkiln.record('ran', True)",
        ]
    )
    res = kiln_cli("run", str(nb), "--engine", "fork", "--json")
    run = json.loads(res.stdout)
    assert run["state"] == "crashed" and run["records"] == {}
    assert "unknown kind 'nonsense'" in run["reason"]


def test_words_from_another_process_on_a_runs_channel_are_refused(make_nb, kiln_cli):
    # a process the run started, holding the run's socket, claims the run is done
    forge = f"import os, sys\nos.write(int(sys.argv[1]), {_line('done')!r})"
    nb = make_nb(
        [
            FIND_SOCKET + "import subprocess, sys\n"
            f"subprocess.run([sys.executable, '-c', {forge!r}, str(sockets[0])],"
            " pass_fds=sockets, check=True)",
            "import kiln\nkiln.record('ran', True)",
        ]
    )
    res = kiln_cli("run", str(nb), "--engine", "fork", "--json")
    run = json.loads(res.stdout)
    assert run["state"] == "crashed" and "not the run's child" in run["reason"]
