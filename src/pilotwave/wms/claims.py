"""Claims: a pilot takes the best-ranked queued jobs that fit its free resources.

The server, not the pilot, accounts for what a pilot is running (its ``running``
attempts), so a claim needs no resource report and can never overcommit a pilot even if
a response was lost.  On PostgreSQL candidate rows are locked with ``FOR NO KEY UPDATE
SKIP LOCKED`` so concurrent claims never wait on, or take, the same job (the ``NO KEY``
mode does not skip rows that a submission holds ``FOR KEY SHARE`` as upstreams of a new
job); on SQLite the single writer lock serializes claims.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.errors import NotFound
from pilotwave.protocol import AttemptState, Claimed, Gpu, JobKind, JobState, PilotState
from pilotwave.protocol.wire import JOB_OPTION_FIELDS
from pilotwave.store.schema import attempts, jobs, pilots
from pilotwave.wms.attempts import JOB_FOR_ENDING, Endings
from pilotwave.wms.events import event, record
from pilotwave.wms.matching import Capacity, Demand, select
from pilotwave.wms.retry import AttemptEnd, RetryPolicy
from pilotwave.wms.transitions import Move, transition
from pilotwave.wms.wakeups import Wakeups, pilot_topic, queue_topic

PAGE = 500
MAX_PAGES = 5
_CANDIDATE = [
    jobs.c.id,
    jobs.c.owner_id,
    *(jobs.c[name] for name in JOB_OPTION_FIELDS),
    jobs.c.attempts,
    jobs.c.name,
    jobs.c.kind,
    jobs.c.spec,
    jobs.c.sandbox,
    jobs.c.created_at,
]


_B = sa.bindparam
_PILOT = sa.select(pilots).where(pilots.c.id == _B("pid"))
_USED = (
    sa.select(jobs.c.cores, jobs.c.memory_mb, jobs.c.kind, jobs.c.state, attempts.c.gpus)
    .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
    .where(attempts.c.pilot_id == _B("pid"), attempts.c.state == AttemptState.RUNNING)
)
# ``last_seen`` only moves forward: a request that waited long in the server (a held
# heartbeat, a busy thread pool) must not make a pilot look silent that was heard since.
LATER = sa.case((pilots.c.last_seen < _B("b_now"), _B("b_now")), else_=pilots.c.last_seen)
_TOUCH = pilots.update().where(pilots.c.id == _B("b_pid")).values(last_seen=LATER)
_TOUCH_SEQ = (
    pilots.update().where(pilots.c.id == _B("b_pid")).values(last_seen=LATER, claim_seq=_B("b_seq"))
)
_INSERT_ATTEMPT = attempts.insert()


def _queued(all_queues: bool, lock: bool, *conditions: Any) -> Any:
    """Claimable jobs (queued, past any back-off, not held) in rank order, with ``conditions``."""
    q = (
        sa.select(*_CANDIDATE)
        .where(
            jobs.c.state == JobState.QUEUED,
            sa.true() if all_queues else jobs.c.queue.in_(_B("queues", expanding=True)),
            jobs.c.not_before <= _B("now"),
            jobs.c.held == sa.false(),
            # A pilot that runs only its token owner's jobs (``pilots.serves_owner``).
            sa.or_(_B("any_owner", type_=sa.Boolean), jobs.c.owner_id == _B("owner")),
            *conditions,
        )
        .order_by(jobs.c.priority.desc(), jobs.c.id)
        .limit(_B("size"))
    )
    return q.with_for_update(skip_locked=True, of=jobs, key_share=True) if lock else q


_CANDIDATES = {
    (a, lock): _queued(
        a,
        lock,
        jobs.c.kind != JobKind.DRIVER,
        jobs.c.cores <= _B("cores"),
        jobs.c.memory_mb <= _B("memory_mb"),
        jobs.c.gpus <= _B("gpus"),
    ).offset(_B("offset"))
    for a in (True, False)
    for lock in (True, False)
}
_DRIVERS = {
    (a, lock): _queued(a, lock, jobs.c.kind == JobKind.DRIVER)
    for a in (True, False)
    for lock in (True, False)
}


def _scope(pilot: Any) -> dict[str, Any]:
    """The candidate queries' parameters that say whose jobs ``pilot`` may run."""
    return {"any_owner": pilot.serves_owner is None, "owner": pilot.serves_owner or 0}


