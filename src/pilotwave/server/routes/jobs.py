"""Jobs: submit (batch), list, get (long-poll until final), wait for many, cancel, logs, events, artifacts."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from pilotwave.errors import Forbidden, NotFound
from pilotwave.protocol import FINAL_JOB_STATES, JobState
from pilotwave.protocol.limits import MAX_IDS
from pilotwave.protocol.wire import INT64, ReportSeen
from pilotwave.server import answers as A
from pilotwave.server.answers import BYTES, refusals
from pilotwave.server.auth import Role
from pilotwave.server.core import (
    INLINE_ITEMS,
    JSON,
    NDJSON,
    CoreDep,
    OutputReaderDep,
    PrincipalDep,
    ReaderDep,
    now,
    require,
)
from pilotwave.server.models import (
    DecisionsIn,
    IdsIn,
    JobId,
    JobIdPath,
    ReportValueIn,
    SubmitIn,
    WatchIn,
)
from pilotwave.store.schema import artifacts, blobs
from pilotwave.wms import attempts as wms_attempts
from pilotwave.wms import jobs as wms_jobs
from pilotwave.wms import reports as wms_reports
from pilotwave.wms.events import story
from pilotwave.wms.wakeups import (
    decision_topic,
    is_report_topic,
    job_topic,
    log_topic,
    report_topic,
    topic_job,
)

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=201,
    response_class=JSON,
    response_model=A.Ids,
    responses=refusals(*A.AUTH, 404, 413, 422, 429),
)
async def submit(body: SubmitIn, core: CoreDep, who: PrincipalDep) -> Any:
    """Submit a batch of jobs; returns their ids in order.  Re-sending a ``key`` returns the same job."""
    require(who, Role.USER, Role.ADMIN)
    limits, n = core.settings.limits, len(body.jobs)
    specs = await core.compute(
        lambda: [wms_jobs.spec_of(j, i, limits) for i, j in enumerate(body.jobs)], items=n
    )
    t = now()

    def run(conn: sa.Connection, wake: Any) -> list[int]:
        core.charge(conn, who, len(specs))
        return wms_jobs.submit(conn, who.user_id, specs, t, wake)

    ids = await core.write(run, items=n)
    for queue, k in Counter(s.options.queue for s in specs).items():
        core.metrics.submitted.labels(queue).inc(k)
    return JSON({"ids": ids}, status_code=201)


@router.get("", response_class=JSON, response_model=A.Jobs, responses=refusals(*A.AUTH, 422))
async def list_jobs(
    core: CoreDep,
    who: ReaderDep,
    state: list[JobState] = Query(default=[]),
    queue: str | None = None,
    ids: list[JobId] = Query(default=[], max_length=MAX_IDS),
    limit: int = Query(100, ge=1, le=10_000),
    before: JobId | None = None,
) -> Any:
    rows = await core.read(
        lambda conn: wms_jobs.list_jobs(
            conn,
            who.owner_filter,
            states=state,
            queue=queue,
            ids=ids,
            limit=limit,
            before_id=before,
        ),
        items=limit,
    )
    return JSON({"jobs": rows})


@router.get("/summary", response_class=JSON, response_model=A.Counts, responses=refusals(*A.AUTH))
async def summary(core: CoreDep, who: ReaderDep) -> Any:
    """Job counts by state."""
    return JSON({"counts": await core.read(lambda conn: wms_jobs.counts(conn, who.owner_filter))})


def _public(job: dict[str, Any]) -> dict[str, Any]:
    job = dict(job)
    job["spec"] = orjson.Fragment(job["spec"])
    if job.get("result") is not None:
        job["result"] = orjson.Fragment(job["result"])
    return job


@router.get("/{job_id:int}", response_class=JSON, response_model=A.Job, responses=refusals(*A.READ))
async def get_job(
    job_id: JobIdPath,
    request: Request,
    core: CoreDep,
    who: ReaderDep,
    wait: float = Query(0.0, ge=0, le=60),
) -> Any:
    """One job with its attempts.  With ``wait``, hold the request until the job is final (or the time is up)."""

    async def check() -> dict[str, Any] | None:
        job = await core.read(lambda conn: wms_jobs.get(conn, job_id, who.owner_filter))
        return job if job["state"] in FINAL_JOB_STATES else None

    if wait > 0:
        job = await core.notifier.poll([job_topic(job_id)], wait, check, request.receive)
        if job is not None:
            return JSON(_public(job))
    job = await core.read(lambda conn: wms_jobs.get(conn, job_id, who.owner_filter))
    return JSON(_public(job))


def finals_json(done: dict[int, dict[str, Any]]) -> dict[int, Any]:
    """Final jobs for the wire, results embedded as they are stored (JSON text)."""
    return {
        i: {**d, "result": orjson.Fragment(d["result"]) if d["result"] is not None else None}
        for i, d in done.items()
    }


@router.post(
    "/watch",
    response_class=NDJSON,
    responses={200: A.LINES, **refusals(*A.READ, 413)},
)
async def watch(body: WatchIn, core: CoreDep, who: ReaderDep) -> Response:
    """Stream jobs as they become final, one JSON line per batch: ``{"done": {id: {state, result, error}}}``.

    Jobs already final come first; the stream ends with ``{"end": true, "pending": n}`` when
    all are final or ``timeout_s`` has passed.  Each job costs one read when it finishes,
    however many are watched.  With ``reports_after`` (job id -> report id cursor), the
    jobs' new intermediate reports stream too, as ``{"reports": [[id, job, attempt, step, value]]}``.
    """
    # A large watch is built, subscribed and checked off the event loop (``Core``): its ids
    # as one set in the notifier, not a topic each.
    owner = who.owner_filter
    after = dict(body.reports_after or {})
    n = sum(last - first + 1 for first, last in body.ranges)
    ids, watched = await core.compute(lambda: _watched(body), items=n)
    topics = [report_topic(i) for i in after]
    if n <= INLINE_ITEMS:
        sub = core.notifier.open(topics + [job_topic(i) for i in ids])
    else:
        sub = core.notifier.open(topics, jobs=watched)  # before the first check: no lost wake-ups

    def check(conn: sa.Connection, ids: list[int]) -> tuple[set[int], bytes | None]:
        """The jobs of ``ids`` now final, and the line that tells them (and new reports)."""
        done = wms_jobs.finished(conn, ids, owner) if ids else {}
        news = wms_reports.since(conn, after, owner)
        return set(done), batch(done, news) if done or news else None

    def batch(done: dict[int, Any], news: list[ReportSeen]) -> bytes:
        out: dict[str, Any] = {}
        if news:
            for r in news:
                after[r[1]] = r[0]
            out["reports"] = news
        if done:
            out["done"] = finals_json(done)
        return orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS) + b"\n"

    try:
        first, first_line = await core.read(partial(check, ids=ids), items=n)
        pending = await core.compute(lambda: watched - first, items=n)
    except BaseException:
        core.notifier.close_subscription(sub)
        raise
    deadline = time.monotonic() + body.timeout_s

    async def lines() -> AsyncIterator[bytes]:
        try:
            if first_line is not None:
                yield first_line
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await sub.wait(remaining)
                fired = sub.take()
                jobs_fired = [i for i in map(topic_job, fired) if i is not None and i in pending]
                reported = any(is_report_topic(t) for t in fired)
                if not jobs_fired and not reported:
                    continue
                done, line = await core.read(partial(check, ids=jobs_fired), items=len(jobs_fired))
                pending.difference_update(done)
                if line is not None:
                    yield line
            yield orjson.dumps({"end": True, "pending": len(pending)}) + b"\n"
        finally:
            core.notifier.close_subscription(sub)

    return NDJSON(lines())


def _watched(body: WatchIn) -> tuple[list[int], set[int]]:
    """A watch's ids, in order and as a set."""
    ids = body.ids()
    return ids, set(ids)


