"""Ending attempts: completion reports from pilots, lost attempts, and the job decision that follows.

Every report names its attempt number.  A report for an attempt that is no longer the
job's running attempt is *stale* (the job was retried elsewhere, the pilot was presumed
lost) and is refused; the same report sent twice is accepted once and acknowledged twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.protocol import (
    FINAL_JOB_STATES,
    Ack,
    AttemptReport,
    AttemptState,
    JobState,
    Limits,
    LogChunk,
    Reason,
)
from pilotwave.protocol.limits import clip_error
from pilotwave.store.db import insert_ignoring_duplicates
from pilotwave.store.schema import artifacts, attempts, blobs, jobs, log_chunks
from pilotwave.wms import blobs as wms_blobs
from pilotwave.wms import deps
from pilotwave.wms.events import event, record
from pilotwave.wms.retry import AttemptEnd, RetryPolicy, after_attempt
from pilotwave.wms.transitions import Move, transition
from pilotwave.wms.wakeups import Wakeups, job_topic, log_topic, pilot_topic, queue_topic


def admit(report: AttemptReport, limits: Limits) -> AttemptReport:
    """A report as the queue stores it: an oversize result fails the attempt (for good), a huge
    error text keeps its head and tail.  The pilot checks the result too; this is the rule."""
    if report.result is not None:
        too_large = limits.result_too_large(len(report.result))
        if too_large is not None:
            return replace(
                report, outcome="failed", result=None, error=too_large, retryable=False, reason=None
            )
    error = clip_error(report.error)
    return report if error is report.error else replace(report, error=error)


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


def complete(
    conn: Connection,
    pilot_id: str,
    reports: Sequence[AttemptReport],
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
            AttemptEnd(AttemptState(rep.outcome), rep.retryable, _first_line(rep.error)),
            pilot_id,
            exit_code=rep.exit_code,
            error=rep.error,
            cpu_s=rep.cpu_s,
            max_rss_mb=rep.max_rss_mb,
            result=rep.result,
            reason=rep.reason,
        )
        if rep.artifacts:
            _store_artifacts(conn, rep, now)
        ended_here[(rep.job_id, rep.attempt)] = rep.outcome
        acks.append(Ack.ACCEPTED)
    batch.flush()
    return acks


class Endings:
    """Ends attempts and moves their jobs on, written in batched statements at ``flush``.

    Callers hold the rows (``FOR UPDATE`` on PostgreSQL, the writer lock on SQLite); the
    guards in the ``WHERE`` clauses are a second line of defence.
    """

    def __init__(self, conn: Connection, now: float, policy: RetryPolicy, wake: Wakeups) -> None:
        self.conn, self.now, self.policy, self.wake = conn, now, policy, wake
        self._attempts: list[dict[str, Any]] = []
        self._moves: list[Move] = []
        self._cooled: list[tuple[int, int, str]] = []

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
        reason: Reason | None = None,
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
        if job.state == JobState.PARKED:
            # A parked driver's process is gone (evicted, drained, its pilot lost): it waits
            # on without one, and replays wherever it is claimed when its wait is over.
            self._cooled.append((job.id, number, pilot_id))
            return JobState.PARKED
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
        failure = None if succeeded else (error or end.reason)
        self._moves.append(
            Move(
                job.id,
                JobState(job.state),
                decision.state,
                decision.reason,
                values={
                    "failures": decision.failures,
                    "pilot_id": None,
                    "not_before": decision.not_before if decision.state is JobState.QUEUED else 0.0,
                    "finished_at": now if final else None,
                    "result": result if succeeded else None,
                    "error": failure,
                    "reason": reason if succeeded else None,
                },
                attempt=number,
                guard=True,
                pilot_id=pilot_id,
                kind=job.kind,
                workflow_id=job.workflow_id,
                has_dependents=job.has_dependents,
                error=failure,
            )
        )
        if decision.state is JobState.QUEUED:
            if decision.not_before > now:
                self.wake.at(decision.not_before, queue_topic(job.queue))
            else:
                self.wake.add(queue_topic(job.queue))
        elif final:
            self.wake.add(job_topic(job.id))
        return decision.state

    def flush(self) -> None:
        if self._attempts:
            self.conn.execute(_END_ATTEMPT, self._attempts)
        finals = transition(self.conn, self._moves, self.now, self.wake)
        if finals:
            deps.after_final(self.conn, finals, self.now, self.wake)
        if self._cooled:
            self._cool()
        self._attempts, self._moves, self._cooled = [], [], []

    def _cool(self) -> None:
        self.conn.execute(
            jobs.update()
            .where(
                jobs.c.id == _B("b_job"),
                jobs.c.state == JobState.PARKED,
                jobs.c.attempts == _B("b_number"),
            )
            .values(pilot_id=None),
            [{"b_job": j, "b_number": n} for j, n, _ in self._cooled],
        )
        record(
            self.conn,
            [
                event(
                    self.now,
                    JobState.PARKED,
                    job_id=j,
                    from_state=JobState.PARKED,
                    attempt=n,
                    pilot_id=p,
                    reason="its process is gone: it resumes by replay when its wait is over",
                )
                for j, n, p in self._cooled
            ],
        )
        self.wake.cooled.update(j for j, _, _ in self._cooled)


def _first_line(text: str | None) -> str:
    if not text:
        return ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _store_artifacts(conn: Connection, rep: AttemptReport, now: float) -> None:
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
        # The job's owner holds its outputs: they count toward that user's blob quota.
        owner = conn.execute(sa.select(jobs.c.owner_id).where(jobs.c.id == rep.job_id)).scalar_one()
        wms_blobs.hold(conn, owner, {a.sha256 for a in rep.artifacts if a.sha256 in present}, now)


def append_logs(
    conn: Connection,
    pilot_id: str,
    chunks: Sequence[LogChunk],
    now: float,
    wake: Wakeups,
    limit: int = Limits.max_log_bytes,
) -> None:
    """Store live output of running attempts of this pilot (up to ``limit`` bytes each);
    re-sent chunks are ignored."""
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
        if stored is None or stored >= limit or not c.data:
            continue
        data = c.data.replace(
            "\x00", "\ufffd"
        )  # a program may print NULs; PostgreSQL can't hold them
        if stored + c.nbytes > limit:
            data = data[: limit - stored] + f"\n[pilotwave: log truncated at {limit} bytes]\n"
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
