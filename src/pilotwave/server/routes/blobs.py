"""Content-addressed blobs (sandboxes and artifact contents): upload once, idempotent by SHA-256."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from pilotwave.errors import InvalidRequest, NotFound, TooLarge
from pilotwave.server.auth import Role
from pilotwave.server.core import JSON, CoreDep, PrincipalDep, now, require
from pilotwave.store.db import insert_ignoring_duplicates
from pilotwave.store.schema import blobs
from pilotwave.wms import pilots as wms_pilots

router = APIRouter(prefix="/api/v1/blobs", tags=["blobs"])
Sha = Path(pattern=r"^[0-9a-f]{64}$")
UPLOADERS = (Role.USER, Role.ADMIN, Role.PILOT)  # sandboxes, and the artifacts pilots ship


@router.head("/{sha256}")
async def exists(core: CoreDep, who: PrincipalDep, sha256: str = Sha) -> Response:
    """Whether a blob is stored (an uploader skips what is there)."""
    require(who, *UPLOADERS)
    size = await core.read(
        lambda conn: conn.scalar(sa.select(blobs.c.size).where(blobs.c.sha256 == sha256))
    )
    if size is None:
        return Response(status_code=404)
    return Response(headers={"content-length": str(size)})


@router.put("/{sha256}", status_code=201, response_class=JSON)
async def upload(request: Request, core: CoreDep, who: PrincipalDep, sha256: str = Sha) -> Any:
    """Store the body under its SHA-256 (which must match the path); uploading twice is harmless."""
    require(who, *UPLOADERS)
    limit = core.settings.limits.max_blob_bytes
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise TooLarge(f"upload exceeds the limit of {limit} bytes")
    digest = hashlib.sha256(body).hexdigest()
    if digest != sha256:
        raise InvalidRequest(f"content has sha256 {digest}, not {sha256}", field="sha256")
    t = now()
    await core.write(
        lambda conn, wake: insert_ignoring_duplicates(
            conn,
            blobs,
            [{"sha256": sha256, "size": len(body), "data": bytes(body), "created_at": t}],
        )
    )
    return JSON({"sha256": sha256, "size": len(body)}, status_code=201)


@router.get("/{sha256}")
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
