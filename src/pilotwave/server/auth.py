"""Bearer tokens and who they belong to.

Tokens are random strings shown once; the database keeps their SHA-256.  Roles:
``admin`` (everything, sees everyone's jobs), ``user`` (submits and sees their own
jobs), ``pilot`` (registers pilots and runs jobs from the queues the token names).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.errors import ConfigError, Conflict, InvalidRequest, NotFound
from pilotwave.private import write_private
from pilotwave.protocol import JobKind, JobState
from pilotwave.store.db import insert_ignoring_duplicates
from pilotwave.store.schema import jobs, tokens, users
from pilotwave.store.schema import secrets as secrets_table

NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class Role(StrEnum):
    ADMIN = "admin"
    """Manages users, tokens and pilots; sees every job."""
    USER = "user"
    """Submits jobs and sees only their own."""
    PILOT = "pilot"
    """Runs jobs from the queues it is scoped to; cannot submit."""
    DRIVER = "driver"
    """A workflow's driver while one attempt of it runs: acts for the workflow's owner."""
    JOB = "job"
    """A job while one attempt of it runs: may only report its intermediate values."""


@dataclass(frozen=True)
class Principal:
    token_id: int
    user_id: int
    user: str
    role: Role
    queues: tuple[str, ...] = ()
    attempt: tuple[int, int] | None = None  # (job id, attempt) for an attempt token
    all_users: bool = False  # a pilot token that runs every user's jobs, not only its owner's

    @property
    def sees_all(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def owner_filter(self) -> int | None:
        """The owner id to filter jobs by; ``None`` for an admin."""
        return None if self.sees_all else self.user_id

    def may_serve(self, queue: str) -> bool:
        if self.role is Role.ADMIN:
            return True
        return self.role is Role.PILOT and ("*" in self.queues or queue in self.queues)


ATTEMPT_PREFIX = "pwd_"
TOKEN_MAX_CHARS = 200
_SECRET_NAME = "driver-token-key"
_FINGERPRINT = "sha256:"


def attempt_secret(conn: Connection, path: Path) -> bytes:
    """The key that signs attempt tokens, read from ``path`` (created 0600 if missing).

    The key never sits in the database, so a copy of the database (a backup, a readable
    SQLite file) cannot forge a driver's or a job's token.  The database keeps only the key's
    fingerprint: a server given another key than the ones already serving it refuses to
    start instead of rejecting their tokens.  A key an older version kept in the database
    moves to ``path`` once.
    """
    stored = conn.scalar(
        sa.select(secrets_table.c.value).where(secrets_table.c.name == _SECRET_NAME)
    )
    legacy = stored is not None and not str(stored).startswith(_FINGERPRINT)
    if not path.exists():
        key = bytes.fromhex(str(stored)) if legacy else secrets.token_bytes(32)
        try:
            write_private(path, key.hex() + "\n", exclusive=True)
        except FileExistsError:  # another server of this home won the race: use its key
            pass
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise ConfigError(f"{path}: not an attempt key (64 hex digits)") from None
    if len(key) < 16:
        raise ConfigError(f"{path}: an attempt key has at least 32 hex digits")
    mark = _FINGERPRINT + hashlib.sha256(b"pilotwave attempt key\n" + key).hexdigest()
    if stored is None:
        insert_ignoring_duplicates(conn, secrets_table, [{"name": _SECRET_NAME, "value": mark}])
        stored = conn.scalar(
            sa.select(secrets_table.c.value).where(secrets_table.c.name == _SECRET_NAME)
        )
    elif legacy and bytes.fromhex(str(stored)) == key:
        conn.execute(
            secrets_table.update().where(secrets_table.c.name == _SECRET_NAME).values(value=mark)
        )
        stored = mark
    if stored != mark:
        raise ConfigError(
            f"the attempt key in {path} is not the one this database's other servers use: "
            "give every server of one database the same --attempt-key-file"
        )
    return key


def attempt_token(key: bytes, job_id: int, attempt: int) -> str:
    """A token for one attempt of a job; it stops working when the attempt ends.

    A driver's token acts for the workflow's owner; any other job's may only report
    intermediate values for itself.
    """
    sig = hmac.new(key, f"{job_id}:{attempt}".encode(), hashlib.sha256).hexdigest()[:40]
    return f"{ATTEMPT_PREFIX}{job_id}_{attempt}_{sig}"


def parse_attempt_token(key: bytes, token: str) -> tuple[int, int] | None:
    try:
        job_s, attempt_s, _sig = token[len(ATTEMPT_PREFIX) :].split("_")
        job_id, attempt = int(job_s), int(attempt_s)
    except ValueError:
        return None
    if not hmac.compare_digest(attempt_token(key, job_id, attempt), token):
        return None
    return job_id, attempt


def lookup_attempt(conn: Connection, key: bytes, token: str) -> Principal | None:
    """The principal of an attempt token whose attempt is still the job's running one."""
    parsed = parse_attempt_token(key, token)
    if parsed is None:
        return None
    row = conn.execute(
        sa.select(jobs.c.owner_id, jobs.c.state, jobs.c.attempts, jobs.c.kind, users.c.name)
        .select_from(jobs.join(users, users.c.id == jobs.c.owner_id))
        .where(jobs.c.id == parsed[0])
    ).one_or_none()
    if row is None:
        return None
    role = Role.DRIVER if row.kind == JobKind.DRIVER else Role.JOB
    # A parked driver's process lives on (it watches the jobs it waits for).
    live = (JobState.RUNNING, JobState.PARKED) if role is Role.DRIVER else (JobState.RUNNING,)
    if row.state not in live or row.attempts != parsed[1]:
        return None
    return Principal(0, row.owner_id, row.name, role, attempt=parsed)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(role: Role) -> str:
    return f"pw{role.value[0]}_{secrets.token_urlsafe(32)}"


