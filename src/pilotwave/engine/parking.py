"""Parked drivers: a workflow's driver that waits for jobs gives its driver slot up.

A driver's process on a pilot waits on its watch stream.  While its pilot has driver slots
to spare it simply waits, holding its slot (no cost on the hot path).  When the pilot needs
the slot (a queued driver, or another parked driver that wants to go on) it *parks* the
waiting driver: the job moves ``running -> parked`` and the driver's wait is stored on its
workflow.  The process stays warm.  When what it waits for happens, the pilot asks to
*unpark* it: ``parked -> running`` as soon as a driver slot is free there (``grant`` gives
freed slots to ready drivers, oldest first).

A pilot keeps a bounded number of parked processes; beyond that it evicts one, and a pilot
may die or drain.  A parked driver without a process is *cold*: the server now watches its
wait itself (``on_finals``, ``on_reports``, ``expire``) and queues it when the wait is over,
for any pilot to claim; it resumes there by replaying its command log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.errors import Conflict, NotFound
from pilotwave.protocol import FINAL_JOB_STATES, JobKind, JobState, Wait
from pilotwave.protocol.wire import wait_json, wait_of
from pilotwave.store.schema import jobs, reports, workflows
from pilotwave.wms.claims import driver_slots_free
from pilotwave.wms.transitions import Move, transition
from pilotwave.wms.wakeups import Final, Wakeups, deadline_topic, driver_topic, queue_topic

_B = sa.bindparam
_CLEAR = {"wait": None, "wait_deadline": None, "wait_left": None, "ready_at": None}


def _driver(conn: Connection, job_id: int) -> Any:
    q = sa.select(
        jobs.c.id,
        jobs.c.kind,
        jobs.c.state,
        jobs.c.attempts,
        jobs.c.pilot_id,
        jobs.c.workflow_id,
        jobs.c.queue,
    ).where(jobs.c.id == job_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).one_or_none()
    if row is None or row.kind != JobKind.DRIVER:
        raise NotFound(f"no workflow driver {job_id}")
    return row


def _mine(row: Any, pilot_id: str, attempt: int) -> None:
    if row.pilot_id != pilot_id or row.attempts != attempt:
        raise Conflict(f"attempt {attempt} of driver {row.id} no longer runs on pilot {pilot_id}")


def park(
    conn: Connection,
    pilot_id: str,
    job_id: int,
    attempt: int,
    wait: Wait,
    now: float,
    wake: Wakeups,
) -> bool:
    """Park a driver that waits for ``wait``: it keeps its process, gives its slot up.

    Returns whether it is parked (again: parking is idempotent); ``False`` when it no longer
    runs (cancelled, say: its pilot is told to stop it).
    """
    row = _driver(conn, job_id)
    _mine(row, pilot_id, attempt)
    if row.state == JobState.PARKED:
        return True
    if row.state != JobState.RUNNING:
        return False
    transition(
        conn,
        [
            Move(
                job_id,
                JobState.RUNNING,
                JobState.PARKED,
                f"waits for {wait.count()} job(s) ({wait.mode})",
                attempt=attempt,
                guard=True,
                pilot_id=pilot_id,
                kind=JobKind.DRIVER,
                workflow_id=row.workflow_id,
            )
        ],
        now,
        wake,
    )
    deadline = None if wait.timeout_s is None else now + wait.timeout_s
    conn.execute(
        workflows.update()
        .where(workflows.c.id == row.workflow_id)
        .values(wait=_dump(wait), wait_deadline=deadline, wait_left=None, ready_at=None)
    )
    return True


def unpark(
    conn: Connection, pilot_id: str, job_id: int, attempt: int, now: float, wake: Wakeups
) -> str:
    """A parked driver wants to go on: ``running`` at once if a driver slot is free on its pilot,
    else ``ready`` (``grant`` runs it when one frees); ``gone`` if it was cancelled meanwhile."""
    row = _driver(conn, job_id)
    _mine(row, pilot_id, attempt)
    if row.state == JobState.RUNNING:
        return "running"
    if row.state != JobState.PARKED:
        return "gone"
    if driver_slots_free(conn, pilot_id) > 0:
        _go_on(conn, [row], now, wake, "its wait is over and a driver slot is free")
        return "running"
    conn.execute(
        workflows.update()
        .where(workflows.c.id == row.workflow_id, workflows.c.ready_at.is_(None))
        .values(ready_at=now)
    )
    return "ready"


def state(conn: Connection, job_id: int, attempt: int) -> str:
    """``running`` once the driver's attempt runs again, ``ready`` while it waits for a slot."""
    row = conn.execute(
        sa.select(jobs.c.state, jobs.c.attempts).where(jobs.c.id == job_id)
    ).one_or_none()
    if row is None or row.attempts != attempt or row.state in FINAL_JOB_STATES:
        return "gone"
    return "running" if row.state == JobState.RUNNING else "ready"


