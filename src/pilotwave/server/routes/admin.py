"""Users and tokens (admin), and ``whoami`` for everyone."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pilotwave.server import answers as A
from pilotwave.server import auth
from pilotwave.server.answers import refusals
from pilotwave.server.auth import Role
from pilotwave.server.core import JSON, CoreDep, PrincipalDep, now, require
from pilotwave.server.models import TokenIdPath, TokenIn, UserIn

router = APIRouter(prefix="/api/v1", tags=["admin"])


@router.get("/whoami", response_class=JSON, response_model=A.WhoAmI, responses=refusals(401))
async def whoami(who: PrincipalDep) -> Any:
    return JSON(
        {"user": who.user, "user_id": who.user_id, "role": who.role, "queues": list(who.queues)}
    )


@router.post(
    "/admin/users",
    status_code=201,
    response_class=JSON,
    response_model=A.User,
    responses=refusals(*A.AUTH, 409, 413, 422),
)
async def add_user(body: UserIn, core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.ADMIN)
    t = now()
    return JSON(
        await core.write(lambda conn, wake: auth.create_user(conn, body.name, t)), status_code=201
    )


@router.post(
    "/admin/tokens",
    status_code=201,
    response_class=JSON,
    response_model=A.NewToken,
    responses=refusals(*A.WRITE),
)
async def add_token(body: TokenIn, core: CoreDep, who: PrincipalDep) -> Any:
    """Create a token; the secret is in this answer only."""
    require(who, Role.ADMIN)
    t = now()
    tid, secret = await core.write(
        lambda conn, wake: auth.create_token(
            conn, body.user, Role(body.role), t, body.queues, body.description, body.all_users
        )
    )
    return JSON(
        {
            "id": tid,
            "token": secret,
            "user": body.user,
            "role": body.role,
            "queues": body.queues,
            "all_users": body.all_users,
        },
        status_code=201,
    )


@router.get(
    "/admin/tokens", response_class=JSON, response_model=A.Tokens, responses=refusals(*A.AUTH)
)
async def tokens(core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.ADMIN)
    return JSON({"tokens": await core.read(auth.list_tokens)})


@router.delete(
    "/admin/tokens/{token_id}",
    response_class=JSON,
    response_model=A.Revoked,
    responses=refusals(*A.READ),
)
async def revoke(token_id: TokenIdPath, core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.ADMIN)
    t = now()
    await core.write(lambda conn, wake: auth.revoke_token(conn, token_id, t))
    core.tokens.clear()
    return JSON({"revoked": token_id})
