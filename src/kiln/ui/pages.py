"""The pages: login and logout, home, a notebook's form, the runs list and a run's live page.

A form that starts a run goes through :func:`kiln.server.runs_api.start_run`, the function
``POST /api/v1/runs`` calls: one run path, validated, queued and audited the same way.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kiln.errors import KilnError, ParameterError
from kiln.server.auth import SESSION_COOKIE, Principal, client_address
from kiln.server.errors import HTTPProblem
from kiln.store.records import STATES, Run
from kiln.ui import forms
from kiln.ui.web import form_of, fragment, page, set_csrf

if TYPE_CHECKING:
    from kiln.server.app import ServerContext
    from kiln.ui.catalog import Catalog

#: runs a list page shows
PAGE_SIZE = 50
#: log bytes a run page shows before it follows the rest live
LOG_TAIL = 64 * 1024


def who_of(request: Request) -> Principal:
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):
        raise HTTPProblem(401, "please log in")
    return found


def need(request: Request, role: str) -> Principal:
    who = who_of(request)
    if not who.may(role):
        what = "managing users, tokens and the audit log" if role == "admin" else "this"
        if role == "runner":
            what = "starting and cancelling runs"
        raise HTTPProblem(403, f"{who.name} is a {who.role}: {what} needs the {role} role")
    return who


async def start_from_form(
    ctx: ServerContext,
    request: Request,
    who: Principal,
    path: str,
    parameters: dict[str, Any],
    texts: dict[str, str],
    *,
    via: str,
) -> Run:
    """Start a run from a page's form through the API's one submit path, off the loop."""
    from kiln.server.runs_api import start_run

    return await run_in_threadpool(
        lambda: start_run(
            ctx,
            who,
            client_address(request),
            path,
            parameters=parameters,
            parameters_text=texts,
            via=via,
        )
    )


def row(ctx: ServerContext, run: Run) -> dict[str, Any]:
    """A run as a list shows it."""
    return {
        "id": run.id,
        "notebook": ctx.notebooks.relative(run.notebook_path),
        "state": run.state.value,
        "created_at": run.created_at,
        "duration": run.duration,
        "user": run.submitted_by,
    }


def _safe_next(target: str | None) -> str:
    """Where to go after a login: a path of this server only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def router(ctx: ServerContext, catalog: Catalog) -> APIRouter:
    web = APIRouter(include_in_schema=False)

    # -- login, logout -------------------------------------------------------------------------

    @web.get("/login")
    def login_page(request: Request, next: str = "/", out: str = "") -> HTMLResponse:
        message = "You are logged out." if out else ""
        return page(
            ctx,
            request,
            "login.html",
            title="Log in",
            next=_safe_next(next),
            error="",
            message=message,
            username="",
        )

    @web.post("/login")
    async def login(request: Request) -> Response:
        from kiln.server.accounts_api import login_user, set_session

        form = await form_of(request)
        username, password = form.get("username", ""), form.get("password", "")
        target = _safe_next(form.get("next"))
        try:
            secret = await run_in_threadpool(login_user, ctx, request, username, password)
        except HTTPProblem as exc:
            answer = page(
                ctx,
                request,
                "login.html",
                status=exc.status,
                title="Log in",
                next=target,
                error=exc.detail,
                message="",
                username=username,
            )
            for key, value in exc.headers.items():
                if key.lower() == "retry-after":
                    answer.headers[key] = value
            return answer
        response = RedirectResponse(ctx.url(target), status_code=303)
        set_session(ctx, request, response, secret)
        set_csrf(ctx, request, response, secrets.token_urlsafe(32))  # a new one with the login
        return response

    @web.post("/logout")
    async def logout(request: Request) -> Response:
        from kiln.server.accounts_api import logout_user

        await form_of(request)
        await run_in_threadpool(logout_user, ctx, request, who_of(request))
        response = RedirectResponse(ctx.url("/login?out=1"), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=ctx.settings.root_path or "/")
        return response

    # -- home ----------------------------------------------------------------------------------

    @web.get("/")
    def home(request: Request) -> HTMLResponse:
        from kiln.store import pages

        entries, problems = catalog.entries()
        notebooks = []
        for entry in entries:
            last, _after = pages.runs_page(ctx.store, notebooks=[str(entry.file)], limit=1)
            notebooks.append({**entry.__dict__, "last": last[0] if last else None})
        recent, _after = pages.runs_page(ctx.store, limit=10)
        return page(
            ctx,
            request,
            "home.html",
            title="Home",
            section="home",
            notebooks=notebooks,
            problems=problems,
            recent=[row(ctx, r) for r in recent],
        )

    # -- a notebook: its form, history and source ----------------------------------------------

    def notebook_page(
        request: Request,
        path: str,
        *,
        given: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        form_error: str = "",
        status: int = 200,
        state: str = "",
    ) -> HTMLResponse:
        from kiln.store import pages

        entry = catalog.get(path)
        read = catalog.read(entry.file)
        who = who_of(request)
        fields = (
            forms.fields(read.schema, given=given, defaults=entry.defaults, errors=errors)
            if read.schema is not None
            else []
        )
        states = [state] if state in STATES else []
        history, after = pages.runs_page(
            ctx.store, notebooks=[str(entry.file)], states=states, limit=20
        )
        from kiln.server.runs_api import encode_cursor

        return page(
            ctx,
            request,
            "notebook.html",
            status=status,
            title=entry.title,
            section="home",
            nb=entry,
            fields=fields,
            schema_error=read.error,
            form_error=form_error,
            may_run=who.may("runner"),
            history=[row(ctx, r) for r in history],
            states=STATES,
            filters={"state": state},
            cells=read.cells,
            next_cursor=encode_cursor(after) if after else None,
        )

    @web.get("/notebooks/{path:path}")
    def notebook(request: Request, path: str, state: str = "") -> HTMLResponse:
        given = {k: v for k, v in request.query_params.items() if k != "state"}
        return notebook_page(request, path, given=given or None, state=state)

    @web.post("/notebooks/{path:path}")
    async def start(request: Request, path: str) -> Response:

        form = await form_of(request)
        who = need(request, "runner")
        entry = catalog.get(path)
        read = catalog.read(entry.file)
        if read.schema is None:
            raise HTTPProblem(422, read.error or "the notebook cannot be read")
        values, errors = forms.read(read.schema, form)
        if errors:
            return notebook_page(
                request,
                path,
                given=form,
                errors=errors,
                status=422,
                form_error="Some values are not right: see the fields below.",
            )
        parameters, texts = forms.split(values)
        try:
            run = await start_from_form(ctx, request, who, entry.path, parameters, texts, via="ui")
        except ParameterError as exc:
            field_errors = {exc.name: exc.message} if exc.name else {}
            return notebook_page(
                request,
                path,
                given=form,
                errors=field_errors,
                status=422,
                form_error="" if field_errors else exc.message,
            )
        except KilnError as exc:
            return notebook_page(request, path, given=form, status=422, form_error=exc.message)
        return RedirectResponse(ctx.url(f"/runs/{run.id}"), status_code=303)

    # -- runs ------------------------------------------------------------------------------------

    @web.get("/runs")
    def runs(request: Request) -> HTMLResponse:
        from kiln.server.runs_api import decode_cursor, encode_cursor
        from kiln.server.settings import confine
        from kiln.store import pages

        q = request.query_params
        filters = {k: q.get(k, "").strip() for k in ("notebook", "state", "user", "from", "to")}
        problem = ""
        kw: dict[str, Any] = {}
        name = filters["notebook"]
        if name:
            # a path names one notebook; a bare name (with or without .ipynb) that file in
            # any folder: one indexed column either way (an OR of both scans the table)
            if "/" in name:
                try:
                    kw["notebooks"] = [str(confine(ctx.settings.root, name))]
                except KilnError as exc:
                    problem = f"notebook: {exc.message}"
            else:
                kw["notebook_name"] = name if name.endswith(".ipynb") else name + ".ipynb"
        if filters["state"]:
            if filters["state"] in STATES:
                kw["states"] = [filters["state"]]
            else:
                problem = f"state: unknown state {filters['state']!r}"
        if filters["user"]:
            kw["submitted_by"] = filters["user"]
        for key, arg, extra in (("from", "since", 0), ("to", "until", 1)):
            if filters[key]:
                try:
                    day = datetime.strptime(filters[key], "%Y-%m-%d").replace(tzinfo=timezone.utc)
                    kw[arg] = day + timedelta(days=extra)
                except ValueError:
                    problem = f"{key}: expected a date as YYYY-MM-DD, got {filters[key]!r}"
        cursor = q.get("cursor")
        found: list[Run] = []
        after = None
        if not problem:
            try:
                found, after = pages.runs_page(
                    ctx.store,
                    after=decode_cursor(cursor) if cursor else None,
                    limit=PAGE_SIZE,
                    **kw,
                )
            except HTTPProblem as exc:
                problem = exc.detail
        base = urlencode({k: v for k, v in filters.items() if v})
        return page(
            ctx,
            request,
            "runs.html",
            title="Runs",
            section="runs",
            runs=[row(ctx, r) for r in found],
            filters=filters,
            states=STATES,
            filter_error=problem,
            cursor=cursor,
            base_query=base,
            next_cursor=encode_cursor(after) if after else None,
            notebook_paths=[e.path for e in catalog.entries()[0]][:200],
        )

    def run_values(request: Request, run: Run) -> dict[str, Any]:
        """What the run page and its live part show."""
        from kiln.ui.web import csrf_value

        notebook = ctx.notebooks.relative(run.notebook_path)
        try:
            catalog.get(notebook)
            nb_link = True
        except KilnError:
            nb_link = False
        sources = _output_sources(run.output_path) if run.finished else []
        cells = []
        for index, seconds in enumerate(run.cell_durations or []):
            if seconds is None:
                continue
            source = sources[index] if index < len(sources) else ""
            first = source.strip().splitlines()[0] if source.strip() else ""
            cells.append({"index": index, "seconds": seconds, "first_line": first[:80]})
        return {
            "run": run,
            "cells": cells,
            "records": [_record(r) for r in run.records_list],
            "error_text": _error_text(run.error),
            "current_cell": "",
            "notebook": notebook,
            "nb_link": nb_link,
            "may_run": who_of(request).may("runner"),
            "again_query": urlencode({k: forms.as_text(v) for k, v in run.parameters.items()}),
            "csrf": csrf_value(request)[0],
        }

    @web.get("/runs/{run_id}")
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        from kiln.server.runs_api import check_run_key

        run = ctx.store.get_run(check_run_key(run_id))
        values = run_values(request, run)
        values.pop("csrf")
        return page(
            ctx,
            request,
            "run.html",
            title=f"Run {run.id}",
            section="runs",
            log_text=_log_head(ctx, run, who_of(request)),
            **values,
        )

    @web.get("/runs/{run_id}/live")
    def run_live(request: Request, run_id: str) -> HTMLResponse:
        from kiln.server.runs_api import check_run_key

        run = ctx.store.get_run(check_run_key(run_id))
        return fragment("run_live.html", ctx, **run_values(request, run))

    @web.post("/runs/{run_id}/cancel")
    async def cancel(request: Request, run_id: str) -> Response:
        from kiln.server.runs_api import cancel as cancel_run

        await form_of(request)
        who = need(request, "runner")
        await run_in_threadpool(cancel_run, ctx, who, client_address(request), run_id, "web UI")
        return RedirectResponse(ctx.url(f"/runs/{run_id}"), status_code=303)

    return web


