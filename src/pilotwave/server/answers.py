"""What the server answers, as the OpenAPI schema documents it: one model per response body and
the refusals each route can give.

Routes send their bodies themselves (``core.JSON``, orjson, results embedded as stored JSON
text), so these models are documentation only: FastAPI never validates or re-serializes a
response through them, and the hot paths pay nothing.  They are a contract all the same:
``tests/test_openapi_fuzz.py`` checks every answer the server gives against them, and they
forbid extra keys so a field added to an answer must be added here too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pilotwave.protocol import (
    Ack,
    AttemptState,
    Isolation,
    JobKind,
    JobState,
    PilotState,
    Reason,
    WorkflowState,
)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- refusals ---------------------------------------------------------------------------


class Refusal(Answer):
    """A refused request: ``error`` names the ``pilotwave.errors`` class (the SDK raises the
    same one), ``detail`` says why and what to do, ``field`` names the input at fault."""

    detail: str
    field: str | None
    error: str = Field(examples=["NotFound"])


class FieldError(Answer):
    field: str = Field(examples=["jobs[0].cores"])
    message: str


class Invalid(Refusal):
    """A request that does not validate: ``field``/``detail`` tell the first problem,
    ``errors`` every one."""

    errors: list[FieldError]


_WHY = {
    400: "Bad request",
    401: "No token, or an unknown, revoked or malformed one",
    403: "The token's role may not do this",
    404: "No such resource, or one that belongs to someone else",
    405: "Method not allowed",
    409: "The request no longer applies (a stale attempt, a finished workflow, an existing name)",
    413: "A body, argument list, result or upload over its limit",
    422: "Invalid input; ``field`` names it",
    429: "Over a quota; ``retry-after`` says when to try again where waiting helps",
}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can refuse with these statuses (422 in our shape)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": Invalid if status == 422 else Refusal,
            "description": _WHY[status],
        }
        if status == 429:
            entry["headers"] = {
                "retry-after": {
                    "description": "seconds to wait (absent when something must end first)",
                    "schema": {"type": "integer"},
                }
            }
        out[status] = entry
    return out


BYTES: dict[str, Any] = {
    "description": "The raw bytes",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}

AUTH = (401, 403)
"""Every route that takes a token and checks its role."""
READ = (*AUTH, 404, 422)
"""Reading one resource by id."""
WRITE = (*AUTH, 404, 413, 422)
"""Acting on one resource by id with a body."""


# -- small answers ----------------------------------------------------------------------


class Ok(Answer):
    ok: Literal[True]


class Ids(Answer):
    ids: list[int]


class Cancelled(Answer):
    cancelled: list[int] = Field(description="the jobs this cancelled (already final ones are not)")


class Health(Answer):
    status: Literal["ok"]
    version: str
    database: str


class WhoAmI(Answer):
    user: str
    user_id: int
    role: Literal["admin", "user", "pilot", "driver", "job"]
    queues: list[str]


class User(Answer):
    id: int
    name: str
    created_at: float


class NewToken(Answer):
    id: int
    token: str = Field(description="the secret: shown in this answer only")
    user: str
    role: Literal["admin", "user", "pilot"]
    queues: list[str] | None
    all_users: bool


class Token(Answer):
    id: int
    role: str
    queues: list[str] | None
    all_users: bool
    description: str
    created_at: float
    revoked_at: float | None
    user: str


class Tokens(Answer):
    tokens: list[Token]


class Revoked(Answer):
    revoked: int


class Blob(Answer):
    sha256: str
    size: int


# -- jobs -------------------------------------------------------------------------------


class Attempt(Answer):
    job_id: int
    number: int
    pilot_id: str
    claim_seq: int
    state: AttemptState
    gpus: list[int]
    started_at: float
    ended_at: float | None
    exit_code: int | None
    error: str | None
    cpu_s: float | None
    max_rss_mb: float | None
    log_bytes: int


class JobRow(Answer):
    """A job as listings show it."""

    id: int
    owner_id: int
    name: str
    kind: JobKind
    queue: str
    state: JobState
    priority: int
    attempts: int
    failures: int
    max_attempts: int
    pilot_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    reason: Reason | None


class Job(JobRow):
    """One job in full: its spec, resources, result or error, and its attempts."""

    key: str | None
    spec: dict[str, Any] = Field(description="function + args, or argv + env, as submitted")
    sandbox: str | None
    labels: list[str]
    cores: int
    memory_mb: int
    gpus: int
    gpu_model: str | None
    gpu_memory_mb: int | None
    walltime_s: float | None
    isolate: bool
    not_before: float
    result: Any = Field(description="the JSON result of a succeeded job")
    error: str | None
    workflow_id: int | None
    deps_left: int
    held: bool
    attempt_history: list[Attempt]


class Jobs(Answer):
    jobs: list[JobRow]


class Counts(Answer):
    counts: dict[str, int] = Field(description="job state -> how many")


class Final(Answer):
    """A finished job as watchers see it."""

    state: JobState
    result: Any
    error: str | None
    reason: Reason | None


class WatchLine(Answer):
    """One line of the ``application/x-ndjson`` stream: jobs that became final, new reports,
    or the end."""

    done: dict[str, Final] | None = None
    reports: list[tuple[int, int, int, int, float]] | None = Field(
        None, description="[report id, job id, attempt, step, value]"
    )
    end: bool | None = None
    pending: int | None = Field(None, description="jobs still unfinished at the end")


LINES: dict[str, Any] = {
    "description": "JSON lines (each a ``WatchLine``) as jobs finish, the last one ``end``",
    "content": {
        "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/WatchLine"}},
    },
}


class ReportAnswer(Answer):
    id: int
    stop: bool
    answered: bool = Field(description="whether the driver answered in time")


class Report(Answer):
    attempt: int
    step: int
    value: float
    stop: bool | None


class Reports(Answer):
    reports: list[Report]


class Answered(Answer):
    answered: int


class LogPiece(Answer):
    attempt: int
    pos: int
    data: str


class Cursor(Answer):
    attempt: int
    pos: int


class Logs(Answer):
    state: JobState
    chunks: list[LogPiece]
    cursor: Cursor = Field(description="pass it back as ?attempt=&pos= for what follows")


class Event(Answer):
    """One transition in a job's or pilot's story."""

    id: int
    ts: float
    job_id: int | None
    pilot_id: str | None
    attempt: int | None
    from_state: str | None
    to_state: str
    reason: str


class Events(Answer):
    events: list[Event]


class Artifact(Answer):
    job_id: int
    name: str
    attempt: int
    sha256: str
    size: int
    created_at: float


class Artifacts(Answer):
    artifacts: list[Artifact]


# -- workflows --------------------------------------------------------------------------


class NewWorkflow(Answer):
    id: int
    driver_job_id: int


class Workflow(Answer):
    id: int
    name: str
    state: WorkflowState
    parent_id: int | None
    driver_job_id: int | None
    seed: int
    created_at: float
    finished_at: float | None
    result: Any
    error: str | None
    progress: dict[str, Any] | None


class Workflows(Answer):
    workflows: list[Workflow]


class WorkflowJob(Answer):
    id: int
    name: str
    kind: JobKind
    state: JobState
    attempts: int
    pilot_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class WorkflowStatus(Workflow):
    """A workflow with job counts over its whole tree, its jobs, and its nested workflows."""

    counts: dict[str, int]
    jobs: list[WorkflowJob]
    children: list[WorkflowStatus]


class WorkflowEvent(Event):
    job_name: str
    workflow_id: int | None


class WorkflowEvents(Answer):
    events: list[WorkflowEvent]


class CancelledCount(Answer):
    cancelled: int = Field(description="how many unfinished jobs this cancelled")


class Retried(Answer):
    reset: int = Field(description="jobs given fresh attempts")
    cut: dict[str, int] = Field(description="workflow id -> where its driver's record was cut")


class Command(Answer):
    seq: int
    kind: str
    call: str
    fingerprint: str
    outcome: dict[str, Any]
    stale: bool


class CommandLog(Answer):
    workflow_id: int
    seed: int
    commands: list[Command]
    results: dict[str, Final] = Field(description="job id -> its final state, for observed jobs")


class Outcomes(Answer):
    outcomes: list[dict[str, Any]]


# -- pilots -----------------------------------------------------------------------------


class PilotGpu(Answer):
    index: int
    model: str
    memory_mb: int


class Pilot(Answer):
    id: str
    name: str
    hostname: str
    token_id: int
    queues: list[str]
    labels: list[str]
    cores: int
    memory_mb: int
    gpus: list[PilotGpu]
    slots: int
    prefetch: int
    driver_slots: int
    parkable: int
    isolation: Isolation
    serves_owner: int | None
    serves: str | None = Field(description="the one user whose jobs it runs; null: every user's")
    state: PilotState
    version: str
    claim_seq: int
    registered_at: float
    last_seen: float


class Pilots(Answer):
    pilots: list[Pilot]


class Acks(Answer):
    acks: list[Ack]


class OneAck(Answer):
    ack: Ack


class Parked(Answer):
    parked: bool


class Unparked(Answer):
    state: Literal["running", "ready", "gone"]
