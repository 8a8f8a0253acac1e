"""The Brazil plot of an ``upper_limit`` result: observed and expected CLs against the POI.

Built with matplotlib's object API and saved through the Agg canvas, so no display is
needed and nothing global (the pyplot figure registry, the backend) is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# CLs from toys is never below one toy's worth; a floor keeps zeros on a log axis.
LOWEST_FLOOR = 1e-6


def brazil(result: Mapping[str, Any], path: Path) -> Path:
    """Write the Brazil plot of an ``upper_limit`` result to ``path`` (PNG); return ``path``."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    points = sorted(result.get("points") or [], key=lambda p: p["poi"])
    alpha = float(result.get("alpha", 0.05))
    if points:
        floor = _floor(points, alpha)
        _draw_band(ax, points, floor)
        _draw_observed(ax, points, floor)
        ax.set_yscale("log")
        ax.set_ylim(floor, 1.5)
    else:
        ax.text(0.5, 0.5, "no points evaluated", transform=ax.transAxes, ha="center")
    ax.axhline(alpha, color="red", lw=1, label=f"alpha = {alpha:g}")
    _draw_limit(ax, result.get("observed") or {})
    if result.get("poi_range"):
        lo, hi = result["poi_range"]
        ax.set_xlim(lo, hi + 0.02 * (hi - lo))
    ax.set_xlabel("POI")
    ax.set_ylabel("CLs")
    ax.set_title(_title(result, alpha), fontsize="medium")
    ax.legend(loc="best", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _floor(points: Sequence[Mapping[str, Any]], alpha: float) -> float:
    """The bottom of the log axis: below alpha and below the smallest non-zero CLs shown."""
    values = [p["cls"] for p in points] + [v for p in points for v in p["cls_expected"]]
    positive = [v for v in values if v > 0]
    lowest = min([alpha, *positive])
    return max(lowest / 3, LOWEST_FLOOR)


def _draw_band(ax: Axes, points: Sequence[Mapping[str, Any]], floor: float) -> None:
    pois = [p["poi"] for p in points]
    # cls_expected is at -2, -1, 0, +1, +2 sigma.
    exp = np.clip(np.array([p["cls_expected"] for p in points], dtype=float), floor, None)
    if len(points) == 1:  # a band needs a width: a short one around the only point
        width = 0.05 * max(abs(pois[0]), 1.0)
        pois = [pois[0] - width, pois[0] + width]
        exp = np.repeat(exp, 2, axis=0)
    ax.fill_between(pois, exp[:, 0], exp[:, 4], color="yellow", lw=0, label="expected ±2σ")
    ax.fill_between(pois, exp[:, 1], exp[:, 3], color="limegreen", lw=0, label="expected ±1σ")
    ax.plot(pois, exp[:, 2], "k--", lw=1, label="expected median")


def _draw_observed(ax: Axes, points: Sequence[Mapping[str, Any]], floor: float) -> None:
    pois = np.array([p["poi"] for p in points], dtype=float)
    cls = np.array([p["cls"] for p in points], dtype=float)
    err = np.array([p["cls_err"] for p in points], dtype=float)
    shown = np.clip(cls, floor, None)
    lower = shown - np.clip(cls - err, floor, None)
    upper = np.clip(cls + err, floor, None) - shown
    ax.errorbar(pois, shown, yerr=[lower, upper], color="black", lw=1, capsize=2, zorder=3)
    steps = np.array([int(p.get("step") or 1) for p in points])
    for step in sorted(set(steps.tolist())):
        mine = steps == step
        ax.scatter(pois[mine], shown[mine], color=f"C{step - 1}", zorder=4, label=f"step {step}")
    if (cls < floor).any():  # no s+b toy as extreme as the data: drawn on the bottom edge
        zero = cls < floor
        ax.scatter(pois[zero], shown[zero], marker="v", s=60, facecolor="none", edgecolor="black")
        ax.scatter([], [], marker="v", facecolor="none", edgecolor="black", label="CLs = 0")


def _draw_limit(ax: Axes, observed: Mapping[str, Any]) -> None:
    limit, unc = observed.get("limit"), observed.get("uncertainty")
    if limit is None:
        return
    ax.axvline(limit, color="C4", lw=1.5, zorder=2, label=f"observed limit {limit:.4g}")
    if unc:
        ax.axvspan(limit - unc, limit + unc, color="C4", alpha=0.25, lw=0, zorder=2)


def _title(result: Mapping[str, Any], alpha: float) -> str:
    expected = (result.get("expected") or {}).get("0") or {}
    return (
        f"CLs upper limit at {100 * (1 - alpha):g}% CL: "
        f"observed {_shown(result.get('observed') or {})}, expected {_shown(expected)}"
    )


def _shown(limit: Mapping[str, Any]) -> str:
    value, unc = limit.get("limit"), limit.get("uncertainty")
    if value is None:
        return "not found"
    return f"{value:.3g} ± {unc:.2g}" if unc is not None else f"{value:.3g}"
