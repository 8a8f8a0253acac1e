"""Pilot lifecycle: registration, heartbeats with commands, draining, and the lost-pilot reaper."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.errors import Forbidden, NotFound
from pilotwave.protocol import (
    AttemptState,
    Isolation,
    JobState,
    Kill,
    KillReason,
    Known,
    PilotCommands,
    PilotInfo,
    PilotState,
)
from pilotwave.store.schema import attempts, jobs, pilots, users
from pilotwave.wms.attempts import JOB_FOR_ENDING, Endings
from pilotwave.wms.claims import LATER
from pilotwave.wms.events import event, record
from pilotwave.wms.jobs import ensure_queues
from pilotwave.wms.retry import AttemptEnd, RetryPolicy
from pilotwave.wms.wakeups import Wakeups, command_topic


def whose_jobs(isolation: Isolation, owner: int, *, every_user: bool) -> int | None:
    """Whose jobs a pilot may run: its token owner's (an id), or everyone's (``None``) for
    a token meant for every user, whose pilots must then keep jobs apart."""
    if not every_user:
        return owner
    if isolation is Isolation.NONE:
        raise Forbidden(
            "this token runs every user's jobs: its pilots must keep them apart "
            "(--isolation user, as root, or --isolation container); a pilot without "
            "isolation needs a pilot token of a single user",
            field="isolation",
        )
    return None


def register(
    conn: Connection, token_id: int, info: PilotInfo, now: float, serves_owner: int | None
) -> str:
    """Record a new pilot; it will run only ``serves_owner``'s jobs, or anyone's if ``None``."""
    pilot_id = uuid.uuid4().hex
    ensure_queues(conn, {q for q in info.queues if q != "*"}, now)
    conn.execute(
        pilots.insert().values(
            id=pilot_id,
            name=info.name,
            hostname=info.hostname,
            token_id=token_id,
            queues=list(info.queues),
            labels=sorted(set(info.labels)),
            cores=info.cores,
            memory_mb=info.memory_mb,
            gpus=[asdict(g) for g in info.gpus],
            slots=info.slots,
            prefetch=info.prefetch,
            driver_slots=info.driver_slots,
            state=PilotState.ACTIVE,
            version=info.version,
            isolation=info.isolation,
            serves_owner=serves_owner,
            claim_seq=0,
            registered_at=now,
            last_seen=now,
        )
    )
    record(
        conn,
        [event(now, PilotState.ACTIVE, pilot_id=pilot_id, reason=f"registered on {info.hostname}")],
    )
    return pilot_id


def load(conn: Connection, pilot_id: str, token_id: int | None = None) -> Any:
    """The pilot row; ``token_id`` (when given) must be the token it registered with."""
    row = conn.execute(sa.select(pilots).where(pilots.c.id == pilot_id)).one_or_none()
    if row is None:
        raise NotFound(f"no pilot {pilot_id}")
    if token_id is not None and row.token_id != token_id:
        raise Forbidden(f"pilot {pilot_id} registered with another token")
    return row


def heartbeat(
    conn: Connection,
    pilot_id: str,
    known: Sequence[Known],
    last_claim_seq: int,
    draining: bool,
    now: float,
    policy: RetryPolicy,
    wake: Wakeups,
    grace_s: float = 60.0,
) -> PilotCommands:
    """Record that the pilot is alive, reconcile its attempts with ours, and return its commands.

    Attempts we think run on the pilot but that it does not know are lost (a job the pilot
    dropped) when the pilot had seen their claim (``claim_seq <= last_claim_seq``).  An
    attempt of a later claim may simply be newer than the pilot's snapshot, which can be
    seconds old on a loaded machine: it is judged by the pilot's next claim (``claim``
    hands back what the pilot never saw), and by this heartbeat only after ``grace_s``.
    """
    pilot = load(conn, pilot_id)
    if pilot.state == PilotState.EXITED:  # a late heartbeat from a pilot that said goodbye
        return PilotCommands(drain=True)
    values: dict[str, Any] = {"last_seen": LATER}
    if pilot.state == PilotState.LOST:
        values["state"] = PilotState.DRAINING if draining else PilotState.ACTIVE
        record(
            conn,
            [
                event(
                    now,
                    values["state"],
                    from_state=pilot.state,
                    pilot_id=pilot_id,
                    reason="heard from again",
                )
            ],
        )
    elif draining and pilot.state == PilotState.ACTIVE:
        values["state"] = PilotState.DRAINING
        record(
            conn,
            [
                event(
                    now,
                    PilotState.DRAINING,
                    from_state=pilot.state,
                    pilot_id=pilot_id,
                    reason="pilot is draining",
                )
            ],
        )
        wake.add(command_topic(pilot_id))  # its pending claim returns empty-handed
    conn.execute(pilots.update().where(pilots.c.id == pilot_id).values(**values), {"b_now": now})

    mine = {k.job_id: k for k in known}
    running = _running_on(conn, pilot_id)
    lost = set()
    endings = Endings(conn, now, policy, wake)
    for r in running:
        k = mine.get(r.id)
        forgotten = k is None or k.attempt != r.number
        if forgotten and (r.claim_seq <= last_claim_seq or r.started_at < now - grace_s):
            forgot = AttemptEnd(AttemptState.LOST, True, "pilot does not know this attempt")
            endings.end(r, r.number, forgot, pilot_id)
            lost.add((r.id, r.number))
    endings.flush()
    live = {(r.id, r.number): r.state for r in running if (r.id, r.number) not in lost}
    return _commands(pilot.state, known, draining, live)


def commands(
    conn: Connection, pilot_id: str, known: Sequence[Known], draining: bool
) -> PilotCommands:
    """The pilot's pending commands, read-only (for re-checks while a heartbeat is held open)."""
    pilot = load(conn, pilot_id)
    if pilot.state == PilotState.EXITED:
        return PilotCommands(drain=True)
    rows = conn.execute(
        sa.select(attempts.c.number, jobs.c.id, jobs.c.state)
        .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
        .where(attempts.c.pilot_id == pilot_id, attempts.c.state == AttemptState.RUNNING)
    ).all()
    return _commands(pilot.state, known, draining, {(r.id, r.number): r.state for r in rows})


