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
from pilotwave.wms import deps
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


_B = sa.bindparam

# What ``Endings.end`` needs to know of a job.
JOB_FOR_ENDING = (
    jobs.c.id,
    jobs.c.state,
    jobs.c.attempts,
    jobs.c.failures,
    jobs.c.max_attempts,
    jobs.c.queue,
    jobs.c.kind,
    jobs.c.workflow_id,
    deps.HAS_DEPENDENTS,
)

# Prepared once: the hot path (one report per finished job) builds no SQL expressions.
_REPORTED = (
    sa.select(
        *JOB_FOR_ENDING,
        attempts.c.number,
        attempts.c.state.label("attempt_state"),
        attempts.c.pilot_id.label("attempt_pilot"),
    )
    .select_from(jobs.join(attempts, attempts.c.job_id == jobs.c.id))
    .where(jobs.c.id.in_(_B("ids", expanding=True)))
    .order_by(jobs.c.id)
)
_REPORTED_LOCKED = _REPORTED.with_for_update(of=jobs)
_END_ATTEMPT = (
    attempts.update()
    .where(
        attempts.c.job_id == _B("b_job"),
        attempts.c.number == _B("b_number"),
        attempts.c.state == AttemptState.RUNNING,
    )
    .values(
        state=_B("b_outcome"),
        ended_at=_B("b_now"),
        exit_code=_B("b_exit_code"),
        error=_B("b_error"),
        cpu_s=_B("b_cpu_s"),
        max_rss_mb=_B("b_max_rss_mb"),
    )
)
_MOVE_JOB = (
    jobs.update()
    .where(
        jobs.c.id == _B("b_job"), jobs.c.state == _B("b_from"), jobs.c.attempts == _B("b_number")
    )
    .values(
        state=_B("b_state"),
        failures=_B("b_failures"),
        pilot_id=None,
        not_before=_B("b_not_before"),
        finished_at=_B("b_finished_at"),
        result=_B("b_result"),
        error=_B("b_error"),
    )
)


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
    query = _REPORTED_LOCKED if conn.dialect.name == "postgresql" else _REPORTED
    rows = {(r.id, r.number): r for r in conn.execute(query, {"ids": ids})}
    batch = Endings(conn, now, policy, wake)
    acks: list[Ack] = []
    ended_here: dict[tuple[int, int], str] = {}  # a report repeated within this batch
    for rep in reports:
        row = rows.get((rep.job_id, rep.attempt))
        if row is None or row.attempt_pilot != pilot_id:
            acks.append(Ack.UNKNOWN)
            continue
        state = ended_here.get((rep.job_id, rep.attempt), row.attempt_state)
        if state != AttemptState.RUNNING or row.attempts != rep.attempt:
            acks.append(Ack.DUPLICATE if state == rep.outcome else Ack.STALE)
            continue
        if rep.log is not None:
            append_logs(conn, pilot_id, [rep.log], now, wake)
        batch.end(
            row,
            rep.attempt,
            AttemptEnd(rep.outcome, rep.retryable, _first_line(rep.error)),
            pilot_id,
            exit_code=rep.exit_code,
            error=rep.error,
            cpu_s=rep.cpu_s,
            max_rss_mb=rep.max_rss_mb,
            result=rep.result,
        )
        if rep.artifacts:
            _store_artifacts(conn, rep, now)
        ended_here[(rep.job_id, rep.attempt)] = rep.outcome
        acks.append(Ack.ACCEPTED)
    batch.flush()
    return acks


class Endings:
    """Ends attempts and moves their jobs on, written in three batched statements at ``flush``.

    Callers hold the rows (``FOR UPDATE`` on PostgreSQL, the writer lock on SQLite); the
    guards in the ``WHERE`` clauses are a second line of defence.
    """

    def __init__(self, conn: Connection, now: float, policy: RetryPolicy, wake: Wakeups) -> None:
        self.conn, self.now, self.policy, self.wake = conn, now, policy, wake
        self._attempts: list[dict[str, Any]] = []
        self._jobs: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._finals: list[deps.Final] = []

    def end(
        self,
        job: Any,
        number: int,
        end: AttemptEnd,
        pilot_id: str,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        cpu_s: float | None = None,
        max_rss_mb: float | None = None,
        result: str | None = None,
    ) -> JobState:
        """End attempt ``number`` of ``job`` (a row with the ``JOB_FOR_ENDING`` columns)."""
        now = self.now
        self._attempts.append(
            {
                "b_job": job.id,
                "b_number": number,
                "b_outcome": end.outcome.value,
                "b_now": now,
                "b_exit_code": exit_code,
                "b_error": error if error is not None else (end.reason or None),
                "b_cpu_s": cpu_s,
                "b_max_rss_mb": max_rss_mb,
            }
        )
        decision = after_attempt(
            job_state=JobState(job.state),
            failures=job.failures,
            max_attempts=job.max_attempts,
            end=end,
            now=now,
            policy=self.policy,
        )
        self.wake.add(pilot_topic(pilot_id))
        if decision.state == job.state:
            return decision.state
        final = decision.state in FINAL_JOB_STATES
        succeeded = decision.state is JobState.SUCCEEDED
        self._jobs.append(
            {
                "b_job": job.id,
                "b_from": job.state,
                "b_number": number,
                "b_state": decision.state.value,
                "b_failures": decision.failures,
                "b_not_before": decision.not_before if decision.state is JobState.QUEUED else 0.0,
                "b_finished_at": now if final else None,
                "b_result": result if succeeded else None,
                "b_error": None if succeeded else (error or end.reason),
            }
        )
        if decision.state is JobState.QUEUED:
            if decision.not_before > now:
                self.wake.at(decision.not_before, queue_topic(job.queue))
            else:
                self.wake.add(queue_topic(job.queue))
        elif final:
            self.wake.add(job_topic(job.id))
            self._finals.append(
                deps.Final(
                    job.id,
                    decision.state,
                    None if succeeded else (error or end.reason),
                    kind=job.kind,
                    workflow_id=job.workflow_id,
                    has_dependents=job.has_dependents,
                )
            )
        self._events.append(
            event(
                now,
                decision.state,
                job_id=job.id,
                from_state=job.state,
                attempt=number,
                pilot_id=pilot_id,
                reason=decision.reason,
            )
        )
        return decision.state

    def flush(self) -> None:
        if self._attempts:
            self.conn.execute(_END_ATTEMPT, self._attempts)
        if self._jobs:
            self.conn.execute(_MOVE_JOB, self._jobs)
        record(self.conn, self._events)
        if self._finals:
            deps.after_final(self.conn, self._finals, self.now, self.wake)
        self._attempts, self._jobs, self._events, self._finals = [], [], [], []


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