@router.post(
    "/{job_id:int}/reports",
    response_class=JSON,
    response_model=A.ReportAnswer,
    responses=refusals(*A.WRITE, 409),
)
async def report(
    job_id: JobIdPath, body: ReportValueIn, request: Request, core: CoreDep, who: PrincipalDep
) -> Any:
    """A running job reports an intermediate value (``pw.report``); answers whether it should stop.

    With ``wait_s``, the request is held until the job's workflow driver answers this
    report (or the time is up): ``{"id", "stop": bool, "answered": bool}``.
    """
    require(who, Role.JOB)
    if who.attempt != (job_id, body.attempt):
        raise Forbidden(f"this token belongs to another job attempt than {job_id}.{body.attempt}")
    t = now()
    report_id = await core.write(
        lambda conn, wake: wms_reports.add(
            conn, job_id, body.attempt, body.step, body.value, t, wake
        )
    )

    async def check() -> tuple[bool] | None:  # a tuple: "go on" (False) is an answer too
        answer = await core.read(lambda conn: wms_reports.answer(conn, report_id))
        return None if answer is None else (answer,)

    got = await check()
    if got is None and body.wait_s > 0:
        got = await core.notifier.poll(
            [decision_topic(report_id)], body.wait_s, check, request.receive
        )
    answer = None if got is None else got[0]
    stop = answer
    if not stop:  # an earlier report of this attempt may have been answered with stop
        stop = await core.read(lambda conn: wms_reports.told_to_stop(conn, job_id, body.attempt))
    return JSON({"id": report_id, "stop": bool(stop), "answered": answer is not None})


@router.get(
    "/{job_id:int}/reports",
    response_class=JSON,
    response_model=A.Reports,
    responses=refusals(*A.READ),
)
async def list_reports(job_id: JobIdPath, core: CoreDep, who: ReaderDep) -> Any:
    """The intermediate values a job reported, per attempt and step, with the driver's answers."""

    def run(conn: sa.Connection) -> list[dict[str, Any]]:
        wms_jobs.get(conn, job_id, who.owner_filter)  # 404 for an unknown or another user's job
        return wms_reports.of_jobs(conn, [job_id]).get(job_id, [])

    return JSON({"reports": await core.read(run)})


