"""Claims: a pilot takes the best-ranked queued jobs that fit its free resources.

The server, not the pilot, accounts for what a pilot is running (its ``running``
attempts), so a claim needs no resource report and can never overcommit a pilot even if
a response was lost.  On PostgreSQL candidate rows are locked with ``FOR UPDATE SKIP
LOCKED`` so concurrent claims never wait on, or take, the same job; on SQLite the single
writer lock serializes claims.
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
from pilotwave.wms.states import AttemptState, JobState, PilotState

PAGE = 200
MAX_PAGES = 5


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


def free_capacity(conn: Connection, pilot: Any) -> Capacity:
    used = conn.execute(
        sa.select(jobs.c.cores, jobs.c.memory_mb, attempts.c.gpus)
        .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
        .where(attempts.c.pilot_id == pilot.id, attempts.c.state == AttemptState.RUNNING)
    ).all()
    busy_gpus = {i for r in used for i in r.gpus}
    return Capacity(
        slots=pilot.slots - len(used),
        cores=pilot.cores - sum(r.cores for r in used),
        memory_mb=pilot.memory_mb - sum(r.memory_mb for r in used),
        gpus=[Gpu(**g) for g in pilot.gpus if g["index"] not in busy_gpus],
        labels=frozenset(pilot.labels),
    )


def claim(
    conn: Connection, pilot_id: str, max_jobs: int, now: float, *, skip_locked: bool
) -> list[Claimed] | None:
    """Move up to ``max_jobs`` fitting queued jobs to ``running`` on this pilot.

    Returns ``None`` (rather than an empty list) when the pilot may not claim at all
    (draining or exited), so a long-poll stops waiting for work on its behalf.
    """
    pilot = conn.execute(sa.select(pilots).where(pilots.c.id == pilot_id)).one_or_none()
    if pilot is None:
        raise NotFound(f"no pilot {pilot_id}")
    values: dict[str, Any] = {"last_seen": now}
    if pilot.state == PilotState.LOST:  # a claim proves it is alive again
        values["state"] = PilotState.ACTIVE
        record(
            conn,
            [
                event(
                    now,
                    PilotState.ACTIVE,
                    from_state=pilot.state,
                    pilot_id=pilot_id,
                    reason="heard from again",
                )
            ],
        )
    conn.execute(pilots.update().where(pilots.c.id == pilot_id).values(**values))
    if values.get("state", pilot.state) != PilotState.ACTIVE:
        return None
    capacity = free_capacity(conn, pilot)
    budget = min(max_jobs, capacity.slots)
    picked: list[tuple[Demand, tuple[int, ...]]] = []
    rows_by_id: dict[int, Any] = {}
    for page in range(MAX_PAGES):
        if budget - len(picked) <= 0 or capacity.slots <= 0 or capacity.cores <= 0:
            break
        q = (
            sa.select(
                jobs.c.id,
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
            )
            .where(
                jobs.c.state == JobState.QUEUED,
                serves(pilot.queues),
                jobs.c.not_before <= now,
                jobs.c.cores <= capacity.cores,
                jobs.c.memory_mb <= capacity.memory_mb,
                jobs.c.gpus <= len(capacity.gpus),
            )
            .order_by(jobs.c.priority.desc(), jobs.c.id)
            .limit(PAGE)
            .offset(page * PAGE)
        )
        if skip_locked:
            q = q.with_for_update(skip_locked=True, of=jobs)
        rows = conn.execute(q).all()
        if not rows:
            break
        rows_by_id.update((r.id, r) for r in rows)
        demands = [
            Demand(
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
            for r in rows
        ]
        usage = _usage(conn, pilot.queues) if len({d.owner_id for d in demands}) > 1 else {}
        picked += select(demands, capacity, usage, limit=budget - len(picked))
        if len(rows) < PAGE:
            break
    if not picked:
        return []
    return _start(conn, pilot, picked, rows_by_id, now)


def serves(queue_names: list[str]) -> Any:
    """SQL condition: a job's queue is one of ``queue_names`` (``*`` serves every queue)."""
    return sa.true() if "*" in queue_names else jobs.c.queue.in_(queue_names)


def _usage(conn: Connection, queue_names: list[str]) -> dict[int, float]:
    q = sa.select(jobs.c.owner_id, sa.func.sum(jobs.c.cores)).where(
        jobs.c.state == JobState.RUNNING, serves(queue_names)
    )
    return {owner: float(cores) for owner, cores in conn.execute(q.group_by(jobs.c.owner_id))}


def _start(
    conn: Connection,
    pilot: Any,
    picked: list[tuple[Demand, tuple[int, ...]]],
    rows_by_id: dict[int, Any],
    now: float,
) -> list[Claimed]:
    seq = pilot.claim_seq + 1
    conn.execute(pilots.update().where(pilots.c.id == pilot.id).values(claim_seq=seq))
    params = [{"jid": d.id, "n": rows_by_id[d.id].attempts + 1} for d, _ in picked]
    result = conn.execute(
        jobs.update()
        .where(jobs.c.id == sa.bindparam("jid"), jobs.c.state == JobState.QUEUED)
        .values(
            state=JobState.RUNNING, attempts=sa.bindparam("n"), pilot_id=pilot.id, started_at=now
        ),
        params,
    )
    if conn.dialect.supports_sane_multi_rowcount and result.rowcount != len(params):
        raise RuntimeError("claim raced with another writer; rolled back")  # guarded in WHERE
    conn.execute(
        attempts.insert(),
        [
            {
                "job_id": d.id,
                "number": p["n"],
                "pilot_id": pilot.id,
                "claim_seq": seq,
                "state": AttemptState.RUNNING,
                "gpus": list(g),
                "started_at": now,
            }
            for (d, g), p in zip(picked, params, strict=True)
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
                attempt=p["n"],
                pilot_id=pilot.id,
                reason="claimed",
            )
            for (d, _), p in zip(picked, params, strict=True)
        ],
    )
    out = []
    for (d, g), p in zip(picked, params, strict=True):
        r = rows_by_id[d.id]
        out.append(
            Claimed(
                id=d.id,
                attempt=p["n"],
                claim_seq=seq,
                name=r.name,
                kind=r.kind,
                spec=r.spec,
                sandbox=r.sandbox,
                cores=r.cores,
                memory_mb=r.memory_mb,
                gpus=g,
                walltime_s=r.walltime_s,
                isolate=r.isolate,
            )
        )
    return out
