"""Who must be woken after a transaction commits.

State changes record the topics they affect; the server publishes them once the
transaction has committed, so a woken reader always sees the new state.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class Wakeups:
    now: set[str] = field(default_factory=set)
    later: list[tuple[float, str]] = field(default_factory=list)  # (unix time, topic)

    def add(self, *topics: str) -> None:
        self.now.update(topics)

    def at(self, when: float, topic: str) -> None:
        self.later.append((when, topic))
