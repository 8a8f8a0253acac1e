"""The legal job transitions, as data: ``(from, to) -> what moves a job along that edge``.

The state names live in ``pilotwave.protocol``; this table is the queue's rule about them.
``transitions.transition`` consults it for every state change.
"""

from __future__ import annotations

from pilotwave.errors import IllegalTransition
from pilotwave.protocol import JobState

JOB_TRANSITIONS: dict[tuple[JobState | None, JobState], str] = {
    # A job is born pending, queued, or (an upstream already failed) cancelled.
    (None, JobState.PENDING): "submitted, waiting for the jobs it needs",
    (None, JobState.QUEUED): "submitted",
    (None, JobState.CANCELLED): "submitted after a job it needs failed",
    (JobState.PENDING, JobState.QUEUED): "dependencies succeeded",
    (JobState.PENDING, JobState.CANCELLED): "cancelled before it was ready",
    (JobState.QUEUED, JobState.RUNNING): "claimed by a pilot",
    (JobState.QUEUED, JobState.CANCELLED): "cancelled while queued",
    (JobState.RUNNING, JobState.SUCCEEDED): "attempt succeeded",
    (JobState.RUNNING, JobState.FAILED): "attempt failed, no attempts left or not retryable",
    (JobState.RUNNING, JobState.QUEUED): "attempt failed, lost or handed back: retried",
    (JobState.RUNNING, JobState.CANCELLED): "cancelled while running",
    # Workflow drivers park while they wait for the jobs they observe, holding no slot.
    (JobState.RUNNING, JobState.PARKED): "driver waits for jobs it observes",
    (JobState.PARKED, JobState.RUNNING): "what the driver waits for happened: it goes on",
    (JobState.PARKED, JobState.QUEUED): "what the driver waits for happened: it replays elsewhere",
    (JobState.PARKED, JobState.CANCELLED): "cancelled while parked",
    # A workflow retry is the one way back: the job starts over with fresh attempts.
    (JobState.FAILED, JobState.QUEUED): "retried with its workflow",
    (JobState.FAILED, JobState.PENDING): "retried with its workflow, waiting for dependencies",
    (JobState.CANCELLED, JobState.QUEUED): "retried with its workflow",
    (JobState.CANCELLED, JobState.PENDING): "retried with its workflow, waiting for dependencies",
}


def check_transition(old: JobState | None, new: JobState) -> str:
    """Return the description of the edge ``old -> new`` or raise ``IllegalTransition``."""
    try:
        return JOB_TRANSITIONS[(old, new)]
    except KeyError:
        raise IllegalTransition(f"a job cannot move from {old or 'nothing'} to {new}") from None
