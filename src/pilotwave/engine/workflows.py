"""Workflows: creation (a driver job), status, and the operations cancel, suspend, resume, retry.

A workflow's final state is its driver job's: the driver's return value is the workflow's
result, its error the workflow's error.  Until then it is ``running`` or ``suspended``.
Its jobs are those whose ``workflow_id`` names it; a nested workflow is a child row whose
driver job the parent observes like any other job.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.engine import commands as log
from pilotwave.engine import parking
from pilotwave.errors import Conflict, NotFound
from pilotwave.protocol import (
    FINAL_JOB_STATES,
    FINAL_WORKFLOW_STATES,
    JobKind,
    JobOptions,
    JobState,
    Reason,
    WorkflowState,
    workflow_state,
)
from pilotwave.store.schema import dependencies, jobs, workflows
from pilotwave.store.schema import events as events_table
from pilotwave.wms import deps
from pilotwave.wms import jobs as wms_jobs
from pilotwave.wms.events import event, record
from pilotwave.wms.transitions import Move, transition
from pilotwave.wms.wakeups import Final, Wakeups, queue_topic

MAX_DEPTH = 32  # nested workflows deeper than this are refused (a runaway recursion)


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    function: dict[str, Any]  # {"module"|"path", "qualname"}
    kwargs: str  # JSON object text; may hold future placeholders
    sandbox: str | None = None
    queue: str = "default"
    labels: tuple[str, ...] = ()
    priority: int = 0
    key: str | None = None
    seed: int | None = None
    max_attempts: int = 10


def create(
    conn: Connection,
    owner_id: int,
    spec: WorkflowSpec,
    now: float,
    wake: Wakeups,
    *,
    parent_id: int | None = None,
    held: bool = False,
) -> tuple[int, int]:
    """Insert a workflow and its driver job; returns ``(workflow id, driver job id)``."""
    if spec.key:
        found = conn.execute(
            sa.select(workflows.c.id, workflows.c.driver_job_id).where(
                workflows.c.owner_id == owner_id, workflows.c.key == spec.key
            )
        ).one_or_none()
        if found is not None:
            return found.id, found.driver_job_id
    if parent_id is not None and _depth(conn, parent_id) >= MAX_DEPTH:
        raise Conflict(
            f"workflows nest more than {MAX_DEPTH} deep; is a workflow submitting itself?"
        )
    seed = spec.seed if spec.seed is not None else secrets.randbits(62)
    wid = conn.execute(
        workflows.insert()
        .values(
            owner_id=owner_id,
            key=spec.key,
            name=spec.name[:200],
            parent_id=parent_id,
            seed=seed,
            suspended=held,
            created_at=now,
        )
        .returning(workflows.c.id)
    ).scalar_one()
    payload = orjson.dumps(
        {
            "function": spec.function,
            "args": [],
            "kwargs": orjson.Fragment(spec.kwargs),
            "workflow_id": wid,
            "seed": seed,
        }
    ).decode()
    (job_id,) = wms_jobs.submit(
        conn,
        owner_id,
        [
            wms_jobs.JobSpec(
                kind=JobKind.DRIVER,
                spec=payload,
                options=JobOptions(
                    queue=spec.queue,
                    labels=spec.labels,
                    priority=spec.priority,
                    cores=0,  # drivers run in driver slots and take no cores
                    max_attempts=spec.max_attempts,
                ),
                name=spec.name[:200],
                sandbox=spec.sandbox,
                workflow_id=wid,
                held=held,
            )
        ],
        now,
        wake,
    )
    conn.execute(workflows.update().where(workflows.c.id == wid).values(driver_job_id=job_id))
    return wid, job_id


def _depth(conn: Connection, wid: int) -> int:
    depth = 0
    parent: int | None = wid
    while parent is not None and depth <= MAX_DEPTH:
        parent = conn.scalar(sa.select(workflows.c.parent_id).where(workflows.c.id == parent))
        depth += 1
    return depth


_ROW = sa.select(
    workflows,
    jobs.c.state.label("driver_state"),
    jobs.c.result,
    jobs.c.error,
    jobs.c.finished_at,
    jobs.c.attempts.label("driver_attempt"),
).select_from(workflows.outerjoin(jobs, jobs.c.id == workflows.c.driver_job_id))


def _public(row: Any) -> dict[str, Any]:
    out = {
        "id": row.id,
        "name": row.name,
        "state": workflow_state(row.driver_state, row.suspended).value,
        "parent_id": row.parent_id,
        "driver_job_id": row.driver_job_id,
        "seed": row.seed,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
        "result": row.result,
        "error": row.error,
        "progress": row.progress,
    }
    return out


def load(conn: Connection, wid: int, owner_id: int | None) -> Any:
    q = _ROW.where(workflows.c.id == wid)
    if owner_id is not None:
        q = q.where(workflows.c.owner_id == owner_id)
    row = conn.execute(q).one_or_none()
    if row is None:
        raise NotFound(f"no workflow {wid}")
    return row


def get(conn: Connection, wid: int, owner_id: int | None) -> dict[str, Any]:
    return _public(load(conn, wid, owner_id))


def set_progress(conn: Connection, wid: int, progress: str) -> None:
    """Store what the driver tells its watchers (JSON text), replacing the previous one."""
    conn.execute(workflows.update().where(workflows.c.id == wid).values(progress=progress))


def list_workflows(
    conn: Connection,
    owner_id: int | None,
    *,
    nested: bool = False,
    states: Sequence[str] = (),
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first; top-level workflows only unless ``nested``."""
    q = _ROW.order_by(workflows.c.id.desc())
    if owner_id is not None:
        q = q.where(workflows.c.owner_id == owner_id)
    if not nested:
        q = q.where(workflows.c.parent_id.is_(None))
    out = []
    for row in conn.execute(q.limit(limit if not states else 10 * limit)):
        wf = _public(row)
        if not states or wf["state"] in states:
            out.append(wf)
    return out[:limit]


