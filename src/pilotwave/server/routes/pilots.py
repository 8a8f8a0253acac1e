"""Pilots: register, claim (batched, long-polled, carrying completion reports), heartbeat with commands."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request

from pilotwave.engine import parking
from pilotwave.errors import Conflict, Forbidden, InvalidRequest, NotFound
from pilotwave.protocol import (
    Ack,
    AttemptReport,
    ClaimAnswer,
    Claimed,
    ClaimRequest,
    Heartbeat,
    ParkRequest,
    PilotCommands,
    PilotInfo,
    PilotState,
    Registered,
    UnparkRequest,
)
from pilotwave.server import answers as A
from pilotwave.server import auth
from pilotwave.server.answers import refusals
from pilotwave.server.auth import Principal, Role
from pilotwave.server.core import JSON, Core, CoreDep, PrincipalDep, ReaderDep, now, require
from pilotwave.server.models import AttemptPath, JobIdPath, LogsIn, ParkableIn, ReportsIn
from pilotwave.wms import attempts as wms_attempts
from pilotwave.wms import claims as wms_claims
from pilotwave.wms import pilots as wms_pilots
from pilotwave.wms.wakeups import command_topic, driver_topic, pilot_topic, queue_topic

router = APIRouter(prefix="/api/v1", tags=["pilots"])


def _pilot_scope(who: Principal) -> int | None:
    """The token a pilot must have registered with (admins may act for any pilot)."""
    require(who, Role.PILOT, Role.ADMIN)
    return None if who.role is Role.ADMIN else who.token_id


@router.post(
    "/pilots",
    status_code=201,
    response_class=JSON,
    response_model=Registered,
    responses=refusals(*A.AUTH, 413, 422),
)
async def register(body: PilotInfo, core: CoreDep, who: PrincipalDep) -> Any:
    """Register a pilot; the answer carries its id, the heartbeat timing and the server's limits."""
    require(who, Role.PILOT, Role.ADMIN)
    for q in body.queues:
        if not who.may_serve(q):
            raise Forbidden(f"this pilot token may not serve queue {q!r}", field="queues")
    serves = wms_pilots.whose_jobs(
        body.isolation, who.user_id, every_user=who.role is Role.ADMIN or who.all_users
    )
    t = now()
    pilot_id = await core.write(
        lambda conn, wake: wms_pilots.register(conn, who.token_id, body, t, serves)
    )
    s = core.settings
    answer = Registered(
        id=pilot_id,
        heartbeat_interval_s=s.heartbeat_interval_s,
        heartbeat_timeout_s=s.heartbeat_timeout_s,
        limits=s.limits,
    )
    return JSON(answer, status_code=201)


@router.get(
    "/pilots", response_class=JSON, response_model=A.Pilots, responses=refusals(*A.AUTH, 422)
)
async def list_pilots(
    core: CoreDep, who: ReaderDep, state: list[PilotState] = Query(default=[])
) -> Any:
    return JSON({"pilots": await core.read(lambda conn: wms_pilots.list_pilots(conn, state))})


async def _pilot(core: Core, pilot_id: str, token: int | None) -> tuple[str, ...]:
    """Check the caller may act for ``pilot_id``; returns its queues (cached: they never change)."""
    meta = core.pilots.get(pilot_id)
    if meta is None:
        row = await core.read(lambda conn: wms_pilots.load(conn, pilot_id))
        meta = core.pilots[pilot_id] = (row.token_id, tuple(row.queues))
    if token is not None and meta[0] != token:
        raise Forbidden(f"pilot {pilot_id} registered with another token")
    return meta[1]


def _count(core: Core, reps: list[AttemptReport], acks: list[Ack]) -> None:
    for rep, ack in zip(reps, acks, strict=True):
        if ack is Ack.ACCEPTED:
            core.metrics.ended.labels(rep.outcome).inc()


async def _complete(
    core: Core, pilot_id: str, token: int | None, reports: list[AttemptReport]
) -> list[Ack]:
    await _pilot(core, pilot_id, token)
    if not reports:
        return []
    reps = [wms_attempts.admit(r, core.settings.limits) for r in reports]
    t = now()
    acks = await core.write(
        lambda conn, wake: wms_attempts.complete(conn, pilot_id, reps, t, core.settings.retry, wake)
    )
    _count(core, reps, acks)
    return acks


