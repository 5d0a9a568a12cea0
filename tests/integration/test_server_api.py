"""``kiln serve`` end to end: the real app under uvicorn, real worker processes, real runs.

One server for the module (2 workers); tests that change how the server answers (rate
limits, root path, trusted header) start their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from server_util import (
    MARKERS,
    XSS,
    Server,
    admin_client,
    make_user,
    running,
    wait_state,
    write_notebook,
)

from kilntest import wait_for

pytestmark = pytest.mark.kernel


def glue(*parts: str) -> str:
    """A fake secret from pieces (no scanner reads it whole in this file)."""
    return "".join(parts)


AWS_KEY = glue("AKIA", "Q3EGRT7XMPL4ZN2W")


@dataclass
class Site:
    server: Server
    admin: httpx.Client
    viewer: str
    runner: str
    admin_token: str
    project: Path
    outside: Path

    def as_(self, token: str | None) -> httpx.Client:
        return self.server.client(token)


def _project(root: Path) -> tuple[Path, Path]:
    project = root / "proj"
    write_notebook(
        project / "work.ipynb",
        [
            ("n = 1\nsleep = 0.0\nmarker = ''\nsecret = ''", ["parameters"]),
            "import time, os, kiln\n"
            "if marker:\n"
            "    with open(marker, 'a') as fh:\n"
            "        fh.write(f'{n} {os.getpid()}\\n')\n"
            "print('started', n, flush=True)\n"
            "time.sleep(sleep)\n"
            "kiln.record('n', n)",
        ],
    )
    write_notebook(
        project / "xss.ipynb",
        [
            ("x = 1", ["parameters"]),
            "from IPython.display import HTML, Markdown, display\n"
            + "".join(f"display(HTML({payload!r}))\n" for payload in XSS.values())
            + f"display(Markdown({XSS['link']!r}))",
            ("markdown", XSS["script"] + "\n\n[x](javascript:alert(1))", []),
            "import kiln\nkiln.record('table', {'a': [1, 2]})",
        ],
    )
    write_notebook(
        project / "endpoints" / "double.ipynb",
        [
            ("x = 1", ["parameters"]),
            "import kiln\nkiln.record('y', x * 2)",
        ],
    )
    write_notebook(
        project / "endpoints" / "state.ipynb",
        [
            ("tag = ''", ["parameters"]),
            "import json, kiln\n"
            "try:\n    leaked = previous\nexcept NameError:\n    leaked = None\n"
            "previous = tag\n"
            "module_leak = getattr(json, '_kiln_leak', None)\n"
            "json._kiln_leak = tag\n"
            "kiln.record('leaked', leaked)\nkiln.record('module_leak', module_leak)\n"
            "kiln.record('tag', tag)",
        ],
    )
    write_notebook(
        project / "endpoints" / "slow.ipynb",
        [
            ("sleep = 0.0", ["parameters"]),
            "import time, kiln\ntime.sleep(sleep)\nkiln.record('ok', 1)",
        ],
    )
    write_notebook(
        project / "endpoints" / "boom.ipynb",
        [
            ("x = 1", ["parameters"]),
            "raise ValueError(f'boom {x}')",
        ],
    )
    (project / "kiln.yaml").write_text(
        "endpoints:\n"
        "  double: {notebook: endpoints/double.ipynb, timeout: 30s, concurrency: 2}\n"
        "  state: {notebook: endpoints/state.ipynb, timeout: 30s, concurrency: 1}\n"
        "  slow: {notebook: endpoints/slow.ipynb, timeout: 3s, concurrency: 1}\n"
        "  boom: {notebook: endpoints/boom.ipynb}\n"
    )
    outside = write_notebook(root / "outside.ipynb", [("x = 1", ["parameters"]), "print(x)"])
    os.symlink(outside, project / "link.ipynb")
    os.symlink(root, project / "linkdir")
    return project, outside


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("server")
    project, outside = _project(root)
    with running(
        project, root / "home", "--workers", "2", "--grace", "5s", "--max-body", "64K"
    ) as server:
        assert server.password, server.log()
        admin = admin_client(server)
        viewer = make_user(admin, "vera", "viewer")
        runner = make_user(admin, "rui", "runner")
        admin_token = make_user(admin, "ada", "admin")
        yield Site(server, admin, viewer, runner, admin_token, project, outside)
        admin.close()


def submit(client: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("notebook", "work.ipynb")
    answer = client.post("/api/v1/runs", json=body)
    assert answer.status_code == 202, answer.text
    data: dict[str, Any] = answer.json()
    return data


# -- the API ------------------------------------------------------------------------------------


def test_health_needs_no_login(site: Site) -> None:
    answer = site.as_(None).get("/health")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok" and answer.json()["workers"]["wanted"] == 2


def test_notebooks_are_listed_with_their_schemas(site: Site) -> None:
    listed = site.as_(site.viewer).get("/api/v1/notebooks").json()
    paths = {item["path"]: item["parameters"] for item in listed}
    assert "work.ipynb" in paths and "endpoints/double.ipynb" in paths
    names = [p["name"] for p in paths["work.ipynb"]["parameters"]]
    assert names == ["n", "sleep", "marker", "secret"]
    cli = site.server.kiln("params", "work.ipynb", "--json")
    assert json.loads(cli.stdout) == paths["work.ipynb"]  # the same schema as kiln params


def test_submit_run_and_read_it_back(site: Site) -> None:
    client = site.as_(site.runner)
    run = submit(client, parameters={"n": 7}, parameters_text={"sleep": "0.1"})
    assert run["state"] == "queued" and run["submitted_by"] == "rui"
    assert run["tags"]["kiln.user"] == "rui"  # the trigger's tag
    done = wait_state(client, run["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done
    assert done["records"] == {"n": 7} and done["parameters"] == {"n": 7, "sleep": 0.1}
    assert done["notebook"] == "work.ipynb" and done["duration"] > 0
    log = client.get(f"/api/v1/runs/{run['id']}/log")
    assert log.headers["content-type"].startswith("text/plain") and "started 7" in log.text
    nb = client.get(f"/api/v1/runs/{run['id']}/notebook")
    assert nb.headers["content-type"] == "application/x-ipynb+json"
    assert "attachment" in nb.headers["content-disposition"]
    assert json.loads(nb.content)["metadata"]["kiln"]["run_id"] == run["id"]
    assert client.get("/api/v1/runs/last").status_code == 200
    # where the run lives on the server's machine is for admins only
    shown = site.as_(site.viewer).get(f"/api/v1/runs/{run['id']}").json()
    listed = site.as_(site.viewer).get("/api/v1/runs").json()["items"]
    for fields in (done, shown, *listed):
        assert not {"run_dir", "output_path", "log_path", "owner_pid", "kernel_pid"} & set(fields)
        assert str(site.project) not in json.dumps(fields)
    full = site.admin.get(f"/api/v1/runs/{run['id']}").json()
    assert full["run_dir"] and full["owner_pid"] and full["notebook"] == "work.ipynb"
    # and its log says where only to an admin: a reader sees the notebook within the project
    assert str(site.project) not in log.text and f"pid {full['kernel_pid']}" not in log.text
    assert 'notebook "work.ipynb"' in log.text and " ready (" in log.text
    whole = site.admin.get(f"/api/v1/runs/{run['id']}/log").text
    assert str(site.project / "work.ipynb") in whole and f"pid {full['kernel_pid']})" in whole


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"parameters": {"n": "seven"}}, "parameters.n"),
        ({"parameters": {"nope": 1}}, "parameters.nope"),
        ({"parameters_text": {"n": "x"}}, "parameters.n"),
        ({"timeout": "soon"}, "timeout"),
        ({"engine": "warp"}, "engine"),
        ({"retries": -1}, "retries"),
        ({"colour": "red"}, "colour"),
        ({"env": {"A": "1"}}, "env"),
        ({"mlflow_uri": "http://collector.example"}, "mlflow_uri"),
        ({"tags": {"a=b": "c"}}, "tags"),
        ({"notebook": "missing.ipynb"}, "notebook"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_bad_submission_is_422_naming_the_field(
    site: Site, body: dict[str, Any], field: str
) -> None:
    body.setdefault("notebook", "work.ipynb")
    answer = site.as_(site.runner).post("/api/v1/runs", json=body)
    assert answer.status_code in (404, 422), answer.text
    assert answer.json()["field"] == field, answer.json()
    assert answer.json()["detail"]
    assert str(site.project) not in answer.text  # paths as the caller knows them


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("since=yesterdayish", "since"),
        ("state=done", "state"),
        ("cursor=%%%", "cursor"),
        ("tag=team", "tag"),
        ("since=99999999999d", "since"),
        ("since=0001-01-01", "since"),
        ("&".join(f"tag=k{i}=v" for i in range(1000)), "tag"),
        ("&".join(f"param=p{i}=1" for i in range(1000)), "param"),
    ],
    ids=lambda v: v[:24],
)
def test_bad_list_parameters_are_422_naming_the_field(site: Site, query: str, field: str) -> None:
    answer = site.as_(site.viewer).get(f"/api/v1/runs?{query}")
    assert answer.status_code == 422 and answer.json()["field"] == field, answer.text


def test_pages_cover_every_run_once(site: Site) -> None:
    client = site.as_(site.runner)
    mine = {submit(client, parameters={"n": 100 + i})["id"] for i in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        page = client.get(
            "/api/v1/runs", params={"limit": 3, "cursor": cursor, "notebook": "work.ipynb"}
        ).json()
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and mine <= set(seen)
    recent = client.get("/api/v1/runs", params={"since": "1h", "limit": 500}).json()["items"]
    assert mine <= {item["id"] for item in recent}
    assert client.get("/api/v1/runs", params={"since": "2099-01-01"}).json()["items"] == []
    only = client.get("/api/v1/runs", params={"param": "n=103", "limit": 500}).json()["items"]
    assert [item["parameters"]["n"] for item in only] == [103]
    # a tag no other test of this module's shared server uses
    tagged = submit(client, parameters={"n": 200}, tags={"listing": "paged"})
    found = client.get("/api/v1/runs", params={"tag": "listing=paged", "limit": 500}).json()
    assert [item["id"] for item in found["items"]] == [tagged["id"]]
    bad = client.get("/api/v1/runs", params={"tag": "team"})
    assert bad.status_code == 422 and bad.json()["field"] == "tag"


def test_runs_carry_tags_and_their_submitter_and_list_by_tag(site: Site) -> None:
    client = site.as_(site.runner)
    odd = 'we"ird\\key'  # a quote and a backslash: no JSON path may be built from it
    run = submit(client, tags={"team": "sales", odd: "1", "n": 2})
    # the caller's tags, and the trigger's: the server tags a run with who submitted it
    assert run["tags"] == {"team": "sales", odd: "1", "n": "2", "kiln.user": "rui"}
    assert run["submitted_by"] == "rui"
    other = submit(client, tags={"team": "ops"})
    for tags, expected in (
        (["team=sales"], {run["id"]}),
        (["team=ops"], {other["id"]}),
        ([f"{odd}=1"], {run["id"]}),
        (["team=sales", "n=2"], {run["id"]}),
        (["team=sales", "n=3"], set()),
        (["team=nobody"], set()),
    ):
        items = client.get("/api/v1/runs", params={"tag": tags, "limit": 500}).json()["items"]
        assert {item["id"] for item in items} == expected, tags
        assert all(item["submitted_by"] == "rui" for item in items)
    refused = client.post(
        "/api/v1/runs", json={"notebook": "work.ipynb", "mlflow_uri": "http://x.example"}
    )
    assert refused.status_code == 422 and "kiln.yaml" in refused.json()["detail"]


def test_the_log_follows_a_live_run_as_events(site: Site) -> None:
    client = site.as_(site.runner)
    run = submit(client, parameters={"n": 5, "sleep": 1.5})
    events: list[tuple[str, str]] = []
    with client.stream(
        "GET", f"/api/v1/runs/{run['id']}/log", headers={"Accept": "text/event-stream"}
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = "message"
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, line[6:]))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and json.loads(events[-1][1])["state"] == "succeeded"
    text = "\n".join(d for k, d in events if k == "log")
    assert "started 5" in text and "run succeeded" in text
    assert str(site.project) not in text and ", pid " not in text  # a runner is no admin


def test_carriage_returns_in_a_log_cannot_forge_events(site: Site) -> None:
    """Event streams end lines at CR too: a progress bar's \\r, or a run printing
    '\\revent: end', must stay inside its own data lines."""
    write_notebook(
        site.project / "cr.ipynb",
        [
            ("x = 1", ["parameters"]),
            "print('10%\\r50%\\rdone', flush=True)\n"
            'print(\'a\\revent: end\\rdata: {"state": "forged"}\\r\\rid: 999\', flush=True)',
        ],
    )
    client = site.as_(site.runner)
    run = submit(client, notebook="cr.ipynb")
    wait_state(client, run["id"], {"succeeded"})
    events: list[tuple[str, str]] = []
    kind = "message"
    with client.stream("GET", f"/api/v1/runs/{run['id']}/log", params={"follow": "1"}) as stream:
        for line in stream.iter_lines():  # splits at CR, LF and CRLF, as browsers do
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, line[6:]))
            elif line.startswith("id: "):
                assert line != "id: 999"
    assert [k for k, _ in events].count("end") == 1 and events[-1][0] == "end"
    assert json.loads(events[-1][1])["state"] == "succeeded"
    logged = [d for k, d in events if k == "log"]
    assert any(line.endswith("50%") for line in logged), logged
    assert "event: end" in logged or any(line.endswith(" event: end") for line in logged), logged


def test_live_logs_per_user_are_bounded_and_given_back(site: Site) -> None:
    from kiln.server.runs_api import FOLLOWERS_PER_USER

    token = make_user(site.admin, "fiona", "viewer")
    runner = site.as_(site.runner)
    run = submit(runner, parameters={"sleep": 60.0})
    client = site.server.client(token, limits=httpx.Limits(max_connections=FOLLOWERS_PER_USER + 4))
    url = f"/api/v1/runs/{run['id']}/log"
    with contextlib.ExitStack() as streams:
        opened = [
            streams.enter_context(client.stream("GET", url, params={"follow": "true"}))
            for _ in range(FOLLOWERS_PER_USER)
        ]
        assert {answer.status_code for answer in opened} == {200}
        refused = client.get(url, params={"follow": "true"})
        assert refused.status_code == 429 and "close one" in refused.json()["detail"]
        assert refused.headers["retry-after"]
        assert client.get(url).status_code == 200  # the plain log is not bounded
        opened[0].close()  # the client goes away: its place is given back

        def another() -> bool:
            with client.stream("GET", url, params={"follow": "true"}) as answer:
                return answer.status_code == 200

        wait_for(another, what="a closed stream's place to be given back")
    assert runner.post(f"/api/v1/runs/{run['id']}/cancel").status_code in (200, 202)


def test_cancel_a_running_run_and_a_finished_one(site: Site) -> None:
    client = site.as_(site.runner)
    run = submit(client, parameters={"sleep": 60})
    wait_state(client, run["id"], {"running"})
    wait_for(
        lambda: "started" in client.get(f"/api/v1/runs/{run['id']}/log").text,
        what="the cell to start",
    )
    answer = client.post(f"/api/v1/runs/{run['id']}/cancel")
    assert answer.status_code in (200, 202), answer.text
    done = wait_state(client, run["id"], {"cancelled", "succeeded", "failed"})
    assert done["state"] == "cancelled" and "by request" in done["reason"]
    again = client.post(f"/api/v1/runs/{run['id']}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["detail"]


# -- authentication and roles ----------------------------------------------------------------


def _routes(site: Site) -> list[tuple[str, str]]:
    spec = site.admin.get("/openapi.json").json()
    routes = []
    for path, methods in spec["paths"].items():
        concrete = (
            path.replace("{run_id}", "last")
            .replace("{name}", "double")
            .replace("{token_id}", "abc")
            .replace("{path}", "work.ipynb")
        )
        routes += [(method.upper(), concrete) for method in methods]
    return routes


def test_every_api_route_without_credentials_is_401(site: Site) -> None:
    anonymous = site.as_(None)
    public = {("GET", "/health"), ("POST", "/api/v1/login")}
    routes = [*_routes(site), ("GET", "/openapi.json"), ("GET", "/api/v1/nowhere")]
    assert len(routes) > 15
    for method, path in routes:
        if (method, path) in public:
            continue
        answer = anonymous.request(method, path, content=b"{not json")
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        for token in ("kiln_nonsense", site.viewer + "x"):
            bad = site.as_(token).request(method, path)
            assert bad.status_code == 401, (method, path)


def test_pages_redirect_to_the_login_page(site: Site) -> None:
    answer = site.as_(None).get("/docs", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/docs"
    logged = site.as_(None)
    page = logged.get("/login")
    assert page.status_code == 200 and "<form" in page.text
    form = logged.post(
        "/login",
        data={
            "username": "admin",
            "password": site.server.password,
            "next": "//evil.example/x",
            "csrf": logged.cookies["kiln_csrf"],
        },
        follow_redirects=False,
    )
    assert form.status_code == 303 and form.headers["location"] == "/"
    cookie = form.headers["set-cookie"].lower()
    assert "kiln_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert logged.get("/docs").status_code == 200


ALLOWED = {
    "viewer": {"list", "show", "log", "notebooks"},
    "runner": {"list", "show", "log", "notebooks", "submit", "cancel", "endpoint"},
    "admin": {
        "list",
        "show",
        "log",
        "notebooks",
        "submit",
        "cancel",
        "endpoint",
        "users",
        "tokens_of_others",
        "audit",
        "add_user",
    },
}


def _actions(client: httpx.Client) -> dict[str, httpx.Response]:
    return {
        "list": client.get("/api/v1/runs"),
        "show": client.get("/api/v1/runs/last"),
        "log": client.get("/api/v1/runs/last/log"),
        "notebooks": client.get("/api/v1/notebooks"),
        "submit": client.post("/api/v1/runs", json={"notebook": "work.ipynb"}),
        "cancel": client.post("/api/v1/runs/last/cancel"),
        "endpoint": client.post("/api/v1/endpoints/double", json={"x": 2}),
        "users": client.get("/api/v1/users"),
        "tokens_of_others": client.get("/api/v1/tokens", params={"user": "admin"}),
        "audit": client.get("/api/v1/audit"),
        "add_user": client.post("/api/v1/users", json={"name": f"u{os.urandom(3).hex()}"}),
    }


@pytest.mark.parametrize("role", ["viewer", "runner", "admin"])
def test_each_role_may_do_its_actions_and_no_more(site: Site, role: str) -> None:
    token = {"viewer": site.viewer, "runner": site.runner, "admin": site.admin_token}[role]
    # "last" must name a run whichever tests ran before on this worker
    site.admin.post("/api/v1/runs", json={"notebook": "work.ipynb"}).raise_for_status()
    for action, answer in _actions(site.as_(token)).items():
        if action in ALLOWED[role]:
            assert answer.status_code < 400 or answer.status_code == 409, (
                role,
                action,
                answer.text,
            )
        else:
            assert answer.status_code == 403, (role, action, answer.text)
            assert f"is a {role}" in answer.json()["detail"]
    me = site.as_(token).get("/api/v1/me").json()
    assert me["role"] == role


def test_expired_and_revoked_tokens_are_refused(site: Site) -> None:
    short = site.admin.post("/api/v1/tokens", json={"user": "vera", "expires": "1s"}).json()
    assert site.as_(short["token"]).get("/api/v1/me").status_code in (200, 401)
    wait_for(
        lambda: site.as_(short["token"]).get("/api/v1/me").status_code == 401,
        what="the token to expire",
    )
    assert "expired" in site.as_(short["token"]).get("/api/v1/me").json()["detail"]
    for lifetime in ("99999999d", 1e308, "0s", "soon"):
        refused = site.admin.post("/api/v1/tokens", json={"user": "vera", "expires": lifetime})
        assert refused.status_code == 422 and refused.json()["field"] == "expires", refused.text
    fresh = site.admin.post("/api/v1/tokens", json={"user": "vera"}).json()
    assert site.as_(fresh["token"]).get("/api/v1/me").status_code == 200
    assert site.admin.delete(f"/api/v1/tokens/{fresh['id']}").status_code == 200
    refused = site.as_(fresh["token"]).get("/api/v1/me")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    cli = site.server.kiln("tokens", "create", "vera", "--label", "from-cli")
    secret = cli.stdout.strip().splitlines()[-1]
    assert site.as_(secret).get("/api/v1/me").json()["user"] == "vera"
    listed = json.loads(site.server.kiln("tokens", "list", "--json").stdout)
    token_id = next(t["id"] for t in listed if t["label"] == "from-cli")
    assert secret not in json.dumps(listed)
    assert site.server.kiln("tokens", "revoke", token_id).returncode == 0
    assert site.as_(secret).get("/api/v1/me").status_code == 401


def test_removing_a_user_revokes_its_tokens(site: Site) -> None:
    token = make_user(site.admin, "temp", "runner")
    assert site.as_(token).get("/api/v1/me").status_code == 200
    assert (
        site.admin.patch("/api/v1/users/temp", json={"role": "viewer"}).json()["role"] == "viewer"
    )
    assert site.as_(token).post("/api/v1/runs", json={"notebook": "work.ipynb"}).status_code == 403
    assert site.admin.delete("/api/v1/users/temp").status_code == 200
    assert site.as_(token).get("/api/v1/me").status_code == 401


# -- rendering and hostile outputs --------------------------------------------------------------


def test_outputs_render_only_inside_the_sandbox(site: Site) -> None:
    client = site.as_(site.runner)
    run = submit(client, notebook="xss.ipynb")
    assert wait_state(client, run["id"], {"succeeded", "failed"})["state"] == "succeeded"
    html = client.get(f"/api/v1/runs/{run['id']}/html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    csp = html.headers["content-security-policy"]
    assert csp.startswith("sandbox allow-scripts") and "allow-same-origin" not in csp
    for marker in MARKERS:
        assert marker in html.text  # shown as the notebook shows it, but only in the sandbox
    assert 'class="dataframe kiln-record"' not in html.text  # a JSON record: shown as JSON
    assert "kiln-record" in html.text
    for path in ("", "/log", "/notebook"):
        other = client.get(f"/api/v1/runs/{run['id']}{path}")
        assert not other.headers["content-type"].startswith("text/html")
        assert other.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" not in other.headers["content-security-policy"]
        assert "default-src 'none'" in other.headers["content-security-policy"]


def test_security_headers_on_every_answer(site: Site) -> None:
    for answer in (
        site.as_(None).get("/health"),
        site.as_(None).get("/api/v1/runs"),
        site.as_(site.viewer).get("/api/v1/runs/nope"),
        site.as_(site.viewer).get("/api/v1/nowhere"),
    ):
        headers = answer.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    "notebook",
    [
        "../outside.ipynb",
        "/etc/passwd",
        "sub/../../outside.ipynb",
        "link.ipynb",
        "linkdir/outside.ipynb",
        "..\\outside.ipynb",
        "~/x.ipynb",
        "work.ipynb\x00.txt",
        "kiln.yaml",
    ],
)
def test_no_path_escapes_the_project(site: Site, notebook: str) -> None:
    client = site.as_(site.runner)
    answer = client.post("/api/v1/runs", json={"notebook": notebook})
    assert answer.status_code in (404, 422), answer.text
    shown = client.get(f"/api/v1/notebooks/{quote(notebook)}")
    assert shown.status_code in (400, 404, 422), shown.text  # 400: a NUL in the URL
    listed = client.get("/api/v1/runs", params={"notebook": notebook})
    assert listed.status_code in (400, 422) or listed.json()["items"] == []


def test_no_path_escapes_through_other_fields(site: Site) -> None:
    client = site.as_(site.runner)
    cwd = client.post("/api/v1/runs", json={"notebook": "work.ipynb", "cwd": "../"})
    assert cwd.status_code == 422 and cwd.json()["field"] == "cwd"
    assert (
        client.post("/api/v1/runs", json={"notebook": "work.ipynb", "output": "/tmp/x"}).status_code
        == 422
    )
    for key in ("..", "..%2F..%2Fetc", "%2e%2e", ".hidden", "a" * 200):
        for tail in ("", "/log", "/notebook", "/html"):
            answer = client.get(f"/api/v1/runs/{key}{tail}")
            assert answer.status_code in (404, 422), (key, tail, answer.text)
    listed = {item["path"] for item in client.get("/api/v1/notebooks").json()}
    assert "outside.ipynb" not in " ".join(listed) and not any(p.startswith("..") for p in listed)
    # a link out of the project is neither listed nor read (not even its parameters)
    assert "link.ipynb" not in " ".join(listed) and not any(p.startswith("/") for p in listed)


def test_oversized_bodies_are_refused(site: Site) -> None:
    client = site.as_(site.runner)
    big = {"notebook": "work.ipynb", "parameters": {"marker": "x" * 70_000}}
    answer = client.post("/api/v1/runs", json=big)
    assert answer.status_code == 413 and "larger" in answer.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"x": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    streamed = client.post(
        "/api/v1/endpoints/double", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.headers["x-content-type-options"] == "nosniff"


# -- endpoints ---------------------------------------------------------------------------------


def test_an_endpoint_answers_with_the_records(site: Site) -> None:
    client = site.as_(site.runner)
    answer = client.post("/api/v1/endpoints/double", json={"x": 21})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["records"] == {"y": 42}
    run = client.get(f"/api/v1/runs/{body['run_id']}").json()  # recorded like any run
    assert run["state"] == "succeeded" and run["parameters"] == {"x": 21}
    assert run["submitted_by"] == "rui" and run["origin"] == {"endpoint": "double"}
    bad = client.post("/api/v1/endpoints/double", json={"x": "twenty"})
    assert bad.status_code == 422 and bad.json()["field"] == "parameters.x"
    assert client.post("/api/v1/endpoints/nope", json={}).status_code == 404


def test_endpoint_calls_never_see_each_other(site: Site) -> None:
    client = site.as_(site.runner)
    first = client.post("/api/v1/endpoints/state", json={"tag": "first"}).json()
    second = client.post("/api/v1/endpoints/state", json={"tag": "second"}).json()
    assert first["records"] == {"leaked": None, "module_leak": None, "tag": "first"}
    assert second["records"] == {"leaked": None, "module_leak": None, "tag": "second"}


def test_an_endpoint_refuses_calls_beyond_its_concurrency_and_times_out(site: Site) -> None:
    client = site.as_(site.runner)
    results: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: results.append(
            site.as_(site.runner).post("/api/v1/endpoints/slow", json={"sleep": 10})
        )
    )
    slow.start()
    try:
        wait_for(
            lambda: client.get(
                "/api/v1/runs", params={"notebook": "slow.ipynb", "state": "running"}
            ).json()["items"],
            what="the slow call to be running",
        )

        def refused() -> bool:
            answer = client.post("/api/v1/endpoints/slow", json={"sleep": 0})
            assert answer.status_code in (200, 429), answer.text
            return answer.status_code == 429

        wait_for(refused, what="a second call to be refused")
        assert client.post("/api/v1/endpoints/slow", json={}).headers.get("retry-after") in (
            "1",
            None,
        )
    finally:
        slow.join(timeout=60)
    (timed_out,) = results
    assert timed_out.status_code == 504, timed_out.text
    run = client.get(f"/api/v1/runs/{timed_out.json()['run_id']}").json()
    assert run["state"] == "timed_out"


def test_an_endpoint_whose_cell_raises_is_500_with_the_error(site: Site) -> None:
    answer = site.as_(site.runner).post("/api/v1/endpoints/boom", json={"x": 3})
    assert answer.status_code == 500
    body = answer.json()
    assert body["error"]["ename"] == "ValueError" and body["error"]["evalue"] == "boom 3"
    assert f"cell {body['error']['cell_index']} raised ValueError: boom 3" in body["detail"]


# -- metrics and audit ---------------------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_there_and_count(site: Site) -> None:
    client = site.as_(site.viewer)
    assert site.as_(None).get("/metrics").status_code == 401
    before = client.get("/metrics").text
    calls = _metric(before, "kiln_endpoint_latency_seconds_count", endpoint="double")
    done = _metric(before, "kiln_runs", state="succeeded", notebook="double.ipynb")
    for x in range(3):
        assert (
            site.as_(site.runner).post("/api/v1/endpoints/double", json={"x": x}).status_code == 200
        )
    after = client.get("/metrics").text
    assert _metric(after, "kiln_endpoint_latency_seconds_count", endpoint="double") == calls + 3
    assert _metric(after, "kiln_runs", state="succeeded", notebook="double.ipynb") == done + 3
    assert _metric(after, "kiln_run_duration_seconds_count", notebook="double.ipynb") >= 3
    for name in ("kiln_queue_depth", "kiln_workers_busy", "kiln_workers", "kiln_runs_running"):
        assert f"\n{name} " in after, name
    assert _metric(after, "kiln_workers") == 2
    answered = _metric(after, "kiln_http_requests_total", method="GET", status="2xx")
    assert answered >= 1
    assert client.request("PROPFIND", "/api/v1/runs").status_code == 405
    last = client.get("/metrics").text
    assert _metric(last, "kiln_http_requests_total", method="GET", status="2xx") > answered
    assert _metric(last, "kiln_http_requests_total", method="other", status="4xx") >= 1
    assert "PROPFIND" not in last  # labels stay few whatever clients send


def test_every_action_is_audited_with_secrets_masked(site: Site) -> None:
    runner = site.as_(site.runner)
    run = submit(runner, parameters={"secret": AWS_KEY, "n": 9})
    runner.post(f"/api/v1/runs/{run['id']}/cancel")
    runner.post("/api/v1/endpoints/double", json={"x": 1})
    site.as_(None).post("/api/v1/login", json={"username": "rui", "password": "wrong-password"})
    made = make_user(site.admin, "audited", "viewer")
    site.admin.patch("/api/v1/users/audited", json={"role": "runner"})
    token = site.admin.post("/api/v1/tokens", json={"user": "audited"}).json()
    site.admin.delete(f"/api/v1/tokens/{token['id']}")
    site.admin.delete("/api/v1/users/audited")
    assert made
    entries = (
        site.as_(site.admin_token).get("/api/v1/audit", params={"limit": 1000}).json()["items"]
    )
    seen = {(e["action"], e["outcome"], e["actor"]) for e in entries}
    for expected in [
        ("run.submit", "ok", "rui"),
        ("run.cancel", "ok", "rui"),
        ("endpoint.call", "ok", "rui"),
        ("login", "failed", "rui"),
        ("login", "ok", "admin"),
        ("user.add", "ok", "admin"),
        ("user.set_role", "ok", "admin"),
        ("token.create", "ok", "admin"),
        ("token.revoke", "ok", "admin"),
        ("user.remove", "ok", "admin"),
    ]:
        assert expected in seen, expected
    submitted = next(e for e in entries if e["action"] == "run.submit" and e["target"] == run["id"])
    assert submitted["details"]["parameters"]["secret"] != AWS_KEY
    assert AWS_KEY not in json.dumps(entries)
    assert submitted["address"] == "127.0.0.1"
    cli = site.server.kiln("audit", "--json", "--user", "rui", "-n", "0")
    assert cli.returncode == 0 and AWS_KEY not in cli.stdout
    assert {e["actor"] for e in json.loads(cli.stdout)} == {"rui"}
    assert site.as_(site.runner).get("/api/v1/audit").status_code == 403


# -- the CLI against the server -----------------------------------------------------------------


def test_the_cli_talks_to_the_server(site: Site) -> None:
    remote = ("--server", site.server.url, "--token", site.runner)
    queued = site.server.kiln(
        *remote, "run", "work.ipynb", "--queue", "-p", "n", "12", "-p", "sleep", "0.2"
    )
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip()
    followed = site.server.kiln(*remote, "runs", "logs", "-f", run_id)
    assert followed.returncode == 0 and "started 12" in followed.stdout
    shown = site.server.kiln(*remote, "runs", "show", run_id, "--json")
    assert json.loads(shown.stdout)["records"] == {"n": 12}
    listed = site.server.kiln(*remote, "runs", "list", "--json", "-n", "5")
    assert run_id in {r["id"] for r in json.loads(listed.stdout)}
    table = site.server.kiln(*remote, "runs", "list", "--notebook", "work.ipynb")
    assert run_id in table.stdout
    tagged = site.server.kiln(*remote, "run", "work.ipynb", "--queue", "--tag", "cli=yes")
    tagged_id = tagged.stdout.strip()
    by_tag = site.server.kiln(*remote, "runs", "list", "--tag", "cli=yes", "--json")
    assert [r["id"] for r in json.loads(by_tag.stdout)] == [tagged_id], by_tag.stderr
    wait_state(site.as_(site.runner), tagged_id, {"succeeded"})
    with_records = site.server.kiln(*remote, "runs", "list", "--tag", "cli=yes", "--records", "n")
    assert tagged_id in with_records.stdout and "N" in with_records.stdout.splitlines()[0]
    mlflow = site.server.kiln(
        *remote, "run", "work.ipynb", "--queue", "--mlflow-uri", "http://x.example"
    )
    assert mlflow.returncode == 2 and "--mlflow-uri is not accepted" in mlflow.stderr
    ended = site.server.kiln(*remote, "runs", "cancel", run_id)
    assert ended.returncode == 0 and "already ended" in ended.stderr
    bad = site.server.kiln(*remote, "run", "work.ipynb", "--queue", "-p", "n", "x")
    assert bad.returncode == 2 and "422" in bad.stderr and "n" in bad.stderr
    denied = site.server.kiln("--server", site.server.url, "runs", "list")
    assert denied.returncode == 2 and "401" in denied.stderr and "kiln tokens" in denied.stderr


# -- servers of their own -----------------------------------------------------------------------


def test_failed_logins_are_limited(tmp_path: Path) -> None:
    project = tmp_path / "p"
    write_notebook(project / "nb.ipynb", [("x = 1", ["parameters"])])
    with running(
        project,
        tmp_path / "home",
        "--workers",
        "0",
        "--root-path",
        "/kiln",
        "--trusted-user-header",
        "X-Forwarded-User",
        "--metrics-public",
        "--log-format",
        "json",
    ) as server:
        assert server.url.endswith("/kiln")
        server.url = server.url.removesuffix("/kiln")
        client = server.client()  # as through a proxy that strips /kiln (or keeps it: below)
        login = "/api/v1/login"
        for _ in range(5):
            answer = client.post(login, json={"username": "admin", "password": "wrong-one"})
            assert answer.status_code == 401
        blocked = client.post(login, json={"username": "admin", "password": server.password})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        other = client.post(login, json={"username": "someone", "password": "whatever1"})
        assert other.status_code == 429  # the same address
        # the root path and the other settings of this server
        assert client.get("/health").status_code == 200
        assert client.get("/kiln/health").status_code == 200
        assert client.get("/metrics").status_code == 200  # public
        assert client.get("/api/v1/me").status_code == 401
        proxied = client.get("/api/v1/me", headers={"X-Forwarded-User": "admin"})
        assert proxied.json() == {"user": "admin", "role": "admin", "via": "header"}
        stranger = client.get("/api/v1/me", headers={"X-Forwarded-User": "mallory"})
        assert stranger.status_code == 401 and "no Kiln account" in stranger.json()["detail"]
        docs = client.get("/docs", follow_redirects=False)
        assert docs.headers["location"] == "/kiln/login?next=/docs"
    # one JSON object a line besides the "listening on" line: no library's warning either
    # (FastAPI warned about its own root_path parameter at every start under a sub-path)
    lines = [json.loads(line) for line in server.err if "listening on" not in line]
    access = [line for line in lines if line["logger"] == "kiln.server.access"]
    assert {"client", "method", "path", "status", "ms", "user"} <= set(access[-1])
    assert any(line["path"] == "/kiln/api/v1/me" and line["user"] == "admin" for line in access)
    audit = server.kiln("audit", "--json", "--action", "login", "-n", "0")
    outcomes = sorted(e["outcome"] for e in json.loads(audit.stdout))
    assert outcomes.count("failed") == 5 and outcomes.count("denied") == 2


def test_nul_characters_are_refused_before_the_database(
    tmp_path: Path, database_url: str | None
) -> None:
    """PostgreSQL refuses NUL in text: every way one could reach it is a 400/422, never a 503
    (and no answer tells where the database is)."""
    project = tmp_path / "p"
    write_notebook(project / "nb.ipynb", [("x = ''", ["parameters"]), "print(len(x))"])
    with running(project, tmp_path / "home", "--workers", "0") as server:
        admin = admin_client(server)
        for path in (
            "/api/v1/runs?notebook=a%00b",
            "/api/v1/runs?tag=a=b%00",
            "/api/v1/audit?user=a%00b",
            "/api/v1/runs/abc%00def",
            "/api/v1/tokens?user=a%00b",
        ):
            answer = admin.get(path)
            assert answer.status_code == 400 and "NUL" in answer.json()["detail"], path
        for method, path, body in (
            ("POST", "/api/v1/tokens", {"label": "a\0b"}),
            ("POST", "/api/v1/tokens", {"user": "a\0b"}),
            ("POST", "/api/v1/users", {"name": "a\0b"}),
            ("PATCH", "/api/v1/users/admin", {"role": "admin\0"}),
            ("POST", "/api/v1/login", {"username": "ad\0min", "password": "x"}),
        ):
            answer = admin.request(method, path, json=body)
            assert answer.status_code == 422 and "NUL" in answer.json()["detail"], (path, body)
        browser = server.client()
        browser.get("/login")
        form = browser.post(
            "/login",
            data={"username": "a\0b", "password": "x", "csrf": browser.cookies["kiln_csrf"]},
        )
        assert form.status_code == 422
        # a NUL inside a parameter's value is data: stored as U+FFFD on every backend
        run = submit(admin, notebook="nb.ipynb", parameters={"x": "a\0b"})
        shown = admin.get(f"/api/v1/runs/{run['id']}").json()["parameters"]
        assert shown == {"x": "a\ufffdb"}
        assert admin.get("/api/v1/audit").status_code == 200
        log = server.log()
    assert "503" not in log and "internal error" not in log