def _go_on(conn: Connection, rows: Sequence[Any], now: float, wake: Wakeups, why: str) -> None:
    transition(
        conn,
        [
            Move(
                r.id,
                JobState.PARKED,
                JobState.RUNNING,
                why,
                attempt=r.attempts,
                guard=True,
                pilot_id=r.pilot_id,
                kind=JobKind.DRIVER,
                workflow_id=r.workflow_id,
            )
            for r in rows
        ],
        now,
        wake,
    )
    conn.execute(
        workflows.update().where(workflows.c.id.in_([r.workflow_id for r in rows])).values(**_CLEAR)
    )
    wake.add(*(driver_topic(r.id) for r in rows))


_READY = (
    sa.select(
        jobs.c.id,
        jobs.c.attempts,
        jobs.c.pilot_id,
        jobs.c.workflow_id,
    )
    .select_from(jobs.join(workflows, workflows.c.driver_job_id == jobs.c.id))
    .where(
        jobs.c.kind == JobKind.DRIVER,
        jobs.c.state == JobState.PARKED,
        jobs.c.pilot_id == _B("pid"),
        workflows.c.ready_at.is_not(None),
    )
    .order_by(workflows.c.ready_at, jobs.c.id)
)


def grant(conn: Connection, pilot_id: str, now: float, wake: Wakeups) -> None:
    """Give the pilot's free driver slots to its parked drivers ready to go on, oldest first."""
    free = driver_slots_free(conn, pilot_id)
    if free <= 0:
        return
    ready = conn.execute(_READY.limit(free), {"pid": pilot_id}).all()
    if ready:
        _go_on(conn, ready, now, wake, "a driver slot came free")


# -- cold drivers: parked without a process ---------------------------------------------

_COLD = (
    sa.select(
        workflows.c.id.label("wid"),
        workflows.c.wait,
        workflows.c.wait_left,
        workflows.c.wait_deadline,
        jobs.c.id,
        jobs.c.queue,
        jobs.c.attempts,
    )
    .select_from(workflows.join(jobs, jobs.c.id == workflows.c.driver_job_id))
    .where(
        jobs.c.state == JobState.PARKED,
        jobs.c.pilot_id.is_(None),
        workflows.c.wait.is_not(None),
    )
)


def cooled(conn: Connection, job_ids: Iterable[int], now: float, wake: Wakeups) -> None:
    """Parked drivers whose process just went away: queue those whose wait is over, count
    what the others still need, and time their timeouts."""
    rows = conn.execute(_COLD.where(jobs.c.id.in_(sorted(job_ids)))).all()
    over, waiting = [], []
    for r in rows:
        wait = _load(r.wait)
        if r.wait_deadline is not None and r.wait_deadline <= now:
            over.append(r)
            continue
        left = _still_needed(conn, wait)
        if left == 0:
            over.append(r)
            continue
        waiting.append({"b_wid": r.wid, "b_left": left})
        if r.wait_deadline is not None:
            wake.at(r.wait_deadline, deadline_topic())
    if waiting:
        conn.execute(
            workflows.update().where(workflows.c.id == _B("b_wid")).values(wait_left=_B("b_left")),
            waiting,
        )
    _requeue(conn, over, now, wake, "its wait ended while it had no process: it replays")


