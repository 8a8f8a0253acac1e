"""The FastAPI application: wiring, error mapping, size limits, the reaper, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import pilotwave
from pilotwave import errors
from pilotwave.engine import parking
from pilotwave.errors import ApiError, TooLarge, TooManyRequests
from pilotwave.private import private_dir, private_file, write_private
from pilotwave.protocol import JobState
from pilotwave.server import answers, auth
from pilotwave.server.core import JSON, MANY, Core, now
from pilotwave.server.routes import admin, blobs, jobs, pilots, workflows
from pilotwave.server.settings import Settings
from pilotwave.store import migrate
from pilotwave.store.db import Database
from pilotwave.store.schema import jobs as jobs_table
from pilotwave.wms import blobs as wms_blobs
from pilotwave.wms import pilots as wms_pilots
from pilotwave.wms.wakeups import deadline_topic, queue_topic

log = logging.getLogger("pilotwave.server")


def create_app(settings: Settings) -> FastAPI:
    private_dir(settings.home)
    if settings.sqlite_path is not None:
        private_file(settings.sqlite_path)  # before SQLite creates it world-readable
    db = Database(settings.database_url)
    migrate.upgrade(db)
    core = Core(settings, db)
    admin_token = _bootstrap(core)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        core.notifier.bind(asyncio.get_running_loop())
        if core.bridge is not None:
            core.bridge.start()
        await _schedule_backoffs(core)
        tasks = [
            asyncio.create_task(_reap_forever(core)),
            asyncio.create_task(_expire_waits_forever(core)),
            asyncio.create_task(_collect_blobs_forever(core)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if core.bridge is not None:
                await core.bridge.stop()
            core.notifier.close()
            db.dispose()

    app = FastAPI(
        title="pilotwave",
        version=pilotwave.__version__,
        lifespan=lifespan,
        default_response_class=JSON,
        description="Job queue and workflow engine for distributed ML and statistics.",
    )
    app.state.core = core
    app.state.admin_token = admin_token
    for r in (jobs.router, workflows.router, pilots.router, blobs.router, admin.router):
        app.include_router(r)
    _error_handlers(app)

    @app.get("/api/v1/health", tags=["meta"], response_model=answers.Health)
    async def health() -> Any:
        await core.read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())
        return JSON({"status": "ok", "version": pilotwave.__version__, "database": db.dialect})

    @app.get(
        "/metrics",
        tags=["meta"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus metrics",
                "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        body = await asyncio.to_thread(core.metrics.render)
        return Response(body, media_type="text/plain; version=0.0.4")

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(LatencyMiddleware, core=core)
    app.add_middleware(
        BodyLimit, limit=settings.limits.max_request_bytes, exempt_prefix="/api/v1/blobs/"
    )
    return app


def _bootstrap(core: Core) -> str | None:
    """Create the first admin token on an empty database and store it (mode 0600) under the home."""
    with core.db.write() as conn:
        token = auth.bootstrap_admin(conn, now())
    if token is not None:
        path = core.settings.home / "admin-token"
        write_private(path, token + "\n")
        log.info("created the admin token: %s", path)
    return token


async def _schedule_backoffs(core: Core) -> None:
    """Retries waiting out a back-off survive a restart: wake their queues when the wait ends."""

    def run(conn: sa.Connection) -> list[tuple[str, float]]:
        q = (
            sa.select(jobs_table.c.queue, sa.func.min(jobs_table.c.not_before))
            .where(jobs_table.c.state == JobState.QUEUED, jobs_table.c.not_before > now())
            .group_by(jobs_table.c.queue)
        )
        return [(r[0], r[1]) for r in conn.execute(q)]

    for queue, when in await core.read(run):
        core.notifier.publish_at(when, queue_topic(queue))


async def _reap_forever(core: Core) -> None:
    s = core.settings
    period = max(0.05, min(s.heartbeat_interval_s, s.heartbeat_timeout_s / 3))
    # After a (re)start, give pilots one timeout to reach us before judging their silence:
    # they kept running while we were down and their last heartbeats are old.
    await asyncio.sleep(s.heartbeat_timeout_s)
    while True:
        try:
            lost = await core.write(
                lambda conn, wake: wms_pilots.reap(
                    conn, now(), s.heartbeat_timeout_s, s.retry, wake
                )
            )
            for pid in lost:
                log.warning("pilot lost pilot=%s timeout_s=%g", pid, s.heartbeat_timeout_s)
        except Exception:  # keep reaping whatever one round hit
            log.exception("reaper round failed")
        await asyncio.sleep(period)


async def _collect_blobs_forever(core: Core) -> None:
    """Delete blobs nothing refers to, now and then (``wms.blobs``)."""
    while True:
        await asyncio.sleep(core.settings.blob_collect_interval_s)
        try:
            gone = await core.write(
                lambda conn, wake: wms_blobs.collect(conn, now(), core.settings.blob_grace_s),
                items=MANY,  # it scans every job and artifact: off the event loop
            )
            if gone:
                log.info("deleted %d unreferenced blobs", gone)
        except Exception:  # try again next round
            log.exception("blob collection failed")


async def _expire_waits_forever(core: Core) -> None:
    """Queue parked drivers without a process whose wait timed out, at their deadlines."""
    with core.notifier.subscribe([deadline_topic()]) as sub:
        while True:
            try:
                upcoming = await core.write(lambda conn, wake: parking.expire(conn, now(), wake))
                if upcoming is not None:
                    core.notifier.publish_at(upcoming, deadline_topic())
            except Exception:  # keep timing whatever one round hit
                log.exception("expiring parked drivers' waits failed")
            await sub.wait(3600.0)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The schema, built once: every 422 in the shape the server sends (``answers.Invalid``),
    never FastAPI's default, which this server does not send."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        invalid = {"$ref": "#/components/schemas/Invalid"}
        for path in schema["paths"].values():
            for op in path.values():
                for status, answer in op["responses"].items():
                    content = answer.get("content", {})
                    if "application/x-ndjson" not in content:
                        continue
                    if status == "200":  # lines of JSON, not the text FastAPI assumes
                        content.update(answers.LINES["content"])
                    else:  # refusals are plain JSON, whatever the route streams
                        content["application/json"] = content.pop("application/x-ndjson")
                bad = op["responses"].get("422")
                if bad is not None:
                    bad["description"] = answers.refusals(422)[422]["description"]
                    bad["content"] = {"application/json": {"schema": invalid}}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        # Models FastAPI cannot see: the lines of streamed answers.
        line = answers.WatchLine.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        components.update(line.pop("$defs", {}))
        components["WatchLine"] = line
        app.openapi_schema = schema
    return app.openapi_schema


def _allowed(app: FastAPI, scope: Scope) -> str:
    """The methods the request's path takes (``Allow`` of a 405), from every route on it."""
    return ", ".join(
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(
            route.matches({**scope, "method": method})[0] is Match.FULL
            for route in app.router.routes
        )
    )


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": _loc(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return JSON(
            {
                "detail": f"{first['field']}: {first['message']}",
                "field": first["field"],
                "error": "InvalidRequest",
                "errors": errors,
            },
            status_code=422,
        )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        body: dict[str, Any] = {
            "detail": exc.detail,
            "field": exc.field,
            "error": type(exc).__name__,
        }
        if exc.status == 422:  # the same shape as a request that does not validate
            body["errors"] = [{"field": exc.field or "body", "message": exc.detail}]
        headers = None
        if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
            headers = {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
        return JSON(body, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Routing's refusals (no such path, a method the path does not take) in our shape.
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (not UTF-8, ...)
            return await api_error(request, errors.InvalidRequest(str(exc.detail), "body"))
        error = type(errors.api_error(exc.status_code, str(exc.detail))).__name__
        body = {"detail": str(exc.detail), "field": None, "error": error}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method the path takes, not only one route's
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            headers["allow"] = _allowed(app, request.scope)
        return JSON(body, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSON(
            {"detail": f"internal server error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by header, or by reading a chunked body first."""

    def __init__(self, app: ASGIApp, limit: int, exempt_prefix: str = "") -> None:
        self.app, self.limit, self.exempt_prefix = app, limit, exempt_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.exempt_prefix and scope["path"].startswith(self.exempt_prefix)
        ):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # No length given (chunked): buffer up to the limit, then replay.
        messages: list[Message] = []
        size = 0
        while True:
            msg = await receive()
            messages.append(msg)
            if msg["type"] != "http.request":
                break
            size += len(msg.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            if not msg.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = JSON(
            {
                "detail": f"request body exceeds the limit of {self.limit} bytes",
                "field": "body",
                "error": TooLarge.__name__,
            }
        ).body
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class LatencyMiddleware:
    def __init__(self, app: ASGIApp, core: Core) -> None:
        self.app, self.core = app, core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "other")
            self.core.metrics.request_latency.labels(path).observe(time.perf_counter() - t0)
