"""App mode: ``/apps/PATH`` shows a notebook declared ``app: true`` as a form and its outputs
without code, like Voila, with parameters in the URL so a link reproduces the view.

Any logged-in user may submit an app's form (viewers too: that is what an app is for); each
submission is a fresh-state run through the one run path (the queue, a worker, its warm fork
pool). With ``cache: 10m`` a submission whose parameters match the last successful run
younger than that is answered with that run, without running again.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kiln.errors import KilnError, NotebookNotFound, ParameterError
from kiln.server.errors import HTTPProblem
from kiln.ui import forms
from kiln.ui.pages import start_from_form, who_of
from kiln.ui.web import form_of, page

if TYPE_CHECKING:
    from kiln.server.app import ServerContext
    from kiln.store.records import Run
    from kiln.ui.catalog import Catalog, Entry

#: how long one wait for a run's end lasts before the page asks again (seconds)
WAIT = 25.0
#: how often a waited run is read (seconds): the app's latency floor
WAIT_EVERY = 0.02


def router(ctx: ServerContext, catalog: Catalog) -> APIRouter:
    web = APIRouter(include_in_schema=False)

    def app_entry(path: str) -> Entry:
        entry = catalog.get(path)
        if not entry.app:
            raise NotebookNotFound(
                f"{entry.path} is not an app: kiln.yaml's notebooks section declares it with "
                "app: true"
            )
        return entry

    def output_url(run_id: str) -> str:
        return ctx.url(f"/ui/app-output/{run_id}")

    @web.get("/apps/{path:path}")
    def app_page(request: Request, path: str) -> HTMLResponse:
        entry = app_entry(path)
        read = catalog.read(entry.file)
        given = dict(request.query_params)
        run_id = given.pop("run", None)
        fields = []
        if read.schema is not None:
            fields = forms.fields(read.schema, given=given, defaults=entry.defaults)
        output = output_url(run_id) if run_id and _finished(ctx, run_id) else None
        return page(
            ctx,
            request,
            "app.html",
            title=entry.title,
            section="home",
            nb=entry,
            fields=fields,
            schema_error=read.error,
            form_error="",
            output=output,
            autorun=bool(given) and output is None,
        )

    @web.post("/apps/{path:path}")
    async def submit(request: Request, path: str) -> Response:
        from kiln.parameters import CliValue, resolve_parameters
        from kiln.store import pages

        form = await form_of(request)
        who = who_of(request)  # any role: viewers may use an app
        entry = app_entry(path)
        read = catalog.read(entry.file)
        if read.schema is None:
            raise HTTPProblem(422, read.error or "the notebook cannot be read")
        values, errors = forms.read(read.schema, form)
        if errors:
            name, message = next(iter(errors.items()))
            raise HTTPProblem(422, message, field=name)
        parameters, texts = forms.split(values)
        cached: Run | None = None
        if entry.cache:
            try:
                given = {**parameters, **{k: CliValue(v) for k, v in texts.items()}}
                resolved = resolve_parameters(read.schema, given, notebook=entry.path)
            except ParameterError as exc:
                raise HTTPProblem(422, exc.message, field=exc.name) from None
            since = datetime.now(timezone.utc) - timedelta(seconds=entry.cache)
            cached = await run_in_threadpool(
                pages.last_success, ctx.store, str(entry.file), resolved, since
            )
        if cached is not None:
            run = cached
        else:
            try:
                run = await start_from_form(
                    ctx, request, who, entry.path, parameters, texts, via="app"
                )
            except ParameterError as exc:
                raise HTTPProblem(422, exc.message, field=exc.name) from None
            except KilnError as exc:
                raise HTTPProblem(422, exc.message) from None
        if "application/json" not in request.headers.get("accept", ""):
            shown = {k: "" if v is None else v for k, v in values.items()}
            query = urlencode({**shown, "run": run.id})
            return RedirectResponse(ctx.url(f"/apps/{quote(entry.path)}?{query}"), status_code=303)
        return JSONResponse(
            {
                "run": run.id,
                "cached": cached is not None,
                "finished": run.finished,
                "state": run.state.value,
                "reason": run.reason,
                "wait": ctx.url(f"/ui/runs/{run.id}/wait"),
                "output": output_url(run.id),
                "page": ctx.url(f"/runs/{run.id}"),
            }
        )

    @web.get("/ui/runs/{run_id}/wait")
    async def wait(request: Request, run_id: str) -> JSONResponse:
        """The run once it ended (or as it is after a while): what an app's page waits on."""
        from kiln.server.runs_api import check_run_key

        who_of(request)
        key = check_run_key(run_id)
        deadline = time.monotonic() + WAIT
        while True:
            run = await run_in_threadpool(ctx.store.get_run, key)
            if run.finished or time.monotonic() > deadline or ctx.shutdown.is_set():
                break
            if await request.is_disconnected():
                break
            await asyncio.sleep(WAIT_EVERY)
        return JSONResponse(
            {
                "run": run.id,
                "finished": run.finished,
                "state": run.state.value,
                "reason": run.reason,
            }
        )

    @web.get("/ui/app-output/{run_id}")
    def app_output(request: Request, run_id: str) -> Response:
        """The run's outputs without its code, in the API's sandbox."""
        from kiln.server.runs_api import check_run_key, sandboxed_html

        who_of(request)
        run = ctx.store.get_run(check_run_key(run_id))
        if not run.finished:
            raise HTTPProblem(409, f"run {run.id} has not ended yet: {run.state}")
        return sandboxed_html(run, hide_code=True)

    return web


def _finished(ctx: ServerContext, run_id: str) -> bool:
    from kiln.server.runs_api import check_run_key

    try:
        return ctx.store.get_run(check_run_key(run_id)).finished
    except KilnError:
        return False
