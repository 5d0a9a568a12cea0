"""``/api/v1/notebooks`` and ``/api/v1/runs``: the project's notebooks, and runs submitted to
the queue, listed, followed, rendered and cancelled.

A submission's fields are the run options' own names (:mod:`kiln.options`), so the API, the
CLI and ``kiln.run`` take the same options; ``env`` is the one the API does without
(``options.NOT_FOR["server"]`` says why). A submission is validated as any run is and
committed ``queued`` before the answer (202) goes out; a worker process runs it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.concurrency import run_in_threadpool

from kiln.errors import RunNotFound, UsageError
from kiln.options import NOT_FOR, OPTIONS, OptionError
from kiln.server.auditlog import record
from kiln.server.auth import Principal, client_address, principal, requires
from kiln.server.errors import HTTPProblem
from kiln.store.records import STATES, Run

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from kiln.server.app import ServerContext

_LAST_OFFSET = 2**40  # 1 TiB: past any log, and every file system seeks there
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: the pid on the run log's "kernel NAME ready (...)" line (the runner writes it)
_KERNEL_PID = re.compile(r"^(\S+ kernel \S+ (?:\(\w+\) )?ready \(.*), pid \d+\)$", re.M)
_RUN_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
#: how often a followed log is read, and a keep-alive comment sent on a quiet stream
_FOLLOW_EVERY = 0.25
_KEEPALIVE = 15.0
#: live log streams open at once, per user and in all: each polls the history, so without a
#: bound one client could open hundreds and starve every other request
FOLLOWERS_PER_USER = 8
FOLLOWERS = 64

_TYPES: dict[str, Any] = {
    "text": str | None,
    "choice": str | None,
    "path": str | None,
    "duration": float | str | None,
    "size": int | str | None,
    "switch": bool | None,
    "tags": dict[str, str | int | float | bool] | None,  # numbers and booleans become text
}


def submission_model() -> Any:
    """The body of ``POST /api/v1/runs``: notebook, parameters, retries and every run option
    the API takes, documented with the option's own help."""
    from pydantic import ConfigDict, Field, create_model

    fields: dict[str, Any] = {
        "notebook": (str, Field(description="the notebook, relative to the project root")),
        "parameters": (
            dict[str, Any],
            Field(default_factory=dict, description="parameter values as JSON"),
        ),
        "parameters_text": (
            dict[str, str],
            Field(
                default_factory=dict,
                description="parameter values as text, typed by the notebook's parameters "
                "cell like `kiln run -p` (a value in `parameters` wins)",
            ),
        ),
        "retries": (
            int,
            Field(0, ge=0, le=20, description="run again up to N times if its worker dies"),
        ),
    }
    for option in OPTIONS:
        if option.name in NOT_FOR["server"]:
            continue
        fields[option.name] = (
            _TYPES[option.metadata["kind"]],
            Field(None, description=option.metadata["help"]),
        )
    return create_model("RunSubmission", __config__=ConfigDict(extra="forbid"), **fields)


RunSubmission = submission_model()


#: where a run lives on the server's machine: shown to admins only (a reader needs the
#: notebook's path within the project, and the routes that serve the files)
MACHINE_FIELDS = (
    "notebook_path",
    "run_dir",
    "input_path",
    "output_path",
    "log_path",
    "owner_pid",
    "owner_host",
    "owner_started",
    "kernel_pid",
    "kernel_started",
    "lease_owner",
)


def run_json(ctx: ServerContext, run: Run, who: Principal | None = None) -> dict[str, Any]:
    """A run as the API shows it: the record, the notebook relative to the project, the
    options it was submitted with (environment values left out); the server's paths and
    processes only for an admin."""
    out = run.to_json()
    if who is None or not who.may("admin"):
        for name in MACHINE_FIELDS:
            out.pop(name, None)
    request = out.pop("request", None) or {}
    options = dict(request.get("options") or {})
    if "env" in options:
        options["env"] = sorted(options["env"])
    options.pop("cwd", None)
    out["options"] = options
    out["notebook"] = ctx.notebooks.relative(run.notebook_path)
    return out