def _still_needed(conn: Connection, wait: Wait) -> int:
    """How many more jobs must end (``all``), or 1 while none has (``any``); 0: the wait is over."""
    if wait.mode == "any" and wait.reports:
        after = sa.or_(
            *(
                sa.and_(reports.c.job_id == j, reports.c.id > cursor)
                for j, cursor in wait.reports.items()
            )
        )
        if conn.scalar(sa.select(sa.literal(1)).where(after).limit(1)) is not None:
            return 0
    unfinished = 0
    for first, last in wait.ids:
        in_range = jobs.c.id.between(first, last)
        if wait.mode == "any":
            ended = sa.select(sa.literal(1)).where(in_range, jobs.c.state.in_(FINAL_JOB_STATES))
            if conn.scalar(ended.limit(1)) is not None:
                return 0
        else:
            q = sa.select(sa.func.count()).where(
                in_range, jobs.c.state.not_in(list(FINAL_JOB_STATES))
            )
            unfinished += int(conn.scalar(q) or 0)
    return 1 if wait.mode == "any" else unfinished


def on_finals(conn: Connection, finals: Sequence[Final], now: float, wake: Wakeups) -> None:
    """Cold drivers that waited for jobs that just ended: queue them when their wait is over."""
    of_workflow = {
        f.workflow_id for f in finals if f.workflow_id is not None and f.kind != JobKind.DRIVER
    }
    children = [
        f.workflow_id for f in finals if f.kind == JobKind.DRIVER and f.workflow_id is not None
    ]
    if children:  # a child workflow ended: its parent's driver waited for its driver job
        of_workflow |= set(
            conn.scalars(
                sa.select(workflows.c.parent_id).where(
                    workflows.c.id.in_(children), workflows.c.parent_id.is_not(None)
                )
            )
        )
    if not of_workflow:
        return
    rows = conn.execute(_COLD.where(workflows.c.id.in_(sorted(of_workflow)))).all()
    over, counted = [], []
    for r in rows:
        wait = _load(r.wait)
        n = sum(1 for f in finals if wait.covers(f.id))
        if not n:
            continue
        left = (r.wait_left or 1) - n if wait.mode == "all" else 0
        if left <= 0:
            over.append(r)
        else:
            counted.append({"b_wid": r.wid, "b_left": left})
    if counted:
        conn.execute(
            workflows.update().where(workflows.c.id == _B("b_wid")).values(wait_left=_B("b_left")),
            counted,
        )
    _requeue(conn, over, now, wake, "what it waited for ended: it replays")


def on_reports(conn: Connection, job_ids: Iterable[int], now: float, wake: Wakeups) -> None:
    """Cold drivers that waited for reports of these jobs (``pw.events``): queue them."""
    ids = sorted(job_ids)
    wids = set(conn.scalars(sa.select(jobs.c.workflow_id).where(jobs.c.id.in_(ids)).distinct())) - {
        None
    }
    if not wids:
        return
    rows = conn.execute(_COLD.where(workflows.c.id.in_(sorted(wids)))).all()
    over = []
    for r in rows:
        wait = _load(r.wait)
        if wait.reports and any(j in wait.reports for j in ids):
            over.append(r)
    _requeue(conn, over, now, wake, "a job it watches reported: it replays")


def expire(conn: Connection, now: float, wake: Wakeups) -> float | None:
    """Queue cold drivers whose wait timed out; returns the next such deadline, if any."""
    rows = conn.execute(_COLD.where(workflows.c.wait_deadline <= now)).all()
    _requeue(conn, rows, now, wake, "its wait timed out: it replays")
    return conn.scalar(
        sa.select(sa.func.min(workflows.c.wait_deadline))
        .select_from(workflows.join(jobs, jobs.c.id == workflows.c.driver_job_id))
        .where(jobs.c.state == JobState.PARKED, jobs.c.pilot_id.is_(None))
    )


def _requeue(conn: Connection, rows: Sequence[Any], now: float, wake: Wakeups, why: str) -> None:
    if not rows:
        return
    transition(
        conn,
        [
            Move(
                r.id,
                JobState.PARKED,
                JobState.QUEUED,
                why,
                values={"not_before": 0.0},
                kind=JobKind.DRIVER,
                workflow_id=r.wid,
            )
            for r in rows
        ],
        now,
        wake,
    )
    conn.execute(
        workflows.update().where(workflows.c.id.in_([r.wid for r in rows])).values(**_CLEAR)
    )
    wake.add(*{queue_topic(r.queue) for r in rows})


def _dump(wait: Wait) -> str:
    return json.dumps(wait_json(replace(wait, timeout_s=None)))


def _load(text: str) -> Wait:
    return wait_of(json.loads(text))
