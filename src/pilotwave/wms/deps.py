"""Dependencies between jobs: futures passed as arguments.

A job whose arguments hold ``{"$pw_future": ID}`` depends on job ID.  It waits in
``pending`` until every upstream job has succeeded; the transaction that records the last
upstream success also moves it to ``queued``, with each placeholder replaced by that
upstream's result.  An upstream that fails (or is cancelled) cancels its pending dependents,
and theirs, with the reason ``upstream_failed``.

Placeholders are found and replaced in the spec's JSON text: inside JSON strings quotes are
escaped, so ``{"$pw_future":12}`` can only match a real placeholder object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.store.schema import dependencies, jobs
from pilotwave.wms.events import event, record
from pilotwave.wms.states import JobState
from pilotwave.wms.wakeups import Wakeups, job_topic, queue_topic

PLACEHOLDER = "$pw_future"
_FUTURE_RE = re.compile(r'\{"\$pw_future":(\d+)\}')
UPSTREAM_FAILED = "upstream_failed"


def upstream_ids(spec: str) -> list[int]:
    """The jobs a spec (JSON text) refers to through placeholders, in first-seen order."""
    if PLACEHOLDER not in spec:
        return []
    return list(dict.fromkeys(int(m) for m in _FUTURE_RE.findall(spec)))


def substitute(spec: str, results: Mapping[int, str]) -> str:
    """Replace the placeholders of jobs in ``results`` by their results (JSON text)."""
    if PLACEHOLDER not in spec:
        return spec

    def repl(m: re.Match[str]) -> str:
        found = results.get(int(m.group(1)))
        return m.group(0) if found is None else found

    return _FUTURE_RE.sub(repl, spec)


def failure_reason(upstream_id: int, name: str, error: str | None) -> str:
    """The error a dependent gets when ``upstream_id`` failed; carries the upstream's error."""
    return f"{UPSTREAM_FAILED}: job {upstream_id} ({name}) did not succeed:\n{error or ''}".rstrip()


@dataclass(frozen=True)
class Final:
    """A job that just reached a final state."""

    id: int
    state: JobState
    error: str | None = None
    kind: str = ""
    workflow_id: int | None = None
    has_dependents: bool = True  # when unsure, look


# A column for queries that fetch jobs about to end: whether anything depends on them, so
# that ending the (many) jobs nothing depends on costs no lookup.
HAS_DEPENDENTS = sa.exists().where(dependencies.c.upstream_id == jobs.c.id).label("has_dependents")


FinalHook = Callable[[Connection, list[Final], float, Wakeups], None]

# Called in the same transaction after dependents are settled.  The workflow engine adds
# one when it is imported (the server imports it): the queue knows nothing of workflows.
FINAL_HOOKS: list[FinalHook] = []


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
    for hook in FINAL_HOOKS:
        hook(conn, finals, now, wake)


def _dependents(conn: Connection, upstream: list[int]) -> list[Any]:
    """Links from ``upstream`` jobs to their dependents that still wait (``pending``).

    Two indexed lookups rather than a join: the planner would otherwise scan every pending
    job, on each completion, to find the few (usually none) that depend on it.
    """
    edges = list(conn.execute(_LINKS, {"ids": upstream}))
    if not edges:
        return []
    waiting = set(conn.scalars(_PENDING, {"ids": sorted({e.job_id for e in edges})}))
    return [e for e in edges if e.job_id in waiting]


_LINKS = sa.select(dependencies.c.job_id, dependencies.c.upstream_id).where(
    dependencies.c.upstream_id.in_(sa.bindparam("ids", expanding=True))
)
_PENDING = sa.select(jobs.c.id).where(
    jobs.c.id.in_(sa.bindparam("ids", expanding=True)), jobs.c.state == JobState.PENDING
)


def _release(conn: Connection, upstream: list[int], now: float, wake: Wakeups) -> None:
    edges = _dependents(conn, upstream)
    if not edges:
        return
    done_by: dict[int, int] = {}
    for e in edges:
        done_by[e.job_id] = done_by.get(e.job_id, 0) + 1
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
        queue_jobs(conn, ready, now, wake, reason="dependencies succeeded")


def queue_jobs(
    conn: Connection, rows: list[Any], now: float, wake: Wakeups, *, reason: str
) -> None:
    """Move pending jobs (rows with id, spec, queue) to ``queued``, filling in upstream results."""
    needed = {r.id: upstream_ids(r.spec) for r in rows}
    all_up = {u for ups in needed.values() for u in ups}
    results: dict[int, str] = {}
    if all_up:
        q = sa.select(jobs.c.id, jobs.c.result).where(
            jobs.c.id.in_(sorted(all_up)), jobs.c.state == JobState.SUCCEEDED
        )
        results = {r.id: r.result for r in conn.execute(q)}
    conn.execute(
        jobs.update()
        .where(jobs.c.id == sa.bindparam("b_id"), jobs.c.state == JobState.PENDING)
        .values(state=JobState.QUEUED, spec=sa.bindparam("b_spec"), deps_left=0),
        [{"b_id": r.id, "b_spec": substitute(r.spec, results)} for r in rows],
    )
    record(
        conn,
        [
            event(now, JobState.QUEUED, job_id=r.id, from_state=JobState.PENDING, reason=reason)
            for r in rows
        ],
    )
    wake.add(*{queue_topic(r.queue) for r in rows})


def _cancel_dependents(
    conn: Connection, failed: dict[int, Final], now: float, wake: Wakeups
) -> None:
    names = {
        r.id: r.name
        for r in conn.execute(sa.select(jobs.c.id, jobs.c.name).where(jobs.c.id.in_(list(failed))))
    }
    reasons = {i: failure_reason(i, names.get(i, ""), f.error) for i, f in failed.items()}
    while reasons:  # breadth first down the graph: dependents of dependents
        edges = _dependents(conn, list(reasons))
        if not edges:
            return
        mine: dict[int, str] = {}
        for e in sorted(edges, key=lambda e: (e.job_id, e.upstream_id)):
            mine.setdefault(e.job_id, reasons[e.upstream_id])
        conn.execute(
            jobs.update()
            .where(jobs.c.id == sa.bindparam("b_id"), jobs.c.state == JobState.PENDING)
            .values(state=JobState.CANCELLED, finished_at=now, error=sa.bindparam("b_error")),
            [{"b_id": j, "b_error": err} for j, err in mine.items()],
        )
        record(
            conn,
            [
                event(
                    now,
                    JobState.CANCELLED,
                    job_id=j,
                    from_state=JobState.PENDING,
                    reason=f"{UPSTREAM_FAILED}: {err.splitlines()[0].split(': ', 1)[-1]}",
                )
                for j, err in mine.items()
            ],
        )
        wake.add(*(job_topic(j) for j in mine))
        reasons = mine  # their dependents carry the root cause's message along
