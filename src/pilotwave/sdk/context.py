"""What a running job knows about itself: its id, attempt, outputs directory and reporting channel.

Set by the pilot's worker before it calls the job function; outside a job, ``outputs()``
is a local ``pw_outputs/`` directory so the same code runs in a plain Python session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobContext:
    job_id: int
    attempt: int
    outputs: Path
    server: str | None = None  # where pw.report() sends intermediate values
    token: str | None = None  # this attempt's token: it may only report for itself
    decisions: bool = False  # pw.report() waits for the workflow driver's answer


_current: JobContext | None = None


def set_current(ctx: JobContext | None) -> None:
    global _current
    _current = ctx


def current() -> JobContext | None:
    """The running job's context, or ``None`` outside a job."""
    if _current is None and "PILOTWAVE_JOB_ID" in os.environ:  # a shell job calling Python
        return JobContext(
            int(os.environ["PILOTWAVE_JOB_ID"]),
            int(os.environ.get("PILOTWAVE_ATTEMPT", "1")),
            Path(os.environ.get("PILOTWAVE_OUTPUTS", "pw_outputs")),
            os.environ.get("PILOTWAVE_SERVER"),
            os.environ.get("PILOTWAVE_JOB_TOKEN"),
            os.environ.get("PILOTWAVE_DECISIONS") == "1",
        )
    return _current


def outputs() -> Path:
    """Directory for files the job produces; the pilot uploads them as artifacts when the job ends.

    >>> (pw.outputs() / "model.pt").write_bytes(blob)
    """
    ctx = current()
    path = ctx.outputs if ctx else Path("pw_outputs")
    path.mkdir(parents=True, exist_ok=True)
    return path
