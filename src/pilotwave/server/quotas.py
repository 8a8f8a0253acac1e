"""What one user may take of a shared server: jobs in flight, how fast they submit, and how
many bytes of blobs (sandboxes, artifacts) they hold.

A user over a quota gets 429 with a message saying which quota and how to go on; an admin
has none.  The submission rate is a token bucket per user and per server process (several
servers each allow the rate); jobs in flight are counted in the database, so they hold
across servers.  Jobs that a running workflow submits count toward the jobs in flight of
its owner but are not refused: a quota never fails a workflow half-way.  Likewise the
artifacts a pilot uploads count toward the holdings of their job's owner but are never
refused (the job's results would be lost); that user's next upload is.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from pilotwave.errors import TooManyRequests
from pilotwave.protocol.limits import GiB, MiB


@dataclass(frozen=True)
class Quotas:
    jobs_in_flight: int = 200_000
    """Jobs of one user not yet finished (pending, queued, running) after a submission."""
    submit_rate: float = 2_000.0
    """Jobs a user may submit per second, sustained."""
    submit_burst: int = 20_000
    """Jobs a user may submit at once (at least one full batch)."""
    blob_bytes: int = 10 * GiB
    """Bytes of blobs one user may hold: sandboxes they uploaded, their jobs' artifacts."""

    def check_in_flight(self, in_flight: int, adding: int) -> None:
        if in_flight + adding > self.jobs_in_flight:
            raise TooManyRequests(
                f"you have {in_flight} jobs not finished; {adding} more would pass this "
                f"server's quota of {self.jobs_in_flight} jobs in flight: wait for some to "
                "finish (or cancel some) and submit again",
                field="jobs",
            )

    def check_blob_bytes(self, held: int, adding: int) -> None:
        if held + adding > self.blob_bytes:
            raise TooManyRequests(
                f"you hold {_size(held)} of sandboxes and job outputs on this server; this "
                f"upload of {_size(adding)} would pass its quota of {_size(self.blob_bytes)} "
                "per user: upload smaller sandboxes (leave data out of the source directory) "
                "or write smaller outputs; uploads that no job refers to are deleted after an "
                "hour, or ask the server's admin for a larger --quota-blob-gb"
            )


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


class SubmitRate:
    """A token bucket per user: ``take`` refuses with the seconds to wait."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[int, tuple[float, float]] = {}  # user -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, user_id: int, n: int, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(user_id, (float(self.burst), t))
            tokens = min(float(self.burst), tokens + (t - at) * self.rate)
            need = min(n, self.burst)  # a batch over the burst goes on a full bucket
            if need > tokens:
                wait = (need - tokens) / self.rate
                self._buckets[user_id] = (tokens, t)
                raise TooManyRequests(
                    f"submitting {n} jobs now would pass this server's rate of "
                    f"{self.rate:g} jobs/s (bursts of {self.burst}): retry in {wait:.1f} s",
                    field="jobs",
                    retry_after=wait,
                )
            self._buckets[user_id] = (tokens - n, t)  # below zero: the next waits longer