@router.post(
    "/decisions",
    response_class=JSON,
    response_model=A.Answered,
    responses=refusals(*A.AUTH, 413, 422),
)
async def decisions(body: DecisionsIn, core: CoreDep, who: PrincipalDep) -> Any:
    """A workflow driver answers its jobs' reports: ``{report id: stop}``; the first answer stands."""
    require(who, Role.DRIVER)
    n = await core.write(
        lambda conn, wake: wms_reports.decide(conn, who.user_id, body.answers, wake)
    )
    return JSON({"answered": n})


@router.post(
    "/{job_id:int}/cancel",
    response_class=JSON,
    response_model=A.Cancelled,
    responses=refusals(*A.READ),
)
async def cancel_one(job_id: JobIdPath, core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.USER, Role.ADMIN)
    t = now()
    done = await core.write(
        lambda conn, wake: wms_jobs.cancel(conn, [job_id], who.owner_filter, t, wake)
    )
    return JSON({"cancelled": done})


@router.post(
    "/cancel", response_class=JSON, response_model=A.Cancelled, responses=refusals(*A.WRITE)
)
async def cancel_many(body: IdsIn, core: CoreDep, who: PrincipalDep) -> Any:
    require(who, Role.USER, Role.ADMIN)
    t = now()
    done = await core.write(
        lambda conn, wake: wms_jobs.cancel(conn, body.ids, who.owner_filter, t, wake),
        items=len(body.ids),
    )
    return JSON({"cancelled": done})


@router.get(
    "/{job_id:int}/logs", response_class=JSON, response_model=A.Logs, responses=refusals(*A.READ)
)
async def logs(
    job_id: JobIdPath,
    request: Request,
    core: CoreDep,
    who: ReaderDep,
    attempt: int = Query(0, ge=0, le=1 << 30),
    pos: int = Query(-1, ge=-1, le=INT64),
    wait: float = Query(0.0, ge=0, le=60),
) -> Any:
    """Output after the cursor ``(attempt, pos)``; with ``wait``, hold until there is some or the job is final."""
    cursor = (attempt, pos)

    async def fetch() -> tuple[str, list[dict[str, Any]]]:
        def run(conn: sa.Connection) -> tuple[str, list[dict[str, Any]]]:
            state = wms_jobs.get(conn, job_id, who.owner_filter)["state"]
            return state, wms_attempts.read_logs(conn, job_id, cursor)

        return await core.read(run)

    async def check() -> tuple[str, list[dict[str, Any]]] | None:
        state, chunks = await fetch()
        return (state, chunks) if chunks or state in FINAL_JOB_STATES else None

    got = (
        await core.notifier.poll(
            [log_topic(job_id), job_topic(job_id)], wait, check, request.receive
        )
        if wait
        else None
    )
    state, chunks = got or await fetch()
    if chunks:
        cursor = (chunks[-1]["attempt"], chunks[-1]["pos"])
    return JSON(
        {"state": state, "chunks": chunks, "cursor": {"attempt": cursor[0], "pos": cursor[1]}}
    )


@router.get(
    "/{job_id:int}/events",
    response_class=JSON,
    response_model=A.Events,
    responses=refusals(*A.READ),
)
async def events(job_id: JobIdPath, core: CoreDep, who: ReaderDep) -> Any:
    def run(conn: sa.Connection) -> list[dict[str, Any]]:
        wms_jobs.get(conn, job_id, who.owner_filter)
        return story(conn, job_id=job_id)

    return JSON({"events": await core.read(run)})


@router.get(
    "/{job_id:int}/artifacts",
    response_class=JSON,
    response_model=A.Artifacts,
    responses=refusals(*A.READ),
)
async def list_artifacts(job_id: JobIdPath, core: CoreDep, who: OutputReaderDep) -> Any:
    def run(conn: sa.Connection) -> list[dict[str, Any]]:
        wms_jobs.get(conn, job_id, who.owner_filter)
        q = sa.select(artifacts).where(artifacts.c.job_id == job_id).order_by(artifacts.c.name)
        return [dict(r._mapping) for r in conn.execute(q)]

    return JSON({"artifacts": await core.read(run)})


@router.get(
    "/{job_id:int}/artifacts/{name:path}",
    response_class=Response,
    responses={200: BYTES, **refusals(*A.READ)},
)
async def get_artifact(
    job_id: JobIdPath, name: str, core: CoreDep, who: OutputReaderDep
) -> Response:
    def run(conn: sa.Connection) -> bytes:
        wms_jobs.get(conn, job_id, who.owner_filter)
        data = conn.scalar(
            sa.select(blobs.c.data)
            .select_from(artifacts.join(blobs, blobs.c.sha256 == artifacts.c.sha256))
            .where(artifacts.c.job_id == job_id, artifacts.c.name == name)
        )
        if data is None:
            raise NotFound(f"job {job_id} has no artifact {name!r}")
        return bytes(data)

    return Response(await core.read(run), media_type="application/octet-stream")
