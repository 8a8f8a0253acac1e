"""Content-addressed blobs (sandboxes and artifact contents): upload once, idempotent by SHA-256."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from pilotwave.errors import InvalidRequest, NotFound, TooLarge
from pilotwave.server import answers as A
from pilotwave.server.answers import refusals
from pilotwave.server.auth import Role
from pilotwave.server.core import JSON, CoreDep, PrincipalDep, now, require
from pilotwave.store.db import insert_ignoring_duplicates
from pilotwave.store.schema import blobs
from pilotwave.wms import blobs as wms_blobs
from pilotwave.wms import pilots as wms_pilots
from pilotwave.wms.wakeups import Wakeups

router = APIRouter(prefix="/api/v1/blobs", tags=["blobs"])
Sha = Path(pattern=r"^[0-9a-f]{64}$")
UPLOADERS = (Role.USER, Role.ADMIN, Role.PILOT)  # sandboxes, and the artifacts pilots ship
_INLINE_BYTES = 4096  # an upload costs about as much as a row per this many bytes (``Core``)


@router.head(
    "/{sha256}",
    response_class=Response,
    responses={
        200: {"description": "Stored; ``content-length`` is its size"},
        404: {"description": "Not stored"},
        **refusals(*A.AUTH, 422),
    },
)
async def exists(core: CoreDep, who: PrincipalDep, sha256: str = Sha) -> Response:
    """Whether the caller holds this blob (an uploader skips what is there): a user (or admin)
    only one they uploaded or their jobs' artifacts, so nobody learns what others stored; a
    pilot any stored blob (it ships artifacts whose content it has)."""
    require(who, *UPLOADERS)

    def run(conn: sa.Connection) -> int | None:
        if who.role is Role.PILOT:
            return conn.scalar(sa.select(blobs.c.size).where(blobs.c.sha256 == sha256))
        return wms_blobs.held_size(conn, who.user_id, sha256)

    size = await core.read(run)
    if size is None:
        return Response(status_code=404)
    return Response(headers={"content-length": str(size)})


@router.put(
    "/{sha256}",
    status_code=201,
    response_class=JSON,
    response_model=A.Blob,
    responses=refusals(*A.AUTH, 413, 422, 429),
)
async def upload(request: Request, core: CoreDep, who: PrincipalDep, sha256: str = Sha) -> Any:
    """Store the body under its SHA-256 (which must match the path); uploading twice is harmless.

    The uploader (a user or admin) holds the blob from then on, even if someone else had
    stored the same content; a user's upload that would pass their blob quota is refused.
    """
    require(who, *UPLOADERS)
    limit = core.settings.limits.max_blob_bytes
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise TooLarge(f"upload exceeds the limit of {limit} bytes")
    items = len(body) // _INLINE_BYTES  # a large blob is hashed and stored off the event loop
    digest = await core.compute(lambda: hashlib.sha256(body).hexdigest(), items=items)
    if digest != sha256:
        raise InvalidRequest(f"content has sha256 {digest}, not {sha256}", field="sha256")
    t = now()

    def run(conn: sa.Connection, wake: Wakeups) -> None:
        core.charge_blob(conn, who, sha256, len(body))
        row = {"sha256": sha256, "size": len(body), "data": bytes(body), "created_at": t}
        insert_ignoring_duplicates(conn, blobs, [row])
        if who.role is not Role.PILOT:  # artifacts: held by their job's owner (wms.attempts)
            wms_blobs.hold(conn, who.user_id, [sha256], t)

    await core.write(run, items=items)
    return JSON({"sha256": sha256, "size": len(body)}, status_code=201)


@router.get("/{sha256}", response_class=Response, responses={200: A.BYTES, **refusals(*A.READ)})
async def download(core: CoreDep, who: PrincipalDep, sha256: str = Sha) -> Response:
    """Blob contents, for admins and for a pilot that holds a job whose sandbox this is;
    users read artifacts through their jobs."""
    require(who, Role.PILOT, Role.ADMIN)

    def run(conn: sa.Connection) -> bytes:
        if who.role is Role.PILOT and not wms_pilots.holds_sandbox(conn, who.token_id, sha256):
            # The same answer as for a blob that does not exist: no probing by hash.
            raise NotFound(f"no blob {sha256} among the sandboxes of jobs your pilots hold")
        data = conn.scalar(sa.select(blobs.c.data).where(blobs.c.sha256 == sha256))
        if data is None:
            raise NotFound(f"no blob {sha256}")
        return bytes(data)

    return Response(await core.read(run), media_type="application/octet-stream")
