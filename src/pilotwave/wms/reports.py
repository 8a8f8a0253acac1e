"""Intermediate values a running job reports (``pw.report``), and its workflow driver's answers.

A job reports ``(step, value)`` for its current attempt; the report is stored and wakes the
driver watching the job.  The driver answers each report with *stop* or *go on* (an HPO
pruner's decision); a job whose function waits for answers is woken by it.  Reports are
idempotent per ``(job, attempt, step)``: a re-sent one returns the first one's id and answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.errors import Conflict, InvalidRequest, NotFound
from pilotwave.protocol import JobState
from pilotwave.protocol.wire import ReportSeen
from pilotwave.store.db import insert_ignoring_duplicates
from pilotwave.store.schema import jobs, reports
from pilotwave.wms.wakeups import Wakeups, decision_topic, report_topic


def add(
    conn: Connection, job_id: int, attempt: int, step: int, value: float, now: float, wake: Wakeups
) -> int:
    """Record a report of the job's running attempt; returns its id (the first one's, if re-sent)."""
    if not math.isfinite(value):
        raise InvalidRequest(f"value: {value} is not a finite number", field="value")
    job = conn.execute(
        sa.select(jobs.c.state, jobs.c.attempts).where(jobs.c.id == job_id)
    ).one_or_none()
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if job.state != JobState.RUNNING or job.attempts != attempt:
        raise Conflict(f"attempt {attempt} of job {job_id} is not running (job is {job.state})")
    row = {
        "job_id": job_id,
        "attempt": attempt,
        "step": step,
        "value": value,
        "stop": None,
        "created_at": now,
    }
    insert_ignoring_duplicates(conn, reports, [row])
    report_id = conn.scalar(
        sa.select(reports.c.id).where(
            reports.c.job_id == job_id, reports.c.attempt == attempt, reports.c.step == step
        )
    )
    assert report_id is not None
    wake.add(report_topic(job_id))
    wake.reported.add(job_id)
    return int(report_id)


def answer(conn: Connection, report_id: int) -> bool | None:
    """The driver's answer to a report: stop, go on, or ``None`` while undecided."""
    stop = conn.scalar(sa.select(reports.c.stop).where(reports.c.id == report_id))
    return None if stop is None else bool(stop)


def told_to_stop(conn: Connection, job_id: int, attempt: int) -> bool:
    """Whether any report of this attempt was answered with stop."""
    q = sa.select(sa.literal(1)).where(
        reports.c.job_id == job_id, reports.c.attempt == attempt, reports.c.stop.is_(True)
    )
    return conn.scalar(q.limit(1)) is not None


def decide(conn: Connection, owner_id: int, answers: Mapping[int, bool], wake: Wakeups) -> int:
    """Answer reports of the owner's jobs (first answer wins); returns how many were answered now."""
    done = 0
    owned = sa.select(jobs.c.id).where(jobs.c.owner_id == owner_id)
    for stop in (True, False):
        ids = [i for i, s in answers.items() if s is stop]
        if not ids:
            continue
        answered = list(
            conn.scalars(
                reports.update()
                .where(reports.c.id.in_(ids), reports.c.stop.is_(None), reports.c.job_id.in_(owned))
                .values(stop=stop)
                .returning(reports.c.id)
            )
        )
        wake.add(*(decision_topic(i) for i in answered))
        done += len(answered)
    return done


def since(conn: Connection, after: Mapping[int, int], owner_id: int | None) -> list[ReportSeen]:
    """Reports ``(id, job, attempt, step, value)`` of the jobs in ``after`` newer than each job's
    cursor (a report id), oldest first.

    A job's reports are sent one after the other, each committed before the next, so a
    per-job cursor never skips one (a global cursor could, with PostgreSQL sequences).
    """
    if not after:
        return []
    q = (
        sa.select(
            reports.c.id, reports.c.job_id, reports.c.attempt, reports.c.step, reports.c.value
        )
        .where(reports.c.job_id.in_(list(after)), reports.c.id > min(after.values()))
        .order_by(reports.c.id)
    )
    if owner_id is not None:
        q = q.where(reports.c.job_id.in_(sa.select(jobs.c.id).where(jobs.c.owner_id == owner_id)))
    return [
        (r.id, r.job_id, r.attempt, r.step, r.value)
        for r in conn.execute(q)
        if r.id > after[r.job_id]
    ]


def of_jobs(conn: Connection, job_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Every report of these jobs, per job, in order."""
    out: dict[int, list[dict[str, Any]]] = {}
    ids: Sequence[int] = list(job_ids)
    if not ids:
        return out
    q = sa.select(reports).where(reports.c.job_id.in_(ids)).order_by(reports.c.id)
    for r in conn.execute(q):
        out.setdefault(r.job_id, []).append(
            {"attempt": r.attempt, "step": r.step, "value": r.value, "stop": r.stop}
        )
    return out
