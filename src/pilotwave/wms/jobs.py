"""Submitting, reading and cancelling jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.errors import NotFound
from pilotwave.protocol import FINAL_JOB_STATES, JobOptions, JobState, JobSubmission, Limits, Reason
from pilotwave.protocol.limits import check_size
from pilotwave.protocol.wire import JOB_OPTION_FIELDS, fill_futures, future_ids
from pilotwave.store.schema import attempts, dependencies, jobs, queues
from pilotwave.wms import blobs, deps
from pilotwave.wms.transitions import Move, born, transition
from pilotwave.wms.wakeups import (
    Final,
    Wakeups,
    command_topic,
    driver_topic,
    job_topic,
    queue_topic,
)


@dataclass(frozen=True)
class JobSpec:
    """A validated job submission (the HTTP layer builds these from request bodies)."""

    kind: str
    spec: str  # JSON text, opaque to the server
    options: JobOptions = field(default_factory=JobOptions)
    name: str = ""
    key: str | None = None
    sandbox: str | None = None
    workflow_id: int | None = None
    held: bool = False  # its workflow is suspended


def spec_of(sub: JobSubmission, i: int, limits: Limits) -> JobSpec:
    """The queue's spec for the ``i``-th job of a request; ``TooLarge`` if its arguments are too large."""
    payload = orjson.dumps(sub.payload())
    field_ = f"jobs[{i}].{'args' if sub.kind == 'python' else 'argv'}"
    check_size(len(payload), limits.max_spec_bytes, field_, "the job's arguments")
    return JobSpec(
        kind=sub.kind,
        spec=payload.decode(),
        options=sub.options(),
        name=sub.display_name[:200],
        key=sub.key,
        sandbox=sub.sandbox,
    )


def ensure_queues(conn: Connection, names: set[str], now: float) -> None:
    known = set(conn.scalars(sa.select(queues.c.name).where(queues.c.name.in_(names))))
    missing = sorted(names - known)
    if missing:
        conn.execute(queues.insert(), [{"name": n, "created_at": now} for n in missing])


_IN_FLIGHT = (
    sa.select(sa.func.count())
    .select_from(jobs)
    .where(
        jobs.c.owner_id == sa.bindparam("owner"),
        jobs.c.state.in_([JobState.PENDING, JobState.QUEUED, JobState.RUNNING, JobState.PARKED]),
    )
)


def in_flight(conn: Connection, owner_id: int) -> int:
    """How many of a user's jobs have not finished (an index on owner and state counts them)."""
    return int(conn.execute(_IN_FLIGHT, {"owner": owner_id}).scalar_one())


def submit(
    conn: Connection, owner_id: int, specs: Sequence[JobSpec], now: float, wake: Wakeups
) -> list[int]:
    """Insert jobs; a spec whose ``key`` was already used returns that job.

    A job whose arguments hold futures (``{"$pw_future": id}``) starts ``pending`` until
    those jobs succeed, ``queued`` with their results filled in if they already have, or
    ``cancelled`` if one of them failed.
    """
    keys = [s.key for s in specs if s.key]
    existing: dict[str, int] = {}
    if keys:
        found = conn.execute(
            sa.select(jobs.c.key, jobs.c.id).where(
                jobs.c.owner_id == owner_id, jobs.c.key.in_(keys)
            )
        )
        existing = {k: i for k, i in found}
    fresh = [s for s in specs if not (s.key and s.key in existing)]
    ids: list[int] = []
    if sandboxes := {s.sandbox for s in fresh if s.sandbox}:
        blobs.check_held(conn, owner_id, sandboxes)
    if fresh:
        ensure_queues(conn, {s.options.queue for s in fresh}, now)
        ups = [future_ids(s.spec) for s in fresh]
        upstream = _visible_upstreams(conn, owner_id, {u for us in ups for u in us})
        rows = [_row(owner_id, s, us, upstream, now) for s, us in zip(fresh, ups, strict=True)]
        result = conn.execute(
            jobs.insert().returning(jobs.c.id, sort_by_parameter_order=True), rows
        )
        ids = [r[0] for r in result]
        links = [
            {"job_id": i, "upstream_id": u} for i, us in zip(ids, ups, strict=True) for u in us
        ]
        if links:
            conn.execute(dependencies.insert(), links)
        born(
            conn, [(i, JobState(r["state"]), _why(r)) for i, r in zip(ids, rows, strict=True)], now
        )
        wake.add(*{queue_topic(r["queue"]) for r in rows if r["state"] == JobState.QUEUED})
        for i, r in zip(ids, rows, strict=True):
            if r["state"] == JobState.CANCELLED:
                wake.add(job_topic(i))
                wake.finals.append(
                    Final(
                        i,
                        JobState.CANCELLED,
                        r["error"],
                        kind=r["kind"],
                        workflow_id=r["workflow_id"],
                        has_dependents=False,
                    )
                )
    new_ids = iter(ids)
    return [existing[s.key] if s.key and s.key in existing else next(new_ids) for s in specs]


