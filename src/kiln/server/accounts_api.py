"""Logins, users, tokens and the audit log over HTTP (``/api/v1/login``, ``/users``,
``/tokens``, ``/audit``); the login page is the web UI's (:mod:`kiln.ui.pages`).

A login (JSON, or the page's form) checks the password with argon2, off the event loop, and
answers with a session cookie (``HttpOnly``, ``SameSite=Lax`` so a link from elsewhere opens a
page logged in; ``Secure`` over HTTPS; every page's form carries a CSRF token): a
session is a token of kind ``session``, stored hashed like API tokens. More than
:data:`~kiln.server.auth.MAX_FAILURES` failed logins in a minute from one address or for one
user are answered 429. Every login, success or failure, is in the audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kiln.server import accounts as service
from kiln.server.auditlog import record
from kiln.server.auth import SESSION_COOKIE, Principal, client_address, principal, requires
from kiln.server.errors import HTTPProblem
from kiln.store import accounts, audit

if TYPE_CHECKING:
    from kiln.server.app import ServerContext


def _no_nul(text: str) -> str:
    if "\0" in text:
        raise ValueError("NUL characters are not accepted")
    return text


#: text that goes into the accounts and the audit log (PostgreSQL refuses NUL in text)
Text = Annotated[str, AfterValidator(_no_nul)]


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Text = Field(max_length=256)
    password: Text = Field(max_length=1024)


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text
    role: Text = "viewer"
    password: Text | None = Field(None, description="none: signs in only by token or proxy")


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Text | None = None
    password: Text | None = None


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: Text | None = Field(None, description="whose token (admins only; default: yours)")
    expires: float | str | None = Field(None, description="lifetime: 30d, 12h, seconds")
    label: Text | None = Field(None, max_length=255)


def _lifetime(value: float | str | None) -> float | None:
    if value is None:
        return None
    from kiln.server.accounts import MAX_TOKEN_LIFETIME
    from kiln.units import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise HTTPProblem(422, f"expires: {exc}", field="expires") from None
    if not 0 < seconds <= MAX_TOKEN_LIFETIME:
        raise HTTPProblem(
            422,
            "expires: a token's lifetime must be positive and at most 10 years "
            "(leave it out for a token that never expires)",
            field="expires",
        )
    return seconds


def login_user(ctx: ServerContext, request: Request, username: str, password: str) -> str:
    """Check a login (throttled, audited); the new session's secret."""
    if "\0" in username or "\0" in password:  # the login form bypasses the model
        raise HTTPProblem(422, "NUL characters are not accepted in a user name or password")
    address = client_address(request)
    throttle = ctx.auth.throttle
    wait = throttle.retry_after(address, username)
    if wait is not None:
        record(
            ctx.store,
            actor=username,
            action="login",
            target=username,
            outcome="denied",
            address=address,
            details={"why": "too many failed logins"},
        )
        raise HTTPProblem(
            429,
            "too many failed logins: wait a minute before trying again",
            headers={"Retry-After": str(max(1, int(wait) + 1))},
        )
    found = accounts.password_hash_of(ctx.store, username)
    ok = service.verify_password(found[1] if found else None, password)
    if not ok or found is None:
        throttle.failed(address, username)
        record(
            ctx.store,
            actor=username,
            action="login",
            target=username,
            outcome="failed",
            address=address,
        )
        raise HTTPProblem(401, "wrong user name or password")
    secret, _token = service.create_token(
        ctx.store, username, expires=ctx.settings.session_lifetime, kind="session", actor=username
    )
    record(ctx.store, actor=username, action="login", target=username, address=address)
    return secret


