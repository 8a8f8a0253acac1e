"""Test functions and objectives for the HPO benchmarks (imported by pilots from this directory).

Each ``@pw.job`` objective takes the search-space parameters as keyword arguments, sleeps
for a while that depends only on those parameters (so a re-run sleeps as long, and parallel
workers finish out of order), and returns ``{"value": f, "start": t0, "end": t1}``: the
study reads ``value``; ``start``/``end`` (``time.time()`` around the body) come back as the
trial's metrics, so the benchmarks can measure busy time without the server's clocks.
The sleep range travels as pinned parameters (``low == high``) of the search space.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pilotwave as pw

# -- test functions ---------------------------------------------------------------------

HARTMANN6_MIN = -3.322368011415515
BRANIN_MIN = 0.39788735772973816

_H6_ALPHA = (1.0, 1.2, 3.0, 3.2)
_H6_A = (
    (10, 3, 17, 3.5, 1.7, 8),
    (0.05, 10, 17, 0.1, 8, 14),
    (3, 3.5, 1.7, 10, 17, 8),
    (17, 8, 0.05, 10, 0.1, 14),
)
_H6_P = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)


def hartmann6_value(x: tuple[float, ...]) -> float:
    """Hartmann 6-D on [0, 1]^6; global minimum -3.32237 at (0.2017, 0.1500, 0.4769, ...)."""
    total = 0.0
    for alpha, a, p in zip(_H6_ALPHA, _H6_A, _H6_P, strict=True):
        inner = sum(aj * (xj - pj) ** 2 for aj, xj, pj in zip(a, x, p, strict=True))
        total += alpha * math.exp(-inner)
    return -total


def branin_value(x1: float, x2: float) -> float:
    """Branin on [-5, 10] x [0, 15]; global minimum 0.397887 at (-pi, 12.275), (pi, 2.275), ...."""
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


@dataclass(frozen=True)
class Problem:
    """A test function with its search space (``dims``: name -> (low, high)) and known minimum."""

    name: str
    dims: dict[str, tuple[float, float]]
    minimum: float

    def value(self, params: Mapping[str, float]) -> float:
        x = tuple(params[k] for k in self.dims)
        return hartmann6_value(x) if self.name == "hartmann6" else branin_value(*x)

    def space(self) -> dict[str, dict[str, Any]]:
        return {k: {"type": "float", "low": lo, "high": hi} for k, (lo, hi) in self.dims.items()}


PROBLEMS = {
    "hartmann6": Problem("hartmann6", {f"x{i}": (0.0, 1.0) for i in range(6)}, HARTMANN6_MIN),
    "branin": Problem("branin", {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}, BRANIN_MIN),
}


def sleep_space(lo: float, hi: float) -> dict[str, dict[str, Any]]:
    """The pinned parameters that set an objective's sleep range (samplers ignore them)."""
    return {
        "sleep_lo": {"type": "float", "low": lo, "high": lo},
        "sleep_hi": {"type": "float", "low": hi, "high": hi},
    }


def pause_for(params: Mapping[str, Any], lo: float, hi: float) -> float:
    """A sleep in [lo, hi] drawn from an RNG keyed on the parameters (stable across processes)."""
    key = repr(sorted(params.items())).encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    return random.Random(seed).uniform(lo, hi)


def _timed(value: float, t0: float, pause_s: float) -> dict[str, float]:
    time.sleep(pause_s)
    return {"value": value, "start": t0, "end": time.time()}


# -- objectives run as trials on pilots ---------------------------------------------------


@pw.job
def hartmann6(
    x0: float,
    x1: float,
    x2: float,
    x3: float,
    x4: float,
    x5: float,
    sleep_lo: float = 0.0,
    sleep_hi: float = 0.0,
) -> dict[str, float]:
    """Hartmann6 after a parameter-keyed random sleep in [sleep_lo, sleep_hi]."""
    t0 = time.time()
    x = (x0, x1, x2, x3, x4, x5)
    pause = pause_for(dict(zip(PROBLEMS["hartmann6"].dims, x, strict=True)), sleep_lo, sleep_hi)
    return _timed(hartmann6_value(x), t0, pause)


@pw.job
def branin(x1: float, x2: float, sleep_lo: float = 0.0, sleep_hi: float = 0.0) -> dict[str, float]:
    """Branin after a parameter-keyed random sleep in [sleep_lo, sleep_hi]."""
    t0 = time.time()
    return _timed(branin_value(x1, x2), t0, pause_for({"x1": x1, "x2": x2}, sleep_lo, sleep_hi))


@pw.job
def fixed_sleep(x: float, y: float, pause_s: float = 0.5) -> dict[str, float]:
    """A quadratic bowl after sleeping exactly ``pause_s``: the overhead benchmark's trial."""
    t0 = time.time()
    return _timed((x - 0.3) ** 2 + (y - 0.7) ** 2, t0, pause_s)


# -- segmented Branin ---------------------------------------------------------------------


@dataclass(frozen=True)
class Shift:
    """Segment ``name``'s Branin: ``scale * branin(x1 - d1, x2 - d2) + offset``.

    With |d1|, |d2| <= 2 the minimiser (pi + d1, 2.275 + d2) stays inside [-5, 10] x [0, 15],
    so the segment's minimum is ``scale * BRANIN_MIN + offset``.
    """

    d1: float
    d2: float
    scale: float
    offset: float

    @classmethod
    def of(cls, name: str) -> Shift:
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
        rng = random.Random(seed)
        return cls(
            rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(0.5, 5), rng.uniform(-10, 10)
        )

    def value(self, x1: float, x2: float) -> float:
        return self.scale * branin_value(x1 - self.d1, x2 - self.d2) + self.offset

    @property
    def minimum(self) -> float:
        return self.scale * BRANIN_MIN + self.offset

    def regret(self, best: float) -> float:
        """Regret in Branin units (the scale divided out), comparable across segments."""
        return (best - self.minimum) / self.scale


def segment_names(n: int) -> list[str]:
    return [f"s{k:02d}" for k in range(n)]


@pw.job
def branin_segment(
    x1: float, x2: float, segment: str, sleep_lo: float = 0.0, sleep_hi: float = 0.0
) -> dict[str, float]:
    """Segment ``segment``'s shifted Branin after a parameter-keyed random sleep."""
    t0 = time.time()
    pause = pause_for({"x1": x1, "x2": x2, "segment": segment}, sleep_lo, sleep_hi)
    return _timed(Shift.of(segment).value(x1, x2), t0, pause)