def _commands(
    pilot_state: str, known: Sequence[Known], draining: bool, live: dict[tuple[int, int], str]
) -> PilotCommands:
    """Kill what the pilot runs that is cancelled or no longer current; drain if asked to."""
    out = PilotCommands(drain=pilot_state == PilotState.DRAINING and not draining)
    for k in known:
        if k.killing:
            continue
        state = live.get((k.job_id, k.attempt))
        if state is None:
            out.kill.append(Kill(job_id=k.job_id, attempt=k.attempt, reason=KillReason.STALE))
        elif state == JobState.CANCELLED:
            out.kill.append(Kill(job_id=k.job_id, attempt=k.attempt, reason=KillReason.CANCELLED))
    return out


def set_draining(conn: Connection, pilot_id: str, now: float, wake: Wakeups, reason: str) -> None:
    pilot = load(conn, pilot_id)
    if pilot.state == PilotState.ACTIVE:
        conn.execute(
            pilots.update().where(pilots.c.id == pilot_id).values(state=PilotState.DRAINING)
        )
        record(
            conn,
            [
                event(
                    now,
                    PilotState.DRAINING,
                    from_state=pilot.state,
                    pilot_id=pilot_id,
                    reason=reason,
                )
            ],
        )
        wake.add(command_topic(pilot_id))


def exit_(conn: Connection, pilot_id: str, now: float, policy: RetryPolicy, wake: Wakeups) -> None:
    """A clean shutdown: anything still running there is lost (it should have been reported)."""
    pilot = load(conn, pilot_id)
    _lose_attempts(conn, pilot_id, now, policy, wake, "pilot exited")
    conn.execute(
        pilots.update()
        .where(pilots.c.id == pilot_id)
        .values(state=PilotState.EXITED, last_seen=now)
    )
    record(
        conn,
        [event(now, PilotState.EXITED, from_state=pilot.state, pilot_id=pilot_id, reason="exited")],
    )
    wake.add(command_topic(pilot_id))  # end its pending long-polls


