"""The FastAPI app of ``kiln serve``: the REST API, notebook endpoints, health, metrics, docs.

::

    app, asgi = build_app(load_settings())      # asgi: the app inside Kiln's middleware
    uvicorn.run(asgi)

Layers around a request, outside in: :class:`~kiln.server.middleware.ServerMiddleware` (body
limit, security headers, access log), :class:`AuthGate` (every route but ``/health``, the login
page, the UI's static files and, with ``metrics_public``, ``/metrics`` needs a user: API routes
answer 401, pages and forms posted to them redirect to the login page), then FastAPI (roles,
validation, the routes; the web UI's pages are mounted by :func:`kiln.ui.install`). The API
process never runs queued notebooks: worker processes do (:mod:`kiln.server.supervisor`); it runs
endpoint calls, on its own warm fork pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from kiln import __version__
from kiln.server.auditlog import AuditWriter
from kiln.server.auth import Authenticator, NeedsLogin, Principal, client_address, requires
from kiln.server.middleware import PAGE_CSP, ServerMiddleware

if TYPE_CHECKING:
    from kiln.server.endpoints import EndpointService
    from kiln.server.metrics import Metrics
    from kiln.server.middleware import ASGIApp, Receive, Scope, Send
    from kiln.server.notebooks import NotebookIndex
    from kiln.server.runs_api import Followers
    from kiln.server.settings import ServerSettings
    from kiln.store.sql import RunStore

log = logging.getLogger("kiln.server")

#: routes anyone may call (paths below the root path)
PUBLIC = frozenset({"/health", "/login", "/api/v1/login"})


@dataclass
class ServerContext:
    """What the routes share (``app.state.ctx``)."""

    settings: ServerSettings
    store: RunStore
    notebooks: NotebookIndex
    auth: Authenticator
    metrics: Metrics
    endpoints: EndpointService
    #: the endpoint calls' audit entries, written off the event loop in batches
    audit: AuditWriter
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    workers: Callable[[], tuple[int, int]] | None = None
    #: tells the worker processes a run was just submitted (None: they find it at their poll)
    wake: Callable[[], None] | None = None
    followers: Followers = field(default_factory=lambda: _followers())

    def url(self, path: str) -> str:
        return f"{self.settings.root_path}{path}"


def _followers() -> Followers:
    from kiln.server.runs_api import Followers

    return Followers()


def build_app(
    settings: ServerSettings,
    *,
    store: RunStore | None = None,
    workers: Callable[[], tuple[int, int]] | None = None,
    wake: Callable[[], None] | None = None,
) -> tuple[FastAPI, ASGIApp]:
    """The FastAPI app and the ASGI app to serve (the FastAPI app inside Kiln's layers)."""
    from kiln.server import accounts_api, errors, runs_api
    from kiln.server.endpoints import EndpointService
    from kiln.server.metrics import Metrics
    from kiln.server.notebooks import NotebookIndex

    if store is None:
        from kiln.store.sql import RunStore

        store = RunStore(settings.home)
    metrics = Metrics(store, workers)
    ctx = ServerContext(
        settings=settings,
        store=store,
        notebooks=NotebookIndex(settings.root),
        auth=Authenticator(store, settings),
        metrics=metrics,
        endpoints=EndpointService(settings, store, metrics),
        audit=AuditWriter(store),
        workers=workers,
        wake=wake,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        from kiln.store import queue as runs_queue

        await run_in_threadpool(store.recover_orphans)
        await run_in_threadpool(runs_queue.expire, store)
        # routes run in threads: two first requests importing the same packages at once can
        # meet a half-imported module (jupyter_client's circular imports do). Everything the
        # routes import is imported here, once, before the first request.
        await run_in_threadpool(_warm_up)
        await ctx.endpoints.warm()
        try:
            yield
        finally:
            ctx.shutdown.set()
            await ctx.endpoints.aclose()
            await run_in_threadpool(ctx.audit.close)

    app = FastAPI(
        title="Kiln",
        version=__version__,
        description="Run notebooks, follow them, call them as endpoints. Every route but "
        "/health needs a bearer token (kiln tokens create) or a login session.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    errors.install(app)
    # the hot path first: a request is matched against the routes in order
    app.include_router(endpoints_router(ctx), prefix="/api/v1")
    _base_routes(app, ctx)
    app.include_router(runs_api.router(ctx), prefix="/api/v1")
    app.include_router(accounts_api.router(ctx), prefix="/api/v1")
    from kiln.server import schedules_api

    app.include_router(schedules_api.router(ctx), prefix="/api/v1")
    # the web UI sits above the server (docs/architecture.md): its pages, over the same
    # accounts and run path, are mounted here, the one place that imports it
    import kiln.ui

    kiln.ui.install(app, ctx)
    public = PUBLIC | ({"/metrics"} if settings.metrics_public else set())
    gated = AuthGate(
        app,
        ctx.auth,
        public=public,
        public_prefixes=kiln.ui.PUBLIC_PREFIXES,
        root_path=settings.root_path,
    )
    asgi = ServerMiddleware(gated, max_body=settings.max_body, answered=metrics.answered)
    return app, asgi


def _warm_up() -> None:
    """Import what the routes use and load the secret scanner's plugins and nbconvert's
    templates (what the first requests would otherwise wait for)."""
    import importlib

    for module in (
        "jupyter_client.manager",
        "jupyter_client.kernelspec",
        "nbclient",
        "kiln.engines.kernel",
        "kiln.engines.fork",
        "kiln.parameters",
        "kiln.queue.submit",
        "kiln.runner",
        "kiln.store.queue",
        "kiln.lint.secret_scan",
        "nbconvert",
    ):
        importlib.import_module(module)
    from kiln.lint.secret_scan import warm_up
    from kiln.report.render import _exporter

    warm_up()
    _exporter()


def _base_routes(app: FastAPI, ctx: ServerContext) -> None:
    @app.get("/health", tags=["server"], summary="liveness (no authentication)")
    def health() -> dict[str, Any]:
        from kiln.store import pages

        pages.busy_workers(ctx.store)  # the history answers
        out: dict[str, Any] = {"status": "ok", "version": __version__}
        if ctx.workers is not None:
            alive, wanted = ctx.workers()
            out["workers"] = {"alive": alive, "wanted": wanted}
        return out

    @app.get("/metrics", tags=["server"], summary="Prometheus metrics")
    def metrics() -> Response:
        payload, content_type = ctx.metrics.render()
        return Response(payload, media_type=content_type)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=ctx.url("/openapi.json"), title="Kiln API")
        page.headers["content-security-policy"] = PAGE_CSP
        return page


def endpoints_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter(tags=["endpoints"])

    @router.post(
        "/endpoints/{name}",
        summary="call a notebook endpoint (the body is its parameters)",
        responses={429: {"description": "concurrency full"}, 504: {"description": "timeout"}},
    )
    async def call(
        name: str,
        request: Request,
        parameters: dict[str, Any] = Body(default_factory=dict),  # noqa: B008
        who: Principal = Depends(requires("runner")),  # noqa: B008
    ) -> JSONResponse:
        run, status, body = await ctx.endpoints.answer(name, parameters, user=who.name)
        # the hot path: the entry is handed to the audit writer, which appends it while the
        # answer is on its way (the run itself was recorded before it started)
        ctx.audit.add(
            actor=who.name,
            action="endpoint.call",
            target=name,
            address=client_address(request),
            outcome="ok" if status == 200 else "failed",
            details={"run": run.id, "status": status, "parameters": parameters},
        )
        return JSONResponse(body, status_code=status)

    return router


class AuthGate:
    """Identifies the user of every request before anything else reads it (so a request
    without credentials is 401 whatever its body); the routes check roles."""

    def __init__(
        self,
        app: ASGIApp,
        auth: Authenticator,
        *,
        public: frozenset[str] | set[str],
        public_prefixes: tuple[str, ...] = (),
        root_path: str,
    ) -> None:
        self.app = app
        self.auth = auth
        self.public = frozenset(public)
        self.public_prefixes = public_prefixes
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "") or self.root_path
        if root and path.startswith(root + root + "/"):
            # a proxy that kept the prefix: the server adds it again; take one off
            scope["path"] = path = path[len(root) :]
            scope["raw_path"] = path.encode()
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root) :] or "/"
        if path in self.public or path.startswith(self.public_prefixes or ("\0",)):
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        request = Request(scope)
        # a credential verified a moment ago is trusted here; otherwise the store is asked,
        # off the event loop
        who = self.auth.trusted(request)
        if who is None:
            from anyio import to_thread

            try:
                who = await to_thread.run_sync(self.auth.identify, request)
            except NeedsLogin as exc:
                await self._refuse(scope, send, path, exc)
                return
        scope.setdefault("state", {})["principal"] = who
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, path: str, exc: NeedsLogin) -> None:
        api = path.startswith("/api/") or path in ("/openapi.json", "/metrics")
        if api:
            payload = json.dumps({"detail": exc.detail}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *[(k.lower().encode(), v.encode()) for k, v in exc.headers.items()],
            ]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return
        from urllib.parse import quote

        target = f"{self.root_path}/login?next={quote(path, safe='/')}"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [(b"location", target.encode()), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
