"""Pilots: register, claim (batched, long-polled, carrying completion reports), heartbeat with commands."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request

from pilotwave.server import auth
from pilotwave.server.auth import Principal, Role
from pilotwave.server.core import JSON, ApiError, Core, CoreDep, PrincipalDep, now, require
from pilotwave.server.models import ClaimIn, HeartbeatIn, LogsIn, PilotIn, ReportIn, ReportsIn
from pilotwave.wms import attempts as wms_attempts
from pilotwave.wms import claims as wms_claims
from pilotwave.wms import pilots as wms_pilots
from pilotwave.wms.attempts import Ack, Artifact, LogChunk, Report
from pilotwave.wms.states import AttemptState, PilotState
from pilotwave.wms.wakeups import command_topic, pilot_topic, queue_topic

router = APIRouter(prefix="/api/v1", tags=["pilots"])


def _pilot_scope(who: Principal) -> int | None:
    """The token a pilot must have registered with (admins may act for any pilot)."""
    require(who, Role.PILOT, Role.ADMIN)
    return None if who.role is Role.ADMIN else who.token_id


@router.post("/pilots", status_code=201, response_class=JSON)
async def register(body: PilotIn, core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.PILOT, Role.ADMIN)
    for q in body.queues:
        if not who.may_serve(q):
            raise ApiError(403, f"this pilot token may not serve queue {q!r}", field="queues")
    info = wms_pilots.PilotInfo(
        name=body.name,
        hostname=body.hostname,
        queues=tuple(body.queues),
        labels=tuple(body.labels),
        cores=body.cores,
        memory_mb=body.memory_mb,
        gpus=tuple(g.model_dump() for g in body.gpus),
        slots=body.slots,
        prefetch=body.prefetch,
        driver_slots=body.driver_slots,
        version=body.version,
    )
    t = now()
    pilot_id = await core.write(lambda conn, wake: wms_pilots.register(conn, who.token_id, info, t))
    s = core.settings
    return JSON(
        {
            "id": pilot_id,
            "heartbeat_interval_s": s.heartbeat_interval_s,
            "heartbeat_timeout_s": s.heartbeat_timeout_s,
        },
        status_code=201,
    )


@router.get("/pilots", response_class=JSON)
async def list_pilots(
    core: CoreDep, who: PrincipalDep, state: list[PilotState] = Query(default=[])
) -> Any:
    return JSON({"pilots": await core.read(lambda conn: wms_pilots.list_pilots(conn, state))})


def _report(r: ReportIn, max_result: int) -> Report:
    outcome, result, error, retryable = AttemptState(r.outcome), r.result, r.error, r.retryable
    if result is not None and len(result) > max_result:
        # The pilot checks this too; never store an oversize result, never make the pilot resend forever.
        outcome, result, retryable = AttemptState.FAILED, None, False
        error = f"ResultTooLarge: the job's result is {len(r.result or '')} bytes, the limit is {max_result}; write large outputs to pw.outputs()"
    if error is not None and len(error) > 65536:
        error = error[:32768] + "\n[...]\n" + error[-32768:]
    return Report(
        job_id=r.job_id,
        attempt=r.attempt,
        outcome=outcome,
        result=result,
        error=error,
        exit_code=r.exit_code,
        retryable=retryable,
        cpu_s=r.cpu_s,
        max_rss_mb=r.max_rss_mb,
        log=LogChunk(**r.log.model_dump()) if r.log else None,
        artifacts=tuple(Artifact(**a.model_dump()) for a in r.artifacts),
    )


async def _pilot(core: Core, pilot_id: str, token: int | None) -> tuple[str, ...]:
    """Check the caller may act for ``pilot_id``; returns its queues (cached: they never change)."""
    meta = core.pilots.get(pilot_id)
    if meta is None:
        row = await core.read(lambda conn: wms_pilots.load(conn, pilot_id))
        meta = core.pilots[pilot_id] = (row.token_id, tuple(row.queues))
    if token is not None and meta[0] != token:
        raise ApiError(403, f"pilot {pilot_id} registered with another token")
    return meta[1]


def _count(core: Core, reps: list[Report], acks: list[Ack]) -> None:
    for rep, ack in zip(reps, acks, strict=True):
        if ack is Ack.ACCEPTED:
            core.metrics.ended.labels(rep.outcome.value).inc()


async def _complete(
    core: Core, pilot_id: str, token: int | None, reports: list[ReportIn]
) -> list[Ack]:
    await _pilot(core, pilot_id, token)
    if not reports:
        return []
    reps = [_report(r, core.settings.max_result_bytes) for r in reports]
    t = now()
    acks = await core.write(
        lambda conn, wake: wms_attempts.complete(conn, pilot_id, reps, t, core.settings.retry, wake)
    )
    _count(core, reps, acks)
    return acks


@router.post("/pilots/{pilot_id}/claim", response_class=JSON)
async def claim(
    pilot_id: str, body: ClaimIn, request: Request, core: CoreDep, who: PrincipalDep
) -> Any:
    """Report finished attempts, then take up to ``max_jobs`` jobs; if none fit, wait up to ``wait_s`` for some.

    The reports and the first claim share one transaction: a pilot running short jobs
    costs the database one commit per job it finishes.
    """
    queues = await _pilot(core, pilot_id, _pilot_scope(who))
    reps = [_report(r, core.settings.max_result_bytes) for r in body.reports]
    acks: list[Ack] = []
    core.metrics.claims.inc()

    def run(conn: sa.Connection, wake: Any) -> list[wms_claims.Claimed] | bool:
        nonlocal acks, reps
        t = now()
        if reps:
            acks = wms_attempts.complete(conn, pilot_id, reps, t, core.settings.retry, wake)
        got = wms_claims.claim(
            conn,
            pilot_id,
            body.max_jobs,
            t,
            skip_locked=core.db.is_postgres,
            max_drivers=body.max_drivers,
            prefetch=body.prefetch,
            wake=wake,
        )
        return True if got is None else got  # None: it may not claim, stop waiting

    tries = 0

    async def attempt() -> list[wms_claims.Claimed] | bool:
        nonlocal reps, tries
        tries += 1
        got = await core.write(run)
        if reps:
            _count(core, reps, acks)
            reps = []  # recorded: re-checks after a wake-up only claim
        return got

    topics = [pilot_topic(pilot_id), command_topic(pilot_id), *(queue_topic(q) for q in queues)]
    wanted = body.max_jobs > 0 or body.max_drivers > 0
    wait = min(body.wait_s, core.settings.claim_wait_max_s) if wanted else 0.0
    got = await core.notifier.poll(topics, wait, attempt, request.receive)
    claimed = got if isinstance(got, list) else []
    if claimed:
        core.metrics.claimed.inc(len(claimed))
        for c in claimed:
            core.metrics.queue_wait.observe(c.waited_s)
    # "parked": nothing was claimable when it came; the pilot's next claim will likely wait
    # too, so it sends finished jobs' reports at once instead of holding them for that claim.
    return JSON({"jobs": [_handed(core, c) for c in claimed], "acks": acks, "parked": tries > 1})


def _handed(core: Core, c: wms_claims.Claimed) -> dict[str, Any]:
    out = asdict(c)
    # This attempt only: a driver acts for the workflow's owner, a job may report its progress.
    out["token"] = auth.attempt_token(core.attempt_key, c.id, c.attempt)
    return out


@router.post("/pilots/{pilot_id}/reports", response_class=JSON)
async def reports(pilot_id: str, body: ReportsIn, core: CoreDep, who: PrincipalDep) -> Any:
    """Batch completion reports; one ack each (``accepted``, ``duplicate``, ``stale``, ``unknown``)."""
    return JSON({"acks": await _complete(core, pilot_id, _pilot_scope(who), body.reports)})


@router.post("/pilots/{pilot_id}/attempts/{job_id}/{attempt}", response_class=JSON)
async def report_one(
    pilot_id: str, job_id: int, attempt: int, body: ReportIn, core: CoreDep, who: PrincipalDep
) -> Any:
    """One completion report: 200 when recorded (or a repeat), 409 for a stale attempt, 404 for an unknown one."""
    if (body.job_id, body.attempt) != (job_id, attempt):
        raise ApiError(422, "job_id/attempt in the body differ from the path", field="attempt")
    if body.result is not None and len(body.result) > core.settings.max_result_bytes:
        raise ApiError(
            413,
            f"result is {len(body.result)} bytes, the limit is {core.settings.max_result_bytes}",
            field="result",
        )
    (ack,) = await _complete(core, pilot_id, _pilot_scope(who), [body])
    if ack is Ack.STALE:
        raise ApiError(409, f"attempt {attempt} of job {job_id} is no longer current")
    if ack is Ack.UNKNOWN:
        raise ApiError(404, f"pilot {pilot_id} has no attempt {attempt} of job {job_id}")
    return JSON({"ack": ack})


@router.post("/pilots/{pilot_id}/heartbeat", response_class=JSON)
async def heartbeat(
    pilot_id: str, body: HeartbeatIn, request: Request, core: CoreDep, who: PrincipalDep
) -> Any:
    """Liveness plus reconciliation; the answer carries commands (kill, drain), held up to ``wait_s`` until there are some."""
    token = _pilot_scope(who)
    known = [wms_pilots.Known(k.job_id, k.attempt, k.killing) for k in body.known]

    first = True

    async def beat() -> wms_pilots.Commands:
        # Reconcile once, with the snapshot the pilot just sent; re-checks only look for commands.
        nonlocal first
        if not first:
            return await core.read(
                lambda conn: wms_pilots.commands(conn, pilot_id, known, body.draining)
            )
        first = False
        t = now()

        def run(conn: sa.Connection, wake: Any) -> wms_pilots.Commands:
            return wms_pilots.heartbeat(
                conn,
                pilot_id,
                known,
                body.last_claim_seq,
                body.draining,
                t,
                core.settings.retry,
                wake,
                grace_s=core.settings.heartbeat_timeout_s,
            )

        return await core.write(run)

    await _pilot(core, pilot_id, token)
    wait = min(body.wait_s, core.settings.heartbeat_interval_s)
    commands = await core.notifier.poll([command_topic(pilot_id)], wait, beat, request.receive)
    return JSON({"kill": commands.kill, "drain": commands.drain})


@router.post("/pilots/{pilot_id}/logs", response_class=JSON)
async def logs(pilot_id: str, body: LogsIn, core: CoreDep, who: PrincipalDep) -> Any:
    await _pilot(core, pilot_id, _pilot_scope(who))
    chunks = [LogChunk(**c.model_dump()) for c in body.chunks]
    t = now()
    await core.write(lambda conn, wake: wms_attempts.append_logs(conn, pilot_id, chunks, t, wake))
    return JSON({"ok": True})


@router.post("/pilots/{pilot_id}/exit", response_class=JSON)
async def exit_(pilot_id: str, core: CoreDep, who: PrincipalDep) -> Any:
    await _pilot(core, pilot_id, _pilot_scope(who))
    t = now()
    await core.write(
        lambda conn, wake: wms_pilots.exit_(conn, pilot_id, t, core.settings.retry, wake)
    )
    return JSON({"ok": True})


@router.post("/pilots/{pilot_id}/drain", response_class=JSON)
async def drain(pilot_id: str, core: CoreDep, who: PrincipalDep) -> Any:
    """Ask a pilot to finish what it runs and exit (admin)."""
    require(who, Role.ADMIN)
    t = now()
    await core.write(
        lambda conn, wake: wms_pilots.set_draining(conn, pilot_id, t, wake, "drain requested")
    )
    return JSON({"ok": True})
