"""What every route needs: the database, the notifier, settings, metrics and the caller's identity."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
import sqlalchemy as sa
from fastapi import Depends, Request, Security
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from pilotwave.engine.workflows import settle
from pilotwave.errors import Forbidden, Unauthorized
from pilotwave.server import auth
from pilotwave.server.auth import Principal, Role
from pilotwave.server.metrics import Metrics
from pilotwave.server.notify import Notifier
from pilotwave.server.pgnotify import PgBridge
from pilotwave.server.quotas import SubmitRate
from pilotwave.server.settings import Settings
from pilotwave.store.db import Database, WriterBusy
from pilotwave.store.schema import users
from pilotwave.wms import blobs as wms_blobs
from pilotwave.wms import jobs as wms_jobs
from pilotwave.wms.wakeups import Wakeups

T = TypeVar("T")


INLINE_ITEMS = 200
"""The most jobs, ids or rows a request may touch and still run on the event loop (SQLite)."""
MANY = 1 << 62
"""``items`` for work whose size the request does not bound (a whole workflow's jobs)."""


class Core:
    """The server's shared state, and where its database work runs.

    PostgreSQL waits on the network, so every transaction runs in the thread pool.  SQLite
    transactions are local: a small one (a claim, a report, a heartbeat, one job) runs on
    the event loop, which saves a thread hop on the hot path.  A large one (a submission of
    thousands of jobs, a watch or cancel of many ids, a long listing; ``items`` above
    ``INLINE_ITEMS``) runs in the thread pool, so the loop keeps answering everyone else
    (``/health`` included) meanwhile: SQLite's C code releases the GIL, and Python work
    in the thread yields it every few milliseconds.  Writes stay serialized by the
    database's writer lock; an inline write never waits for it on the loop: when a write
    in a thread holds it, the inline one goes to the thread pool and waits there
    (``Database.write(wait=False)``).  ``bench/health_stall.py`` measures the difference.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.notifier = Notifier()
        self.metrics = Metrics(db)
        self.tokens = auth.TokenCache()
        self.submit_rate = SubmitRate(settings.quotas.submit_rate, settings.quotas.submit_burst)
        self.pilots: dict[str, tuple[int, tuple[str, ...]]] = {}  # id -> (token id, queues)
        # Each pilot's drivers that only wait, as last written (a claim asks the database
        # for queued drivers only for a pilot that has some: the hot path stays lean).
        self.parkable: dict[str, int] = {}
        self.inline = not db.is_postgres
        self.bridge = PgBridge(db.url, self.notifier) if db.is_postgres else None
        with db.write() as conn:
            self.attempt_key = auth.attempt_secret(conn, settings.key_path)

    def charge(self, conn: Connection, who: Principal, jobs: int) -> None:
        """Hold ``who`` to the quotas before ``jobs`` more of theirs are created: jobs in
        flight first (a refused batch takes nothing of the rate), then the rate.  Admins
        have none.  Call inside the write that creates the jobs."""
        if who.role is Role.ADMIN:
            return
        quotas = self.settings.quotas
        quotas.check_in_flight(wms_jobs.in_flight(conn, who.user_id), jobs)
        self.submit_rate.take(who.user_id, jobs)

    def charge_blob(self, conn: Connection, who: Principal, sha256: str, size: int) -> None:
        """Hold ``who`` to their blob quota before they upload ``size`` bytes as ``sha256``
        (nothing to pay for a blob they hold already).  Admins have none, and pilots' uploads
        (artifacts) are never refused: they count for the job's owner when a report attaches
        them.  Call inside the write that stores the blob."""
        if who.role in (Role.ADMIN, Role.PILOT):
            return
        if wms_blobs.held_size(conn, who.user_id, sha256) is not None:
            return
        if conn.dialect.name == "postgresql":  # one user's concurrent uploads count in turn
            conn.execute(sa.select(users.c.id).where(users.c.id == who.user_id).with_for_update())
        self.settings.quotas.check_blob_bytes(wms_blobs.held_bytes(conn, who.user_id), size)

    async def write(self, fn: Callable[[Connection, Wakeups], T], *, items: int = 1) -> T:
        """Run ``fn`` in one write transaction, then wake whoever it affected; ``items``: how
        many jobs, ids or rows it may touch (where it runs, see ``Core``).

        Before the commit the workflow engine reacts to what ``fn`` did to the queue
        (``engine.settle``), so every write keeps the workflows consistent.
        """
        wake = Wakeups()

        def tx(conn: Connection) -> T:
            nonlocal wake
            wake = Wakeups()  # a retried transaction starts over
            result = fn(conn, wake)
            settle(conn, wake, time.time())
            if self.bridge is not None and (wake.now or wake.later):
                self.bridge.emit(conn, wake)  # other servers on this database hear it at commit
            return result

        result = await self._transact(tx, items)
        self.notifier.apply(wake)
        return result

    async def read(self, fn: Callable[[Connection], T], *, items: int = 1) -> T:
        """Run ``fn`` in a read transaction; ``items`` as for ``write``."""

        def run() -> T:
            with self.db.read() as conn:
                return fn(conn)

        if self.inline and items <= INLINE_ITEMS:
            return run()
        return await run_in_threadpool(run)

    async def compute(self, fn: Callable[[], T], *, items: int) -> T:
        """``fn()``, work without the database (building a large request's rows), in the
        thread pool when it covers more than ``INLINE_ITEMS`` items."""
        if items <= INLINE_ITEMS:
            return fn()
        return await run_in_threadpool(fn)

    async def _transact(self, tx: Callable[[Connection], T], items: int) -> T:
        if self.inline and items <= INLINE_ITEMS:
            try:
                return self.db.transact(tx, wait=False)
            except WriterBusy:
                pass  # a long write holds the writer lock in a thread: wait there, not here
        return await run_in_threadpool(self.db.transact, tx)


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


class JSON(JSONResponse):
    """Fast JSON responses (orjson); pre-serialized payloads can be embedded with ``orjson.Fragment``.

    A ``JSONResponse`` for FastAPI, so that the OpenAPI schema shows a route's ``response_model``
    (routes return this response themselves: FastAPI never serializes through the model)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default, option=orjson.OPT_NON_STR_KEYS)


class NDJSON(StreamingResponse):
    """A stream of JSON lines (``application/x-ndjson``)."""

    media_type = "application/x-ndjson"


def get_core(request: Request) -> Core:
    return request.app.state.core


CoreDep = Annotated[Core, Depends(get_core)]


BEARER = HTTPBearer(
    scheme_name="bearer",
    description="A pilotwave token (`pilotwave admin token create`); its role decides what it may do.",
    auto_error=False,
)
"""Declares the bearer scheme in the OpenAPI schema; ``get_principal`` reads the header itself."""


async def get_principal(
    request: Request, _documented: HTTPAuthorizationCredentials | None = Security(BEARER)
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token: set PILOTWAVE_TOKEN or run `pilotwave up`")
    if len(token) > auth.TOKEN_MAX_CHARS or not token.isascii() or not token.isprintable():
        raise Unauthorized("malformed token: a pilotwave token is short printable ASCII")
    core = get_core(request)
    principal = core.tokens.get(token)
    if principal is None:
        if token.startswith(auth.ATTEMPT_PREFIX):
            key = core.attempt_key
            principal = await core.read(lambda conn: auth.lookup_attempt(conn, key, token))
        else:
            principal = await core.read(lambda conn: auth.lookup(conn, token))
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        core.tokens.put(token, principal)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise Forbidden(f"a {principal.role.value} token cannot do this (needs {allowed})")


READERS = (Role.USER, Role.ADMIN, Role.DRIVER)
"""Who reads a user's work: the user, an admin, or a workflow's driver acting for its owner.
Pilot tokens run jobs and read none; a job's own token reads only its owner's outputs."""


async def get_reader(who: PrincipalDep) -> Principal:
    require(who, *READERS)
    return who


async def get_output_reader(who: PrincipalDep) -> Principal:
    require(who, *READERS, Role.JOB)  # a job reads its owner's artifacts (``pw.artifact``)
    return who


ReaderDep = Annotated[Principal, Depends(get_reader)]
OutputReaderDep = Annotated[Principal, Depends(get_output_reader)]


def now() -> float:
    return time.time()
