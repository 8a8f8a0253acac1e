"""Dependencies between jobs: futures passed as arguments.

A job whose arguments hold ``{"$pw_future": ID}`` depends on job ID.  It waits in
``pending`` until every upstream job has succeeded; the transaction that records the last
upstream success also moves it to ``queued``, with each placeholder replaced by that
upstream's result.  An upstream that fails (or is cancelled) cancels its pending dependents,
and theirs, with the reason ``upstream_failed``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.protocol import JobState, Reason
from pilotwave.protocol.wire import fill_futures, future_ids
from pilotwave.store.schema import dependencies, jobs
from pilotwave.wms.transitions import Move, transition
from pilotwave.wms.wakeups import Final, Wakeups, job_topic, queue_topic


def failure_reason(upstream_id: int, name: str, error: str | None) -> str:
    """The error a dependent gets when ``upstream_id`` failed; carries the upstream's error."""
    return f"job {upstream_id} ({name}) did not succeed:\n{error or ''}".rstrip()


# A column for queries that fetch jobs about to end: whether anything depends on them, so
# that ending the (many) jobs nothing depends on costs no lookup.
HAS_DEPENDENTS = sa.exists().where(dependencies.c.upstream_id == jobs.c.id).label("has_dependents")


def lock_upstreams(conn: Connection, ids: Iterable[int]) -> dict[int, Any]:
    """Upstream rows, locked so a completion cannot slip between reading and linking them.

    ``FOR KEY SHARE`` blocks the ``FOR UPDATE`` of a completion or cancellation until the
    link is committed, but not a claim (``FOR NO KEY UPDATE SKIP LOCKED``): a queued upstream
    stays claimable while jobs that need it are being submitted.
    """
    q = sa.select(
        jobs.c.id, jobs.c.owner_id, jobs.c.state, jobs.c.result, jobs.c.error, jobs.c.name
    ).where(jobs.c.id.in_(sorted(set(ids))))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(read=True, key_share=True)
    return {r.id: r for r in conn.execute(q)}


def after_final(conn: Connection, finals: list[Final], now: float, wake: Wakeups) -> None:
    """Release or cancel the dependents of jobs that just became final (same transaction)."""
    linked = [f for f in finals if f.has_dependents]
    succeeded = [f.id for f in linked if f.state is JobState.SUCCEEDED]
    failed = {f.id: f for f in linked if f.state is not JobState.SUCCEEDED}
    if succeeded:
        _release(conn, succeeded, now, wake)
    if failed:
        _cancel_dependents(conn, failed, now, wake)


def _dependents(conn: Connection, upstream: list[int]) -> list[Any]:
    """Links from ``upstream`` jobs to their dependents that still wait (``pending``).

    Two indexed lookups rather than a join: the planner would otherwise scan every pending
    job, on each completion, to find the few (usually none) that depend on it.
    """
    edges = list(conn.execute(_LINKS, {"ids": upstream}))
    if not edges:
        return []
    waiting = {r.id: r for r in conn.execute(_PENDING, {"ids": sorted({e.job_id for e in edges})})}
    return [(e, waiting[e.job_id]) for e in edges if e.job_id in waiting]


_LINKS = sa.select(dependencies.c.job_id, dependencies.c.upstream_id).where(
    dependencies.c.upstream_id.in_(sa.bindparam("ids", expanding=True))
)
_PENDING = sa.select(jobs.c.id, jobs.c.kind, jobs.c.workflow_id).where(
    jobs.c.id.in_(sa.bindparam("ids", expanding=True)), jobs.c.state == JobState.PENDING
)


def _release(conn: Connection, upstream: list[int], now: float, wake: Wakeups) -> None:
    edges = _dependents(conn, upstream)
    if not edges:
        return
    done_by: dict[int, int] = {}
    for e, _ in edges:
        done_by[e.job_id] = done_by.get(e.job_id, 0) + 1
    # Counting down is not a state change: the move to queued happens when it reaches zero.
    conn.execute(
        jobs.update()
        .where(jobs.c.id == sa.bindparam("b_id"), jobs.c.state == JobState.PENDING)
        .values(deps_left=jobs.c.deps_left - sa.bindparam("b_n")),
        [{"b_id": j, "b_n": n} for j, n in done_by.items()],
    )
    ready = list(
        conn.execute(
            sa.select(jobs.c.id, jobs.c.spec, jobs.c.queue).where(
                jobs.c.id.in_(list(done_by)),
                jobs.c.state == JobState.PENDING,
                jobs.c.deps_left <= 0,
            )
        )
    )
    if ready:
        queue_jobs(conn, ready, now, wake, why="dependencies succeeded")


def queue_jobs(
    conn: Connection,
    rows: list[Any],
    now: float,
    wake: Wakeups,
    *,
    why: str,
    old: JobState = JobState.PENDING,
) -> None:
    """Move jobs (rows with id, spec, queue) from ``old`` to ``queued``, filling in upstream results."""
    needed = {r.id: future_ids(r.spec) for r in rows}
    all_up = {u for ups in needed.values() for u in ups}
    results: dict[int, str] = {}
    if all_up:
        q = sa.select(jobs.c.id, jobs.c.result).where(
            jobs.c.id.in_(sorted(all_up)), jobs.c.state == JobState.SUCCEEDED
        )
        results = {r.id: r.result for r in conn.execute(q)}
    transition(
        conn,
        [
            Move(
                r.id,
                old,
                JobState.QUEUED,
                why,
                values={"spec": fill_futures(r.spec, results), "deps_left": 0},
            )
            for r in rows
        ],
        now,
        wake,
    )
    wake.add(*{queue_topic(r.queue) for r in rows})


def _cancel_dependents(
    conn: Connection, failed: dict[int, Final], now: float, wake: Wakeups
) -> None:
    names = {
        r.id: r.name
        for r in conn.execute(sa.select(jobs.c.id, jobs.c.name).where(jobs.c.id.in_(list(failed))))
    }
    errors = {i: failure_reason(i, names.get(i, ""), f.error) for i, f in failed.items()}
    while errors:  # breadth first down the graph: dependents of dependents
        edges = _dependents(conn, list(errors))
        if not edges:
            return
        mine: dict[int, tuple[str, Any]] = {}
        for e, row in sorted(edges, key=lambda er: (er[0].job_id, er[0].upstream_id)):
            mine.setdefault(e.job_id, (errors[e.upstream_id], row))
        transition(
            conn,
            [
                Move(
                    j,
                    JobState.PENDING,
                    JobState.CANCELLED,
                    f"{Reason.UPSTREAM_FAILED}: {err.splitlines()[0]}",
                    values={"finished_at": now, "error": err, "reason": Reason.UPSTREAM_FAILED},
                    kind=row.kind,
                    workflow_id=row.workflow_id,
                    error=err,
                )
                for j, (err, row) in mine.items()
            ],
            now,
            wake,
        )
        wake.add(*(job_topic(j) for j in mine))
        errors = {j: err for j, (err, _) in mine.items()}  # their dependents carry the root cause
