"""State names as the wire carries them, their final sets, and the reasons a job ended as it did."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    """Waiting for the jobs it depends on."""
    QUEUED = "queued"
    """Ready to be claimed by a pilot (possibly not before a back-off time)."""
    RUNNING = "running"
    """Claimed: an attempt runs on a pilot."""
    PARKED = "parked"
    """A workflow driver waiting for jobs it observes: it holds no slot until they finish."""
    SUCCEEDED = "succeeded"
    """An attempt finished and its result is stored."""
    FAILED = "failed"
    """Attempts exhausted, or a failure that retrying cannot fix."""
    CANCELLED = "cancelled"
    """Cancelled by a user, because a job it depends on failed, or with its workflow."""


FINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class Reason(StrEnum):
    """Why a job ended as it did, where its state alone does not say (``jobs.reason``)."""

    CANCELLED = "cancelled"
    """Cancelled by its owner or an admin."""
    UPSTREAM_FAILED = "upstream_failed"
    """Never ran: a job it depends on did not succeed (it fails its waiters like a failure)."""
    WORKFLOW_CANCELLED = "workflow_cancelled"
    """Its workflow was cancelled."""
    WORKFLOW_ENDED = "workflow_ended"
    """Left unfinished by a workflow that returned: nobody waits for it any more."""
    OTHER_PATH = "other_path"
    """Submitted by a workflow that took another path when it was retried."""
    PRUNED = "pruned"
    """Succeeded: stopped early on its workflow's decision (``pw.Pruned``)."""


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
    """Stopped on purpose: cancelled, handed back by a draining pilot, or a parked driver evicted."""


FINAL_ATTEMPT_STATES = frozenset(
    {AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.LOST, AttemptState.KILLED}
)


class KillReason(StrEnum):
    """Why a pilot stops (or hands back) an attempt."""

    CANCELLED = "cancelled"
    """Its job was cancelled."""
    STALE = "stale"
    """The attempt is no longer its job's current one."""
    DRAIN = "drain"
    """The pilot is stopping."""
    WALLTIME = "walltime"
    """It ran past its walltime (the attempt fails)."""
    HELD = "held"
    """Held too long behind busy slots: handed back for another pilot."""
    EVICTED = "evicted"
    """A parked driver's process, stopped to make room; it resumes by replay."""


class PilotState(StrEnum):
    ACTIVE = "active"
    """Heartbeating and claiming work."""
    DRAINING = "draining"
    """Finishing what it runs; claims nothing new."""
    LOST = "lost"
    """Silent past the heartbeat timeout; its attempts were marked lost."""
    EXITED = "exited"
    """Deregistered after a clean shutdown."""


class Isolation(StrEnum):
    """How a pilot keeps the jobs it runs apart from itself and from each other."""

    NONE = "none"
    """Jobs run as the pilot's own user: for a pilot only its token's owner uses (a laptop)."""
    USER = "user"
    """Each owner's jobs run as an unprivileged user of their own, each job in PID and mount
    namespaces of its own (the pilot runs as root)."""
    CONTAINER = "container"
    """Each job runs in a container."""


class JobKind(StrEnum):
    PYTHON = "python"
    """A function ``module:qualname`` called with JSON arguments in a warm worker."""
    SHELL = "shell"
    """An argv list run as a subprocess."""
    DRIVER = "driver"
    """A workflow function, run in a driver slot; its commands are recorded and replayed."""


class WorkflowState(StrEnum):
    RUNNING = "running"
    """Its driver is queued, running or parked."""
    SUSPENDED = "suspended"
    """None of its jobs is dispatched until it is resumed."""
    SUCCEEDED = "succeeded"
    """The driver returned; its value is the result."""
    FAILED = "failed"
    """The driver raised (e.g. a job it waited on failed) or exhausted its attempts."""
    CANCELLED = "cancelled"
    """Cancelled by its owner (or its parent was)."""


FINAL_WORKFLOW_STATES = frozenset(
    {WorkflowState.SUCCEEDED, WorkflowState.FAILED, WorkflowState.CANCELLED}
)


def workflow_state(driver_state: str | None, suspended: bool) -> WorkflowState:
    """A workflow's state as a function of its driver job's state."""
    if driver_state in FINAL_JOB_STATES:
        return WorkflowState(driver_state)
    return WorkflowState.SUSPENDED if suspended else WorkflowState.RUNNING
