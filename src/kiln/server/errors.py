"""Kiln's errors as HTTP answers: the one place that decides the status of each.

Every error answer is JSON: ``{"detail": "<what went wrong, in words>"}``, plus ``"field"``
when one input is to blame (``"parameters.region"``, ``"timeout"``, ``"limit"``), the way the
CLI names a flag. Routes raise :mod:`kiln.errors` (or :class:`HTTPProblem` for what only HTTP
knows: 401, 403, 429...); the handlers installed by :func:`install` turn them into answers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kiln.errors import (
    AccountError,
    AccountExists,
    AccountNotFound,
    EngineError,
    HomeNotWritable,
    KilnError,
    LintGateFailed,
    NotebookError,
    NotebookNotFound,
    ParameterError,
    RunFailed,
    RunNotFound,
    StoreError,
    UsageError,
)
from kiln.options import NOT_FOR, OptionError

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

log = logging.getLogger("kiln.server")

#: most specific first; the first class an error is an instance of decides
STATUS: tuple[tuple[type[KilnError], int], ...] = (
    (RunNotFound, 404),
    (AccountNotFound, 404),
    (NotebookNotFound, 404),
    (AccountExists, 409),
    (ParameterError, 422),
    (OptionError, 422),
    (NotebookError, 422),
    (LintGateFailed, 422),
    (AccountError, 422),
    (EngineError, 422),
    (UsageError, 422),
    (HomeNotWritable, 503),
    (StoreError, 503),
    (RunFailed, 500),
    (KilnError, 500),
)


class HTTPProblem(Exception):
    """An answer only HTTP has words for (401, 403, 409, 429...), with optional headers."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}


def status_of(exc: KilnError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def field_of(exc: KilnError) -> str | None:
    """The input an error is about, named as in the request."""
    if isinstance(exc, ParameterError) and exc.name:
        return f"parameters.{exc.name}"
    if isinstance(exc, OptionError):
        return exc.option
    if isinstance(exc, NotebookError):
        return "notebook"
    return None


def body(detail: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"detail": detail}
    if field is not None:
        out["field"] = field
    out.update(extra)
    return out


def install(app: FastAPI) -> None:
    """Register the handlers: Kiln errors, HTTP problems, request validation, the rest."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def kiln_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KilnError)
        status = status_of(exc)
        if status >= 500:
            log.error("request failed: %s", exc.message)
        detail = relative_to_project(exc.message, request)
        if status == 503:  # where the history is kept, and how it failed, are the server's
            detail = "the run history is not available right now; the server's log has why"
        found = body(detail, field_of(exc))
        return _answer(request, found, status)

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPProblem)
        found = body(exc.detail, exc.field, **exc.extra)
        return _answer(request, found, exc.status, exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _answer(request, body(str(exc.detail)), exc.status_code, exc.headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _answer(request, validation_body(exc.errors()), 422)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("internal error: %s: %s", type(exc).__name__, exc)
        detail = f"internal error ({type(exc).__name__}); the server's log has the details"
        return _answer(request, body(detail), 500)

    app.add_exception_handler(KilnError, kiln_error)
    app.add_exception_handler(HTTPProblem, problem)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


def _answer(
    request: Request,
    found: dict[str, Any],
    status: int,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """JSON for the API; on a page's path, the page the web UI renders (when it is served)."""
    from fastapi.responses import JSONResponse

    render = getattr(request.app.state, "error_page", None)
    if render is not None and is_page_path(request):
        answer: Response = render(request, status, str(found["detail"]))
        for key, value in (headers or {}).items():
            if key.lower() != "www-authenticate":
                answer.headers[key] = value
        return answer
    return JSONResponse(found, status_code=status, headers=dict(headers) if headers else None)


def is_page_path(request: Request) -> bool:
    """Whether a request is for one of the web UI's pages rather than the API."""
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if path.startswith(("/api/", "/ui/static/")):
        return False
    return path not in ("/openapi.json", "/metrics", "/health", "/docs")


def relative_to_project(message: str, request: Request) -> str:
    """``message`` with the project's folder left out of the paths it names: callers name
    notebooks relative to the project, and need not learn where the server keeps it."""
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        return message
    root = str(ctx.settings.root).rstrip("/") + "/"
    return message.replace(root, "")


def validation_body(errors: Any) -> dict[str, Any]:
    """FastAPI's validation errors as one sentence naming the first bad field."""
    problems = []
    first: str | None = None
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        where = ".".join(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
        if loc == ["body"]:
            where = "body"
        first = first or where
        message = error.get("msg", "invalid")
        if error.get("type") == "extra_forbidden" and where in NOT_FOR["server"]:
            message = f"not accepted by the server: {NOT_FOR['server'][where]}"
        problems.append(f"{where}: {message}")
    return body("; ".join(problems) or "invalid request", first)
