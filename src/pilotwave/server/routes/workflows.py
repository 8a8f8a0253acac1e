"""Workflows: submit, list, status, events, operations, and the driver's command log."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Query

from pilotwave.engine import commands as engine_commands
from pilotwave.engine import workflows as engine
from pilotwave.engine.commands import Command, Kind
from pilotwave.engine.workflows import WorkflowSpec, WorkflowState
from pilotwave.server.auth import Principal, Role
from pilotwave.server.core import JSON, ApiError, Core, CoreDep, PrincipalDep, now, require
from pilotwave.server.models import CommandIn, CommandsIn, ProgressIn, WorkflowIn
from pilotwave.server.routes.jobs import check_size, job_spec
from pilotwave.wms import jobs as wms_jobs
from pilotwave.wms.errors import Conflict
from pilotwave.wms.wakeups import Wakeups

router = APIRouter(prefix="/api/v1/workflows", tags=["workflows"])


def workflow_spec(body: WorkflowIn, limit: int, field: str = "kwargs") -> WorkflowSpec:
    kwargs = orjson.dumps(body.kwargs).decode()
    check_size(len(kwargs), limit, field, "the workflow's arguments")
    return WorkflowSpec(
        name=body.name or body.function.qualname,
        function=body.function.model_dump(),
        kwargs=kwargs,
        sandbox=body.sandbox,
        queue=body.queue,
        labels=tuple(body.labels),
        priority=body.priority,
        key=body.key,
        seed=body.seed,
        max_attempts=body.max_attempts,
    )


@router.post("", status_code=201, response_class=JSON)
async def submit(body: WorkflowIn, core: CoreDep, who: PrincipalDep) -> Any:
    """Start a workflow: its driver is queued for a pilot's driver slot."""
    require(who, Role.USER, Role.ADMIN)
    spec = workflow_spec(body, core.settings.max_spec_bytes)
    t = now()
    wid, job_id = await core.write(
        lambda conn, wake: engine.create(conn, who.user_id, spec, t, wake)
    )
    return JSON({"id": wid, "driver_job_id": job_id}, status_code=201)