def _visible_upstreams(conn: Connection, owner_id: int, ids: set[int]) -> dict[int, Any]:
    if not ids:
        return {}
    rows = deps.lock_upstreams(conn, ids)
    missing = sorted(i for i in ids if i not in rows or rows[i].owner_id != owner_id)
    if missing:
        raise NotFound(f"no job {missing[0]} (passed as a future argument)")
    return rows


def _why(row: dict[str, Any]) -> str:
    if row["state"] == JobState.PENDING:
        return f"submitted, waiting for {row['deps_left']} job(s)"
    if row["state"] == JobState.CANCELLED:
        return f"{Reason.UPSTREAM_FAILED}: {row['error'].splitlines()[0]}"
    return "submitted"


def _row(
    owner_id: int, s: JobSpec, ups: list[int], upstream: dict[int, Any], now: float
) -> dict[str, Any]:
    row = {k: getattr(s.options, k) for k in JOB_OPTION_FIELDS}
    row.update(
        kind=s.kind,
        spec=s.spec,
        name=s.name,
        key=s.key,
        sandbox=s.sandbox,
        workflow_id=s.workflow_id,
        held=s.held,
        owner_id=owner_id,
        labels=sorted(set(s.options.labels)),
        state=JobState.QUEUED.value,
        attempts=0,
        failures=0,
        not_before=0.0,
        created_at=now,
        deps_left=0,
        finished_at=None,
        error=None,
        reason=None,
    )
    if ups:
        failed = [
            upstream[u] for u in ups if upstream[u].state in (JobState.FAILED, JobState.CANCELLED)
        ]
        left = sum(1 for u in ups if upstream[u].state != JobState.SUCCEEDED)
        if failed:
            f = failed[0]
            row.update(
                state=JobState.CANCELLED.value,
                finished_at=now,
                error=deps.failure_reason(f.id, f.name, f.error),
                reason=Reason.UPSTREAM_FAILED.value,
            )
        elif left:
            row.update(state=JobState.PENDING.value, deps_left=left)
        else:
            row["spec"] = fill_futures(s.spec, {u: upstream[u].result for u in ups})
    return row


_SUMMARY = [
    jobs.c.id,
    jobs.c.owner_id,
    jobs.c.name,
    jobs.c.kind,
    jobs.c.queue,
    jobs.c.state,
    jobs.c.priority,
    jobs.c.attempts,
    jobs.c.failures,
    jobs.c.max_attempts,
    jobs.c.pilot_id,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.finished_at,
    jobs.c.reason,
]


def _visible(owner_id: int | None) -> Any:
    return sa.true() if owner_id is None else jobs.c.owner_id == owner_id


def get(conn: Connection, job_id: int, owner_id: int | None) -> dict[str, Any]:
    """One job with its attempts; ``owner_id=None`` is an admin who sees everything."""
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id, _visible(owner_id))).one_or_none()
    if row is None:
        raise NotFound(f"no job {job_id}")
    job = dict(row._mapping)
    job["attempt_history"] = [
        dict(r._mapping)
        for r in conn.execute(
            sa.select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.number)
        )
    ]
    return job


