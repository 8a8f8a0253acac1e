"""Ending attempts: completion reports from pilots, lost attempts, and the job decision that follows.

Every report names its attempt number.  A report for an attempt that is no longer the
job's running attempt is *stale* (the job was retried elsewhere, the pilot was presumed
lost) and is refused; the same report sent twice is accepted once and acknowledged twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.store.db import insert_ignoring_duplicates
from pilotwave.store.schema import artifacts, attempts, blobs, jobs, log_chunks
from pilotwave.wms.events import event, record
from pilotwave.wms.retry import AttemptEnd, RetryPolicy, after_attempt
from pilotwave.wms.states import FINAL_JOB_STATES, AttemptState, JobState
from pilotwave.wms.wakeups import Wakeups, job_topic, log_topic, pilot_topic, queue_topic

MAX_LOG_BYTES_PER_ATTEMPT = 16 * 1024 * 1024


@dataclass(frozen=True)
class LogChunk:
    job_id: int
    attempt: int
    pos: int  # byte offset of this chunk in the attempt's output
    data: str
    nbytes: int


@dataclass(frozen=True)
class Artifact:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Report:
    """A pilot's account of how an attempt ended."""

    job_id: int
    attempt: int
    outcome: AttemptState
    result: str | None = None  # JSON text, for succeeded attempts
    error: str | None = None
    exit_code: int | None = None
    retryable: bool = True
    cpu_s: float | None = None
    max_rss_mb: float | None = None
    log: LogChunk | None = None
    artifacts: tuple[Artifact, ...] = field(default=())


class Ack(StrEnum):
    ACCEPTED = "accepted"
    """Recorded now."""
    DUPLICATE = "duplicate"
    """Already recorded with the same outcome: nothing changed."""
    STALE = "stale"
    """Not the job's running attempt any more (409)."""
    UNKNOWN = "unknown"
    """No such attempt on this pilot (404)."""


def complete(
    conn: Connection,
    pilot_id: str,
    reports: Sequence[Report],
    now: float,
    policy: RetryPolicy,
    wake: Wakeups,
) -> list[Ack]:
    """Record the end of attempts reported by ``pilot_id``; one acknowledgement per report."""
    if not reports:
        return []
    ids = sorted({r.job_id for r in reports})
    job_rows = {
        r.id: r
        for r in conn.execute(
            sa.select(
                jobs.c.id,
                jobs.c.state,
                jobs.c.attempts,
                jobs.c.failures,
                jobs.c.max_attempts,
                jobs.c.queue,
            )
            .where(jobs.c.id.in_(ids))
            .with_for_update()
        )
    }
    attempt_rows = {
        (r.job_id, r.number): r
        for r in conn.execute(
            sa.select(
                attempts.c.job_id, attempts.c.number, attempts.c.state, attempts.c.pilot_id
            ).where(attempts.c.job_id.in_(ids))
        )
    }
    acks: list[Ack] = []
    ended_here: dict[tuple[int, int], str] = {}  # a report repeated within this batch
    for rep in reports:
        att = attempt_rows.get((rep.job_id, rep.attempt))
        job = job_rows.get(rep.job_id)
        if att is None or job is None or att.pilot_id != pilot_id:
            acks.append(Ack.UNKNOWN)
            continue
        state = ended_here.get((rep.job_id, rep.attempt), att.state)
        if state != AttemptState.RUNNING or job.attempts != rep.attempt:
            acks.append(Ack.DUPLICATE if state == rep.outcome else Ack.STALE)
            continue
        if rep.log is not None:
            append_logs(conn, pilot_id, [rep.log], now, wake)
        end = AttemptEnd(rep.outcome, rep.retryable, _first_line(rep.error))
        finish(
            conn,
            job,
            rep.attempt,
            end,
            now,
            policy,
            wake,
            pilot_id=pilot_id,
            attempt_values={
                "exit_code": rep.exit_code,
                "error": rep.error,
                "cpu_s": rep.cpu_s,
                "max_rss_mb": rep.max_rss_mb,
            },
            result=rep.result,
            error=rep.error,
        )
        if rep.artifacts:
            _store_artifacts(conn, rep, now)
        ended_here[(rep.job_id, rep.attempt)] = rep.outcome
        acks.append(Ack.ACCEPTED)
    return acks