def free_capacity(conn: Connection, pilot: Any) -> tuple[Capacity, int, int]:
    """What the pilot has free now, how many compute attempts it holds, and its free driver slots.

    Drivers run in their own slots and count against none of the compute resources; a
    parked driver (waiting for jobs it observes) holds no slot at all.
    """
    held = conn.execute(_USED, {"pid": pilot.id}).all()
    used = [r for r in held if r.kind != JobKind.DRIVER]
    drivers_free = pilot.driver_slots - sum(
        1 for r in held if r.kind == JobKind.DRIVER and r.state != JobState.PARKED
    )
    busy_gpus = {i for r in used for i in r.gpus}
    capacity = Capacity(
        slots=pilot.slots - len(used),
        cores=pilot.cores - sum(r.cores for r in used),
        memory_mb=pilot.memory_mb - sum(r.memory_mb for r in used),
        gpus=[Gpu(**g) for g in pilot.gpus if g["index"] not in busy_gpus],
        labels=frozenset(pilot.labels),
    )
    return capacity, len(used), drivers_free


_DRIVERS_BUSY = (
    sa.select(sa.func.count())
    .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
    .where(
        attempts.c.pilot_id == _B("pid"),
        attempts.c.state == AttemptState.RUNNING,
        jobs.c.kind == JobKind.DRIVER,
        jobs.c.state != JobState.PARKED,
    )
)


def driver_slots_free(conn: Connection, pilot_id: str) -> int:
    """The pilot's driver slots not held by a driver (a parked one holds none)."""
    slots = conn.scalar(sa.select(pilots.c.driver_slots).where(pilots.c.id == pilot_id)) or 0
    return int(slots) - int(conn.scalar(_DRIVERS_BUSY, {"pid": pilot_id}) or 0)


_SET_PARKABLE = (
    pilots.update()
    .where(pilots.c.id == _B("b_pid"), pilots.c.parkable != _B("b_n"))
    .values(parkable=_B("b_n"))
)


def set_parkable(conn: Connection, pilot_id: str, parkable: int, wake: Wakeups) -> None:
    """Record how many of the pilot's drivers only wait (it may park them for queued drivers);
    a claim it has waiting on the server looks again."""
    if conn.execute(_SET_PARKABLE, {"b_pid": pilot_id, "b_n": parkable}).rowcount:
        wake.add(pilot_topic(pilot_id))


def drivers_queued(conn: Connection, pilot_id: str, now: float) -> int:
    """How many queued drivers this pilot could run if it parked its waiting drivers (at most
    as many as it has): 0 unless it has some."""
    pilot = conn.execute(_PILOT, {"pid": pilot_id}).one_or_none()
    limit = 0 if pilot is None else pilot.parkable
    if pilot is None or limit <= 0:
        return 0
    every_queue = "*" in pilot.queues
    params: dict[str, Any] = {"now": now, "size": limit, **_scope(pilot)}
    if not every_queue:
        params["queues"] = pilot.queues
    labels = frozenset(pilot.labels)
    rows = conn.execute(_DRIVERS[(every_queue, False)], params)
    return sum(1 for r in rows if frozenset(r.labels) <= labels)


