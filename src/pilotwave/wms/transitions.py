"""Every job state change goes through ``transition``: the table says whether the edge is legal,
a guarded ``UPDATE`` makes it (and proves no one else moved the job first), and the events
table records it.

Jobs that reach a final state are added to ``wake.finals`` (the workflow engine reacts to
them in the same transaction); a workflow driver leaving ``running`` frees its pilot's
driver slot (``wake.freed``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.errors import IllegalTransition
from pilotwave.protocol import FINAL_JOB_STATES, JobKind, JobState
from pilotwave.store.schema import jobs
from pilotwave.wms.events import event, record
from pilotwave.wms.states import check_transition
from pilotwave.wms.wakeups import Final, Wakeups, pilot_topic


@dataclass(frozen=True)
class Move:
    """One job moving from ``old`` to ``new``, with the other columns that change with it."""

    job_id: int
    old: JobState
    new: JobState
    why: str = ""
    """The event's text; the table's description of the edge when empty."""
    values: Mapping[str, Any] = field(default_factory=dict)
    attempt: int | None = None
    """The attempt the event names."""
    guard: bool = False
    """Also require the job's current attempt to be ``attempt`` (an attempt's end)."""
    pilot_id: str | None = None
    """The pilot the job ran on (for the event, and to free a driver's slot)."""
    kind: str = ""
    workflow_id: int | None = None
    has_dependents: bool = True  # when unsure, look
    error: str | None = None
    """For a final move: what waiters are told (the job's stored error)."""


_B = sa.bindparam
_statements: dict[tuple[tuple[str, ...], bool], Any] = {}


def _update(keys: tuple[str, ...], guarded: bool) -> Any:
    """``UPDATE jobs SET state, <keys> WHERE id AND state [AND attempts]``, built once per shape."""
    stmt = _statements.get((keys, guarded))
    if stmt is None:
        where = [jobs.c.id == _B("b_id"), jobs.c.state == _B("b_old")]
        if guarded:
            where.append(jobs.c.attempts == _B("b_attempt"))
        stmt = (
            jobs.update().where(*where).values(state=_B("b_new"), **{k: _B(f"b_{k}") for k in keys})
        )
        _statements[(keys, guarded)] = stmt
    return stmt


def transition(conn: Connection, moves: Sequence[Move], now: float, wake: Wakeups) -> list[Final]:
    """Apply ``moves`` (one guarded statement per shape of change); returns the jobs that became final.

    ``IllegalTransition`` (the transaction rolls back) for an edge the table does not have,
    or when a job was no longer in the state the caller read: a bug, never a user error.
    """
    if not moves:
        return []
    groups: dict[tuple[tuple[str, ...], bool], list[dict[str, Any]]] = {}
    rows = []
    for m in moves:
        edge = check_transition(m.old, m.new)
        keys = tuple(sorted(m.values))
        params: dict[str, Any] = {"b_id": m.job_id, "b_old": m.old.value, "b_new": m.new.value}
        params.update({f"b_{k}": v for k, v in m.values.items()})
        if m.guard:
            params["b_attempt"] = m.attempt
        groups.setdefault((keys, m.guard), []).append(params)
        rows.append(
            event(
                now,
                m.new,
                job_id=m.job_id,
                from_state=m.old,
                attempt=m.attempt,
                pilot_id=m.pilot_id,
                reason=m.why or edge,
            )
        )
    for (keys, guarded), batch in groups.items():
        done = conn.execute(_update(keys, guarded), batch).rowcount
        if done != len(batch):
            raise IllegalTransition(
                f"{len(batch) - done} of {len(batch)} jobs were no longer in the state read "
                "(a concurrent change); the transaction is rolled back"
            )
    record(conn, rows)
    finals = [
        Final(
            m.job_id,
            m.new,
            m.error,
            kind=m.kind,
            workflow_id=m.workflow_id,
            has_dependents=m.has_dependents,
        )
        for m in moves
        if m.new in FINAL_JOB_STATES
    ]
    wake.finals.extend(finals)
    for m in moves:
        if m.old is JobState.RUNNING and m.kind == JobKind.DRIVER and m.pilot_id:
            wake.freed.add(m.pilot_id)
            wake.add(pilot_topic(m.pilot_id))  # its claim waiting on the server may take a driver
    return finals


def born(conn: Connection, jobs_: Sequence[tuple[int, JobState, str]], now: float) -> None:
    """Record the first state of new jobs ``(id, state, why)``, checked against the table."""
    for _, state, _why in jobs_:
        check_transition(None, state)
    record(conn, [event(now, state, job_id=i, reason=why) for i, state, why in jobs_])