@router.post(
    "/pilots/{pilot_id}/claim",
    response_class=JSON,
    response_model=ClaimAnswer,
    responses=refusals(*A.WRITE),
)
async def claim(
    pilot_id: str, body: ClaimRequest, request: Request, core: CoreDep, who: PrincipalDep
) -> Any:
    """Report finished attempts, then take up to ``max_jobs`` jobs; if none fit, wait up to ``wait_s`` for some.

    The reports and the first claim share one transaction: a pilot running short jobs
    costs the database one commit per job it finishes.
    """
    queues = await _pilot(core, pilot_id, _pilot_scope(who))
    reps = [wms_attempts.admit(r, core.settings.limits) for r in body.reports]
    acks: list[Ack] = []
    queued_drivers = 0
    core.metrics.claims.inc()

    def run(conn: sa.Connection, wake: Any) -> list[Claimed] | bool:
        nonlocal acks, reps, queued_drivers
        t = now()
        if reps:
            acks = wms_attempts.complete(conn, pilot_id, reps, t, core.settings.retry, wake)
        if tries == 1 and core.parkable.get(pilot_id) != body.parkable:
            wms_claims.set_parkable(conn, pilot_id, body.parkable, wake)
        got = wms_claims.claim(
            conn,
            pilot_id,
            body.max_jobs,
            t,
            skip_locked=core.db.is_postgres,
            max_drivers=body.max_drivers,
            prefetch=body.prefetch,
            wake=wake,
            seen_seq=body.last_claim_seq,
            policy=core.settings.retry,
        )
        if got is None:
            return True  # it may not claim: stop waiting
        # What the pilot last said of its waiting drivers: this claim's own figure, or a
        # later one it sent (PUT .../parkable) while this claim waited; that wakes it.
        if not got and body.max_drivers and core.parkable.get(pilot_id, body.parkable):
            # Its driver slots are taken by drivers that only wait: if drivers are queued,
            # answer now, so that the pilot parks waiting ones and takes these.
            queued_drivers = wms_claims.drivers_queued(conn, pilot_id, t)
            return True if queued_drivers else got
        return got

    tries = 0

    async def attempt() -> list[Claimed] | bool:
        nonlocal reps, tries
        tries += 1
        got = await core.write(run)
        if tries == 1:  # committed: later claims skip the write while it stays the same
            core.parkable[pilot_id] = body.parkable
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
    answer = ClaimAnswer(
        jobs=[_handed(core, c) for c in claimed],
        acks=acks,
        parked=tries > 1,
        drivers_queued=queued_drivers,
    )
    return JSON(answer)


def _handed(core: Core, c: Claimed) -> Claimed:
    # This attempt only: a driver acts for the workflow's owner, a job may report its progress.
    return replace(c, token=auth.attempt_token(core.attempt_key, c.id, c.attempt))


@router.post(
    "/pilots/{pilot_id}/reports",
    response_class=JSON,
    response_model=A.Acks,
    responses=refusals(*A.WRITE),
)
async def reports(pilot_id: str, body: ReportsIn, core: CoreDep, who: PrincipalDep) -> Any:
    """Batch completion reports; one ack each (``accepted``, ``duplicate``, ``stale``, ``unknown``)."""
    return JSON({"acks": await _complete(core, pilot_id, _pilot_scope(who), body.reports)})


@router.post(
    "/pilots/{pilot_id}/attempts/{job_id}/{attempt}",
    response_class=JSON,
    response_model=A.OneAck,
    responses=refusals(*A.WRITE, 409),
)
async def report_one(
    pilot_id: str,
    job_id: JobIdPath,
    attempt: AttemptPath,
    body: AttemptReport,
    core: CoreDep,
    who: PrincipalDep,
) -> Any:
    """One completion report: 200 when recorded (or a repeat), 409 for a stale attempt, 404 for an
    unknown one.  An oversize result is recorded as the attempt's failure, as in a batch."""
    if (body.job_id, body.attempt) != (job_id, attempt):
        raise InvalidRequest("job_id/attempt in the body differ from the path", field="attempt")
    (ack,) = await _complete(core, pilot_id, _pilot_scope(who), [body])
    if ack is Ack.STALE:
        raise Conflict(f"attempt {attempt} of job {job_id} is no longer current")
    if ack is Ack.UNKNOWN:
        raise NotFound(f"pilot {pilot_id} has no attempt {attempt} of job {job_id}")
    return JSON({"ack": ack})


@router.post(
    "/pilots/{pilot_id}/heartbeat",
    response_class=JSON,
    response_model=PilotCommands,
    responses=refusals(*A.WRITE),
)
async def heartbeat(
    pilot_id: str, body: Heartbeat, request: Request, core: CoreDep, who: PrincipalDep
) -> Any:
    """Liveness plus reconciliation; the answer carries commands (kill, drain), held up to ``wait_s`` until there are some."""
    token = _pilot_scope(who)
    known = body.known

    first = True

    async def beat() -> PilotCommands:
        # Reconcile once, with the snapshot the pilot just sent; re-checks only look for commands.
        nonlocal first
        if not first:
            return await core.read(
                lambda conn: wms_pilots.commands(conn, pilot_id, known, body.draining)
            )
        first = False

        def run(conn: sa.Connection, wake: Any) -> PilotCommands:
            return wms_pilots.heartbeat(
                conn,
                pilot_id,
                known,
                body.last_claim_seq,
                body.draining,
                now(),  # when the transaction runs: the pilot is alive at least until then
                core.settings.retry,
                wake,
                grace_s=core.settings.unseen_grace_s,
            )

        return await core.write(run)

    await _pilot(core, pilot_id, token)
    wait = min(body.wait_s, core.settings.heartbeat_interval_s)
    commands = await core.notifier.poll([command_topic(pilot_id)], wait, beat, request.receive)
    return JSON(commands)


