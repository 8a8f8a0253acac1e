"""pilotwave: run ML and statistics jobs and workflows on any machine, durably.

import pilotwave as pw

@pw.job(cores=1)
def square(x: int) -> int:
    return x * x

futures = square.map(range(10))
print([f.result() for f in futures])
"""

from __future__ import annotations

__version__ = "0.1.0"

from pilotwave.errors import (
    ApiError,
    ConfigError,
    Conflict,
    Forbidden,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    NonDeterminismError,
    NotFound,
    NotInWorkflow,
    PilotwaveError,
    Pruned,
    ResultError,
    SandboxError,
    ServerUnreachable,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    WorkflowCancelled,
    WorkflowFailed,
)
from pilotwave.sdk.artifacts import artifact, job_id
from pilotwave.sdk.client import Client, connect
from pilotwave.sdk.context import outputs
from pilotwave.sdk.driver import now, progress, seed
from pilotwave.sdk.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    Future,
    Run,
    as_completed,
    wait,
)
from pilotwave.sdk.jobs import JobFunction, job, shell
from pilotwave.sdk.reports import Report, check_prune, events, report
from pilotwave.sdk.workflows import WorkflowFunction, workflow

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "ApiError",
    "Client",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "Future",
    "InvalidRequest",
    "JobCancelled",
    "JobFailed",
    "JobFunction",
    "NonDeterminismError",
    "NotFound",
    "NotInWorkflow",
    "PilotwaveError",
    "Pruned",
    "Report",
    "ResultError",
    "Run",
    "SandboxError",
    "ServerUnreachable",
    "TooLarge",
    "TooManyRequests",
    "Unauthorized",
    "WorkflowCancelled",
    "WorkflowFailed",
    "WorkflowFunction",
    "__version__",
    "artifact",
    "as_completed",
    "check_prune",
    "connect",
    "events",
    "job",
    "job_id",
    "now",
    "outputs",
    "progress",
    "report",
    "seed",
    "shell",
    "wait",
    "workflow",
]
