"""The server's parts without a server: paths, the login limit, masking, errors as statuses,
accounts and the audit log in the store, run pages, rendering."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from kiln import errors
from kiln.options import OptionError
from kiln.recording import RECORD_MIME
from kiln.store import RunStore, audit, pages
from kiln.store import accounts as store_accounts
from kiln.store.records import Run


def glue(*parts: str) -> str:
    return "".join(parts)


@pytest.fixture
def store(tmp_path: Path, database_url: str | None) -> Iterator[RunStore]:
    """The accounts, audit and page queries run once on SQLite and once on PostgreSQL."""
    opened = RunStore(tmp_path / "home")
    assert opened.backend == ("sqlite" if database_url is None else "postgresql")
    try:
        yield opened
    finally:
        opened.close()


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    ["../x.ipynb", "/etc/passwd", "a/../../x", "~/x", "a\\..\\x", "", "x\x00y", "out/../../x"],
)
def test_confine_refuses_every_way_out(tmp_path: Path, given: str) -> None:
    from kiln.server.settings import confine

    with pytest.raises(errors.UsageError):
        confine(tmp_path, given)


def test_confine_follows_symlinks_before_deciding(tmp_path: Path) -> None:
    from kiln.server.settings import confine

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    os.symlink(tmp_path, root / "up")
    assert confine(root, "sub/nb.ipynb") == root.resolve() / "sub" / "nb.ipynb"
    with pytest.raises(errors.UsageError, match="outside the project root"):
        confine(root, "up/secret.ipynb")


def test_the_project_file_declares_endpoints_and_server_settings(tmp_path: Path) -> None:
    from kiln.project import load_project
    from kiln.server.settings import load_settings

    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), tmp_path / "nb.ipynb")
    (tmp_path / "kiln.yaml").write_text(
        "server: {port: 9001, grace: 5s, max_body: 2M, root_path: /kiln/}\n"
        "endpoints:\n  calc: {notebook: nb.ipynb, timeout: 2s, concurrency: 3}\n"
    )
    settings = load_settings(load_project(tmp_path), port=9002, home=tmp_path / "h")
    assert (settings.port, settings.grace, settings.max_body) == (9002, 5.0, 2 * 1024**2)
    assert settings.root_path == "/kiln"
    assert settings.endpoints["calc"].timeout == 2.0
    assert settings.endpoints["calc"].notebook == (tmp_path / "nb.ipynb").resolve()
    (tmp_path / "kiln.yaml").write_text("endpoints:\n  calc: {notebook: ../nb.ipynb}\n")
    with pytest.raises(errors.KilnError, match=r"kiln.yaml:2:.*endpoints.calc.notebook"):
        load_settings(load_project(tmp_path))


# -- logins, masking, statuses -----------------------------------------------------------------


def test_more_than_five_failures_a_minute_block_the_address_and_the_user() -> None:
    from kiln.server.auth import LoginThrottle

    throttle = LoginThrottle(limit=5, window=60)
    for i in range(5):
        assert throttle.retry_after("1.2.3.4", "ann", now=100 + i) is None
        throttle.failed("1.2.3.4", "ann", now=100 + i)
    assert throttle.retry_after("1.2.3.4", "bob", now=105) is not None  # same address
    assert throttle.retry_after("5.6.7.8", "ann", now=105) is not None  # same user
    assert throttle.retry_after("5.6.7.8", "bob", now=105) is None
    assert throttle.retry_after("1.2.3.4", "ann", now=161) is None  # a minute later


def test_audit_details_mask_known_secret_formats_and_secret_names() -> None:
    from kiln.server.auditlog import masked

    key = glue("AKIA", "Q3EGRT7XMPL4ZN2W")
    url = glue("postgresql://etl:", "S3cr3tPa55@db.internal:5432/sales")
    shown = masked(
        {"parameters": {"key": key, "db": url, "password": "hunter22", "n": 3, "region": "EU"}}
    )
    params = shown["parameters"]
    assert key not in str(shown) and params["key"].startswith("AKIA")
    assert "S3cr3tPa55" not in params["db"] and params["db"].startswith("postgresql://etl:")
    assert params["password"] == "********"
    assert (params["n"], params["region"]) == (3, "EU")


@pytest.mark.parametrize(
    ("error", "status", "field"),
    [
        (errors.RunNotFound("x"), 404, None),
        (errors.MissingParameter("m", name="region"), 422, "parameters.region"),
        (OptionError("timeout", "bad"), 422, "timeout"),
        (errors.NotebookNotFound("gone"), 404, "notebook"),
        (errors.AccountExists("taken"), 409, None),
        (errors.HomeNotWritable("ro"), 503, None),
        (errors.KilnError("?"), 500, None),
    ],
)
def test_errors_map_to_statuses_in_one_place(
    error: errors.KilnError, status: int, field: str | None
) -> None:
    from kiln.server.errors import field_of, status_of

    assert (status_of(error), field_of(error)) == (status, field)


def test_an_unavailable_history_is_503_without_saying_where_it_is() -> None:
    pytest.importorskip("fastapi")
    import asyncio

    import httpx
    from fastapi import FastAPI

    from kiln.server.errors import install

    app = FastAPI()
    install(app)

    @app.get("/boom")
    def boom() -> None:
        raise errors.StoreError("runs database postgresql+psycopg://kiln@db.internal:5432/k: x")

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kiln") as client:
            return await client.get("/boom")

    answer = asyncio.run(get())
    assert answer.status_code == 503 and "not available" in answer.json()["detail"]
    assert "db.internal" not in answer.text


# -- accounts and the audit log in the store ----------------------------------------------------


def test_accounts_roles_and_tokens(store: RunStore) -> None:
    from kiln.server import accounts

    accounts.create_user(store, "ann", "runner", "a-long-password", actor="t")
    with pytest.raises(errors.AccountExists):
        accounts.create_user(store, "ann", "viewer", None, actor="t")
    with pytest.raises(errors.AccountError, match="unknown role"):
        accounts.create_user(store, "bob", "root", None, actor="t")
    with pytest.raises(errors.AccountError, match="at least 8"):
        accounts.create_user(store, "bob", "viewer", "short", actor="t")
    found = store_accounts.password_hash_of(store, "ann")
    assert found is not None and found[1] is not None and found[1].startswith("$argon2")
    assert accounts.verify_password(found[1], "a-long-password")
    assert not accounts.verify_password(found[1], "wrong")
    secret, token = accounts.create_token(store, "ann", expires=3600, actor="t")
    assert store_accounts.get_token(store, token.id).status == "active"
    assert accounts.authenticate_token(store, secret)[1].name == "ann"
    assert secret not in str(store_accounts.list_tokens(store))
    accounts.revoke_token(store, token.id, actor="t")
    with pytest.raises(errors.AccountError, match="revoked"):
        accounts.authenticate_token(store, secret)
    for lifetime in (0, -1, float("inf"), float("nan"), 99999999 * 86400.0):
        with pytest.raises(errors.AccountError, match="lifetime"):
            accounts.create_token(store, "ann", expires=lifetime, actor="t")
    old, _ = accounts.create_token(store, "ann", expires=1e-6, actor="t")
    with pytest.raises(errors.AccountError, match="expired"):
        accounts.authenticate_token(store, old)


def test_the_last_admin_stays(store: RunStore) -> None:
    from kiln.server import accounts

    password = accounts.ensure_first_admin(store)
    assert password is not None and accounts.ensure_first_admin(store) is None
    with pytest.raises(errors.AccountError, match="last admin"):
        accounts.remove_user(store, "admin", actor="t")
    with pytest.raises(errors.AccountError, match="last admin"):
        accounts.change_role(store, "admin", "viewer", actor="t")
    accounts.create_user(store, "bea", "admin", None, actor="t")
    accounts.change_role(store, "admin", "viewer", actor="t")
    secret, _ = accounts.create_token(store, "admin", expires=None, actor="t")
    accounts.remove_user(store, "admin", actor="t")
    with pytest.raises(errors.AccountError):
        accounts.authenticate_token(store, secret)


def test_the_audit_log_pages_newest_first(store: RunStore) -> None:
    for i in range(5):
        audit.append(store, actor="ann" if i % 2 else "bob", action=f"a{i}", address="local")
    newest = audit.entries(store, limit=2)
    assert [e.action for e in newest] == ["a4", "a3"]
    older = audit.entries(store, before=newest[-1].id, limit=10)
    assert [e.action for e in older] == ["a2", "a1", "a0"]
    assert {e.actor for e in audit.entries(store, actor="ann")} == {"ann"}
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert audit.entries(store, since=future) == []
    assert not hasattr(audit, "delete") and not hasattr(audit, "update")


def test_run_pages_follow_the_list_order(store: RunStore) -> None:
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(7):
        store.create_run(
            Run(
                id=f"r{i}",
                notebook_path=f"/p/{'a' if i % 2 else 'b'}.ipynb",
                notebook_sha256="0",
                state="succeeded",
                created_at=base + timedelta(seconds=i // 2),
            )
        )
    seen: list[str] = []
    after = None
    while True:
        page, after = pages.runs_page(store, limit=3, after=after)
        seen += [r.id for r in page]
        if after is None:
            break
    assert seen == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]
    only_a, _ = pages.runs_page(store, notebook_name="a.ipynb", limit=10)
    assert [r.id for r in only_a] == ["r5", "r3", "r1"]
    counts = dict(((s, n), c) for s, n, c in pages.counts_by_state_and_notebook(store))
    assert counts == {("succeeded", "a.ipynb"): 3, ("succeeded", "b.ipynb"): 4}


@pytest.mark.parametrize("key", ["team", 'x"y', "a\\b", "a.b", "$", "a[0]", "é", "a b"])
def test_runs_filter_by_any_tag_name(store: RunStore, key: str) -> None:
    for i, tags in enumerate([{key: "v"}, {key: "w"}, {"other": "v"}, {}]):
        store.create_run(
            Run(
                id=f"r{i}", notebook_path="/a.ipynb", notebook_sha256="0", state="queued", tags=tags
            ),
        )
    page, _ = pages.runs_page(store, tags={key: "v"}, limit=10)
    assert [r.id for r in page] == ["r0"]
    assert [r.id for r in store.list_runs(tags={key: "v"})] == ["r0"]
    assert store.list_runs(tags={key: "v", "other": "v"}) == []


@pytest.mark.parametrize("text", ["99999999999d", "0001-01-01", "", "-5d", "soon"])
def test_since_out_of_range_is_a_value_error(text: str) -> None:
    from kiln.units import parse_since

    with pytest.raises(ValueError):
        parse_since(text)


def test_an_event_keeps_every_line_break_inside_its_data() -> None:
    pytest.importorskip("fastapi")
    import re

    from kiln.server.runs_api import _event

    raw = _event("log", "10%\r50%\r\nok\nx\revent: end\rid: 9\r\rdata: forged", 7).decode()
    assert raw.endswith("\n\n") and "\n\n" not in raw[:-2]
    lines = re.split(r"\r\n|\r|\n", raw[:-2])  # as an event stream reader splits them
    assert lines[:2] == ["event: log", "id: 7"]
    assert all(line.startswith("data: ") for line in lines[2:])
    assert "data: event: end" in lines and "data: " in lines


def test_run_pages_filter_by_tag(tmp_path: Path, database_url: str | None) -> None:
    with RunStore(tmp_path / "home") as store:
        for i, tags in enumerate([{"team": "sales"}, {"team": "ops", "x": "1"}, None]):
            store.create_run(Run(f"t{i}", "/p/a.ipynb", "0", "succeeded", tags=tags))
        sales, _ = pages.runs_page(store, tags={"team": "sales"})
        assert [r.id for r in sales] == ["t0"]
        both, _ = pages.runs_page(store, tags={"team": "ops", "x": "1"})
        assert [r.id for r in both] == ["t1"]
        assert pages.runs_page(store, tags={"team": "nobody"}) == ([], None)


def test_cursors_round_trip_and_refuse_junk() -> None:
    pytest.importorskip("fastapi")
    from kiln.server.errors import HTTPProblem
    from kiln.server.runs_api import decode_cursor, encode_cursor

    key = (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc), "run-1")
    assert decode_cursor(encode_cursor(key)) == key
    with pytest.raises(HTTPProblem):
        decode_cursor("%%%")


# -- rendering ----------------------------------------------------------------------------------


def test_records_are_rendered_as_tables_images_and_json() -> None:
    from kiln.report.render import render_html

    def record(name: str, kind: str, value: object) -> object:
        return new_output(
            "display_data", data={RECORD_MIME: {"name": name, "kind": kind, "value": value}}
        )

    table = {"columns": ["a", "<b>"], "index": [0, 1], "data": [[1, "<x>"], [2, "y"]]}
    png = glue(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAD",
        "UlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
    )
    cell = new_code_cell(
        "x",
        outputs=[
            record("t", "dataframe", table),
            record("img", "image", {"mime": "image/png", "data": png}),
            record("total", "json", {"sum": 3}),
        ],
    )
    html = render_html(new_notebook(cells=[cell]))
    assert '<table class="dataframe kiln-record">' in html and "&lt;b&gt;" in html
    assert "&lt;x&gt;" in html and "<x>" not in html
    assert png in html and "data:image/png;base64" in html
    assert "&quot;sum&quot;: 3" in html or '"sum": 3' in html


@pytest.mark.parametrize(
    ("given", "offset"),
    [(None, 0), ("", 0), ("120", 120), ("-5", 0), ("x", 0), ("9" * 30, 2**40), ("9" * 5000, 0)],
)
def test_a_last_event_id_is_an_offset_seek_can_take(
    tmp_path: Path, given: str | None, offset: int
) -> None:
    pytest.importorskip("fastapi")
    from kiln.server.runs_api import _offset

    assert _offset(given) == offset
    (tmp_path / "log").write_bytes(b"line\n")
    with open(tmp_path / "log", "rb") as handle:
        handle.seek(_offset(given))  # never OverflowError
        assert handle.read() == (b"line\n" if offset == 0 else b"")


def test_the_server_socket_answers_without_nagle_delays() -> None:
    """Connections accepted from the socket handed to uvicorn have TCP_NODELAY: without it,
    every keep-alive request waited ~40 ms for the client's delayed ACK."""
    import socket

    pytest.importorskip("uvicorn")
    from kiln.server.supervisor import listen

    server = listen("127.0.0.1", 0)
    try:
        server.listen(1)
        with socket.create_connection(server.getsockname()[:2]):
            accepted, _ = server.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.close()
