"""What a transaction did that others must react to.

State changes record the topics they affect; the server publishes them once the
transaction has committed, so a woken reader always sees the new state.  They also record
facts the workflow engine reacts to within the same transaction (``engine.settle``): jobs
that became final, and pilots on which a driver slot came free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pilotwave.protocol import JobState


@dataclass(frozen=True)
class Final:
    """A job that just reached a final state."""

    id: int
    state: JobState
    error: str | None = None
    kind: str = ""
    workflow_id: int | None = None
    has_dependents: bool = True  # when unsure, look


def queue_topic(queue: str) -> str:
    """Idle pilots serving ``queue``: a job became claimable."""
    return f"queue:{queue}"


def pilot_topic(pilot_id: str) -> str:
    """A pilot's pending claim: some of its resources were freed."""
    return f"pilot:{pilot_id}"


def command_topic(pilot_id: str) -> str:
    """A pilot's heartbeat: there is a command for it (kill, drain)."""
    return f"cmd:{pilot_id}"


def job_topic(job_id: int) -> str:
    """Clients waiting on a job: it reached a final state."""
    return f"job:{job_id}"


def log_topic(job_id: int) -> str:
    """Clients following a job's log: new output arrived."""
    return f"log:{job_id}"


def report_topic(job_id: int) -> str:
    """A driver watching a job: it reported an intermediate value."""
    return f"rep:{job_id}"


def decision_topic(report_id: int) -> str:
    """A job waiting for the answer to one of its reports: the driver decided."""
    return f"dec:{report_id}"


def driver_topic(job_id: int) -> str:
    """A parked driver's process: it may go on (or was cancelled, or moved elsewhere)."""
    return f"drv:{job_id}"


def deadline_topic() -> str:
    """The server's timer for parked drivers waiting with a timeout."""
    return "deadline"


def topic_job(topic: str) -> int | None:
    """The job id of a ``job_topic``, or ``None`` for another topic."""
    kind, _, rest = topic.partition(":")
    return int(rest) if kind == "job" else None


def is_report_topic(topic: str) -> bool:
    return topic.startswith("rep:")


@dataclass
class Wakeups:
    now: set[str] = field(default_factory=set)
    later: list[tuple[float, str]] = field(default_factory=list)  # (unix time, topic)
    finals: list[Final] = field(default_factory=list)
    """Jobs that became final in this transaction, in order."""
    freed: set[str] = field(default_factory=set)
    """Pilots on which a driver slot came free."""
    cooled: set[int] = field(default_factory=set)
    """Parked drivers whose process went away (they resume by replay)."""
    reported: set[int] = field(default_factory=set)
    """Jobs that reported an intermediate value."""

    def add(self, *topics: str) -> None:
        self.now.update(topics)

    def at(self, when: float, topic: str) -> None:
        self.later.append((when, topic))
