"""No-op job functions for the throughput benchmark (imported by pilots and Dask workers)."""

from __future__ import annotations

import pilotwave as pw


@pw.job
def noop(i: int) -> None:
    """A pilotwave job that does nothing."""
    return None


def noop_plain(i: int) -> None:
    """The same no-op as a plain function, for Dask."""
    return None
