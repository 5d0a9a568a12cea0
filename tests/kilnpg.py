"""A throwaway PostgreSQL server for the tests and benchmarks: one cluster per session.

``PostgresServer.start()`` runs ``initdb`` into a temporary folder and starts the server on a
free port on 127.0.0.1 (and a unix socket in the same folder), durability off (the data is
thrown away) unless ``durable=True`` (the server's defaults: every commit waits for its WAL
flush, as a production server's does; the benchmarks measure with it). As root, the server
cannot run as root: the folder is given to the ``postgres`` user and ``initdb``/``pg_ctl`` run
through ``runuser``. ``create_database`` hands out empty databases; ``stop`` ends the server by
its pid and removes the folder.

When PostgreSQL cannot be had, :class:`PostgresUnavailable` says exactly why (callers skip with
that reason, or fail when ``CI`` is set: the PostgreSQL tests must run there).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kilntest import pid_alive

SUPERUSER = "kiln"
PREFIX = "kiln-pg-"


class Wire:
    """What the store's PostgreSQL connections said to the server inside :func:`wire`, from
    libpq's own trace of the protocol: a measure of the store's work that load cannot change."""

    def __init__(self, text: str) -> None:
        self.lines = [line.split("\t") for line in text.splitlines() if line]

    @property
    def round_trips(self) -> int:
        """Exchanges the client waited for (each ends with the server's ReadyForQuery)."""
        return sum(1 for line in self.lines if line[:1] == ["B"] and line[2] == "ReadyForQuery")

    @property
    def commits(self) -> int:
        """Transactions that wrote and committed (each waits for its WAL flush)."""
        done, last = 0, ""
        for line in self.lines:
            if line[:1] != ["B"]:
                continue
            if line[2] == "CommandComplete":
                last = line[3].strip().strip('"').split()[0]
            elif line[2] == "ReadyForQuery" and line[3].strip() == "I":
                done += last in ("INSERT", "UPDATE", "DELETE", "COMMIT")
                last = ""
        return done


@contextlib.contextmanager
def wire(engine: Any) -> Iterator[list[Wire]]:
    """Trace the protocol of every connection ``engine`` (a SQLAlchemy engine on psycopg)
    checks out inside; the list holds the :class:`Wire` once the block ends."""
    import psycopg
    import sqlalchemy as sa

    out: list[Wire] = []
    log = tempfile.NamedTemporaryFile(prefix="kiln-wire-", delete=False)  # noqa: SIM115
    traced: list[tuple[Any, int]] = []
    flags = psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        pgconn = dbapi_connection.pgconn
        if all(pgconn is not seen for seen, _ in traced):
            fd = os.open(log.name, os.O_WRONLY | os.O_APPEND)
            pgconn.trace(fd)
            pgconn.set_trace_flags(flags)
            traced.append((pgconn, fd))

    sa.event.listen(engine, "checkout", on_checkout)
    try:
        yield out
    finally:
        sa.event.remove(engine, "checkout", on_checkout)
        for pgconn, fd in traced:
            pgconn.untrace()  # flushes libpq's stream
            os.close(fd)
        log.close()
        out.append(Wire(Path(log.name).read_text(errors="replace")))
        os.unlink(log.name)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here (the message says why)."""


def find_bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: ``$KILN_PG_BINDIR``, ``PATH``, or the
    newest of Debian's ``/usr/lib/postgresql/*/bin``."""
    given = os.environ.get("KILN_PG_BINDIR")
    if given:
        if not (Path(given) / "initdb").is_file():
            raise PostgresUnavailable(f"KILN_PG_BINDIR={given} holds no initdb")
        return Path(given)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if not found:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
            "`make test` installs it as root (apt-get install postgresql)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """A running throwaway cluster; use :meth:`start`."""

    def __init__(self, bindir: Path, root: Path, port: int, pid: int, as_user: str | None):
        self.bindir = bindir
        self.root = root
        self.port = port
        self.pid = pid
        self._as_user = as_user
        self._databases = 0
        self._icu: bool | None = None
        self._start_argv: list[str] = []

    @classmethod
    def start(cls, *, timeout: float = 30.0, durable: bool = False) -> PostgresServer:
        bindir = find_bindir()
        as_user = None
        if os.geteuid() == 0:  # the server refuses to run as root
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root and runuser is missing")
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' user to run the server as"
                ) from None
            as_user = "postgres"
        _reap_stale()
        root = Path(tempfile.mkdtemp(prefix=PREFIX))
        try:
            (root / "owner").write_text(f"{os.getpid()} {_started(os.getpid())}")
            if as_user is not None:
                os.chown(root, owner.pw_uid, owner.pw_gid)
            server = cls._init_and_start(bindir, root, as_user, timeout, durable)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return server

    @classmethod
    def _init_and_start(
        cls, bindir: Path, root: Path, as_user: str | None, timeout: float, durable: bool
    ) -> PostgresServer:
        data = root / "data"
        locale = "C.UTF-8" if _has_locale("C.utf8") else None
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust"]
        initdb += ["-E", "UTF8", "--no-sync", "--no-instructions"]
        # C.UTF-8 (not plain C) like most servers: LIKE cannot use an ordinary index there,
        # so a query that needs a "C" collation is caught by the tests
        initdb += [f"--locale={locale}"] if locale else ["--no-locale"]
        done = _run(initdb, as_user, timeout)
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {done.stderr.strip() or done.stdout}")
        last = ""
        for _ in range(3):  # another process may take the free port first
            port = _free_port()
            options = f"-h 127.0.0.1 -p {port} -k {root} "
            if not durable:
                options += "-F -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            options += "-c max_connections=200 -c shared_buffers=64MB"
            start = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log")]
            start += ["-w", "-t", str(int(timeout)), "-o", options, "start"]
            done = _run(start, as_user, timeout + 5)
            pid_file = data / "postmaster.pid"
            if done.returncode == 0 and pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                server = cls(bindir, root, port, pid, as_user)
                server._start_argv = start
                return server
            last = _tail(root / "server.log") or done.stderr.strip() or done.stdout
        raise PostgresUnavailable(f"the PostgreSQL server did not start: {last}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; returns its URL.

        Its collation is ICU's en-US where the server has ICU, like the linguistic locales
        most servers run with (not "C"): text sorts "a_1" before "B" there, and LIKE cannot
        use a plain index, so code that assumes otherwise is caught by the tests."""
        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}"
        import psycopg

        if self._icu is not False:
            try:
                self._admin(
                    f'CREATE DATABASE "{name}" TEMPLATE template0 '
                    "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                )
                self._icu = True
                return self.url(name)
            except psycopg.Error:
                self._icu = False
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def halt(self, timeout: float = 30.0) -> None:
        """Stop the server, keeping its data (a database that goes away): SIGINT, the fast
        shutdown that ends every connection; :meth:`resume` starts it again."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while pid_alive(self.pid):
            if time.monotonic() > deadline:
                raise PostgresUnavailable("the PostgreSQL server did not stop")
            time.sleep(0.02)

    def resume(self, timeout: float = 30.0) -> None:
        """Start the halted server again, on the same port."""
        done = _run(self._start_argv, self._as_user, timeout + 5)
        pid_file = self.root / "data" / "postmaster.pid"
        if done.returncode != 0 or not pid_file.exists():
            raise PostgresUnavailable(f"the server did not start again: {done.stderr.strip()}")
        self.pid = int(pid_file.read_text().split()[0])

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown by the server's pid (SIGINT), then SIGKILL; the folder goes too."""
        try:
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
                deadline = time.monotonic() + timeout / 3
                while time.monotonic() < deadline:
                    if not pid_alive(self.pid):
                        return
                    time.sleep(0.02)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _run(argv: list[str], as_user: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    if as_user is not None:
        argv = ["runuser", "-u", as_user, "--", *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_", "LANG"))}
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, cwd="/", check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresUnavailable(f"{Path(argv[0]).name} could not run: {exc}") from exc


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" if unknown): with the pid, it
    names a process for good (pids are reused, start times are not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _reap_stale() -> None:
    """Stop the servers of test sessions that were killed before they could (SIGKILL, a
    lost machine): their owner process is gone. Servers of live sessions are left alone."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            pid, started = (root / "owner").read_text().split()
            if pid_alive(int(pid)) and _started(int(pid)) == started:
                continue
            server_pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError):
            continue
        stale = PostgresServer(Path(), root, 0, server_pid, None)
        if _is_postgres(server_pid, root):
            with contextlib.suppress(OSError):  # another user's: not ours to stop
                stale.stop()
        else:
            shutil.rmtree(root, ignore_errors=True)


def _is_postgres(pid: int, root: Path) -> bool:
    """``pid`` is the postmaster of the cluster in ``root`` (not a process that got its pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(root / "data").encode() in command


def _has_locale(name: str) -> bool:
    try:
        listed = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    except OSError:
        return False
    return name.lower() in listed.stdout.lower().split()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