def list_jobs(
    conn: Connection,
    owner_id: int | None,
    *,
    states: Sequence[str] = (),
    queue: str | None = None,
    ids: Sequence[int] = (),
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; page with ``before_id``."""
    q = sa.select(*_SUMMARY).where(_visible(owner_id)).order_by(jobs.c.id.desc()).limit(limit)
    if states:
        q = q.where(jobs.c.state.in_(states))
    if queue:
        q = q.where(jobs.c.queue == queue)
    if ids:
        q = q.where(jobs.c.id.in_(ids))
    if before_id is not None:
        q = q.where(jobs.c.id < before_id)
    return [dict(r._mapping) for r in conn.execute(q)]


def counts(conn: Connection, owner_id: int | None) -> dict[str, int]:
    q = sa.select(jobs.c.state, sa.func.count()).where(_visible(owner_id)).group_by(jobs.c.state)
    return {s: n for s, n in conn.execute(q)}


def finished(
    conn: Connection, ids: Sequence[int], owner_id: int | None
) -> dict[int, dict[str, Any]]:
    """Those of ``ids`` that are final, as ``Final`` records (result as JSON text); unknown ids raise."""
    out: dict[int, dict[str, Any]] = {}
    known: set[int] = set()
    for chunk in _chunks(ids, 900):
        rows = conn.execute(
            sa.select(jobs.c.id, jobs.c.state, jobs.c.result, jobs.c.error, jobs.c.reason).where(
                jobs.c.id.in_(chunk), _visible(owner_id)
            )
        ).all()
        known.update(r.id for r in rows)
        for r in rows:
            if r.state in FINAL_JOB_STATES:
                out[r.id] = {
                    "state": r.state,
                    "result": r.result,
                    "error": r.error,
                    "reason": r.reason,
                }
    missing = sorted(set(ids) - known)
    if missing:
        raise NotFound(
            f"no job {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return out


def cancel(
    conn: Connection,
    ids: Sequence[int],
    owner_id: int | None,
    now: float,
    wake: Wakeups,
    reason: Reason = Reason.CANCELLED,
    why: str = "cancelled by user",
) -> list[int]:
    """Cancel jobs that are not final yet; running attempts get a kill command. Returns those cancelled."""
    rows = conn.execute(
        sa.select(
            jobs.c.id,
            jobs.c.state,
            jobs.c.pilot_id,
            jobs.c.attempts,
            jobs.c.queue,
            jobs.c.kind,
            jobs.c.workflow_id,
            deps.HAS_DEPENDENTS,
        )
        .where(jobs.c.id.in_(ids), _visible(owner_id))
        .with_for_update()
    ).all()
    if len(rows) != len(set(ids)):
        missing = sorted(set(ids) - {r.id for r in rows})
        raise NotFound(f"no job {missing[0]}")
    live = [r for r in rows if r.state not in FINAL_JOB_STATES]
    if not live:
        return []
    finals = transition(
        conn,
        [
            Move(
                r.id,
                JobState(r.state),
                JobState.CANCELLED,
                why,
                values={"finished_at": now, "error": why, "reason": reason},
                attempt=r.attempts or None,
                pilot_id=r.pilot_id,
                kind=r.kind,
                workflow_id=r.workflow_id,
                has_dependents=r.has_dependents,
                error=why,
            )
            for r in live
        ],
        now,
        wake,
    )
    for r in live:
        wake.add(job_topic(r.id))
        if r.pilot_id and r.state in (JobState.RUNNING, JobState.PARKED):
            wake.add(command_topic(r.pilot_id))  # the pilot stops it
        if r.state == JobState.PARKED:
            wake.add(driver_topic(r.id))  # its waiting process hears it at once
    deps.after_final(conn, finals, now, wake)
    return [r.id for r in live]


def _chunks(seq: Sequence[int], n: int) -> list[Sequence[int]]:
    return [seq[i : i + n] for i in range(0, len(seq), n)]
