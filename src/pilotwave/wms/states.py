"""Job, attempt and pilot states, and the legal job transitions as data."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    """Waiting for the jobs it depends on."""
    QUEUED = "queued"
    """Ready to be claimed by a pilot (possibly not before a back-off time)."""
    RUNNING = "running"
    """Claimed: an attempt runs on a pilot."""
    SUCCEEDED = "succeeded"
    """An attempt finished and its result is stored."""
    FAILED = "failed"
    """Attempts exhausted, or a failure that retrying cannot fix."""
    CANCELLED = "cancelled"
    """Cancelled by a user, or because a job it depends on failed."""


FINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# (from, to) -> what moves a job along that edge.  Anything else is a bug.
JOB_TRANSITIONS: dict[tuple[JobState, JobState], str] = {
    (JobState.PENDING, JobState.QUEUED): "dependencies succeeded",
    (JobState.PENDING, JobState.CANCELLED): "cancelled before it was ready",
    (JobState.QUEUED, JobState.RUNNING): "claimed by a pilot",
    (JobState.QUEUED, JobState.CANCELLED): "cancelled while queued",
    (JobState.RUNNING, JobState.SUCCEEDED): "attempt succeeded",
    (JobState.RUNNING, JobState.FAILED): "attempt failed, no attempts left or not retryable",
    (JobState.RUNNING, JobState.QUEUED): "attempt failed or lost, retried",
    (JobState.RUNNING, JobState.CANCELLED): "cancelled while running",
    # A workflow retry is the one way back: the job starts over with fresh attempts.
    (JobState.FAILED, JobState.QUEUED): "retried with its workflow",
    (JobState.FAILED, JobState.PENDING): "retried with its workflow, waiting for dependencies",
    (JobState.CANCELLED, JobState.QUEUED): "retried with its workflow",
    (JobState.CANCELLED, JobState.PENDING): "retried with its workflow, waiting for dependencies",
}


class IllegalTransition(RuntimeError):
    """A state change that the job state machine does not allow."""


def check_transition(old: JobState, new: JobState) -> str:
    """Return the description of the edge ``old -> new`` or raise ``IllegalTransition``."""
    try:
        return JOB_TRANSITIONS[(old, new)]
    except KeyError:
        raise IllegalTransition(f"job cannot move from {old} to {new}") from None


class AttemptState(StrEnum):
    RUNNING = "running"
    """Claimed by a pilot and not yet reported."""
    SUCCEEDED = "succeeded"
    """The payload finished and returned a result."""
    FAILED = "failed"
    """The payload raised, exited non-zero, ran past its walltime, or could not start."""
    LOST = "lost"
    """Its pilot went silent past the heartbeat timeout, or forgot the attempt."""
    KILLED = "killed"
    """Stopped on purpose: the job was cancelled, or the pilot handed it back while draining."""


FINAL_ATTEMPT_STATES = frozenset(
    {AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.LOST, AttemptState.KILLED}
)


class PilotState(StrEnum):
    ACTIVE = "active"
    """Heartbeating and claiming work."""
    DRAINING = "draining"
    """Finishing what it runs; claims nothing new."""
    LOST = "lost"
    """Silent past the heartbeat timeout; its attempts were marked lost."""
    EXITED = "exited"
    """Deregistered after a clean shutdown."""


class JobKind(StrEnum):
    PYTHON = "python"
    """A function ``module:qualname`` called with JSON arguments in a warm worker."""
    SHELL = "shell"
    """An argv list run as a subprocess."""
    DRIVER = "driver"
    """A workflow function, run in a driver slot; its commands are recorded and replayed."""