def reap(
    conn: Connection, now: float, timeout_s: float, policy: RetryPolicy, wake: Wakeups
) -> list[str]:
    """Mark pilots silent for longer than ``timeout_s`` lost, and their running attempts lost."""
    silent = conn.execute(
        sa.select(pilots.c.id, pilots.c.state)
        .where(
            pilots.c.state.in_([PilotState.ACTIVE, PilotState.DRAINING]),
            pilots.c.last_seen < now - timeout_s,
        )
        .with_for_update(skip_locked=conn.dialect.name == "postgresql")
    ).all()
    lost = []
    for p in silent:
        still = conn.execute(
            pilots.update()
            .where(
                pilots.c.id == p.id,
                pilots.c.state == p.state,
                pilots.c.last_seen < now - timeout_s,  # not heard from meanwhile
            )
            .values(state=PilotState.LOST)
        ).rowcount
        if not still:
            continue
        lost.append(p.id)
        record(
            conn,
            [
                event(
                    now,
                    PilotState.LOST,
                    from_state=p.state,
                    pilot_id=p.id,
                    reason=f"no heartbeat for {timeout_s:g}s",
                )
            ],
        )
        _lose_attempts(
            conn, p.id, now, policy, wake, f"pilot {p.id[:8]} lost: no heartbeat for {timeout_s:g}s"
        )
    return lost


def _lose_attempts(
    conn: Connection, pilot_id: str, now: float, policy: RetryPolicy, wake: Wakeups, reason: str
) -> None:
    rows = _running_on(conn, pilot_id)
    endings = Endings(conn, now, policy, wake)
    for r in rows:
        endings.end(r, r.number, AttemptEnd(AttemptState.LOST, True, reason), pilot_id)
    endings.flush()


_RUNNING_ON = (
    sa.select(attempts.c.number, attempts.c.claim_seq, attempts.c.started_at, *JOB_FOR_ENDING)
    .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
    .where(attempts.c.pilot_id == sa.bindparam("pid"), attempts.c.state == AttemptState.RUNNING)
    .order_by(jobs.c.id)
    .with_for_update(of=jobs)
)


def _running_on(conn: Connection, pilot_id: str) -> list[Any]:
    """The pilot's running attempts with their jobs, locked for ending them (rows ``Endings`` takes)."""
    return list(conn.execute(_RUNNING_ON, {"pid": pilot_id}).all())


def list_pilots(conn: Connection, states: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Pilots, newest first; ``serves`` names the one user whose jobs it runs (``None``: all)."""
    q = (
        sa.select(pilots, users.c.name.label("serves"))
        .select_from(pilots.outerjoin(users, users.c.id == pilots.c.serves_owner))
        .order_by(pilots.c.registered_at.desc())
    )
    if states:
        q = q.where(pilots.c.state.in_(states))
    return [dict(r._mapping) for r in conn.execute(q)]


_HOLDS_SANDBOX = (
    sa.select(jobs.c.id)
    .select_from(jobs.join(pilots, pilots.c.id == jobs.c.pilot_id))
    .where(
        jobs.c.state.in_([JobState.RUNNING, JobState.PARKED]),
        jobs.c.sandbox == sa.bindparam("sha"),
        pilots.c.token_id == sa.bindparam("tid"),
    )
    .limit(1)
)


def holds_sandbox(conn: Connection, token_id: int, sha256: str) -> bool:
    """Whether a pilot of this token holds a job (running, or a parked driver) with this
    sandbox: what a pilot token may download.  Running jobs are few: the state index finds them."""
    return conn.execute(_HOLDS_SANDBOX, {"sha": sha256, "tid": token_id}).first() is not None
