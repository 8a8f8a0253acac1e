"""What happens to a job when one of its attempts ends: the retry policy as a pure function."""

from __future__ import annotations

from dataclasses import dataclass

from pilotwave.protocol import AttemptState, JobState


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off between attempts: ``base * 2**(failures-1)``, capped at ``max``."""

    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return float(min(self.backoff_base_s * 2 ** (failures - 1), self.backoff_max_s))


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, as far as the job is concerned."""

    outcome: AttemptState
    retryable: bool = True
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    """The job's next state after an attempt ended."""

    state: JobState
    failures: int
    not_before: float
    reason: str


def after_attempt(
    *,
    job_state: JobState,
    failures: int,
    max_attempts: int,
    end: AttemptEnd,
    now: float,
    policy: RetryPolicy,
) -> Decision:
    """Decide the job's next state when its current attempt ends.

    Failed and lost attempts count against ``max_attempts``; an attempt handed back by a
    draining pilot (``killed`` while the job is still running) does not, and is requeued at once.
    """
    if job_state is not JobState.RUNNING:
        # Cancelled meanwhile (or already final): the attempt's end changes nothing.
        return Decision(
            job_state, failures, 0.0, end.reason or "attempt ended after the job was final"
        )
    if end.outcome is AttemptState.SUCCEEDED:
        return Decision(JobState.SUCCEEDED, failures, 0.0, "attempt succeeded")
    if end.outcome is AttemptState.KILLED:
        return Decision(JobState.QUEUED, failures, now, end.reason or "handed back by its pilot")
    failures += 1
    if not end.retryable:
        return Decision(JobState.FAILED, failures, 0.0, end.reason or "not retryable")
    if failures >= max_attempts:
        return Decision(
            JobState.FAILED, failures, 0.0, f"{end.outcome} on attempt {failures} of {max_attempts}"
        )
    delay = policy.delay(failures)
    return Decision(
        JobState.QUEUED, failures, now + delay, f"attempt {end.outcome}, retry in {delay:g}s"
    )
