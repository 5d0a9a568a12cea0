"""The same values and the same answers on SQLite and PostgreSQL, and how a store finds its
database (``url=``, ``KILN_DATABASE_URL``, ``store.url`` in ``kiln.yaml``)."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from kiln.errors import StoreError
from kiln.store import Record, Run, RunStore

from kilnpg import PostgresServer

MakeRun = Callable[..., Run]


# -- values ----------------------------------------------------------------------------------


def test_parameter_filters_compare_json_values(make_run: MakeRun, store: RunStore) -> None:
    make_run(id="int", parameters={"n": 3, "flag": True, "name": "3", "tags": ["a", "b"]})
    make_run(id="float", parameters={"n": 3.0, "flag": False, "name": "x", "ratio": 0.1})
    make_run(id="text", parameters={"n": "3", "flag": "true", "name": None})
    make_run(id="bool", parameters={"n": True, "day": "2024-01-02", "nested": {"a": [1]}})
    make_run(id="none", parameters={})

    def ids(**parameters: object) -> set[str]:
        return {run.id for run in store.list_runs(parameters=parameters)}

    assert ids(n=3) == {"int", "float"}  # numbers as numbers: 3 == 3.0, never "3" or true
    assert ids(n=3.0) == {"int", "float"}
    assert ids(n="3") == {"text"}
    assert ids(n=True) == {"bool"}
    assert ids(n=1) == set()  # true is not 1
    assert ids(flag=True) == {"int"} and ids(flag=False) == {"float"}
    assert ids(name=None) == {"text"}  # a JSON null, not a missing parameter
    assert ids(ratio=0.1) == {"float"}
    assert ids(tags=["a", "b"]) == {"int"} and ids(tags=["b", "a"]) == set()
    assert ids(nested={"a": [1]}) == {"bool"}
    assert ids(day=date(2024, 1, 2)) == {"bool"}  # compared as it would be stored
    assert ids(n=3, flag=True) == {"int"}
    assert ids(missing=1) == set()
    assert ids(**{"not a name": 1, "n": 3}) == set()  # parameters are Python names


def test_text_keeps_its_order_and_characters(make_run: MakeRun, store: RunStore) -> None:
    parameters = {"zeta": 1, "alpha": {"y": 1, "x": 2}, "mid": "Zürich ✓ 日本"}
    run = make_run(parameters=parameters, tags={"b": "1", "a": "2"})
    got = store.get_run(run.id)
    assert list(got.parameters) == ["zeta", "alpha", "mid"]  # as given, not sorted
    assert list(got.parameters["alpha"]) == ["y", "x"]
    assert got.parameters == parameters and list(got.tags) == ["b", "a"]


def test_nan_infinity_and_nul_are_stored_the_same_everywhere(
    make_run: MakeRun, store: RunStore
) -> None:
    # PostgreSQL's json and text types refuse NaN and NUL: every backend stores the same
    # stand-ins, as kiln.record does for NaN
    run = make_run(
        parameters={"x": math.nan, "limits": [math.inf, -math.inf, 1.5], "s": "a\x00b"},
        error={"ename": "ValueError", "evalue": "bad \x00 byte", "traceback": []},
        reason="cell 1 printed \x00",
        records_list=[Record("loss", "json", math.nan)],
    )
    got = store.get_run(run.id)
    assert got.parameters == {"x": "nan", "limits": ["inf", "-inf", 1.5], "s": "a\ufffdb"}
    assert got.error is not None and got.error["evalue"] == "bad \ufffd byte"
    assert got.reason == "cell 1 printed \ufffd"
    assert got.records == {"loss": "nan"}
    # a literal backslash-u-0000 in text is text, not a NUL
    other = make_run(parameters={"s": "\\u0000"})
    assert store.get_run(other.id).parameters == {"s": "\\u0000"}


def test_values_longer_than_their_column_are_refused(make_run: MakeRun, store: RunStore) -> None:
    run = make_run()
    with pytest.raises(ValueError, match="kernel_name is 300 characters long: at most 255"):
        store.update_run(run.id, kernel_name="k" * 300)
    with pytest.raises(ValueError, match="engine is 65 characters long"):
        make_run(engine="e" * 65)
    store.update_run(run.id, kernel_name="k" * 255, reason="r" * 100_000)  # Text: no limit
    assert store.get_run(run.id).kernel_name == "k" * 255


def test_timestamps_keep_microseconds(make_run: MakeRun, store: RunStore) -> None:
    when = datetime(2031, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    run = make_run(created_at=when)
    assert store.get_run(run.id).created_at == when
    assert [r.id for r in store.list_runs(since=when)] == [run.id]


def test_a_store_in_a_forked_child_uses_its_own_connections(
    make_run: MakeRun, store: RunStore
) -> None:
    run = make_run(state="running")
    store.get_run(run.id)  # the pool now holds a connection the child inherits
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            store.update_run(run.id, reason="from the child")
            code = 0 if store.get_run(run.id).reason == "from the child" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's connection was not used by the child (a shared socket would break it)
    assert store.get_run(run.id).reason == "from the child"
    assert store.finish_run(run.id, "succeeded")


# -- which database ----------------------------------------------------------------------------


def test_the_database_url_comes_from_the_env_then_kiln_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    yaml_db, env_db, given_db = (tmp_path / f"{n}.db" for n in ("yaml", "env", "given"))
    (project / "kiln.yaml").write_text(f"store:\n  url: sqlite:///{yaml_db}\n")
    monkeypatch.chdir(project)
    home = tmp_path / "home"
    with RunStore(home) as store:
        assert store.url == f"sqlite:///{yaml_db}"
    monkeypatch.setenv("KILN_DATABASE_URL", f"sqlite:///{env_db}")
    with RunStore(home) as store:
        assert store.url == f"sqlite:///{env_db}"
    with RunStore(home, url=f"sqlite:///{given_db}") as store:
        assert store.url == f"sqlite:///{given_db}"
    assert yaml_db.is_file() and env_db.is_file() and given_db.is_file()
    assert (home / "runs").is_dir() and not (home / "kiln.db").exists()  # folders stay home


def test_kiln_yaml_can_point_at_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    (tmp_path / "kiln.yaml").write_text(f"store:\n  url: {postgres_url}\n")
    monkeypatch.chdir(tmp_path)
    with RunStore(tmp_path / "home") as store:
        assert store.backend == "postgresql"
        store.create_run(Run(id="r1", notebook_path="a.ipynb", notebook_sha256="x", state="queued"))
    with RunStore(tmp_path / "other-home", create=False) as store:
        assert store.get_run("r1").run_dir == str(tmp_path / "home" / "runs" / "r1")


def test_a_bad_url_in_kiln_yaml_is_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln.project import load_project
    from kiln.yamlio import YamlError

    (tmp_path / "kiln.yaml").write_text("store:\n  url: kiln.db\n")
    with pytest.raises(YamlError, match=r"kiln.yaml:2.*not a database URL"):
        load_project(tmp_path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://kiln@db/kiln", "SQLite or PostgreSQL"),
        ("postgresql+psycopg2://kiln@db/kiln", r"use postgresql\+psycopg://"),
        ("not a url", "URL"),
    ],
)
def test_unusable_urls_say_what_to_do(tmp_path: Path, url: str, expected: str) -> None:
    with pytest.raises(StoreError, match=expected):
        RunStore(tmp_path, url=url)


def test_a_missing_driver_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    with pytest.raises(StoreError, match=r"pip install 'kiln-notebooks\[postgres\]'"):
        RunStore(tmp_path, url="postgresql://kiln@127.0.0.1/kiln")


def test_plain_postgresql_urls_use_psycopg_3(postgres_url: str, tmp_path: Path) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with RunStore(tmp_path, url=plain) as store:
        assert store._engine.dialect.driver == "psycopg"


def test_an_unreachable_server_is_a_short_store_error(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    from kilnpg import _free_port

    url = f"postgresql+psycopg://kiln@127.0.0.1:{_free_port()}/nothing"
    with pytest.raises(StoreError) as info:
        RunStore(tmp_path, url=url)
    message = str(info.value)
    assert message.startswith(f"cannot open the runs database {url}: connection failed")
    assert "sqlalche.me" not in message
