"""Claims: a pilot takes the best-ranked queued jobs that fit its free resources.

The server, not the pilot, accounts for what a pilot is running (its ``running``
attempts), so a claim needs no resource report and can never overcommit a pilot even if
a response was lost.  On PostgreSQL candidate rows are locked with ``FOR NO KEY UPDATE
SKIP LOCKED`` so concurrent claims never wait on, or take, the same job (the ``NO KEY``
mode does not skip rows that a submission holds ``FOR KEY SHARE`` as upstreams of a new
job); on SQLite the single writer lock serializes claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.store.schema import attempts, jobs, pilots
from pilotwave.wms.errors import NotFound
from pilotwave.wms.events import event, record
from pilotwave.wms.matching import Capacity, Demand, Gpu, select
from pilotwave.wms.states import AttemptState, JobKind, JobState, PilotState
from pilotwave.wms.wakeups import Wakeups, queue_topic

PAGE = 500
MAX_PAGES = 5
_CANDIDATE = [
    jobs.c.id,
    jobs.c.queue,
    jobs.c.owner_id,
    jobs.c.priority,
    jobs.c.cores,
    jobs.c.memory_mb,
    jobs.c.gpus,
    jobs.c.gpu_model,
    jobs.c.gpu_memory_mb,
    jobs.c.labels,
    jobs.c.attempts,
    jobs.c.name,
    jobs.c.kind,
    jobs.c.spec,
    jobs.c.sandbox,
    jobs.c.walltime_s,
    jobs.c.isolate,
    jobs.c.created_at,
]


_B = sa.bindparam
_PILOT = sa.select(pilots).where(pilots.c.id == _B("pid"))
_USED = (
    sa.select(jobs.c.cores, jobs.c.memory_mb, jobs.c.kind, attempts.c.gpus)
    .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
    .where(attempts.c.pilot_id == _B("pid"), attempts.c.state == AttemptState.RUNNING)
)
_TOUCH = pilots.update().where(pilots.c.id == _B("b_pid")).values(last_seen=_B("b_now"))
_TOUCH_SEQ = (
    pilots.update()
    .where(pilots.c.id == _B("b_pid"))
    .values(last_seen=_B("b_now"), claim_seq=_B("b_seq"))
)
_START_JOB = (
    jobs.update()
    .where(jobs.c.id == _B("b_job"), jobs.c.state == JobState.QUEUED)
    .values(
        state=JobState.RUNNING,
        attempts=_B("b_number"),
        pilot_id=_B("b_pid"),
        started_at=_B("b_now"),
    )
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


@dataclass(frozen=True)
class Claimed:
    """A job handed to a pilot, with everything the pilot needs to run it."""

    id: int
    attempt: int
    claim_seq: int
    name: str
    kind: str
    spec: str
    sandbox: str | None
    cores: int
    memory_mb: int
    gpus: tuple[int, ...]
    walltime_s: float | None
    isolate: bool
    waited_s: float  # since it was submitted


def free_capacity(conn: Connection, pilot: Any) -> tuple[Capacity, int, int]:
    """What the pilot has free now, how many compute attempts it holds, and its free driver slots.

    Drivers run in their own slots and count against none of the compute resources.
    """
    held = conn.execute(_USED, {"pid": pilot.id}).all()
    used = [r for r in held if r.kind != JobKind.DRIVER]
    drivers_free = pilot.driver_slots - (len(held) - len(used))
    busy_gpus = {i for r in used for i in r.gpus}
    capacity = Capacity(
        slots=pilot.slots - len(used),
        cores=pilot.cores - sum(r.cores for r in used),
        memory_mb=pilot.memory_mb - sum(r.memory_mb for r in used),
        gpus=[Gpu(**g) for g in pilot.gpus if g["index"] not in busy_gpus],
        labels=frozenset(pilot.labels),
    )
    return capacity, len(used), drivers_free


def claim(
    conn: Connection,
    pilot_id: str,
    max_jobs: int,
    now: float,
    *,
    skip_locked: bool,
    max_drivers: int = 0,
    prefetch: bool = True,
    wake: Wakeups | None = None,
) -> list[Claimed] | None:
    """Move up to ``max_jobs`` fitting queued jobs to ``running`` on this pilot.

    First the jobs that fit the pilot's free resources; then, if the pilot prefetches,
    up to ``prefetch`` more CPU jobs that fit its total resources and will start there
    as soon as something finishes (hiding the claim round trip for short jobs).

    Returns ``None`` (rather than an empty list) when the pilot may not claim at all
    (draining or exited), so a long-poll stops waiting for work on its behalf.

    On PostgreSQL a claim locks a window of candidates and may take only some; a claim
    running at the same time skipped them all and may have parked.  So a claim that took
    jobs and left others in its window wakes their queues once more (a claim that takes
    nothing wakes no one, so this cannot ping-pong).
    """
    pilot = conn.execute(_PILOT, {"pid": pilot_id}).one_or_none()
    if pilot is None:
        raise NotFound(f"no pilot {pilot_id}")
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
    if skip_locked and wake is not None and left:
        wake.add(*(queue_topic(q) for q in left))
    return _start(conn, pilot, picked, rows, now)


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
    params: dict[str, Any] = {"now": now, "size": 2 * budget + 8}
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
) -> list[Claimed]:
    seq = pilot.claim_seq + 1
    conn.execute(_TOUCH_SEQ, {"b_pid": pilot.id, "b_now": now, "b_seq": seq})
    numbers = [rows_by_id[d.id].attempts + 1 for d, _ in picked]
    params = [
        {"b_job": d.id, "b_number": n, "b_pid": pilot.id, "b_now": now}
        for (d, _), n in zip(picked, numbers, strict=True)
    ]
    result = conn.execute(_START_JOB, params)
    if conn.dialect.supports_sane_multi_rowcount and result.rowcount != len(params):
        raise RuntimeError("claim raced with another writer; rolled back")  # guarded in WHERE
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
    record(
        conn,
        [
            event(
                now,
                JobState.RUNNING,
                job_id=d.id,
                from_state=JobState.QUEUED,
                attempt=n,
                pilot_id=pilot.id,
                reason="claimed",
            )
            for (d, _), n in zip(picked, numbers, strict=True)
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
        )
        for (d, g), n in zip(picked, numbers, strict=True)
    ]
