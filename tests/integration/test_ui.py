"""The web UI in a real browser: Playwright driving Debian's chromium against a real
``kiln serve`` (its workers running real notebooks on the fork engine).

Screenshots of every page at laptop (1280 px) and phone (390 px) width are written to
``test-artifacts/ui/`` (``KILN_UI_ARTIFACTS`` elsewhere). Without chromium the browser tests
skip, saying why; under CI they fail instead (``make chromium`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from server_util import MARKERS, XSS, Server, admin_client, make_user, running, wait_state
from server_util import write_notebook as write

pytestmark = pytest.mark.kernel

CHROMIUM = "/usr/bin/chromium"
#: without the background-networking flags chromium's own connections are refused on a
#: closed network and the first page waits for them
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("KILN_UI_ARTIFACTS") or Path(__file__).parents[2] / "test-artifacts" / "ui"
)
WIDTHS = (1280, 390)
RUNNER = ("rita", "runner-password-1")
VIEWER = ("vic", "viewer-password-1")
TIMEOUT = 90_000  # ms: a run on a loaded machine


def _project(root: Path) -> Path:
    project = root / "proj"
    write(
        project / "report.ipynb",
        [
            ("markdown", "# Sales report\n\nSales by region, with a chart.", []),
            (
                "from datetime import date\nfrom typing import Literal\n"
                "region: Literal['EU', 'US'] = 'EU'  # the market\n"
                "n: int = 5  # how many rows\n"
                "day: date = '2024-01-31'  # the day to report\n"
                "verbose: bool = False\n",
                ["parameters"],
            ),
            "import kiln, pandas as pd, matplotlib\nmatplotlib.use('Agg')\n"
            "import matplotlib.pyplot as plt\n"
            "df = pd.DataFrame({'x': list(range(n)), 'y': [i * i for i in range(n)]})\n"
            "kiln.record('table', df)\n"
            "fig, ax = plt.subplots(figsize=(4, 3))\nax.plot(df.x, df.y)\n"
            "kiln.record('chart', fig)\nprint('report for', region, day)",
        ],
    )
    write(
        project / "slow.ipynb",
        [
            ("seconds = 60.0", ["parameters"]),
            "import time\nfor i in range(int(seconds * 10)):\n    time.sleep(0.1)",
        ],
    )
    write(
        project / "hello.ipynb",
        [
            ("markdown", "# Greeter\n\nSays hello.", []),
            ("name = 'world'  # who to greet", ["parameters"]),
            "print(f'Hello, {name}!')",
        ],
    )
    payloads = list(XSS.values())
    write(
        project / "xss.ipynb",
        [
            ("markdown", " ".join(payloads), []),
            (f"label = {payloads[0]!r}  # {payloads[1]}\nother = {payloads[2]!r}", ["parameters"]),
            "from IPython.display import HTML, Markdown, display\n"
            + "".join(f"display(HTML({p!r}))\n" for p in payloads)
            + f"display(Markdown({XSS['link']!r}))\nprint(label)",
            "import kiln, pandas as pd\n"
            + "".join(f"kiln.record({p!r}, {p!r})\n" for p in payloads)
            + f"kiln.record('table', pd.DataFrame({{{payloads[1]!r}: [{payloads[0]!r}]}}))",
        ],
    )
    title = XSS["img"].replace('"', "'")
    (project / "kiln.yaml").write_text(
        "notebooks:\n"
        "  report.ipynb: {title: Sales report, parameters: {n: 4}}\n"
        "  slow.ipynb: {}\n"
        "  hello.ipynb: {title: Greeter, app: true, cache: 10m}\n"
        f'  xss.ipynb: {{title: "{title}", description: "{title}", app: true}}\n'
        "schedules:\n"
        "  nightly: {notebook: hello.ipynb, cron: '0 3 * * *'}\n"
        "pipelines:\n"
        "  daily:\n"
        "    tasks:\n"
        "      greet: {notebook: hello.ipynb}\n"
        "      report: {notebook: report.ipynb, upstream: [greet]}\n",
        encoding="utf-8",
    )
    return project


@dataclass
class Site:
    server: Server
    admin: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("ui")
    project = _project(root)
    with running(project, root / "home", "--workers", "2", "--grace", "5s") as server:
        assert server.password, server.log()
        admin = admin_client(server)
        make_user(admin, RUNNER[0], "runner", RUNNER[1])
        make_user(admin, VIEWER[0], "viewer", VIEWER[1])
        yield Site(server, admin)
        admin.close()


def logged_in(site: Site, user: str, password: str) -> httpx.Client:
    client = site.server.client()
    client.get("/login")
    answer = client.post(
        "/login",
        data={"username": user, "password": password, "csrf": client.cookies["kiln_csrf"]},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return client


# -- without a browser ------------------------------------------------------------------------


def test_a_form_post_without_its_token_is_refused(site: Site) -> None:
    client = logged_in(site, *RUNNER)
    before = client.get("/api/v1/runs").json()["items"]
    for data in ({"n": "3"}, {"n": "3", "csrf": "forged-" + "x" * 40}):
        answer = client.post("/notebooks/report.ipynb", data=data, follow_redirects=False)
        assert answer.status_code == 403
        assert answer.headers["content-type"].startswith("text/html")
        assert "security token" in answer.text and "Traceback" not in answer.text
    assert client.get("/api/v1/runs").json()["items"] == before  # nothing started
    # another site's page cannot log anyone out either
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
    assert client.get("/").status_code == 200


def test_errors_are_pages(site: Site) -> None:
    client = logged_in(site, *RUNNER)
    for path, status in (("/runs/nope", 404), ("/nowhere", 404), ("/apps/report.ipynb", 404),
                         ("/notebooks/../x.ipynb", 404), ("/admin/users", 403)):  # fmt: skip
        answer = client.get(path)
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["content-type"].startswith("text/html"), path
        assert "Traceback" not in answer.text and "<h1>" in answer.text
    # the API keeps its JSON
    assert client.get("/api/v1/runs/nope").headers["content-type"] == "application/json"


def test_session_cookie_flags(site: Site) -> None:
    client = site.server.client()
    client.get("/login")
    answer = client.post(
        "/login",
        data={"username": RUNNER[0], "password": RUNNER[1], "csrf": client.cookies["kiln_csrf"]},
        follow_redirects=False,
    )
    cookies = answer.headers.get_list("set-cookie")
    session = next(c.lower() for c in cookies if c.startswith("kiln_session="))
    assert "httponly" in session and "samesite=lax" in session
    assert "secure" not in session  # plain HTTP here; Secure over HTTPS


def test_viewer_may_use_an_app_but_not_start_other_runs(site: Site) -> None:
    client = logged_in(site, *VIEWER)
    csrf = client.cookies["kiln_csrf"]
    page = client.get("/notebooks/report.ipynb")
    assert page.status_code == 200 and 'id="run-button"' not in page.text
    refused = client.post("/notebooks/report.ipynb", data={"csrf": csrf, "n": "2"})
    assert refused.status_code == 403 and "runner role" in refused.text
    answer = client.post(
        "/apps/hello.ipynb",
        data={"csrf": csrf, "name": "viewer"},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert wait_state(client, answer.json()["run"], {"succeeded"})["submitted_by"] == VIEWER[0]


def test_app_results_are_cached_per_parameters(site: Site) -> None:
    client = logged_in(site, *RUNNER)
    csrf = client.cookies["kiln_csrf"]

    def ask(name: str) -> dict[str, Any]:
        answer = client.post(
            "/apps/hello.ipynb",
            data={"csrf": csrf, "name": name},
            headers={"Accept": "application/json"},
        )
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    first = ask("cache-test")
    assert not first["cached"]
    assert client.get(first["wait"]).json()["state"] == "succeeded"
    again = ask("cache-test")
    assert again["cached"] and again["run"] == first["run"] and again["finished"]
    other = ask("cache-other")
    assert not other["cached"] and other["run"] != first["run"]
    output = client.get(first["output"])
    assert "Hello, cache-test!" in output.text and "print(f" not in output.text  # no code
    assert output.headers["content-security-policy"].startswith("sandbox allow-scripts")


def test_runs_list_filters(site: Site) -> None:
    client = logged_in(site, *RUNNER)
    run = client.post("/api/v1/runs", json={"notebook": "hello.ipynb"}).json()
    wait_state(client, run["id"], {"succeeded"})
    mine = client.get("/runs", params={"user": RUNNER[0], "state": "succeeded"}).text
    assert run["id"] in mine
    assert run["id"] not in client.get("/runs", params={"user": "nobody"}).text
    assert run["id"] not in client.get("/runs", params={"state": "failed"}).text
    assert run["id"] in client.get("/runs", params={"notebook": "hello"}).text
    assert run["id"] not in client.get("/runs", params={"to": "2001-01-01"}).text
    bad = client.get("/runs", params={"from": "yesterday"})
    assert bad.status_code == 200 and "expected a date as YYYY-MM-DD" in bad.text


# -- in the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        why = f"no chromium at {CHROMIUM} (make chromium installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run in CI, but: {why}", pytrace=False)
        pytest.skip(why)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the browser tests must run in CI: pip install playwright", pytrace=False)
        pytest.skip("playwright is not installed (the test extra has it)")
    with sync_playwright() as driver:
        found = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield found
        finally:
            found.close()


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT)
    found = context.new_page()
    errors: list[str] = []
    found.on("pageerror", lambda exc: errors.append(str(exc)))
    yield found
    context.close()
    assert errors == [], errors  # no script error on any page


def shoot(page: Any, name: str) -> None:
    """Screenshots of the page at laptop and phone width (full length)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def log_in(page: Any, user: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/$"))


def test_login_wrong_password_and_logout(page: Any, site: Site) -> None:
    page.goto("/")
    assert "/login" in page.url  # not logged in: the login page
    shoot(page, "login")
    page.get_by_label("User name").fill(RUNNER[0])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    assert "wrong user name or password" in page.locator("#login-error").inner_text()
    shoot(page, "login-error")
    page.get_by_label("Password").fill(RUNNER[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/$"))
    assert page.get_by_role("link", name="Sales report").is_visible()
    assert "Sales by region, with a chart." in page.content()  # the first Markdown cell
    shoot(page, "home")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login"))
    assert "You are logged out." in page.content()
    page.goto("/runs")
    assert "/login" in page.url  # the session is over


def test_start_a_run_from_the_form_and_watch_it_finish(page: Any, site: Site) -> None:
    log_in(page, *RUNNER)
    page.goto("/notebooks/report.ipynb")
    assert page.locator("#p-n").input_value() == "4"  # kiln.yaml's default over the cell's
    assert page.locator("#p-region").evaluate("e => e.tagName") == "SELECT"
    assert page.locator("#p-day").get_attribute("type") == "date"
    assert page.locator("#p-verbose").get_attribute("type") == "checkbox"
    assert "the market" in page.locator("#help-region").inner_text()
    shoot(page, "notebook")
    page.locator("#p-region").select_option("US")
    page.locator("#p-n").fill("6")
    page.locator("#run-button").click()
    page.wait_for_url(re.compile(r"/runs/[\w.-]+$"))
    page.evaluate("window.__samePage = 'yes'")
    page.locator("#run-state .state-succeeded").wait_for()
    assert page.evaluate("window.__samePage") == "yes"  # it finished without a reload
    table = page.locator(".record table")
    assert table.count() == 1 and "25" in table.inner_text()  # 5 * 5, the sixth row
    image = page.locator(".record img")
    image.wait_for()
    assert image.evaluate("img => img.complete && img.naturalWidth > 100")
    assert "US" in page.locator("#run-detail").inner_text()
    page.locator("#cell-times").wait_for()
    page.frame_locator("iframe.output").get_by_text("report for US 2024-01-31").wait_for()
    assert "run " in page.locator("#log").inner_text()
    shoot(page, "run")
    # a full-page shot leaves the sandboxed (out-of-process) frame blank: the frame alone
    page.locator("iframe.output").scroll_into_view_if_needed()
    page.locator("iframe.output").screenshot(path=str(ARTIFACTS / "run-output-1280.png"))
    page.locator("#again-button").click()
    assert page.locator("#p-n").input_value() == "6"  # run again with these parameters


def test_a_validation_error_is_shown_at_its_field(page: Any, site: Site) -> None:
    log_in(page, *RUNNER)
    page.goto("/notebooks/report.ipynb")
    page.locator("#p-n").evaluate("e => { e.type = 'text'; }")  # what a browser would refuse
    page.locator("#p-n").fill("many")
    page.locator("#p-day").fill("2024-02-29")
    page.locator("#run-button").click()
    error = page.locator("#error-n")
    assert "expects int, got 'many'" in error.inner_text()
    assert page.locator("#error-day").count() == 0
    assert "error-n" in page.locator("#p-n").get_attribute("aria-describedby").split()
    assert page.locator("#p-day").input_value() == "2024-02-29"  # what was typed is kept
    shoot(page, "validation-error")


def test_cancel_a_long_run(page: Any, site: Site) -> None:
    log_in(page, *RUNNER)
    page.goto("/notebooks/slow.ipynb")
    page.locator("#p-seconds").fill("120")
    page.locator("#run-button").click()
    page.wait_for_url(re.compile(r"/runs/[\w.-]+$"))
    page.locator("#run-state .state-running").wait_for()
    page.locator("#live-cells tbody tr").first.wait_for()  # cells' times as they end
    assert page.locator("#current-cell").inner_text().startswith("cell ")  # the one running
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#cancel-button").click()
    page.locator("#run-state .state-cancelled").wait_for()
    assert page.locator("#cancel-button").count() == 0
    shoot(page, "cancelled")


def test_app_mode_with_parameters_from_the_url(page: Any, site: Site) -> None:
    log_in(page, *VIEWER)  # an app is for viewers too
    page.goto("/apps/hello.ipynb?name=Zed")
    frame = page.frame_locator("#app-output")
    frame.get_by_text("Hello, Zed!").wait_for()
    assert frame.get_by_text("print(f").count() == 0  # outputs without code
    assert page.locator("#p-name").input_value() == "Zed"
    shown = page.evaluate("window.kilnAppShown")
    print(f"app mode: submit to rendered result {shown:.0f} ms")
    shoot(page, "app")
    page.locator("#p-name").fill("Amy")
    page.locator("#app-submit").click()
    frame.get_by_text("Hello, Amy!").wait_for()
    assert page.url.endswith("/apps/hello.ipynb?name=Amy")  # the link reproduces the view


def test_a_viewer_sees_no_run_button(page: Any, site: Site) -> None:
    log_in(page, *VIEWER)
    page.goto("/notebooks/report.ipynb")
    assert page.locator("#run-button").count() == 0
    assert "starting runs needs the runner role" in page.locator("#viewer-note").inner_text()
    assert page.locator("#p-n").is_disabled()
    shoot(page, "notebook-viewer")
    page.goto("/runs")
    assert page.get_by_role("link", name="Users").count() == 0  # no admin pages


def test_admin_pages(page: Any, site: Site) -> None:
    assert site.server.password
    log_in(page, "admin", site.server.password)
    page.goto("/admin/users")
    page.get_by_label("User name").fill("newbie")
    page.locator("#new-role").select_option("runner")
    page.get_by_role("button", name="Add user").click()
    assert "user added" in page.content()
    row = page.locator("tr", has_text="newbie")
    row.get_by_role("button", name="New token").click()
    secret = page.locator("#new-secret").input_value()
    assert secret.startswith("kiln_")
    me = httpx.get(f"{site.url}/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json()["user"] == "newbie"
    shoot(page, "admin-users")
    page.goto("/admin/audit?action=user.add")
    assert "newbie" in page.locator("table").inner_text()
    shoot(page, "admin-audit")
    page.goto("/schedules")
    assert "nightly" in page.content() and page.get_by_role("button", name="Pause").count() == 1
    page.get_by_role("button", name="Pause").click()
    page.get_by_role("button", name="Resume").wait_for()
    shoot(page, "schedules")
    page.get_by_role("button", name="Resume").click()
    page.get_by_role("button", name="Pause").wait_for()
    page.goto("/pipelines/daily")
    dag = page.locator(".dag img")
    dag.wait_for()
    assert dag.evaluate("img => img.complete && img.naturalWidth > 50")
    assert page.locator("tbody tr").count() == 2
    shoot(page, "pipeline")
    page.goto("/runs")
    shoot(page, "runs")
    page.goto("/runs/no-such-run")
    shoot(page, "error")


def test_notebook_content_never_runs_in_the_ui(page: Any, site: Site) -> None:
    log_in(page, *RUNNER)
    client = logged_in(site, *RUNNER)
    run = client.post(
        "/api/v1/runs",
        json={"notebook": "xss.ipynb", "parameters": {"label": XSS["svg"], "other": XSS["img"]}},
    ).json()
    wait_state(client, run["id"], {"succeeded", "failed"})
    payload = quote(XSS["script"])
    pages = [
        "/",
        "/notebooks/xss.ipynb",
        f"/notebooks/xss.ipynb?label={payload}&other={quote(XSS['img'])}",
        f"/runs/{run['id']}",
        f"/runs/{run['id']}/live",
        "/runs",
        f"/runs?notebook={payload}&user={quote(XSS['img'])}",
        f"/apps/xss.ipynb?label={payload}",
        f"/nowhere/{quote(XSS['svg'])}",
    ]
    for path in pages:
        # the markup never reaches a page as markup (escaped) ...
        html = client.get(path).text
        assert not any(p in html for p in XSS.values()), path
        assert "<img src=x" not in html and "<svg onload" not in html, path
        # ... and the browser, whose page allows no inline script anyway, runs none of it
        page.goto(path)
        page.wait_for_load_state("networkidle")
        for frame in page.frames[1:]:
            frame.wait_for_load_state("load")
        # a payload that ran set the title to its marker (shown as text, it may be in it)
        title = page.title()
        assert title not in MARKERS and not title.startswith("pwned"), (path, title)
        if path.startswith(("/notebooks/", "/runs/", "/apps/")) or path == "/":
            assert "pwned" in page.locator("body").inner_text(), path  # shown, as text
    # the sandboxed output did run the notebook's scripts, in its own opaque origin
    page.goto(f"/runs/{run['id']}")
    frame = page.frame_locator("iframe.output")
    frame.locator("body").wait_for()
    assert page.title() not in MARKERS
    shoot(page, "xss-run")