@router.get("", response_class=JSON)
async def list_workflows(
    core: CoreDep,
    who: PrincipalDep,
    state: list[WorkflowState] = Query(default=[]),
    nested: bool = False,
    limit: int = Query(100, ge=1, le=10_000),
) -> Any:
    rows = await core.read(
        lambda conn: engine.list_workflows(
            conn, who.owner_filter, nested=nested, states=state, limit=limit
        )
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


@router.get("/{wid}", response_class=JSON)
async def status(wid: int, core: CoreDep, who: PrincipalDep) -> Any:
    """State, job counts over the whole tree, its jobs, and its nested workflows."""
    return JSON(_public(await core.read(lambda conn: engine.status(conn, wid, who.owner_filter))))


@router.get("/{wid}/events", response_class=JSON)
async def events(wid: int, core: CoreDep, who: PrincipalDep) -> Any:
    return JSON({"events": await core.read(lambda conn: engine.story(conn, wid, who.owner_filter))})


@router.post("/{wid}/cancel", response_class=JSON)
async def cancel(wid: int, core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.USER, Role.ADMIN)
    t = now()
    n = await core.write(lambda conn, wake: engine.cancel(conn, wid, who.owner_filter, t, wake))
    return JSON({"cancelled": n})


@router.post("/{wid}/suspend", response_class=JSON)
async def suspend(wid: int, core: CoreDep, who: PrincipalDep) -> Any:
    """Hold every unfinished job of the workflow's tree from dispatch."""
    return await _set_suspended(wid, core, who, True)


@router.post("/{wid}/resume", response_class=JSON)
async def resume(wid: int, core: CoreDep, who: PrincipalDep) -> Any:
    return await _set_suspended(wid, core, who, False)


async def _set_suspended(wid: int, core: Core, who: Principal, suspended: bool) -> Any:
    require(who, Role.USER, Role.ADMIN)
    t = now()
    wf = await core.write(
        lambda conn, wake: engine.set_suspended(conn, wid, who.owner_filter, suspended, t, wake)
    )
    return JSON(_public(wf))


@router.post("/{wid}/retry", response_class=JSON)
async def retry(wid: int, core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.USER, Role.ADMIN)
    t = now()
    out = await core.write(lambda conn, wake: engine.retry(conn, wid, who.owner_filter, t, wake))
    return JSON(out)


@router.get("/{wid}/commands", response_class=JSON)
async def command_log(wid: int, core: CoreDep, who: PrincipalDep) -> Any:
    """The driver's record: commands in order, and the final state of every job it observed."""
    data = await core.read(lambda conn: engine.replay_data(conn, wid, who.owner_filter))
    data["results"] = {
        i: {**d, "result": orjson.Fragment(d["result"]) if d["result"] is not None else None}
        for i, d in data["results"].items()
    }
    return JSON(data)


@router.post("/{wid}/commands", response_class=JSON)
async def record_commands(wid: int, body: CommandsIn, core: CoreDep, who: PrincipalDep) -> Any:
    """Run and record a driver's commands in order, in one transaction; recorded ones replay."""
    require(who, Role.DRIVER)
    limit = core.settings.max_spec_bytes
    held: dict[str, Any] = {}  # the workflow's row, read once per transaction
    batch = [(_command(c), _submitter(c, i, limit, held)) for i, c in enumerate(body.commands)]
    t = now()

    def run(conn: sa.Connection, wake: Wakeups) -> list[dict[str, Any]]:
        held["row"] = _check_driver(conn, wid, who)
        return engine_commands.apply(conn, wid, who.user_id, batch, t, wake)

    return JSON({"outcomes": await core.write(run)})


@router.put("/{wid}/progress", response_class=JSON)
async def put_progress(wid: int, body: ProgressIn, core: CoreDep, who: PrincipalDep) -> Any:
    """The driver publishes its progress (any JSON object), shown by ``status`` and ``--wait``."""
    require(who, Role.DRIVER)
    text = orjson.dumps(body.progress).decode()
    check_size(len(text), core.settings.max_spec_bytes, "progress", "the progress")

    def run(conn: sa.Connection, wake: Wakeups) -> None:
        _check_driver(conn, wid, who)
        engine.set_progress(conn, wid, text)

    await core.write(run)
    return JSON({"ok": True})


def _command(c: CommandIn) -> Command:
    return Command(
        c.seq, Kind(c.kind), c.call, c.fingerprint, tuple(c.observed), tuple(c.reports), c.at
    )


def _submitter(
    c: CommandIn, i: int, limit: int, held: dict[str, Any]
) -> engine_commands.Submitter | None:
    if c.kind != "submit":
        return None
    if c.workflow is not None:
        spec = workflow_spec(c.workflow, limit, field=f"commands[{i}].workflow.kwargs")

        def child(conn: sa.Connection, cmd: Command, wake: Wakeups) -> dict[str, Any]:
            row = held["row"]
            child_id, job_id = engine.create(
                conn, row.owner_id, spec, now(), wake, parent_id=row.id, held=row.suspended
            )
            return {"ids": [job_id], "workflow_id": child_id}

        return child
    assert c.jobs is not None
    specs = [job_spec(j, k, limit) for k, j in enumerate(c.jobs)]

    def submit(conn: sa.Connection, cmd: Command, wake: Wakeups) -> dict[str, Any]:
        row = held["row"]
        mine = [replace(s, workflow_id=row.id, held=row.suspended) for s in specs]
        return {"ids": wms_jobs.submit(conn, row.owner_id, mine, now(), wake)}

    return submit


def _check_driver(conn: sa.Connection, wid: int, who: Principal) -> Any:
    """Only the running attempt of this workflow's driver may record commands (fencing)."""
    assert who.attempt is not None
    job_id, attempt = who.attempt
    row = engine.load(conn, wid, who.user_id)  # with its driver job's state and attempt
    if row.driver_job_id != job_id:
        raise ApiError(403, f"this driver token belongs to job {job_id}, not to workflow {wid}")
    if row.driver_state != "running" or row.driver_attempt != attempt:
        raise Conflict(f"attempt {attempt} of workflow {wid}'s driver is no longer current")
    return row
