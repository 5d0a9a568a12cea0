"""What every page shares: the Jinja2 environment, the page answer (its CSP), the CSRF check,
error pages, and the static files.

CSRF: a random ``kiln_csrf`` cookie (HttpOnly, SameSite=Lax) set with the first page, whose
value every form posts back as ``csrf``; a post without it, or with another, is refused 403
(double submit: another site can make a browser post, but can read neither the cookie nor the
page). Pages allow scripts and styles from this server only, so a value that escaped its
escaping still could not run.
"""

from __future__ import annotations

import functools
import hmac
import json
import secrets
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from kiln.server.auth import Principal
from kiln.server.errors import HTTPProblem

if TYPE_CHECKING:
    from fastapi import FastAPI
    from jinja2 import Environment

    from kiln.server.app import ServerContext

CSRF_COOKIE = "kiln_csrf"
#: the UI's pages: everything from this server, nothing inline, frames only from here
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
#: a form a page posts is small; more is refused before it is parsed
MAX_FORM = 256 * 1024

NAV = (
    ("/", "Home", "home"),
    ("/runs", "Runs", "runs"),
    ("/schedules", "Schedules", "schedules"),
    ("/pipelines", "Pipelines", "pipelines"),
)
ADMIN_NAV = (("/admin/users", "Users", "users"), ("/admin/audit", "Audit", "audit"))


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("kiln.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["quote"] = lambda text: quote(str(text), safe="/")
    env.filters["tojson_text"] = lambda value: json.dumps(value, ensure_ascii=False, default=str)
    return env


def csrf_value(request: Request) -> tuple[str, bool]:
    """The request's CSRF value, and whether it is new (to be set as a cookie)."""
    found = request.cookies.get(CSRF_COOKIE, "")
    if len(found) >= 32 and found.isascii():
        return found, False
    return secrets.token_urlsafe(32), True


def set_csrf(ctx: ServerContext, request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        CSRF_COOKIE,
        value,
        path=ctx.settings.root_path or "/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def page(
    ctx: ServerContext,
    request: Request,
    template: str,
    *,
    status: int = 200,
    section: str = "",
    **values: Any,
) -> HTMLResponse:
    """A page: ``template`` rendered with ``values`` and what every page has."""
    who = getattr(request.state, "principal", None)
    csrf, new = csrf_value(request)
    nav = list(NAV)
    if isinstance(who, Principal) and who.may("admin"):
        nav += list(ADMIN_NAV)
    body = (
        environment()
        .get_template(template)
        .render(
            url=ctx.url,
            who=who if isinstance(who, Principal) else None,
            csrf=csrf,
            nav=nav,
            section=section,
            **values,
        )
    )
    response = HTMLResponse(body, status_code=status, headers={"Content-Security-Policy": UI_CSP})
    if new:
        set_csrf(ctx, request, response, csrf)
    return response


def fragment(template: str, ctx: ServerContext, **values: Any) -> HTMLResponse:
    body = environment().get_template(template).render(url=ctx.url, **values)
    return HTMLResponse(body, headers={"Content-Security-Policy": UI_CSP})


async def form_of(request: Request) -> dict[str, str]:
    """A posted form (urlencoded, as the pages send it), its CSRF value checked (403
    otherwise). A name given twice keeps its last value (a checkbox after its hidden
    ``false``)."""
    fields: dict[str, str] = {}
    raw = await request.body()
    if len(raw) > MAX_FORM:
        raise HTTPProblem(413, "the form is larger than a page posts")
    for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
        fields[name] = value
    given = fields.pop("csrf", "")
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not given or not hmac.compare_digest(given, expected):
        raise HTTPProblem(
            403,
            "this form is missing its security token (or it expired): go back, reload the "
            "page and send it again",
        )
    if any("\0" in k or "\0" in v for k, v in fields.items()):
        raise HTTPProblem(422, "NUL characters are not accepted in a form")
    return fields


_HEADINGS = {
    400: "Bad request",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Conflict",
    413: "Too large",
    422: "That did not work",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Unavailable",
}


def install_errors(app: FastAPI, ctx: ServerContext) -> None:
    """Errors on the UI's paths become pages (the API keeps its JSON answers)."""

    def error_page(request: Request, status: int, detail: str) -> Response:
        if "application/json" in request.headers.get("accept", ""):  # the pages' own fetches
            return JSONResponse({"detail": detail}, status_code=status)
        heading = _HEADINGS.get(status, "Error")
        return page(
            ctx,
            request,
            "error.html",
            status=status,
            title=heading,
            heading=heading,
            detail=detail,
            status_code=status,
        )

    app.state.error_page = error_page


def static_router() -> APIRouter:
    web = APIRouter(include_in_schema=False)

    @web.get("/ui/static/{name}")
    def static(name: str) -> Response:
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or suffix not in _STATIC_TYPES:
            raise HTTPProblem(404, f"no file {name!r}")
        data = _static_bytes(name)
        if data is None:
            raise HTTPProblem(404, f"no file {name!r}")
        return Response(
            data,
            media_type=_STATIC_TYPES[suffix],
            headers={"Cache-Control": "public, max-age=300"},
        )

    return web


@functools.lru_cache(maxsize=8)
def _static_bytes(name: str) -> bytes | None:
    found = resources.files("kiln.ui").joinpath("static", name)
    return found.read_bytes() if found.is_file() else None
