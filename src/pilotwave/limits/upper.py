"""``upper_limit``: a toy-based CLs upper limit by a multi-step scan, its toys spread over pilots.

Step 1 evaluates a coarse grid of POI values with few toys.  Each next step works only
inside the brackets where CLs crosses ``alpha`` (observed, and each line of the expected
band): where the interpolation between a bracket's ends is the larger uncertainty it adds
points inside the bracket; where the toys' statistics are, it adds toys at the ends.  Points
outside every bracket get no more toys.  The scan stops when each limit's uncertainty is
below ``precision`` (relative to the limit; twice that for the band's ±1σ and ±2σ lines),
or at the toy budget.

Toys run in seeded jobs (``toys_per_job`` pairs each); a job that fails all its attempts
leaves its point with fewer toys, and the result says so.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

import pilotwave as pw
from pilotwave.limits import stats
from pilotwave.limits.toys import TEST_STATS, model_and_data, throw_toys

CURVES = ("observed", *(f"expected{n}" for n in stats.BAND_NAMES))


def plan_jobs(
    wanted: dict[Any, int], toys_per_job: int, budget: int, jobs_at: dict[Any, int]
) -> list[tuple[Any, int]]:
    """The toy jobs of a step: ``(point, k)`` for the k-th job at a point, within ``budget`` toys.

    Jobs are handed out round-robin over the points, so a budget that runs short trims
    every point a little rather than leaving some without toys.
    """
    left = {p: max(1, math.ceil(n / toys_per_job)) for p, n in sorted(wanted.items())}
    plan: list[tuple[Any, int]] = []
    while left and (len(plan) + 1) * toys_per_job <= budget:
        for p in list(left):
            if (len(plan) + 1) * toys_per_job > budget:
                break
            k = jobs_at.get(p, 0)
            jobs_at[p] = k + 1
            plan.append((p, k))
            left[p] -= 1
            if not left[p]:
                del left[p]
    return plan


def toy_seed(base: int, poi: float, k: int) -> int:
    """The seed of the ``k``-th toy job at ``poi``: derived, so any result can be reproduced."""
    digest = hashlib.sha256(f"{base}:{poi!r}:{k}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def check(
    workspace: dict[str, Any] | str,
    alpha: float = 0.05,
    poi_range: Sequence[float] | None = None,
    precision: float = 0.05,
    toys_per_job: int = 250,
    initial_toys: int = 500,
    max_toys: int = 100_000,
    initial_points: int = 6,
    max_steps: int = 6,
    test_stat: str = "qtilde",
    poi_name: str | None = None,
    seed: int | None = None,
) -> None:
    """Validate ``upper_limit``'s arguments; ``ValueError`` naming the bad one."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: {alpha} is not between 0 and 1")
    if not 0 < precision < 1:
        raise ValueError(f"precision: {precision} is not a fraction between 0 and 1")
    for name, value, least in (
        ("toys_per_job", toys_per_job, 10),
        ("initial_toys", initial_toys, 10),
        ("max_toys", max_toys, 10),
        ("initial_points", initial_points, 3),
        ("max_steps", max_steps, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name}: {value!r} is not an integer >= {least}")
    if test_stat not in TEST_STATS:
        raise ValueError(f"test_stat: {test_stat!r} is not one of {', '.join(TEST_STATS)}")
    if poi_range is not None:
        lo, hi = _range(poi_range)
        if not lo < hi:
            raise ValueError(f"poi_range: [{lo}, {hi}] is empty or inverted")
    if isinstance(workspace, dict):
        model_and_data(workspace, poi_name)  # a bad workspace fails here, not on a pilot


def _range(poi_range: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in poi_range)
    except (TypeError, ValueError):
        raise ValueError(f"poi_range: expected [low, high], got {poi_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("poi_range: bounds must be finite numbers")
    return lo, hi


@pw.workflow(name="upper-limit")
def upper_limit(
    workspace: dict[str, Any] | str,
    alpha: float = 0.05,
    poi_range: Sequence[float] | None = None,
    precision: float = 0.05,
    toys_per_job: int = 250,
    initial_toys: int = 500,
    max_toys: int = 100_000,
    initial_points: int = 6,
    max_steps: int = 6,
    test_stat: str = "qtilde",
    poi_name: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The toy-based CLs upper limit on the workspace's POI at confidence level ``1 - alpha``.

    Returns a JSON-able dict: ``observed`` (``limit``, ``uncertainty``, ``stat``, ``interp``),
    ``expected`` (``{"-2", "-1", "0", "+1", "+2"}`` -> the same), ``points`` (``poi``,
    ``cls``, ``cls_err``, ``cls_expected``, ``cls_expected_err``, ``toys``, ``step``, ``failed_toys``,
    ``failed_jobs``), ``steps`` (per step: points evaluated, toys thrown, the limits then),
    ``toys``, ``failed_toys``, ``failed_jobs``, ``converged``.
    """
    model, _ = model_and_data(workspace, poi_name)
    lo, hi = (
        _range(poi_range)
        if poi_range is not None
        else model.config.suggested_bounds()[model.config.poi_index]
    )
    # Fits need the POI's bounds to hold every tested value and 0 (the background-only fit).
    blo, bhi = model.config.suggested_bounds()[model.config.poi_index]
    fit_bounds = [min(lo, blo, 0.0), max(hi, bhi)] if poi_range is not None else None
    # A workspace given as a path is a file in the workflow's sandbox: the toy jobs read it there.
    toy_job = throw_toys.options(sandbox=os.environ.get("PILOTWAVE_SANDBOX") or None)
    base_seed = pw.seed() if seed is None else seed
    last_error = ""
    sb: dict[float, list[float]] = {}
    b: dict[float, list[float]] = {}
    observed_q: dict[float, float] = {}
    jobs_at: dict[float, int] = {}
    failed_toys: dict[float, int] = {}
    failed_jobs: dict[float, int] = {}
    first_step: dict[float, int] = {}
    steps: list[dict[str, Any]] = []
    grid = (
        np.linspace(lo, hi, initial_points + 1)[1:]
        if lo == 0
        else np.linspace(lo, hi, initial_points)
    )
    wanted = {round(float(p), 12): initial_toys for p in grid}
    total = 0
    limits: dict[str, dict[str, Any]] = {}
    converged = False
    for step in range(1, max_steps + 1):
        for poi in wanted:
            first_step.setdefault(poi, step)
        plan = plan_jobs(wanted, toys_per_job, max_toys - total, jobs_at)
        if not plan:
            break
        batch = toy_job.map(
            [workspace] * len(plan),
            [poi for poi, _ in plan],
            [toys_per_job] * len(plan),
            [toy_seed(base_seed, poi, k) for poi, k in plan],
            [test_stat] * len(plan),
            [poi_name] * len(plan),
            [fit_bounds] * len(plan),
        )
        poi_of = {fut.id: poi for fut, (poi, _) in zip(batch, plan, strict=True)}
        thrown = len(plan) * toys_per_job
        total += thrown
        for fut in pw.as_completed(batch):
            poi = poi_of[fut.id]
            try:
                out = fut.result()
            except (pw.JobFailed, pw.JobCancelled) as exc:
                failed_jobs[poi] = failed_jobs.get(poi, 0) + 1
                last_error = exc.reason
                continue
            sb.setdefault(poi, []).extend(out["sb"])
            b.setdefault(poi, []).extend(out["b"])
            observed_q[poi] = out["observed"]
            failed_toys[poi] = failed_toys.get(poi, 0) + out["failed"]
        points = [
            stats.cls_point(p, sb[p], b[p], observed_q[p], failed_toys.get(p, 0))
            for p in sorted(sb)
            if sb[p] and b[p]
        ]
        if not points:
            raise RuntimeError(f"every toy job failed; the last error: {last_error}")
        limits = {name: _limit(points, name, alpha) for name in CURVES}
        steps.append(
            {
                "step": step,
                "points": sorted(wanted),
                "toys": thrown,
                "limits": {k: v.get("limit") for k, v in limits.items()},
            }
        )
        pw.progress(_progress(step, total, limits, points))
        converged = all(_precise(v, _precision(k, precision)) for k, v in limits.items())
        if converged or total >= max_toys:
            break
        wanted = _refine(points, limits, precision, initial_toys * 2**step, lo, hi)
        if not wanted:
            break
    return {
        "alpha": alpha,
        "test_stat": test_stat,
        "poi_range": [lo, hi],
        "observed": limits["observed"],
        "expected": {n: limits[f"expected{n}"] for n in stats.BAND_NAMES},
        "points": [
            {
                "poi": p.poi,
                "cls": p.cls,
                "cls_err": p.cls_err,
                "clsb": p.clsb,
                "clb": p.clb,
                "cls_expected": list(p.cls_expected),
                "cls_expected_err": list(p.cls_expected_err),
                "toys": p.toys,
                "step": first_step[p.poi],
                "failed_toys": p.failed_toys,
                "failed_jobs": failed_jobs.get(p.poi, 0),
            }
            for p in points
        ],
        "steps": steps,
        "toys": total,
        "failed_toys": sum(failed_toys.values()),
        "failed_jobs": sum(failed_jobs.values()),
        "converged": converged,
    }


upper_limit.check(check)


def _curve(points: list[stats.Point], name: str) -> tuple[list[float], list[float], list[float]]:
    """POI values, CLs and its uncertainty along one curve (observed or an expected line)."""
    pois = [p.poi for p in points]
    if name == "observed":
        return pois, [p.cls for p in points], [p.cls_err for p in points]
    k = stats.BAND_NAMES.index(name.removeprefix("expected"))
    return pois, [p.cls_expected[k] for p in points], [p.cls_expected_err[k] for p in points]


def _limit(points: list[stats.Point], name: str, alpha: float) -> dict[str, Any]:
    pois, cls, errs = _curve(points, name)
    found = stats.crossing(pois, cls, alpha)
    if found is None:
        above = all(c >= alpha for c in cls)
        where = "above" if above else "below"
        return {
            "limit": None,
            "uncertainty": None,
            "bracket": None,
            "reason": f"CLs stays {where} alpha in the scanned range",
        }
    i, j = found
    limit, interp = stats.interpolate(pois[i], cls[i], pois[j], cls[j], alpha)
    slope = abs(cls[i] - cls[j]) / (pois[j] - pois[i])
    frac = (limit - pois[i]) / (pois[j] - pois[i])
    err_cls = math.hypot((1 - frac) * errs[i], frac * errs[j])
    stat = err_cls / slope if slope > 0 else pois[j] - pois[i]
    return {
        "limit": limit,
        "uncertainty": math.hypot(stat, interp),
        "stat": stat,
        "interp": interp,
        "bracket": [pois[i], pois[j]],
    }


OUTER_LINES = ("expected-2", "expected-1", "expected+1", "expected+2")


def _precision(curve: str, precision: float) -> float:
    """The precision a curve's limit must reach: the band's outer lines, twice ``precision``.

    The ±1σ and ±2σ lines draw the band; the observed limit and the median are the
    numbers quoted.  Holding the outer lines (the noisiest: their CLs values are ratios at
    the tails of the background-only toys) to the same precision would spend most of the
    toys on the band's edges.
    """
    return 2 * precision if curve in OUTER_LINES else precision


def _precise(limit: dict[str, Any], precision: float) -> bool:
    if limit["limit"] is None:
        return False
    return bool(limit["uncertainty"] <= precision * abs(limit["limit"]))


def _refine(
    points: list[stats.Point],
    limits: dict[str, dict[str, Any]],
    precision: float,
    toys: int,
    lo: float,
    hi: float,
) -> dict[float, int]:
    """The next step's work: POI values and how many more toys each gets."""
    by_poi = {p.poi: p for p in points}
    wanted: dict[float, int] = {}
    for curve, lim in limits.items():
        if lim["limit"] is None:
            if "above" in lim["reason"]:  # the limit lies beyond the last point
                last = max(by_poi)
                if last < hi:
                    wanted[round(min(hi, last + (last - min(by_poi))), 12)] = toys
            else:  # below the first point
                first = min(by_poi)
                wanted[round((lo + first) / 2 if lo < first else first / 2, 12)] = toys
            continue
        if _precise(lim, _precision(curve, precision)):
            continue
        p0, p1 = lim["bracket"]
        if lim["interp"] >= lim["stat"]:  # the bracket is too wide: look inside it
            for f in (1 / 3, 2 / 3):
                wanted[round(p0 + f * (p1 - p0), 12)] = toys
        else:  # the toys are too few: more at the bracket's ends
            for p in (p0, p1):
                more = max(toys - by_poi[p].toys, by_poi[p].toys)
                wanted[p] = max(wanted.get(p, 0), more)
    return wanted


def _progress(
    step: int, toys: int, limits: dict[str, dict[str, Any]], points: list[stats.Point]
) -> dict[str, Any]:
    return {
        "kind": "limits",
        "step": step,
        "toys": toys,
        "points": len(points),
        "limits": {
            k: {"limit": v["limit"], "uncertainty": v.get("uncertainty")} for k, v in limits.items()
        },
    }
