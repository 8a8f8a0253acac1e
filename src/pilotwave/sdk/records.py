"""What the server answers to the calls users make, typed (``Client``'s return values).

They are plain dicts at run time (``job["state"]``); the types say which keys there are.
"""

from __future__ import annotations

from typing import Any, TypedDict


class Attempt(TypedDict):
    """One attempt of a job: where and when it ran and how it ended."""

    job_id: int
    number: int
    pilot_id: str
    claim_seq: int
    state: str
    gpus: list[int]
    started_at: float
    ended_at: float | None
    exit_code: int | None
    error: str | None
    cpu_s: float | None
    max_rss_mb: float | None
    log_bytes: int


class JobRow(TypedDict):
    """A job as listings show it."""

    id: int
    owner_id: int
    name: str
    kind: str
    queue: str
    state: str
    priority: int
    attempts: int
    failures: int
    max_attempts: int
    pilot_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    reason: str | None


class Job(JobRow):
    """One job in full: its spec, resources, result or error, and its attempts."""

    key: str | None
    spec: dict[str, Any]
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
    """When it may run next (a retry's backoff), seconds since the epoch."""
    result: Any
    error: str | None
    workflow_id: int | None
    deps_left: int
    """Jobs it still waits for (``pending``)."""
    held: bool
    """Its workflow is suspended."""
    attempt_history: list[Attempt]


class WorkflowInfo(TypedDict):
    """A workflow: its state, its driver job, its result or error, its progress."""

    id: int
    name: str
    state: str
    parent_id: int | None
    driver_job_id: int
    seed: int
    created_at: float
    finished_at: float | None
    result: Any
    error: str | None
    progress: dict[str, Any] | None


class WorkflowJob(TypedDict):
    id: int
    name: str
    kind: str
    state: str
    attempts: int
    pilot_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class WorkflowStatus(WorkflowInfo):
    """A workflow with job counts over its whole tree, its jobs, and its nested workflows."""

    counts: dict[str, int]
    jobs: list[WorkflowJob]
    children: list[WorkflowStatus]


class Event(TypedDict):
    """One transition in a job's (or pilot's) story."""

    id: int
    ts: float
    job_id: int | None
    pilot_id: str | None
    attempt: int | None
    from_state: str | None
    to_state: str
    reason: str


class LogPiece(TypedDict):
    """Output of one attempt of a job, from byte ``pos`` on."""

    attempt: int
    pos: int
    data: str


class Artifact(TypedDict):
    job_id: int
    name: str
    attempt: int
    sha256: str
    size: int
    created_at: float


class Pilot(TypedDict):
    id: str
    name: str
    hostname: str
    token_id: int
    queues: list[str]
    labels: list[str]
    cores: int
    memory_mb: int
    gpus: list[dict[str, Any]]
    slots: int
    prefetch: int
    driver_slots: int
    parkable: int
    state: str
    version: str
    isolation: str
    """How it keeps jobs apart: ``none``, ``user`` or ``container``."""
    serves_owner: int | None
    serves: str | None
    """The one user whose jobs it runs; ``None``: every user's."""
    claim_seq: int
    registered_at: float
    last_seen: float
