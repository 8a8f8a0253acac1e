"""Blobs nothing refers to: sandboxes uploaded for a submission that never came, artifacts
of reports that were refused.  They are deleted once old enough that no submission can
still be on its way to refer to them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.store.schema import artifacts, blobs, jobs

BLOB_GRACE_S = 3600.0
"""How old an unreferenced blob must be to go: an upload and the submission that uses it
are two requests, perhaps far apart for a large sandbox on a slow link."""

_UNREFERENCED = sa.delete(blobs).where(
    blobs.c.created_at < sa.bindparam("cut"),
    blobs.c.sha256.not_in(sa.select(jobs.c.sandbox).where(jobs.c.sandbox.is_not(None))),
    blobs.c.sha256.not_in(sa.select(artifacts.c.sha256)),
)


def collect(conn: Connection, now: float, grace_s: float = BLOB_GRACE_S) -> int:
    """Delete blobs no job and no artifact refers to, uploaded over ``grace_s`` ago; returns
    how many went."""
    return int(conn.execute(_UNREFERENCED, {"cut": now - grace_s}).rowcount or 0)
