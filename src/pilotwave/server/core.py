"""What every route needs: the database, the notifier, settings, metrics and the caller's identity."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response
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
from pilotwave.store.db import Database
from pilotwave.wms import jobs as wms_jobs
from pilotwave.wms.wakeups import Wakeups

T = TypeVar("T")


class Core:
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

    async def write(self, fn: Callable[[Connection, Wakeups], T]) -> T:
        """Run ``fn`` in one write transaction off the event loop, then wake whoever it affected.

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

        result = await self._run(self.db.transact, tx)
        self.notifier.apply(wake)
        return result

    async def read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.db.read() as conn:
                return fn(conn)

        return await self._run(run)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # SQLite transactions are short and local, and writers are serialized anyway: running
        # them on the event loop saves a thread hop per request.  PostgreSQL waits on the
        # network, so its transactions run in the thread pool.
        if self.inline:
            return fn(*args)
        return await run_in_threadpool(fn, *args)


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


class JSON(Response):
    """Fast JSON responses (orjson); pre-serialized payloads can be embedded with ``orjson.Fragment``."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default, option=orjson.OPT_NON_STR_KEYS)


def get_core(request: Request) -> Core:
    return request.app.state.core


CoreDep = Annotated[Core, Depends(get_core)]


async def get_principal(request: Request) -> Principal:
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
