"""Small helpers the benchmark scripts share: percentiles, number formatting, option lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100); NaN for an empty sequence."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def fmt(x: float | None, spec: str) -> str:
    """``x`` formatted with ``spec``, or "-" when there is no value."""
    return "-" if x is None else format(x, spec)


def csv(kind: Callable[[str], Any], text: str) -> list[Any]:
    """A comma-separated option (``--seeds 1,2,3``) as a list of ``kind``."""
    return [kind(x.strip()) for x in text.split(",") if x.strip()]