def subtree(conn: Connection, wid: int) -> list[int]:
    """The workflow and all workflows nested in it, parents first."""
    found, frontier = [wid], [wid]
    while frontier:
        frontier = list(
            conn.scalars(sa.select(workflows.c.id).where(workflows.c.parent_id.in_(frontier)))
        )
        found += frontier
    return found


def status(
    conn: Connection, wid: int, owner_id: int | None, job_limit: int = 1000
) -> dict[str, Any]:
    """The workflow with job counts over its whole tree, its jobs, and its children's status."""
    wf = get(conn, wid, owner_id)
    tree = subtree(conn, wid)
    counts = {
        s: n
        for s, n in conn.execute(
            sa.select(jobs.c.state, sa.func.count())
            .where(jobs.c.workflow_id.in_(tree))
            .group_by(jobs.c.state)
        )
    }
    wf["counts"] = counts
    wf["jobs"] = [
        dict(r._mapping)
        for r in conn.execute(
            sa.select(
                jobs.c.id,
                jobs.c.name,
                jobs.c.kind,
                jobs.c.state,
                jobs.c.attempts,
                jobs.c.pilot_id,
                jobs.c.created_at,
                jobs.c.started_at,
                jobs.c.finished_at,
            )
            .where(jobs.c.workflow_id == wid)
            .order_by(jobs.c.id)
            .limit(job_limit)
        )
    ]
    wf["children"] = [
        status(conn, child, owner_id, job_limit)
        for child in conn.scalars(
            sa.select(workflows.c.id).where(workflows.c.parent_id == wid).order_by(workflows.c.id)
        )
    ]
    return wf