#: cells a failed run's output notebook gains (the banner and the marker), not timed
_ADDED = frozenset({"kiln-error-banner", "kiln-error-marker"})


@functools.lru_cache(maxsize=64)
def _sources(path: str, _stamp: tuple[int, int]) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as handle:
        cells = json.load(handle).get("cells", [])
    found = []
    for cell in cells:
        if _ADDED & set(cell.get("metadata", {}).get("tags") or ()):
            continue
        source = cell.get("source", "")
        found.append("".join(source) if isinstance(source, list) else str(source))
    return tuple(found)


def _output_sources(path: str | None) -> tuple[str, ...]:
    """The sources of an ended run's output notebook's cells (the ones its cell timings
    count, the injected parameters included); nothing when it is not a local file."""
    if not path:
        return ()
    try:
        stat = os.stat(path)
        return _sources(path, (stat.st_mtime_ns, stat.st_size))
    except (OSError, ValueError, AttributeError):
        return ()


def _log_head(ctx: ServerContext, run: Run, who: Principal) -> str:
    """The log so far for a finished run (a running one streams it from the start), as
    ``who`` may see it."""
    from kiln.server.runs_api import log_view

    if not run.finished or not run.log_path:
        return ""
    from pathlib import Path

    try:
        with Path(run.log_path).open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL))
            data = handle.read()
    except OSError:
        return ""
    text = log_view(ctx, run, who)(data.decode("utf-8", "replace"))
    return ("[… earlier lines left out]\n" + text) if size > LOG_TAIL else text


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    parts = [f"{error.get('ename', 'Error')}: {error.get('evalue', '')}"]
    if error.get("cell_index") is not None:
        parts.append(f"(cell {error['cell_index']})")
    return " ".join(parts)


_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/svg+xml"})


def _record(record: Any) -> dict[str, Any]:
    """A record as the run page shows it: an image, a table, or its JSON."""
    from markupsafe import Markup

    from kiln.report.render import table_html

    value = record.value
    if record.kind == "image" and isinstance(value, dict) and value.get("mime") in _IMAGES:
        data = str(value.get("data", ""))
        if all(c.isalnum() or c in "+/=\n" for c in data):  # base64, nothing else
            return {
                "name": record.name,
                "kind": "image",
                "src": f"data:{value['mime']};base64,{data.replace(chr(10), '')}",
            }
    if record.kind == "dataframe" and isinstance(value, dict):
        # table_html escapes every header and cell
        return {"name": record.name, "kind": "table", "html": Markup(table_html(value))}
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return {"name": record.name, "kind": "json", "text": text}
