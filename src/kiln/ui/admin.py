"""The admin pages (users, tokens, the audit log) and the schedules and pipelines pages.

Every change goes through the same services as the API (:mod:`kiln.server.accounts`,
:mod:`kiln.scheduler.views`), so it is checked and audited the same way; a new token's secret
is shown once, on the page that answers its creation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kiln.errors import KilnError
from kiln.server.auth import client_address
from kiln.server.errors import HTTPProblem
from kiln.ui.pages import need, who_of
from kiln.ui.web import form_of, page

if TYPE_CHECKING:
    from kiln.server.app import ServerContext
    from kiln.ui.catalog import Catalog

AUDIT_PAGE = 100


def router(ctx: ServerContext, catalog: Catalog) -> APIRouter:
    web = APIRouter(include_in_schema=False)

    # -- users and tokens ------------------------------------------------------------------------

    def users_page(
        request: Request,
        *,
        message: str = "",
        error: str = "",
        secret: str = "",
        secret_user: str = "",
        status: int = 200,
    ) -> HTMLResponse:
        from kiln.store import accounts

        need(request, "admin")
        users = accounts.list_users(ctx.store)
        tokens = [t for t in accounts.list_tokens(ctx.store) if t.revoked_at is None]
        return page(
            ctx,
            request,
            "admin_users.html",
            status=status,
            title="Users",
            section="users",
            users=users,
            tokens=tokens,
            roles=accounts.ROLES,
            message=message,
            error=error,
            secret=secret,
            secret_user=secret_user,
        )

    @web.get("/admin/users")
    def users(request: Request, done: str = "") -> HTMLResponse:
        return users_page(request, message=done[:200])

    async def change(request: Request, action: Any, done: str) -> Response:
        """Run an account change for an admin's form; back to the list, saying what was done."""
        form = await form_of(request)
        who = need(request, "admin")
        try:
            await run_in_threadpool(action, form, who.name, client_address(request))
        except KilnError as exc:
            return users_page(request, error=exc.message, status=422)
        return RedirectResponse(
            ctx.url("/admin/users?" + urlencode({"done": done})), status_code=303
        )

    @web.post("/admin/users")
    async def add_user(request: Request) -> Response:
        from kiln.server import accounts as service

        def act(form: dict[str, str], actor: str, address: str) -> None:
            service.create_user(
                ctx.store,
                form.get("name", "").strip(),
                form.get("role", "viewer"),
                form.get("password") or None,
                actor=actor,
                address=address,
            )

        return await change(request, act, "user added")

    @web.post("/admin/users/{name}/role")
    async def set_role(request: Request, name: str) -> Response:
        from kiln.server import accounts as service

        def act(form: dict[str, str], actor: str, address: str) -> None:
            service.change_role(ctx.store, name, form.get("role", ""), actor=actor, address=address)

        return await change(request, act, f"{name}'s role changed")

    @web.post("/admin/users/{name}/delete")
    async def remove_user(request: Request, name: str) -> Response:
        from kiln.server import accounts as service

        def act(form: dict[str, str], actor: str, address: str) -> None:
            service.remove_user(ctx.store, name, actor=actor, address=address)

        return await change(request, act, f"{name} removed")

    @web.post("/admin/tokens")
    async def new_token(request: Request) -> Response:
        from kiln.server import accounts as service

        form = await form_of(request)
        who = need(request, "admin")
        user = form.get("user", "")
        try:
            secret, _token = await run_in_threadpool(
                lambda: service.create_token(
                    ctx.store,
                    user,
                    expires=None,
                    label="web UI",
                    actor=who.name,
                    address=client_address(request),
                )
            )
        except KilnError as exc:
            return users_page(request, error=exc.message, status=422)
        return users_page(request, secret=secret, secret_user=user, status=201)

    @web.post("/admin/tokens/{token_id}/revoke")
    async def revoke(request: Request, token_id: str) -> Response:
        from kiln.server import accounts as service

        def act(form: dict[str, str], actor: str, address: str) -> None:
            service.revoke_token(ctx.store, token_id, actor=actor, address=address)

        return await change(request, act, "token revoked")

    # -- the audit log -----------------------------------------------------------------------------

    @web.get("/admin/audit")
    def audit_page(request: Request) -> HTMLResponse:
        from kiln.server.runs_api import parse_since
        from kiln.store import audit

        need(request, "admin")
        q = request.query_params
        filters = {k: q.get(k, "").strip() for k in ("user", "action", "since")}
        problem = ""
        entries: list[Any] = []
        more = False
        try:
            cursor = int(q["cursor"]) if q.get("cursor") else None
            ctx.audit.flush()  # the endpoint calls' entries given so far are in
            found = audit.entries(
                ctx.store,
                since=parse_since(filters["since"] or None),
                actor=filters["user"] or None,
                action=filters["action"] or None,
                before=cursor,
                limit=AUDIT_PAGE + 1,
            )
            entries, more = found[:AUDIT_PAGE], len(found) > AUDIT_PAGE
        except HTTPProblem as exc:
            problem = exc.detail
        except ValueError:
            problem = "cursor: not a page of this list"
        shown = [{**e.__dict__, "at": e.at.strftime("%Y-%m-%d %H:%M:%S")} for e in entries]
        return page(
            ctx,
            request,
            "admin_audit.html",
            title="Audit log",
            section="audit",
            entries=shown,
            filters=filters,
            filter_error=problem,
            base_query=urlencode({k: v for k, v in filters.items() if v}),
            next_cursor=entries[-1].id if more and entries else None,
        )

    # -- schedules -------------------------------------------------------------------------------

    def schedules_page(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
        from kiln.project import load_project
        from kiln.scheduler.views import describe, schedules_of

        who = who_of(request)
        shown: list[dict[str, Any]] = []
        try:
            shown = describe(schedules_of(load_project(ctx.settings.root)), ctx.store, count=3)
        except KilnError as exc:
            error = error or exc.message
        for item in shown:
            item["next"] = [t.replace("T", " ") for t in item["next"]]
        return page(
            ctx,
            request,
            "schedules.html",
            status=status,
            title="Schedules",
            section="schedules",
            schedules=shown,
            error=error,
            may_run=who.may("runner"),
        )

    @web.get("/schedules")
    def schedules(request: Request) -> HTMLResponse:
        return schedules_page(request)

    @web.post("/schedules/{name}/{action}")
    async def pause(request: Request, name: str, action: str) -> Response:
        from kiln.project import load_project
        from kiln.scheduler.views import schedules_of, set_paused
        from kiln.server.auditlog import record

        await form_of(request)
        who = need(request, "runner")
        if action not in ("pause", "resume"):
            raise HTTPProblem(404, f"no action {action!r} on a schedule")

        def act() -> None:
            found = schedules_of(load_project(ctx.settings.root))
            if name not in found:
                raise HTTPProblem(404, f"no schedule named {name!r}")
            set_paused(found, ctx.store, name, action == "pause", who.name)
            record(
                ctx.store,
                actor=who.name,
                action=f"schedule.{action}",
                target=name,
                address=client_address(request),
            )

        await run_in_threadpool(act)
        return RedirectResponse(ctx.url("/schedules"), status_code=303)

    # -- pipelines -------------------------------------------------------------------------------

    @web.get("/pipelines")
    def pipelines(request: Request) -> HTMLResponse:
        from kiln.project import load_project

        who_of(request)
        error = ""
        names: list[str] = []
        try:
            names = list(load_project(ctx.settings.root).config.pipelines)
        except KilnError as exc:
            error = exc.message
        return page(
            ctx,
            request,
            "pipelines.html",
            title="Pipelines",
            section="pipelines",
            names=names,
            pipeline=None,
            error=error,
        )

    def marks_of(name: str) -> tuple[Any, dict[str, Any]]:
        from kiln.pipeline import load_pipeline
        from kiln.pipeline.dag import task_marks
        from kiln.project import load_project
        from kiln.store.builds import BuildStore

        project = load_project(ctx.settings.root)
        if name not in project.config.pipelines:
            raise HTTPProblem(404, f"no pipeline named {name!r}")
        pipeline = load_pipeline(name, project=project)
        with BuildStore.open(ctx.settings.home) as builds:
            return pipeline, task_marks(pipeline, builds)

    @web.get("/pipelines/{name}")
    def pipeline_page(request: Request, name: str) -> HTMLResponse:
        from kiln.pipeline.dag import dot_available, mermaid_source

        who_of(request)
        pipeline, marks = marks_of(name)
        tasks = [
            {
                "name": task_name,
                "notebook": ctx.notebooks.relative(task.notebook),
                "upstream": list(task.upstream_tasks),
                "state": marks[task_name].state,
            }
            for task_name, task in pipeline.tasks.items()
        ]
        svg = ctx.url(f"/pipelines/{name}/dag.svg") if dot_available() else None
        return page(
            ctx,
            request,
            "pipelines.html",
            title=f"Pipeline {name}",
            section="pipelines",
            pipeline=pipeline,
            tasks=tasks,
            svg_url=svg,
            mermaid="" if svg else mermaid_source(pipeline, marks),
            names=[],
            error="",
        )

    @web.get("/pipelines/{name}/dag.svg")
    def pipeline_svg(request: Request, name: str) -> Response:
        import graphviz

        from kiln.pipeline.dag import dot_source

        who_of(request)
        pipeline, marks = marks_of(name)
        try:
            data = graphviz.Source(dot_source(pipeline, marks)).pipe(format="svg")
        except (graphviz.ExecutableNotFound, graphviz.CalledProcessError) as exc:
            raise HTTPProblem(503, f"Graphviz could not draw the pipeline: {exc}") from None
        # shown through <img>: an SVG there never runs scripts; its own CSP says the same
        return Response(
            data,
            media_type="image/svg+xml",
            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
        )

    del catalog  # the admin pages list no notebooks
    return web