def replay_data(conn: Connection, wid: int, owner_id: int | None) -> dict[str, Any]:
    """What a (re-)starting driver needs: its command log and the results it observed."""
    row = load(conn, wid, owner_id)
    recorded = log.read_log(conn, wid)
    observed = log.observed_ids([r for r in recorded if not r.stale])
    finals = wms_jobs.finished(conn, observed, None) if observed else {}
    return {
        "workflow_id": wid,
        "seed": row.seed,
        "commands": [
            {
                "seq": r.seq,
                "kind": r.kind,
                "call": r.call,
                "fingerprint": r.fingerprint,
                "outcome": r.outcome,
                "stale": r.stale,
            }
            for r in recorded
        ],
        "results": finals,
    }


def _live_jobs(conn: Connection, tree: list[int]) -> list[Any]:
    return list(
        conn.execute(
            sa.select(jobs.c.id, jobs.c.queue, jobs.c.state).where(
                jobs.c.workflow_id.in_(tree), jobs.c.state.not_in(list(FINAL_JOB_STATES))
            )
        )
    )


def cancel(conn: Connection, wid: int, owner_id: int | None, now: float, wake: Wakeups) -> int:
    """Cancel every unfinished job of the workflow and its children (running ones are killed)."""
    row = load(conn, wid, owner_id)
    live = [r.id for r in _live_jobs(conn, subtree(conn, wid))]
    if not live:
        return 0
    # The driver first, so it cannot react to its jobs' cancellation by submitting more.
    live.sort(key=lambda i: i != row.driver_job_id)
    done = wms_jobs.cancel(
        conn,
        live,
        None,
        now,
        wake,
        reason=Reason.WORKFLOW_CANCELLED,
        why=f"workflow {wid} cancelled",
    )
    return len(done)


def set_suspended(
    conn: Connection, wid: int, owner_id: int | None, suspended: bool, now: float, wake: Wakeups
) -> dict[str, Any]:
    """Suspend (hold every unfinished job) or resume (release them) the workflow and its children."""
    row = load(conn, wid, owner_id)
    if workflow_state(row.driver_state, row.suspended) in FINAL_WORKFLOW_STATES:
        raise Conflict(
            f"workflow {wid} is {row.driver_state}; only a running workflow can be "
            f"{'suspended' if suspended else 'resumed'}"
        )
    tree = subtree(conn, wid)
    conn.execute(workflows.update().where(workflows.c.id.in_(tree)).values(suspended=suspended))
    live = _live_jobs(conn, tree)
    if live:
        conn.execute(
            jobs.update().where(jobs.c.id.in_([r.id for r in live])).values(held=suspended)
        )
        if not suspended:
            wake.add(*{queue_topic(r.queue) for r in live if r.state == JobState.QUEUED})
    word = "suspended" if suspended else "resumed"
    record(
        conn,
        [
            event(
                now,
                WorkflowState.SUSPENDED if suspended else WorkflowState.RUNNING,
                job_id=row.driver_job_id,
                reason=f"workflow {wid} {word}",
            )
        ],
    )
    return get(conn, wid, owner_id)