def set_session(ctx: ServerContext, request: Request, response: Response, secret: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(ctx.settings.session_lifetime),
        path=ctx.settings.root_path or "/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def logout_user(ctx: ServerContext, request: Request, who: Principal) -> None:
    """End the request's browser session (its cookie's token revoked) and audit it; the
    caller deletes the cookie."""
    secret = request.cookies.get(SESSION_COOKIE)
    if who.via == "session" and secret:
        accounts.revoke_by_hash(ctx.store, service.token_hash(secret))
    record(
        ctx.store,
        actor=who.name,
        action="logout",
        target=who.name,
        address=client_address(request),
    )


def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter(tags=["accounts"])
    admin = Depends(requires("admin"))
    anyone = Depends(principal)

    @api.post("/login", summary="log in: a session cookie (no authentication needed)")
    async def login(body: Login, request: Request) -> JSONResponse:
        secret = await run_in_threadpool(login_user, ctx, request, body.username, body.password)
        user = await run_in_threadpool(accounts.get_user, ctx.store, body.username)
        response = JSONResponse({"user": user.name, "role": user.role})
        set_session(ctx, request, response, secret)
        return response

    @api.post("/logout", summary="end this browser session")
    def logout(request: Request, who: Principal = anyone) -> JSONResponse:
        logout_user(ctx, request, who)
        response = JSONResponse({"detail": "logged out"})
        response.delete_cookie(SESSION_COOKIE, path=ctx.settings.root_path or "/")
        return response

    @api.get("/me", summary="who you are")
    def me(who: Principal = anyone) -> dict[str, Any]:
        return {"user": who.name, "role": who.role, "via": who.via}

    @api.get("/users", summary="every account (admins)")
    def list_users(who: Principal = admin) -> list[dict[str, Any]]:
        return [user.to_json() for user in accounts.list_users(ctx.store)]

    @api.post("/users", status_code=201, summary="add an account (admins)")
    def add_user(body: NewUser, request: Request, who: Principal = admin) -> dict[str, Any]:
        user = service.create_user(
            ctx.store,
            body.name,
            body.role,
            body.password,
            actor=who.name,
            address=client_address(request),
        )
        return user.to_json()

    @api.patch("/users/{name}", summary="change an account's role or password (admins)")
    def change_user(
        name: str, body: UserChange, request: Request, who: Principal = admin
    ) -> dict[str, Any]:
        address = client_address(request)
        user = accounts.get_user(ctx.store, name)
        if body.role is not None:
            user = service.change_role(ctx.store, name, body.role, actor=who.name, address=address)
        if body.password is not None:
            user = service.change_password(
                ctx.store, name, body.password, actor=who.name, address=address
            )
        return user.to_json()

    @api.delete("/users/{name}", summary="remove an account and revoke its tokens (admins)")
    def remove_user(name: str, request: Request, who: Principal = admin) -> dict[str, Any]:
        user = service.remove_user(ctx.store, name, actor=who.name, address=client_address(request))
        return user.to_json()

    @api.get("/tokens", summary="API tokens: yours, or anyone's for admins")
    def list_tokens(user: str | None = None, who: Principal = anyone) -> list[dict[str, Any]]:
        if user is None and not who.may("admin"):
            user = who.name
        _own_or_admin(who, user)
        return [t.to_json() for t in accounts.list_tokens(ctx.store, user=user)]

    @api.post("/tokens", status_code=201, summary="a new API token (its secret shown once)")
    def create_token(body: NewToken, request: Request, who: Principal = anyone) -> dict[str, Any]:
        user = body.user or who.name
        _own_or_admin(who, user)
        secret, token = service.create_token(
            ctx.store,
            user,
            expires=_lifetime(body.expires),
            label=body.label,
            actor=who.name,
            address=client_address(request),
        )
        return {**token.to_json(), "token": secret}

    @api.delete("/tokens/{token_id}", summary="revoke an API token")
    def revoke_token(token_id: str, request: Request, who: Principal = anyone) -> dict[str, Any]:
        token = accounts.get_token(ctx.store, token_id)
        _own_or_admin(who, token.user_name)
        return service.revoke_token(
            ctx.store, token_id, actor=who.name, address=client_address(request)
        ).to_json()

    @api.get("/audit", summary="the audit log, newest first (admins)")
    def audit_log(
        since: str | None = Query(None, description="ISO-8601 time, or a duration ago: 2d"),
        user: str | None = None,
        action: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        cursor: int | None = Query(None, ge=1, description="next_cursor of the previous page"),
        who: Principal = admin,
    ) -> dict[str, Any]:
        from kiln.server.runs_api import parse_since

        ctx.audit.flush()  # the endpoint calls' entries given so far are in
        found = audit.entries(
            ctx.store,
            since=parse_since(since),
            actor=user,
            action=action,
            before=cursor,
            limit=limit + 1,
        )
        page = found[:limit]
        more = len(found) > limit
        return {
            "items": [e.to_json() for e in page],
            "next_cursor": page[-1].id if more and page else None,
        }

    return api


def _own_or_admin(who: Principal, user: str | None) -> None:
    if user != who.name and not who.may("admin"):
        raise HTTPProblem(403, f"{who.name} is a {who.role}: only admins manage others' tokens")