def claim(
    conn: Connection,
    pilot_id: str,
    max_jobs: int,
    now: float,
    *,
    skip_locked: bool,
    max_drivers: int = 0,
    prefetch: bool = True,
    wake: Wakeups,
    seen_seq: int | None = None,
    policy: RetryPolicy | None = None,
) -> list[Claimed] | None:
    """Move up to ``max_jobs`` fitting queued jobs to ``running`` on this pilot.

    First the jobs that fit the pilot's free resources; then, if the pilot prefetches,
    up to ``prefetch`` more CPU jobs that fit its total resources and will start there
    as soon as something finishes (hiding the claim round trip for short jobs).

    Returns ``None`` (rather than an empty list) when the pilot may not claim at all
    (draining or exited), so a long-poll stops waiting for work on its behalf.

    ``seen_seq`` is the last claim the pilot saw the answer of.  A pilot has one claim out
    at a time, so jobs of later claims are from answers that never reached it: they are
    handed back first (they never ran there; no attempt is counted against them).

    On PostgreSQL a claim locks a window of candidates and may take only some; a claim
    running at the same time skipped them all and may have parked.  So a claim that took
    jobs and left others in its window wakes their queues once more (a claim that takes
    nothing wakes no one, so this cannot ping-pong).
    """
    pilot = conn.execute(_PILOT, {"pid": pilot_id}).one_or_none()
    if pilot is None:
        raise NotFound(f"no pilot {pilot_id}")
    if seen_seq is not None and seen_seq < pilot.claim_seq:
        _hand_back_unseen(conn, pilot_id, seen_seq, now, policy or RetryPolicy(), wake)
    state = pilot.state
    if state == PilotState.LOST:  # a claim proves it is alive again
        state = PilotState.ACTIVE
        conn.execute(pilots.update().where(pilots.c.id == pilot_id).values(state=state))
        record(
            conn,
            [
                event(
                    now, state, from_state=pilot.state, pilot_id=pilot_id, reason="heard from again"
                )
            ],
        )
    touch = {"b_pid": pilot_id, "b_now": now}
    if state != PilotState.ACTIVE or (max_jobs <= 0 and max_drivers <= 0):
        conn.execute(_TOUCH, touch)
        return None if state != PilotState.ACTIVE else []
    capacity, held, drivers_free = free_capacity(conn, pilot)
    scanned: dict[int, str] = {}  # every candidate locked on the way: id -> queue
    drivers, rows = _pick_drivers(conn, pilot, min(max_drivers, drivers_free), now, skip_locked)
    picked, more_rows = _pick(
        conn, pilot, capacity, min(max_jobs, capacity.slots), now, skip_locked, scanned=scanned
    )
    rows.update(more_rows)
    ahead = min(max_jobs - len(picked), pilot.slots + pilot.prefetch - held - len(picked))
    ahead = ahead if prefetch else 0
    picked += drivers
    if ahead > 0:
        # Each prefetched job fits the whole pilot; they wait there one after another.
        total = Capacity(
            slots=ahead,
            cores=pilot.cores * ahead,
            memory_mb=pilot.memory_mb * ahead,
            gpus=[],
            labels=frozenset(pilot.labels),
        )
        more, more_rows = _pick(
            conn,
            pilot,
            total,
            ahead,
            now,
            skip_locked,
            exclude=set(rows),
            per_job=(pilot.cores, pilot.memory_mb),
            scanned=scanned,
        )
        picked += more
        rows.update(more_rows)
    if not picked:
        conn.execute(_TOUCH, touch)
        return []
    left = {q for i, q in scanned.items() if i not in rows}
    if skip_locked and left:
        wake.add(*(queue_topic(q) for q in left))
    return _start(conn, pilot, picked, rows, now, wake)


_UNSEEN = (
    sa.select(attempts.c.number, *JOB_FOR_ENDING)
    .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
    .where(
        attempts.c.pilot_id == _B("pid"),
        attempts.c.state == AttemptState.RUNNING,
        attempts.c.claim_seq > _B("seen"),
    )
    .order_by(jobs.c.id)
    .with_for_update(of=jobs)
)


def _hand_back_unseen(
    conn: Connection, pilot_id: str, seen_seq: int, now: float, policy: RetryPolicy, wake: Wakeups
) -> None:
    rows = conn.execute(_UNSEEN, {"pid": pilot_id, "seen": seen_seq}).all()
    if not rows:
        return
    endings = Endings(conn, now, policy, wake)
    why = AttemptEnd(AttemptState.KILLED, True, "its claim's answer never reached the pilot")
    for r in rows:
        endings.end(r, r.number, why, pilot_id)
    endings.flush()


def _pick(
    conn: Connection,
    pilot: Any,
    capacity: Capacity,
    budget: int,
    now: float,
    skip_locked: bool,
    exclude: set[int] | None = None,
    per_job: tuple[int, int] | None = None,
    scanned: dict[int, str] | None = None,
) -> tuple[list[tuple[Demand, tuple[int, ...]]], dict[int, Any]]:
    """Scan queued jobs in rank order, a small window first and wider ones when filters reject."""
    picked: list[tuple[Demand, tuple[int, ...]]] = []
    rows_by_id: dict[int, Any] = {}
    max_cores, max_memory = per_job or (capacity.cores, capacity.memory_mb)
    offset, size = 0, 2 * budget + 8
    for _ in range(MAX_PAGES):
        if budget - len(picked) <= 0 or capacity.slots <= 0 or capacity.cores <= 0:
            break
        params = {
            "now": now,
            "cores": min(max_cores, capacity.cores),
            "memory_mb": min(max_memory, capacity.memory_mb),
            "gpus": len(capacity.gpus),
            "size": size,
            "offset": offset,
            **_scope(pilot),
        }
        every_queue = "*" in pilot.queues
        if not every_queue:
            params["queues"] = pilot.queues
        rows = conn.execute(_CANDIDATES[(every_queue, skip_locked)], params).all()
        fresh = [r for r in rows if not exclude or r.id not in exclude]
        rows_by_id.update((r.id, r) for r in fresh)
        if scanned is not None:
            scanned.update((r.id, r.queue) for r in fresh)
        demands = [_demand(r) for r in fresh]
        usage = _usage(conn, pilot.queues) if len({d.owner_id for d in demands}) > 1 else {}
        picked += select(demands, capacity, usage, limit=budget - len(picked))
        if len(rows) < size:
            break
        offset, size = offset + size, min(size * 4, PAGE)
    return picked, {d.id: rows_by_id[d.id] for d, _ in picked}


