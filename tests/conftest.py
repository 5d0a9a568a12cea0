"""Shared fixtures: notebook factories, an isolated KILN_HOME per test, and the database
backends (SQLite, and a real PostgreSQL server started for the session)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kilnmoto import MotoServer, S3Unavailable
from kilnpg import PostgresServer, PostgresUnavailable
from kilntest import KILN, CellSpec, build_notebook

BACKENDS = ("sqlite", "postgresql")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m "not postgresql"` leaves the PostgreSQL variants out
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgresql":
            item.add_marker(pytest.mark.postgresql)


@pytest.fixture(autouse=True)
def _no_outside_database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KILN_DATABASE_URL in the developer's shell never reaches the tests' stores.

    ``KILN_TEST_BACKEND=postgresql`` runs every test (not only the parametrised ones) on an
    empty PostgreSQL database of its own: a sweep for queries that only SQLite accepts."""
    monkeypatch.delenv("KILN_DATABASE_URL", raising=False)
    monkeypatch.delenv("KILN_ARTIFACTS", raising=False)
    if os.environ.get("KILN_TEST_BACKEND") == "postgresql" and "database_url" not in (
        request.fixturenames
    ):
        monkeypatch.setenv("KILN_DATABASE_URL", request.getfixturevalue("postgres_url"))


@pytest.fixture(autouse=True)
def _cli_globals_stay_in_their_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_main`` called in-process sets what the command sets for its whole process
    (``--color`` writes ``FORCE_COLOR``/``NO_COLOR`` for rich too, ``--home`` writes
    ``KILN_HOME``): each test leaves them as it found them, so a ``--color always`` in one
    test does not colour the next test's ``--color auto`` on the same worker."""
    for name in ("FORCE_COLOR", "NO_COLOR", "KILN_HOME"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])  # restored to this value afterwards
        else:
            monkeypatch.setenv(name, "")  # recorded as unset: deleted again afterwards
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster per test session (per xdist worker), stopped at the
    end. Without PostgreSQL the tests that need it skip with the reason, except in CI."""
    try:
        import psycopg  # noqa: F401

        server = PostgresServer.start()
    except (PostgresUnavailable, ImportError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests must run in CI, but: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL server for the tests: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database on the session's server; dropped after the test."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Run the test once per backend: None is SQLite in the home folder; for PostgreSQL the
    URL of an empty database, also set as KILN_DATABASE_URL so that every store the test (or
    a `kiln` subprocess) opens uses it, as a user's would."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("KILN_DATABASE_URL", url)
    return url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """One moto S3 server per test session (per xdist worker), stopped at the end."""
    try:
        server = MotoServer.start()
    except S3Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the S3 tests must run in CI, but: {exc}", pytrace=False)
        pytest.skip(f"no S3-compatible server for the tests: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def artifacts_url(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An artefact store in a new bucket of the session's S3 server, set as KILN_ARTIFACTS
    (with the environment that points s3fs at the server) for the test and its subprocesses."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.bucket()}/kiln"
    monkeypatch.setenv("KILN_ARTIFACTS", url)
    return url


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "kiln-home"
    monkeypatch.setenv("KILN_HOME", str(h))
    return h


@pytest.fixture
def make_nb(tmp_path: Path) -> Callable[..., Path]:
    def make(cells: Sequence[CellSpec], name: str = "nb.ipynb", **kw: Any) -> Path:
        path = tmp_path / name
        nbformat.write(build_notebook(cells, **kw), path)
        return path

    return make


@pytest.fixture
def kiln_cli(home: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `kiln` command in a subprocess with this test's KILN_HOME."""

    def run(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KILN_HOME=str(home))
        env.update(kw.pop("env", {}))
        return subprocess.run(
            [KILN, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=kw.pop("cwd", tmp_path),
            **kw,
        )

    return run