def finish(
    conn: Connection,
    job: Any,
    number: int,
    end: AttemptEnd,
    now: float,
    policy: RetryPolicy,
    wake: Wakeups,
    *,
    pilot_id: str,
    attempt_values: dict[str, Any] | None = None,
    result: str | None = None,
    error: str | None = None,
) -> JobState:
    """End attempt ``number`` of ``job`` (a row with state, attempts, failures, max_attempts, queue)."""
    values = dict(attempt_values or {})
    if end.outcome is AttemptState.LOST and "error" not in values:
        values["error"] = end.reason
    conn.execute(
        attempts.update()
        .where(
            attempts.c.job_id == job.id,
            attempts.c.number == number,
            attempts.c.state == AttemptState.RUNNING,
        )
        .values(state=end.outcome, ended_at=now, **values)
    )
    decision = after_attempt(
        job_state=JobState(job.state),
        failures=job.failures,
        max_attempts=job.max_attempts,
        end=end,
        now=now,
        policy=policy,
    )
    wake.add(pilot_topic(pilot_id))
    if decision.state == job.state:
        return decision.state
    update: dict[str, Any] = {
        "state": decision.state,
        "failures": decision.failures,
        "pilot_id": None,
    }
    if decision.state is JobState.QUEUED:
        update["not_before"] = decision.not_before
        if decision.not_before > now:
            wake.at(decision.not_before, queue_topic(job.queue))
        else:
            wake.add(queue_topic(job.queue))
    elif decision.state in FINAL_JOB_STATES:
        update["finished_at"] = now
        update["result"] = result if decision.state is JobState.SUCCEEDED else None
        update["error"] = None if decision.state is JobState.SUCCEEDED else (error or end.reason)
        wake.add(job_topic(job.id))
    conn.execute(
        jobs.update()
        .where(jobs.c.id == job.id, jobs.c.state == job.state, jobs.c.attempts == number)
        .values(**update)
    )
    record(
        conn,
        [
            event(
                now,
                decision.state,
                job_id=job.id,
                from_state=job.state,
                attempt=number,
                pilot_id=pilot_id,
                reason=decision.reason,
            )
        ],
    )
    return decision.state


def _first_line(text: str | None) -> str:
    if not text:
        return ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _store_artifacts(conn: Connection, rep: Report, now: float) -> None:
    shas = {a.sha256 for a in rep.artifacts}
    present = set(conn.scalars(sa.select(blobs.c.sha256).where(blobs.c.sha256.in_(shas))))
    rows = [
        {
            "job_id": rep.job_id,
            "name": a.name,
            "attempt": rep.attempt,
            "sha256": a.sha256,
            "size": a.size,
            "created_at": now,
        }
        for a in rep.artifacts
        if a.sha256 in present
    ]
    if rows:
        conn.execute(
            artifacts.delete().where(
                artifacts.c.job_id == rep.job_id, artifacts.c.name.in_([r["name"] for r in rows])
            )
        )
        conn.execute(artifacts.insert(), rows)


def append_logs(
    conn: Connection, pilot_id: str, chunks: Sequence[LogChunk], now: float, wake: Wakeups
) -> None:
    """Store live output of running attempts of this pilot; re-sent chunks are ignored."""
    if not chunks:
        return
    keys = {(c.job_id, c.attempt) for c in chunks}
    owned = {
        (r.job_id, r.number): r.log_bytes
        for r in conn.execute(
            sa.select(attempts.c.job_id, attempts.c.number, attempts.c.log_bytes).where(
                attempts.c.job_id.in_({k[0] for k in keys}), attempts.c.pilot_id == pilot_id
            )
        )
        if (r.job_id, r.number) in keys
    }
    rows = []
    grown: dict[tuple[int, int], int] = {}
    for c in chunks:
        stored = owned.get((c.job_id, c.attempt))
        if stored is None or stored >= MAX_LOG_BYTES_PER_ATTEMPT or not c.data:
            continue
        data = c.data
        if stored + c.nbytes > MAX_LOG_BYTES_PER_ATTEMPT:
            data = (
                data[: MAX_LOG_BYTES_PER_ATTEMPT - stored]
                + "\n[pilotwave: log truncated at 16 MiB]\n"
            )
        owned[(c.job_id, c.attempt)] = grown[(c.job_id, c.attempt)] = stored + c.nbytes
        rows.append(
            {
                "job_id": c.job_id,
                "attempt": c.attempt,
                "pos": c.pos,
                "data": data,
                "created_at": now,
            }
        )
        wake.add(log_topic(c.job_id))
    insert_ignoring_duplicates(conn, log_chunks, rows)
    for (job_id, number), total in grown.items():
        conn.execute(
            attempts.update()
            .where(attempts.c.job_id == job_id, attempts.c.number == number)
            .values(log_bytes=total)
        )


def read_logs(
    conn: Connection, job_id: int, after: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """Chunks of a job's output after the cursor ``(attempt, pos)``, in order."""
    q = sa.select(log_chunks.c.attempt, log_chunks.c.pos, log_chunks.c.data).where(
        log_chunks.c.job_id == job_id
    )
    if after is not None:
        a, p = after
        q = q.where(
            sa.or_(
                log_chunks.c.attempt > a, sa.and_(log_chunks.c.attempt == a, log_chunks.c.pos > p)
            )
        )
    return [
        dict(r._mapping) for r in conn.execute(q.order_by(log_chunks.c.attempt, log_chunks.c.pos))
    ]
