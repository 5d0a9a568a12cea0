"""``/api/v1/schedules``: the project's schedules with their next fire times and last slots;
run one now, pause, resume (runners may, and every change is in the audit log)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request

from kiln.server.auditlog import record
from kiln.server.auth import Principal, client_address, principal, requires
from kiln.server.errors import HTTPProblem

if TYPE_CHECKING:
    from kiln.scheduler.model import Schedule
    from kiln.server.app import ServerContext


def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter(tags=["schedules"])
    reader = Depends(principal)
    runner = Depends(requires("runner"))

    def schedules() -> dict[str, Schedule]:
        from kiln.project import load_project
        from kiln.scheduler.views import schedules_of

        return schedules_of(load_project(ctx.settings.root))

    def one(name: str) -> dict[str, Schedule]:
        found = schedules()
        if name not in found:
            raise HTTPProblem(404, f"no schedule named {name!r}")
        return found

    @api.get("/schedules", summary="schedules, their next fire times and last slots")
    def list_schedules(
        count: int = Query(3, ge=1, le=50, description="next fire times per schedule"),
        who: Principal = reader,
    ) -> list[dict[str, Any]]:
        from kiln.scheduler.views import describe

        return describe(schedules(), ctx.store, count=count)

    @api.get("/schedules/{name}/slots", summary="a schedule's latest slots, newest first")
    def slots(
        name: str, limit: int = Query(20, ge=1, le=500), who: Principal = reader
    ) -> list[dict[str, Any]]:
        from kiln.store import slots as store_slots

        one(name)
        return [s.to_json() for s in store_slots.slots(ctx.store, schedule=name, limit=limit)]

    @api.post("/schedules/{name}/run-now", status_code=202, summary="queue a run now")
    def run_now(name: str, request: Request, who: Principal = runner) -> dict[str, Any]:
        from kiln.scheduler.views import run_now

        schedules = one(name)
        fired = run_now(schedules, ctx.store, name, by=who.name)
        # a pipeline schedule queues a build (the scheduler process runs it)
        key = "build_id" if schedules[name].pipeline is not None else "run_id"
        record(ctx.store, actor=who.name, action="schedule.run-now", target=name,
               address=client_address(request), details={key: fired})  # fmt: skip
        return {"schedule": name, key: fired}

    for action, paused in (("pause", True), ("resume", False)):

        def change(
            name: str, request: Request, who: Principal = runner, paused: bool = paused
        ) -> dict[str, Any]:
            from kiln.scheduler.views import set_paused

            set_paused(one(name), ctx.store, name, paused, who.name)
            record(ctx.store, actor=who.name, action=f"schedule.{'pause' if paused else 'resume'}",
                   target=name, address=client_address(request))  # fmt: skip
            return {"schedule": name, "paused": paused}

        api.add_api_route(
            f"/schedules/{{name}}/{action}", change, methods=["POST"], summary=f"{action} it"
        )
    return api
