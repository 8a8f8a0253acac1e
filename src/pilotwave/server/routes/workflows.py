"""Workflows: submit, list, status, events, operations, and the driver's command log."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Query

from pilotwave.engine import drivers
from pilotwave.engine import workflows as engine
from pilotwave.protocol import WorkflowState, WorkflowSubmission
from pilotwave.server import answers as A
from pilotwave.server.answers import refusals
from pilotwave.server.auth import Principal, Role
from pilotwave.server.core import (
    JSON,
    MANY,
    Core,
    CoreDep,
    PrincipalDep,
    ReaderDep,
    now,
    require,
)
from pilotwave.server.models import CommandsIn, ProgressIn, WorkflowIdPath
from pilotwave.server.routes.jobs import finals_json
from pilotwave.wms.wakeups import Wakeups

router = APIRouter(prefix="/api/v1/workflows", tags=["workflows"])


@router.post(
    "",
    status_code=201,
    response_class=JSON,
    response_model=A.NewWorkflow,
    responses=refusals(*A.AUTH, 404, 413, 422, 429),
)
async def submit(body: WorkflowSubmission, core: CoreDep, who: PrincipalDep) -> Any:
    """Start a workflow: its driver is queued for a pilot's driver slot."""
    require(who, Role.USER, Role.ADMIN)
    spec = drivers.workflow_spec(body, core.settings.limits)
    t = now()

    def run(conn: sa.Connection, wake: Wakeups) -> tuple[int, int]:
        core.charge(conn, who, 1)
        return engine.create(conn, who.user_id, spec, t, wake)

    wid, job_id = await core.write(run)
    return JSON({"id": wid, "driver_job_id": job_id}, status_code=201)


@router.get("", response_class=JSON, response_model=A.Workflows, responses=refusals(*A.AUTH, 422))
async def list_workflows(
    core: CoreDep,
    who: ReaderDep,
    state: list[WorkflowState] = Query(default=[]),
    nested: bool = False,
    limit: int = Query(100, ge=1, le=10_000),
) -> Any:
    rows = await core.read(
        lambda conn: engine.list_workflows(
            conn, who.owner_filter, nested=nested, states=state, limit=limit
        ),
        items=limit,
    )
    return JSON({"workflows": [_public(w) for w in rows]})


def _public(wf: dict[str, Any]) -> dict[str, Any]:
    wf = dict(wf)
    for k in ("result", "progress"):
        if wf.get(k) is not None:
            wf[k] = orjson.Fragment(wf[k])
    if "children" in wf:
        wf["children"] = [_public(c) for c in wf["children"]]
    return wf


@router.get(
    "/{wid}", response_class=JSON, response_model=A.WorkflowStatus, responses=refusals(*A.READ)
)
async def status(wid: WorkflowIdPath, core: CoreDep, who: ReaderDep) -> Any:
    """State, job counts over the whole tree, its jobs, and its nested workflows."""
    wf = await core.read(lambda conn: engine.status(conn, wid, who.owner_filter), items=MANY)
    return JSON(_public(wf))


@router.get(
    "/{wid}/events",
    response_class=JSON,
    response_model=A.WorkflowEvents,
    responses=refusals(*A.READ),
)
async def events(wid: WorkflowIdPath, core: CoreDep, who: ReaderDep) -> Any:
    story = await core.read(lambda conn: engine.story(conn, wid, who.owner_filter), items=MANY)
    return JSON({"events": story})


@router.post(
    "/{wid}/cancel",
    response_class=JSON,
    response_model=A.CancelledCount,
    responses=refusals(*A.READ),
)
async def cancel(wid: WorkflowIdPath, core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.USER, Role.ADMIN)
    t = now()
    n = await core.write(
        lambda conn, wake: engine.cancel(conn, wid, who.owner_filter, t, wake), items=MANY
    )
    return JSON({"cancelled": n})


@router.post(
    "/{wid}/suspend",
    response_class=JSON,
    response_model=A.Workflow,
    responses=refusals(*A.READ, 409),
)
async def suspend(wid: WorkflowIdPath, core: CoreDep, who: PrincipalDep) -> Any:
    """Hold every unfinished job of the workflow's tree from dispatch."""
    return await _set_suspended(wid, core, who, True)


@router.post(
    "/{wid}/resume",
    response_class=JSON,
    response_model=A.Workflow,
    responses=refusals(*A.READ, 409),
)
async def resume(wid: WorkflowIdPath, core: CoreDep, who: PrincipalDep) -> Any:
    return await _set_suspended(wid, core, who, False)


async def _set_suspended(wid: WorkflowIdPath, core: Core, who: Principal, suspended: bool) -> Any:
    require(who, Role.USER, Role.ADMIN)
    t = now()
    wf = await core.write(
        lambda conn, wake: engine.set_suspended(conn, wid, who.owner_filter, suspended, t, wake),
        items=MANY,
    )
    return JSON(_public(wf))


@router.post(
    "/{wid}/retry",
    response_class=JSON,
    response_model=A.Retried,
    responses=refusals(*A.READ, 409),
)
async def retry(wid: WorkflowIdPath, core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.USER, Role.ADMIN)
    t = now()
    out = await core.write(
        lambda conn, wake: engine.retry(conn, wid, who.owner_filter, t, wake), items=MANY
    )
    return JSON(out)


@router.get(
    "/{wid}/commands",
    response_class=JSON,
    response_model=A.CommandLog,
    responses=refusals(*A.READ),
)
async def command_log(wid: WorkflowIdPath, core: CoreDep, who: ReaderDep) -> Any:
    """The driver's record: commands in order, and the final state of every job it observed."""
    data = await core.read(lambda conn: engine.replay_data(conn, wid, who.owner_filter), items=MANY)
    data["results"] = finals_json(data["results"])
    return JSON(data)


@router.post(
    "/{wid}/commands",
    response_class=JSON,
    response_model=A.Outcomes,
    responses=refusals(*A.WRITE, 409, 429),
)
async def record_commands(
    wid: WorkflowIdPath, body: CommandsIn, core: CoreDep, who: PrincipalDep
) -> Any:
    """Run and record a driver's commands in order, in one transaction; recorded ones replay."""
    attempt = _driver(who)
    batch = drivers.Batch(body.commands, core.settings.limits)
    t = now()

    def run(conn: sa.Connection, wake: Wakeups) -> list[dict[str, Any]]:
        return drivers.record_commands(conn, wid, who.user_id, attempt, batch, t, wake)

    items = sum(1 + len(c.jobs or ()) + len(c.observed) + len(c.reports) for c in body.commands)
    return JSON({"outcomes": await core.write(run, items=items)})


@router.put(
    "/{wid}/progress",
    response_class=JSON,
    response_model=A.Ok,
    responses=refusals(*A.WRITE, 409),
)
async def put_progress(
    wid: WorkflowIdPath, body: ProgressIn, core: CoreDep, who: PrincipalDep
) -> Any:
    """The driver publishes its progress (any JSON object), shown by ``status`` and ``--wait``."""
    attempt = _driver(who)
    limits = core.settings.limits
    await core.write(
        lambda conn, wake: drivers.set_progress(
            conn, wid, who.user_id, attempt, body.progress, limits
        )
    )
    return JSON({"ok": True})


def _driver(who: Principal) -> tuple[int, int]:
    """The attempt a driver token acts for (only driver tokens may)."""
    require(who, Role.DRIVER)
    assert who.attempt is not None
    return who.attempt