def _pick_drivers(
    conn: Connection, pilot: Any, budget: int, now: float, skip_locked: bool
) -> tuple[list[tuple[Demand, tuple[int, ...]]], dict[int, Any]]:
    """Queued drivers for this pilot's free driver slots, in rank order, whose labels it has."""
    if budget <= 0:
        return [], {}
    every_queue = "*" in pilot.queues
    params: dict[str, Any] = {"now": now, "size": 2 * budget + 8, **_scope(pilot)}
    if not every_queue:
        params["queues"] = pilot.queues
    labels = frozenset(pilot.labels)
    rows = [
        r
        for r in conn.execute(_DRIVERS[(every_queue, skip_locked)], params)
        if frozenset(r.labels) <= labels
    ][:budget]
    picked: list[tuple[Demand, tuple[int, ...]]] = [(_demand(r), ()) for r in rows]
    return picked, {r.id: r for r in rows}


def _demand(r: Any) -> Demand:
    return Demand(
        id=r.id,
        owner_id=r.owner_id,
        priority=r.priority,
        cores=r.cores,
        memory_mb=r.memory_mb,
        gpus=r.gpus,
        gpu_model=r.gpu_model,
        gpu_memory_mb=r.gpu_memory_mb,
        labels=frozenset(r.labels),
    )


def _usage(conn: Connection, queue_names: list[str]) -> dict[int, float]:
    q = sa.select(jobs.c.owner_id, sa.func.sum(jobs.c.cores)).where(
        jobs.c.state == JobState.RUNNING
    )
    if "*" not in queue_names:
        q = q.where(jobs.c.queue.in_(queue_names))
    return {owner: float(cores) for owner, cores in conn.execute(q.group_by(jobs.c.owner_id))}


def _start(
    conn: Connection,
    pilot: Any,
    picked: list[tuple[Demand, tuple[int, ...]]],
    rows_by_id: dict[int, Any],
    now: float,
    wake: Wakeups,
) -> list[Claimed]:
    seq = pilot.claim_seq + 1
    conn.execute(_TOUCH_SEQ, {"b_pid": pilot.id, "b_now": now, "b_seq": seq})
    numbers = [rows_by_id[d.id].attempts + 1 for d, _ in picked]
    transition(
        conn,
        [
            Move(
                d.id,
                JobState.QUEUED,
                JobState.RUNNING,
                "claimed",
                values={"attempts": n, "pilot_id": pilot.id, "started_at": now},
                attempt=n,
                pilot_id=pilot.id,
            )
            for (d, _), n in zip(picked, numbers, strict=True)
        ],
        now,
        wake,
    )
    conn.execute(
        _INSERT_ATTEMPT,
        [
            {
                "job_id": d.id,
                "number": n,
                "pilot_id": pilot.id,
                "claim_seq": seq,
                "state": AttemptState.RUNNING,
                "gpus": list(g),
                "started_at": now,
            }
            for (d, g), n in zip(picked, numbers, strict=True)
        ],
    )
    return [
        Claimed(
            id=d.id,
            attempt=n,
            claim_seq=seq,
            name=(r := rows_by_id[d.id]).name,
            kind=r.kind,
            spec=r.spec,
            sandbox=r.sandbox,
            cores=r.cores,
            memory_mb=r.memory_mb,
            gpus=g,
            walltime_s=r.walltime_s,
            isolate=r.isolate,
            waited_s=now - r.created_at,
            owner=d.owner_id,
        )
        for (d, g), n in zip(picked, numbers, strict=True)
    ]
