"""CLs from toy distributions: p-values, their Monte-Carlo uncertainty, expected bands.

Conventions follow pyhf's toy calculator: a p-value is the fraction of toys whose test
statistic is at least the observed one; CLs+b from the signal+background toys, CLb from
the background-only toys, CLs = CLs+b / CLb.  The expected band is the set of CLs values
the background-only toys would have given, at the quantiles of a normal distribution's
(-2, -1, 0, 1, 2) sigma.  The quantiles are computed here (NumPy's ``method="linear"``):
pyhf 0.7.6 asks NumPy for them with an argument NumPy 2.4 removed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BAND_PERCENTILES = (2.27501319, 15.86552539, 50.0, 84.13447461, 97.72498681)
BAND_NAMES = ("-2", "-1", "0", "+1", "+2")


@dataclass(frozen=True)
class Point:
    """The merged toys at one POI value and what they give."""

    poi: float
    cls: float
    cls_err: float
    clsb: float
    clb: float
    cls_expected: tuple[float, ...]  # at BAND_NAMES
    cls_expected_err: tuple[float, ...]  # their Monte-Carlo uncertainties (bootstrap)
    toys: int  # pairs of toys (s+b and b-only) used
    failed_toys: int


def tail(sorted_samples: np.ndarray, values: np.ndarray | float) -> np.ndarray:
    """Fraction of samples >= each value (``sorted_samples`` ascending)."""
    n = len(sorted_samples)
    idx = np.searchsorted(sorted_samples, values, side="left")
    return (n - idx) / n


def cls_point(
    poi: float,
    sb: Sequence[float],
    b: Sequence[float],
    observed: float,
    failed_toys: int = 0,
) -> Point:
    """CLs and its uncertainty at one POI value, from the merged toys of every job."""
    sb_sorted = np.sort(np.asarray(sb, dtype=float))
    b_sorted = np.sort(np.asarray(b, dtype=float))
    if len(sb_sorted) == 0 or len(b_sorted) == 0:
        raise ValueError(f"no toys at poi={poi}")
    clsb = float(tail(sb_sorted, observed))
    clb = float(tail(b_sorted, observed))
    cls = clsb / clb if clb > 0 else 1.0
    # Binomial uncertainties of the two tail fractions, propagated to their ratio; a tail
    # with no toy in it counts as one toy's worth, so the uncertainty never vanishes.
    err_sb = math.sqrt(max(clsb * (1 - clsb), 1 / len(sb_sorted)) / len(sb_sorted))
    err_b = math.sqrt(max(clb * (1 - clb), 1 / len(b_sorted)) / len(b_sorted))
    cls_err = math.hypot(err_sb / clb, cls * err_b / clb) if clb > 0 else 1.0
    return Point(
        poi=poi,
        cls=min(cls, 1.0),
        cls_err=cls_err,
        clsb=clsb,
        clb=clb,
        cls_expected=expected_band(sb_sorted, b_sorted),
        cls_expected_err=expected_band_errors(sb_sorted, b_sorted),
        toys=min(len(sb_sorted), len(b_sorted)),
        failed_toys=failed_toys,
    )


def expected_band(sb_sorted: np.ndarray, b_sorted: np.ndarray) -> tuple[float, ...]:
    """CLs at the background-only toys' quantiles (-2..+2 sigma), as pyhf defines them."""
    clsb = tail(sb_sorted, b_sorted)
    clb = tail(b_sorted, b_sorted)
    cls = np.divide(clsb, clb, out=np.ones_like(clsb), where=clb > 0)
    return tuple(float(v) for v in np.percentile(cls, BAND_PERCENTILES, method="linear"))


def expected_band_errors(
    sb_sorted: np.ndarray, b_sorted: np.ndarray, resamples: int = 40
) -> tuple[float, ...]:
    """The band's Monte-Carlo uncertainties, from resampling the toys (bootstrap).

    A band value is a ratio of tail fractions taken at a quantile of the background-only
    toys: its spread is several times a binomial error's, most at -2 sigma.  The resampling
    is seeded, so the same toys give the same uncertainties.
    """
    rng = np.random.default_rng(0)
    bands = np.array(
        [
            expected_band(
                np.sort(rng.choice(sb_sorted, len(sb_sorted))),
                np.sort(rng.choice(b_sorted, len(b_sorted))),
            )
            for _ in range(resamples)
        ]
    )
    return tuple(float(v) for v in bands.std(axis=0, ddof=1))


def crossing(pois: Sequence[float], cls: Sequence[float], alpha: float) -> tuple[int, int] | None:
    """The first pair of neighbouring points where CLs falls from >= alpha to < alpha."""
    for i in range(len(pois) - 1):
        if cls[i] >= alpha > cls[i + 1]:
            return i, i + 1
    return None


def interpolate(p0: float, c0: float, p1: float, c1: float, alpha: float) -> tuple[float, float]:
    """Where CLs reaches alpha between two points: log-linear, and its distance to linear.

    CLs falls roughly exponentially with the POI, so the log-linear estimate is the limit;
    how far the linear one lies from it measures the interpolation's own uncertainty.
    """
    linear = p0 + (c0 - alpha) * (p1 - p0) / (c0 - c1)
    if c0 > 0 and c1 > 0:
        la, l0, l1 = math.log(alpha), math.log(c0), math.log(c1)
        loglin = p0 + (l0 - la) * (p1 - p0) / (l0 - l1)
    else:
        loglin = linear
    return loglin, abs(loglin - linear)