def retry(
    conn: Connection, wid: int, owner_id: int | None, now: float, wake: Wakeups
) -> dict[str, Any]:
    """Start a failed or cancelled workflow again from where it stopped.

    Every job of its tree that did not succeed gets fresh attempts; each driver's record is
    cut at the first command that observed one of them; the drivers then replay, so jobs
    that succeeded are not run again.
    """
    row = load(conn, wid, owner_id)
    state = workflow_state(row.driver_state, row.suspended)
    if state not in (WorkflowState.FAILED, WorkflowState.CANCELLED):
        raise Conflict(
            f"workflow {wid} is {state}; only a failed or cancelled workflow can be retried"
        )
    tree = subtree(conn, wid)
    suspended = {
        r.id: r.suspended
        for r in conn.execute(
            sa.select(workflows.c.id, workflows.c.suspended).where(workflows.c.id.in_(tree))
        )
    }
    reset = list(
        conn.execute(
            sa.select(jobs.c.id, jobs.c.state, jobs.c.spec, jobs.c.queue, jobs.c.workflow_id)
            .where(
                jobs.c.workflow_id.in_(tree),
                jobs.c.state.in_([JobState.FAILED, JobState.CANCELLED]),
            )
            .with_for_update()
        )
    )
    ids = {r.id for r in reset}  # never empty: the driver itself failed or was cancelled
    cuts = {w: log.cut(conn, w, ids) for w in tree}
    # A reset job waits again for each upstream that has not succeeded (reset ones included).
    waiting: dict[int, int] = {}
    for job_id, upstream_state in conn.execute(
        sa.select(dependencies.c.job_id, jobs.c.state)
        .select_from(dependencies.join(jobs, jobs.c.id == dependencies.c.upstream_id))
        .where(dependencies.c.job_id.in_(ids))
    ):
        if upstream_state != JobState.SUCCEEDED:
            waiting[job_id] = waiting.get(job_id, 0) + 1
    transition(
        conn,
        [
            Move(
                r.id,
                JobState(r.state),
                JobState.PENDING,
                f"workflow {wid} retried",
                values={
                    "deps_left": waiting.get(r.id, 0),
                    "failures": 0,
                    "not_before": 0.0,
                    "finished_at": None,
                    "started_at": None,
                    "result": None,
                    "error": None,
                    "reason": None,
                    "pilot_id": None,
                    "held": bool(suspended.get(r.workflow_id)),
                },
            )
            for r in reset
        ],
        now,
        wake,
    )
    ready = [r for r in reset if not waiting.get(r.id)]
    if ready:
        deps.queue_jobs(conn, ready, now, wake, why="retried with its workflow")
    return {"reset": len(reset), "cut": {w: s for w, s in cuts.items() if s is not None}}


def story(conn: Connection, wid: int, owner_id: int | None) -> list[dict[str, Any]]:
    """Every transition of every job in the workflow's tree, oldest first."""
    load(conn, wid, owner_id)
    tree = subtree(conn, wid)
    q = (
        sa.select(events_table, jobs.c.name.label("job_name"), jobs.c.workflow_id)
        .select_from(events_table.join(jobs, jobs.c.id == events_table.c.job_id))
        .where(jobs.c.workflow_id.in_(tree))
        .order_by(events_table.c.id)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def settle(conn: Connection, wake: Wakeups, now: float) -> None:
    """React, in the same transaction, to what the queue did: called once by every write.

    A workflow whose driver returned (or was cancelled) stops the jobs it left unfinished:
    nobody waits for them any more.  A *failed* workflow leaves them be: what they produce is
    reused by a ``retry`` (``pilotwave cancel`` stops them).  Parked drivers without a
    process are queued when their wait is over; freed driver slots go to parked drivers
    ready to go on (``parking``).
    """
    done = 0
    while True:
        if done < len(wake.finals):
            finals, done = wake.finals[done:], len(wake.finals)
            _leftovers_cancelled(conn, finals, now, wake)
            parking.on_finals(conn, finals, now, wake)
        elif wake.reported:
            reported, wake.reported = wake.reported, set()
            parking.on_reports(conn, reported, now, wake)
        elif wake.cooled:
            cooled, wake.cooled = wake.cooled, set()
            parking.cooled(conn, cooled, now, wake)
        elif wake.freed:
            freed, wake.freed = wake.freed, set()
            for pilot_id in sorted(freed):
                parking.grant(conn, pilot_id, now, wake)
        else:
            return


def _leftovers_cancelled(
    conn: Connection, finals: Sequence[Final], now: float, wake: Wakeups
) -> None:
    for f in finals:
        if f.kind != JobKind.DRIVER or f.workflow_id is None or f.state is JobState.FAILED:
            continue
        live = [r.id for r in _live_jobs(conn, subtree(conn, f.workflow_id)) if r.id != f.id]
        if live:
            wms_jobs.cancel(
                conn,
                live,
                None,
                now,
                wake,
                reason=Reason.WORKFLOW_ENDED
                if f.state is JobState.SUCCEEDED
                else Reason.WORKFLOW_CANCELLED,
                why=f"workflow {f.workflow_id} {f.state.value}",
            )
