"""Blobs and who holds them.

A user holds a blob they uploaded (even content somebody else had stored already) and the
artifacts that reports attach to their jobs; the sum of the sizes of what they hold is what
their blob quota limits.  Blobs nothing refers to (sandboxes uploaded for a submission that
never came, artifacts of reports that were refused) are deleted, with their holdings, once
neither they nor their latest upload are recent enough that a submission could still be on
its way to refer to them.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.errors import NotFound
from pilotwave.store.schema import artifacts, blob_holdings, blobs, jobs

BLOB_GRACE_S = 3600.0
"""How old an unreferenced blob (and its latest upload) must be to go: an upload and the
submission that uses it are two requests, perhaps far apart for a large sandbox on a slow link."""

_UNREFERENCED = sa.delete(blobs).where(
    blobs.c.created_at < sa.bindparam("cut"),
    blobs.c.sha256.not_in(sa.select(jobs.c.sandbox).where(jobs.c.sandbox.is_not(None))),
    blobs.c.sha256.not_in(sa.select(artifacts.c.sha256)),
    blobs.c.sha256.not_in(
        sa.select(blob_holdings.c.sha256).where(blob_holdings.c.held_at >= sa.bindparam("cut"))
    ),
)
_DROP_HOLDINGS = sa.delete(blob_holdings).where(
    blob_holdings.c.sha256.in_(sa.bindparam("shas", expanding=True))
)


def collect(conn: Connection, now: float, grace_s: float = BLOB_GRACE_S) -> int:
    """Delete blobs no job and no artifact refers to, uploaded (by anyone) over ``grace_s``
    ago, and their holdings; returns how many blobs went."""
    gone = list(conn.scalars(_UNREFERENCED.returning(blobs.c.sha256), {"cut": now - grace_s}))
    if gone:  # the foreign key cascades too; this keeps a database without it consistent
        conn.execute(_DROP_HOLDINGS, {"shas": gone})
    return len(gone)


def held_bytes(conn: Connection, user_id: int) -> int:
    """The summed size of the blobs ``user_id`` holds."""
    q = (
        sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0))
        .select_from(blob_holdings.join(blobs, blobs.c.sha256 == blob_holdings.c.sha256))
        .where(blob_holdings.c.user_id == user_id)
    )
    return int(conn.scalar(q) or 0)


def held_size(conn: Connection, user_id: int, sha256: str) -> int | None:
    """The size of blob ``sha256`` if ``user_id`` holds it, else ``None``."""
    q = (
        sa.select(blobs.c.size)
        .select_from(blob_holdings.join(blobs, blobs.c.sha256 == blob_holdings.c.sha256))
        .where(blob_holdings.c.user_id == user_id, blob_holdings.c.sha256 == sha256)
    )
    size = conn.scalar(q)
    return None if size is None else int(size)


def check_held(conn: Connection, user_id: int, shas: Iterable[str]) -> None:
    """``NotFound`` unless ``user_id`` holds every one of ``shas``: a job runs only in a
    sandbox its owner uploaded (knowing another user's hash gives nothing of theirs)."""
    wanted = set(shas)
    held = set(
        conn.scalars(
            sa.select(blob_holdings.c.sha256).where(
                blob_holdings.c.user_id == user_id, blob_holdings.c.sha256.in_(wanted)
            )
        )
    )
    missing = sorted(wanted - held)
    if missing:
        raise NotFound(
            f"no sandbox {missing[0]} among your uploads: upload it (PUT /api/v1/blobs/"
            f"{missing[0]}) before submitting a job that runs in it; the SDK does",
            field="sandbox",
        )


def hold(conn: Connection, user_id: int, shas: Iterable[str], now: float) -> None:
    """Record that ``user_id`` holds the stored blobs ``shas`` (as of ``now``)."""
    rows = [{"user_id": user_id, "sha256": s, "held_at": now} for s in sorted(set(shas))]
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(blob_holdings)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[blob_holdings.c.user_id, blob_holdings.c.sha256],
            set_={"held_at": stmt.excluded.held_at},
        ),
        rows,
    )