def encode_cursor(key: tuple[datetime, str]) -> str:
    raw = json.dumps([key[0].isoformat(), key[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        when, run_id = json.loads(raw)
        return datetime.fromisoformat(when), str(run_id)
    except (ValueError, TypeError, binascii.Error):
        raise HTTPProblem(422, "cursor: not a cursor this API returned", field="cursor") from None


def parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    from kiln.units import parse_since as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise HTTPProblem(422, f"since: {exc}", field="since") from None


def check_run_key(key: str) -> str:
    if not key or len(key) > 128 or not set(key) <= _RUN_KEY or key.startswith("."):
        raise RunNotFound(f"no run {key!r}")
    return key


def start_run(
    ctx: ServerContext,
    who: Principal,
    address: str,
    notebook: str,
    *,
    parameters: dict[str, Any] | None = None,
    parameters_text: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
    retries: int = 0,
    via: str = "api",
) -> Run:
    """Submit a run to the queue for ``who`` (validated as any run is, committed ``queued``,
    audited): what ``POST /api/v1/runs`` and the web UI's forms both call. Roles are the
    caller's to check."""
    from kiln.parameters import CliValue
    from kiln.queue import submit
    from kiln.request import RunRequest
    from kiln.server.settings import confine

    path = ctx.notebooks.resolve(notebook)
    options = dict(options or {})
    if "cwd" in options:
        try:
            options["cwd"] = str(confine(ctx.settings.root, str(options["cwd"])))
        except UsageError as exc:
            raise OptionError("cwd", exc.message) from None
    values: dict[str, Any] = {k: CliValue(v) for k, v in (parameters_text or {}).items()}
    values.update(parameters or {})
    run = submit(
        RunRequest.build(path, parameters=values, **options),
        store=ctx.store,
        retries=retries,
        submitted_by=who.name,
        tags={"kiln.user": who.name},  # the trigger's tag, after the caller's own
    )
    if ctx.wake is not None:
        ctx.wake()
    details: dict[str, Any] = {
        "notebook": ctx.notebooks.relative(path),
        "parameters": run.parameters,
        "options": options,
        "retries": retries,
    }
    if via != "api":
        details["via"] = via
    record(
        ctx.store,
        actor=who.name,
        action="run.submit",
        target=run.id,
        address=address,
        details=details,
    )
    return run


def cancel(ctx: ServerContext, who: Principal, address: str, run_id: str, via: str = "API") -> Run:
    """Cancel a queued or running run (409 when it already ended), audited; the run now."""
    from kiln.store.queue import request_cancel

    run = ctx.store.get_run(check_run_key(run_id))
    if run.finished:
        raise HTTPProblem(409, f"run {run.id} already ended: {run.state}")
    now = request_cancel(ctx.store, run.id, reason=f"cancelled by {who.name} ({via})")
    record(
        ctx.store,
        actor=who.name,
        action="run.cancel",
        target=run.id,
        address=address,
        details={"state_before": run.state.value},
    )
    return now


def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter()
    reader = Depends(principal)
    runner = Depends(requires("runner"))

    @api.get("/notebooks", tags=["notebooks"], summary="the project's notebooks and parameters")
    def notebooks(who: Principal = reader) -> list[dict[str, Any]]:
        return ctx.notebooks.listing()

    @api.get("/notebooks/{path:path}", tags=["notebooks"], summary="one notebook's parameters")
    def notebook(path: str, who: Principal = reader) -> dict[str, Any]:
        found = ctx.notebooks.resolve(path)
        return {"path": ctx.notebooks.relative(found), "parameters": ctx.notebooks.schema(found)}

    @api.post("/runs", tags=["runs"], status_code=202, summary="submit a run to the queue")
    def submit_run(body: RunSubmission, request: Request, who: Principal = runner) -> JSONResponse:  # type: ignore[valid-type]
        given: dict[str, Any] = body.model_dump()  # type: ignore[attr-defined]
        options = {
            o.name: given[o.name]
            for o in OPTIONS
            if o.name not in NOT_FOR["server"] and given.get(o.name) is not None
        }
        run = start_run(
            ctx,
            who,
            client_address(request),
            given["notebook"],
            parameters=given["parameters"],
            parameters_text=given["parameters_text"],
            options=options,
            retries=given["retries"],
        )
        location = ctx.url(f"/api/v1/runs/{run.id}")
        return JSONResponse(
            run_json(ctx, run, who), status_code=202, headers={"Location": location}
        )

    @api.get("/runs", tags=["runs"], summary="runs, newest first (cursor pagination)")
    def list_runs(
        notebook: str | None = None,
        state: list[str] = Query(default=[]),  # noqa: B008
        since: str | None = Query(None, description="ISO-8601 time, or a duration ago: 2d"),
        param: list[str] = Query(default=[], description="NAME=VALUE (JSON value)"),  # noqa: B008
        tag: list[str] = Query(default=[], description="KEY=VALUE: runs with this tag"),  # noqa: B008
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = None,
        who: Principal = reader,
    ) -> dict[str, Any]:
        from kiln.server.settings import confine
        from kiln.store import pages

        states = [s for given in state for s in given.split(",") if s]
        for one in states:
            if one not in STATES:
                raise HTTPProblem(
                    422,
                    f"state: unknown state {one!r} (expected one of {', '.join(STATES)})",
                    field="state",
                )
        paths: list[str] = []
        name = None
        if notebook:
            if "/" in notebook:
                try:
                    paths = [str(confine(ctx.settings.root, notebook))]
                except UsageError as exc:
                    raise HTTPProblem(422, f"notebook: {exc.message}", field="notebook") from None
            else:
                name = notebook
        page, after = pages.runs_page(
            ctx.store,
            notebooks=paths,
            notebook_name=name,
            states=states,
            since=parse_since(since),
            parameters=_params(param),
            tags=_tags(tag),
            after=decode_cursor(cursor) if cursor else None,
            limit=limit,
        )
        return {
            "items": [run_json(ctx, run, who) for run in page],
            "next_cursor": encode_cursor(after) if after else None,
        }

    @api.get("/runs/{run_id}", tags=["runs"], summary="one run (id, unique prefix or 'last')")
    def get_run(run_id: str, who: Principal = reader) -> dict[str, Any]:
        return run_json(ctx, ctx.store.get_run(check_run_key(run_id)), who)

    @api.get("/runs/{run_id}/log", tags=["runs"], summary="the run's log (text, or SSE)")
    async def run_log(
        run_id: str,
        request: Request,
        follow: bool = Query(False, description="stream as Server-Sent Events until it ends"),
        who: Principal = reader,
    ) -> Any:
        run = await run_in_threadpool(ctx.store.get_run, check_run_key(run_id))
        if follow or "text/event-stream" in request.headers.get("accept", ""):
            start = _offset(request.headers.get("last-event-id"))
            return FollowedLog(
                _follow(ctx, run, start, request, log_view(ctx, run, who)),
                release=ctx.followers.take(who.name),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        text = ""  # a queued run has no log yet
        if run.log_path:
            with contextlib.suppress(FileNotFoundError):
                data = await run_in_threadpool(_read_log, ctx, run, 0)
                text = log_view(ctx, run, who)(data.decode("utf-8", "replace"))
        return PlainTextResponse(text)

    @api.get("/runs/{run_id}/notebook", tags=["runs"], summary="the output notebook (.ipynb)")
    def run_notebook(run_id: str, who: Principal = reader) -> Response:
        from kiln.store.artifacts import is_remote, read_bytes

        run = ctx.store.get_run(check_run_key(run_id))
        path = _output(run)
        name = f"{run.id}.ipynb"
        if not is_remote(path):
            return FileResponse(path, media_type="application/x-ipynb+json", filename=name)
        return Response(
            _output_bytes(run, read_bytes),
            media_type="application/x-ipynb+json",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @api.get(
        "/runs/{run_id}/html",
        tags=["runs"],
        summary="the rendered output, served in a sandbox (no origin, no cookies)",
    )
    def run_html(run_id: str, who: Principal = reader) -> HTMLResponse:
        run = ctx.store.get_run(check_run_key(run_id))
        return sandboxed_html(run)

    @api.post("/runs/{run_id}/cancel", tags=["runs"], summary="cancel a queued or running run")
    def cancel_run(run_id: str, request: Request, who: Principal = runner) -> JSONResponse:
        now = cancel(ctx, who, client_address(request), run_id)
        out = run_json(ctx, now, who)
        out["detail"] = "cancelled" if now.finished else "cancel requested: its worker stops it"
        return JSONResponse(out, status_code=200 if now.finished else 202)

    return api


def sandboxed_html(run: Run, *, hide_code: bool = False) -> HTMLResponse:
    """A run's rendered output notebook, served in a sandbox (scripts run with an opaque
    origin: no cookies, no access to the API or the UI); only Kiln's pages may frame it."""
    from kiln.notebook import load_notebook
    from kiln.report.render import render_html
    from kiln.server.middleware import SANDBOX_CSP
    from kiln.store.artifacts import is_remote, read_bytes

    path = _output(run)
    if is_remote(path):
        import nbformat

        text = _output_bytes(run, read_bytes).decode("utf-8")
        notebook = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    else:
        notebook = load_notebook(path)
    title = f"{Path(run.notebook_path).name} — run {run.id}"
    page = render_html(notebook, title=title, hide_code=hide_code)
    return HTMLResponse(
        page,
        headers={"Content-Security-Policy": SANDBOX_CSP, "X-Frame-Options": "SAMEORIGIN"},
    )


#: filters of one kind a list takes (each is a condition of the query)
MAX_FILTERS = 20


def _bounded(pairs: list[str], field: str) -> list[str]:
    if len(pairs) > MAX_FILTERS:
        raise HTTPProblem(
            422, f"{field}: at most {MAX_FILTERS} filters, got {len(pairs)}", field=field
        )
    return pairs


def _params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _bounded(pairs, "param")
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise HTTPProblem(422, f"param: expected NAME=VALUE, got {pair!r}", field="param")
        try:
            out[name] = json.loads(text)
        except ValueError:
            out[name] = text
    return out


def _tags(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    _bounded(pairs, "tag")
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key or "\0" in pair:
            raise HTTPProblem(422, f"tag: expected KEY=VALUE, got {pair!r}", field="tag")
        out[key] = text
    return out


def _offset(text: str | None) -> int:
    """A ``Last-Event-ID``: a byte offset into the log (junk: from the start; past any file
    size: nothing more to send, rather than an offset ``seek`` cannot take)."""
    try:
        return min(max(0, int(text)), _LAST_OFFSET) if text and len(text) <= 40 else 0
    except ValueError:
        return 0


def _output(run: Run) -> str:
    from kiln.store.artifacts import is_remote

    if not run.output_path or (
        not is_remote(run.output_path) and not Path(run.output_path).is_file()
    ):
        raise HTTPProblem(404, f"run {run.id} has no output notebook (yet)")
    return run.output_path


def _output_bytes(run: Run, read: Callable[[str], bytes]) -> bytes:
    """The output notebook in the artefact store (404 until its first copy is there)."""
    try:
        return read(str(run.output_path))
    except FileNotFoundError:
        raise HTTPProblem(404, f"run {run.id} has no output notebook (yet)") from None
    except OSError as exc:
        raise HTTPProblem(502, f"run {run.id}: {exc}") from None


def _read_log(ctx: ServerContext, run: Run, position: int) -> bytes:
    """The log from ``position``: the live file of a run going on in the server's own home,
    else the run's log file or object."""
    from kiln.store.artifacts import read_range

    live = ctx.store.run_folder(run.id) / "run.log"
    return read_range(str(run.log_path), position, live=live)[: 1024 * 1024]


def _event(kind: str, data: str, event_id: int | None = None) -> bytes:
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    # a stream's lines end at CR, LF or CRLF: a CR left in the data would end the line there
    # and let the log write fields of its own (event:, id:)
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


class Followers:
    """Counts the live log streams open per user; :meth:`take` refuses one too many (429)."""

    def __init__(self, per_user: int = FOLLOWERS_PER_USER, total: int = FOLLOWERS) -> None:
        self.per_user = per_user
        self.total = total
        self.open: dict[str, int] = {}

    def take(self, user: str) -> Callable[[], None]:
        """Count one more stream of ``user``; returns what to call once it has ended."""
        if self.open.get(user, 0) >= self.per_user:
            raise HTTPProblem(
                429,
                f"{user} already follows {self.per_user} live logs: close one, or read the "
                "log without following it",
                headers={"Retry-After": "5"},
            )
        if sum(self.open.values()) >= self.total:
            raise HTTPProblem(
                429,
                f"the server already streams {self.total} live logs; try again shortly",
                headers={"Retry-After": "5"},
            )
        self.open[user] = self.open.get(user, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.open[user] -= 1
            if not self.open[user]:
                del self.open[user]

        return release


class FollowedLog(StreamingResponse):
    """A stream of events that gives its follower's place back however it ends (finished,
    client gone, server stopping), even if its generator never started."""

    def __init__(self, content: AsyncIterator[bytes], *, release: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def log_view(ctx: ServerContext, run: Run, who: Principal) -> Callable[[str], str]:
    """How ``who`` sees the run's log lines: an admin as written; anyone else without where
    the run lives on the server's machine (as :data:`MACHINE_FIELDS`): paths under the project
    become relative to it, the run's folder is named as such, the kernel's pid left out."""
    if who.may("admin"):
        return lambda text: text
    places = []
    if run.run_dir:
        places.append((str(run.run_dir).rstrip("/"), "<run folder>"))
    places.append((str(ctx.settings.root).rstrip("/") + "/", ""))

    def view(text: str) -> str:
        for place, name in places:
            text = text.replace(place, name)
        return _KERNEL_PID.sub(r"\1)", text)

    return view


async def _follow(
    ctx: ServerContext,
    run: Run,
    start: int,
    request: Request,
    view: Callable[[str], str] = lambda text: text,
) -> AsyncIterator[bytes]:
    """The log as events: ``log`` (whole lines; the id is the byte offset, so a reconnecting
    client resumes with ``Last-Event-ID``), then one ``end`` with the run's final state."""
    position, pending = start, b""
    quiet_since = time.monotonic()
    while True:
        now = await run_in_threadpool(ctx.store.get_run_exact, run.id)
        data = b""
        if now.log_path:  # a queued run gets its log when a worker takes it
            with contextlib.suppress(FileNotFoundError):
                data = await run_in_threadpool(_read_log, ctx, now, position)
        if data:
            position += len(data)
            *lines, pending = (pending + data).split(b"\n")
            if lines:
                text = b"\n".join(lines).decode("utf-8", errors="replace")
                yield _event("log", view(text), position - len(pending))
                quiet_since = time.monotonic()
            if len(data) == 1024 * 1024:
                continue  # more to read at once
        if now.finished:
            if pending:
                yield _event("log", view(pending.decode("utf-8", errors="replace")), position)
            yield _event(
                "end", json.dumps({"id": now.id, "state": now.state.value, "reason": now.reason})
            )
            return
        if ctx.shutdown.is_set() or await request.is_disconnected():
            return
        if time.monotonic() - quiet_since > _KEEPALIVE:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(_FOLLOW_EVERY)