@router.put(
    "/pilots/{pilot_id}/parkable",
    response_class=JSON,
    response_model=A.Ok,
    responses=refusals(*A.WRITE),
)
async def parkable(pilot_id: str, body: ParkableIn, core: CoreDep, who: PrincipalDep) -> Any:
    """How many of the pilot's drivers only wait (a claim it has out may then take a queued
    driver, once it parks one of them)."""
    await _pilot(core, pilot_id, _pilot_scope(who))
    await core.write(
        lambda conn, wake: wms_claims.set_parkable(conn, pilot_id, body.parkable, wake)
    )
    core.parkable[pilot_id] = body.parkable
    return JSON({"ok": True})


@router.post(
    "/pilots/{pilot_id}/park",
    response_class=JSON,
    response_model=A.Parked,
    responses=refusals(*A.WRITE, 409),
)
async def park(pilot_id: str, body: ParkRequest, core: CoreDep, who: PrincipalDep) -> Any:
    """Park one of this pilot's workflow drivers, which waits for ``wait``: it gives its driver
    slot up and keeps its process.  ``{"parked": false}`` when it no longer runs."""
    await _pilot(core, pilot_id, _pilot_scope(who))
    t = now()
    parked = await core.write(
        lambda conn, wake: parking.park(
            conn, pilot_id, body.job_id, body.attempt, body.wait, t, wake
        )
    )
    return JSON({"parked": parked})


@router.post(
    "/pilots/{pilot_id}/unpark",
    response_class=JSON,
    response_model=A.Unparked,
    responses=refusals(*A.WRITE, 409),
)
async def unpark(
    pilot_id: str, body: UnparkRequest, request: Request, core: CoreDep, who: PrincipalDep
) -> Any:
    """A parked driver's wait is over: it runs again as soon as a driver slot is free on this
    pilot (held up to ``wait_s``).  ``state``: ``running``, ``ready`` (still waiting for a
    slot: ask again) or ``gone`` (cancelled; the pilot is told to stop it)."""
    await _pilot(core, pilot_id, _pilot_scope(who))
    t = now()
    first = await core.write(
        lambda conn, wake: parking.unpark(conn, pilot_id, body.job_id, body.attempt, t, wake)
    )
    if first != "ready" or body.wait_s <= 0:
        return JSON({"state": first})

    async def check() -> str | None:
        got = await core.read(lambda conn: parking.state(conn, body.job_id, body.attempt))
        return None if got == "ready" else got

    topics = [driver_topic(body.job_id)]
    got = await core.notifier.poll(topics, body.wait_s, check, request.receive)
    return JSON({"state": got or "ready"})


@router.post(
    "/pilots/{pilot_id}/logs",
    response_class=JSON,
    response_model=A.Ok,
    responses=refusals(*A.WRITE),
)
async def logs(pilot_id: str, body: LogsIn, core: CoreDep, who: PrincipalDep) -> Any:
    await _pilot(core, pilot_id, _pilot_scope(who))
    t = now()
    limit = core.settings.limits.max_log_bytes
    await core.write(
        lambda conn, wake: wms_attempts.append_logs(conn, pilot_id, body.chunks, t, wake, limit)
    )
    return JSON({"ok": True})


@router.post(
    "/pilots/{pilot_id}/exit", response_class=JSON, response_model=A.Ok, responses=refusals(*A.READ)
)
async def exit_(pilot_id: str, core: CoreDep, who: PrincipalDep) -> Any:
    await _pilot(core, pilot_id, _pilot_scope(who))
    t = now()
    await core.write(
        lambda conn, wake: wms_pilots.exit_(conn, pilot_id, t, core.settings.retry, wake)
    )
    return JSON({"ok": True})


@router.post(
    "/pilots/{pilot_id}/drain",
    response_class=JSON,
    response_model=A.Ok,
    responses=refusals(*A.READ),
)
async def drain(pilot_id: str, core: CoreDep, who: PrincipalDep) -> Any:
    """Ask a pilot to finish what it runs and exit (admin)."""
    require(who, Role.ADMIN)
    t = now()
    await core.write(
        lambda conn, wake: wms_pilots.set_draining(conn, pilot_id, t, wake, "drain requested")
    )
    return JSON({"ok": True})
