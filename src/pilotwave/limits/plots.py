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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
OUTLINE = "red"  # excluded points' edge and alpha on the colour bar


def exclusion_map(result: Mapping[str, Any], path: Path) -> Path:
    """Write the 2-D map of a ``scan`` result to ``path`` (PNG); return ``path``.

    Each evaluated point is coloured by its observed CLs (log scale), shaped by the step
    that added it and outlined when excluded; the observed boundary is a solid line, the
    expected one dashed.
    """
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax = fig.subplots()
    xname, yname = [*(result.get("axes") or []), "x", "y"][:2]
    alpha = float(result.get("alpha", 0.05))
    points = list(result.get("points") or [])
    xy = np.array([[p["params"][xname], p["params"][yname]] for p in points], dtype=float).reshape(
        -1, 2
    )
    logs = tuple(_looks_log(xy, points, i) for i in (0, 1))
    if points:
        _draw_points(fig, ax, points, xy, alpha)
    else:
        ax.text(0.5, 0.5, "no points evaluated", transform=ax.transAxes, ha="center")
    _draw_boundaries(ax, result.get("boundary") or {}, logs, bool(points))
    if logs[0]:
        ax.set_xscale("log")
    if logs[1]:
        ax.set_yscale("log")
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title(_map_title(result, points, alpha), fontsize="medium")
    ax.margins(0.06)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # below the map, so that no point is hidden
        ncols = min(len(handles), 4)
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=ncols,
            fontsize="small",
            handlelength=3,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _draw_points(
    fig: Figure, ax: Axes, points: Sequence[Mapping[str, Any]], xy: np.ndarray, alpha: float
) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    cls = np.array([p["cls"] for p in points], dtype=float)
    positive = cls[cls > 0]
    lowest = min([alpha, *positive.tolist()])
    norm = LogNorm(vmin=max(lowest / 3, LOWEST_FLOOR), vmax=1.0)
    shown = np.clip(cls, norm.vmin, 1.0)  # CLs = 0 (no s+b toy as extreme) at the bottom
    excluded = np.array([bool(p.get("excluded")) for p in points])
    steps = np.array([int(p.get("step") or 1) for p in points])
    for step in sorted(set(steps.tolist())):
        mine = steps == step
        marker = MARKERS[(step - 1) % len(MARKERS)]
        ax.scatter(
            xy[mine, 0],
            xy[mine, 1],
            c=shown[mine],
            cmap="viridis",
            norm=norm,
            marker=marker,
            s=80,
            edgecolors=[OUTLINE if e else "grey" for e in excluded[mine]],
            linewidths=[2.0 if e else 0.5 for e in excluded[mine]],
            zorder=3,
        )
        # The legend shows the shape only: the colour is the colour bar's.
        ax.scatter([], [], marker=marker, s=60, color="grey", label=f"step {step}")
    if excluded.any():
        label = f"excluded (CLs < {alpha:g})"
        ax.scatter(
            [], [], marker="o", s=80, facecolor="none", edgecolors=OUTLINE, lw=2, label=label
        )
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax)
    bar.set_label("observed CLs")
    bar.ax.axhline(alpha, color=OUTLINE, lw=1.5)


def _draw_boundaries(
    ax: Axes, boundary: Mapping[str, Any], logs: tuple[bool, ...], any_points: bool
) -> None:
    for key, style in (("observed", "-"), ("expected", "--")):
        line = _ordered(boundary.get(key) or [], logs)
        if len(line):
            label = f"{key} boundary"
            ax.plot(
                line[:, 0], line[:, 1], style, color="k", lw=2, marker=".", zorder=4, label=label
            )
    if any_points and not any(boundary.get(k) for k in ("observed", "expected")):
        ax.plot([], [], " ", label="no boundary: CLs does not cross alpha")


def _ordered(points: Sequence[Sequence[float]], logs: tuple[bool, ...]) -> np.ndarray:
    """Boundary points in the order the line runs: along their main direction.

    The coordinates are scaled (on log axes, their logarithms) so that neither axis's units
    decide the direction; ties along it go by the other coordinate.
    """
    xy = np.array(points, dtype=float).reshape(-1, 2)
    if len(xy) < 2:
        return xy
    scaled = np.column_stack([np.log(c) if log else c for c, log in zip(xy.T, logs, strict=True)])
    span = scaled.max(axis=0) - scaled.min(axis=0)
    scaled = (scaled - scaled.mean(axis=0)) / np.where(span > 0, span, 1.0)
    direction = np.linalg.svd(scaled, full_matrices=False)[2][0]
    if direction[0] < 0 or (direction[0] == 0 and direction[1] < 0):
        direction = -direction
    along, across = scaled @ direction, scaled @ np.array([-direction[1], direction[0]])
    return xy[np.lexsort((across.round(9), along.round(9)))]


def _looks_log(xy: np.ndarray, points: Sequence[Mapping[str, Any]], axis: int) -> bool:
    """Whether the coarse grid along ``axis`` was spaced geometrically (``log: true``)."""
    first = [v for v, p in zip(xy[:, axis], points, strict=True) if p.get("step", 1) == 1]
    coarse = np.unique(first)
    if len(coarse) < 3 or coarse[0] <= 0:
        return False
    steps, ratios = np.diff(coarse), coarse[1:] / coarse[:-1]
    even_ratios = np.ptp(ratios) <= 1e-6 * ratios.mean()
    even_steps = np.ptp(steps) <= 1e-6 * steps.mean()
    return bool(even_ratios and not even_steps)


def _map_title(result: Mapping[str, Any], points: Sequence[Mapping[str, Any]], alpha: float) -> str:
    excluded = sum(bool(p.get("excluded")) for p in points)
    poi = result.get("poi", 1.0)
    return (
        f"Excluded at {100 * (1 - alpha):g}% CL (CLs at POI = {poi:g}): "
        f"{excluded} of {len(points)} points, {result.get('toys', 0)} toys"
    )