def lookup(conn: Connection, token: str) -> Principal | None:
    row = conn.execute(
        sa.select(
            tokens.c.id,
            tokens.c.role,
            tokens.c.queues,
            tokens.c.all_users,
            users.c.id.label("uid"),
            users.c.name,
        )
        .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
        .where(tokens.c.token_hash == hash_token(token), tokens.c.revoked_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    return Principal(
        row.id,
        row.uid,
        row.name,
        Role(row.role),
        tuple(row.queues or ()),
        all_users=bool(row.all_users),
    )


class TokenCache:
    """Principals by token for a few seconds, keeping auth off the hot path's database load."""

    def __init__(self, ttl_s: float = 10.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str) -> Principal | None:
        hit = self._entries.get(token)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, token: str, principal: Principal) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[token] = (time.monotonic() + self.ttl_s, principal)

    def clear(self) -> None:
        self._entries.clear()


def create_user(conn: Connection, name: str, now: float) -> dict[str, Any]:
    if not NAME_RE.match(name):
        raise InvalidRequest(
            f"invalid user name {name!r}: use letters, digits and _.@-", field="name"
        )
    if conn.execute(sa.select(users.c.id).where(users.c.name == name)).first():
        raise Conflict(f"user {name!r} exists")
    uid = conn.execute(
        users.insert().values(name=name, created_at=now).returning(users.c.id)
    ).scalar_one()
    return {"id": uid, "name": name, "created_at": now}


def user_id(conn: Connection, name: str) -> int:
    uid = conn.scalar(sa.select(users.c.id).where(users.c.name == name))
    if uid is None:
        raise NotFound(f"no user {name!r}")
    return int(uid)


def create_token(
    conn: Connection,
    user: str,
    role: Role,
    now: float,
    queues: list[str] | None = None,
    description: str = "",
    all_users: bool = False,
) -> tuple[int, str]:
    """Create a token for ``user``; returns its id and the secret (shown only now).

    A pilot token runs only its owner's jobs unless ``all_users``: then its pilots must
    isolate the jobs they run (``--isolation user`` or ``container``)."""
    if role is Role.PILOT and not queues:
        raise InvalidRequest("a pilot token needs the queues it may serve", field="queues")
    if all_users and role is not Role.PILOT:
        raise InvalidRequest("only a pilot token runs other users' jobs", field="all_users")
    secret = new_token(role)
    tid = conn.execute(
        tokens.insert()
        .values(
            token_hash=hash_token(secret),
            role=role,
            user_id=user_id(conn, user),
            queues=queues if role is Role.PILOT else None,
            all_users=all_users,
            description=description,
            created_at=now,
        )
        .returning(tokens.c.id)
    ).scalar_one()
    return int(tid), secret


def revoke_token(conn: Connection, token_id: int, now: float) -> None:
    done = conn.execute(
        tokens.update()
        .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    if not done:
        raise NotFound(f"no active token {token_id}")


def list_tokens(conn: Connection) -> list[dict[str, Any]]:
    q = (
        sa.select(
            tokens.c.id,
            tokens.c.role,
            tokens.c.queues,
            tokens.c.all_users,
            tokens.c.description,
            tokens.c.created_at,
            tokens.c.revoked_at,
            users.c.name.label("user"),
        )
        .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
        .order_by(tokens.c.id)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def bootstrap_admin(conn: Connection, now: float) -> str | None:
    """On an empty database: create the ``admin`` user and an admin token (returned once)."""
    if conn.execute(sa.select(tokens.c.id).limit(1)).first():
        return None
    if not conn.execute(sa.select(users.c.id).where(users.c.name == "admin")).first():
        create_user(conn, "admin", now)
    return create_token(conn, "admin", Role.ADMIN, now, description="bootstrap admin token")[1]
