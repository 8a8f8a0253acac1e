"""The events table: one row per state transition, so every job and pilot can tell its story."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.store.db import before_commit
from pilotwave.store.schema import events


def event(
    ts: float,
    to_state: str,
    *,
    job_id: int | None = None,
    pilot_id: str | None = None,
    attempt: int | None = None,
    from_state: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    return {
        "ts": ts,
        "job_id": job_id,
        "pilot_id": pilot_id,
        "attempt": attempt,
        "from_state": from_state,
        "to_state": to_state,
        "reason": reason[:200],
    }


_INSERT = events.insert()


class _Pending:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, conn: Connection) -> None:
        conn.execute(_INSERT, self.rows)


def record(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Add transitions to the story; they are written in one insert when the transaction commits."""
    if rows:
        before_commit(conn, "events", _Pending).rows.extend(rows)


def story(
    conn: Connection, *, job_id: int | None = None, pilot_id: str | None = None
) -> list[dict[str, Any]]:
    """Every recorded transition of one job or pilot, oldest first."""
    q = sa.select(events).order_by(events.c.id)
    if job_id is not None:
        q = q.where(events.c.job_id == job_id)
    if pilot_id is not None:  # the pilot's own transitions, not those of the jobs it ran
        q = q.where(events.c.pilot_id == pilot_id, events.c.job_id.is_(None))
    return [dict(r._mapping) for r in conn.execute(q)]
