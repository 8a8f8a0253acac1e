"""PNG plots of an active-learning result: the surrogate's map, and the search's history.

* 1-D space: ``estimate.png``, each value's mean ± std against the parameter, the level (for
  a contour) and the evaluated points.
* 2-D space, contour goal: ``contour.png``, the estimated contours at the level (the first
  value solid, the next dashed, ...) over a filled map of the first value's mean.
* 2-D space, maximize/minimize: ``surface.png``, the surrogate mean with the best point.
* Always: ``history.png``, per round the excluded fraction (contour) or the best value, and
  how much the estimate changed.  For more than two dimensions it is the only plot.

The points on a map are coloured by the round that chose them; failed ones are red crosses.
Figures are built with matplotlib's object API and saved through the Agg canvas, so no
display is needed and nothing global (the pyplot figure registry, the backend) is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

LINESTYLES = ("-", "--", ":", "-.")
ROUND_CMAP = "plasma"
MAP_CMAP = "viridis"
LOG_RANGE = 1e-6  # a log colour scale spans at most this factor below its top


def write_plots(result: Mapping[str, Any], where: Path) -> list[Path]:
    """Write the map (1-D or 2-D spaces) and ``history.png`` into ``where``; return the paths."""
    where.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    names = list(result["space"])
    estimate = result.get("estimate")
    if estimate is not None and len(names) == 1:
        written.append(_save(_curve(result, estimate), where / "estimate.png"))
    elif estimate is not None and len(names) == 2:
        if result["goal"] == "contour":
            written.append(_save(_contour_map(result, estimate), where / "contour.png"))
        else:
            written.append(_save(_surface_map(result, estimate), where / "surface.png"))
    written.append(_save(_history(result), where / "history.png"))
    return written


# -- 1-D ------------------------------------------------------------------------------------


def _curve(result: Mapping[str, Any], estimate: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    (name,) = result["space"]
    x = np.array(estimate["axes"][name], dtype=float)
    log_y = result.get("transform") == "log"
    for k, (value, entry) in enumerate(estimate["values"].items()):
        mean = np.array(entry["mean"], dtype=float)
        std = np.array(entry["std"], dtype=float)
        if log_y:  # std is on the log scale: the band is a factor either way
            low, high = mean * np.exp(-std), mean * np.exp(std)
        else:
            low, high = mean - std, mean + std
        color = f"C{k}"
        ax.plot(x, mean, LINESTYLES[k % len(LINESTYLES)], color=color, label=f"{value} mean")
        ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0, label=f"{value} ± 1σ")
        points = _done(result)
        if points:
            ax.scatter(
                [p["params"][name] for p in points],
                [p["values"][value] for p in points],
                color=color,
                edgecolors="k",
                zorder=3,
                label=f"{value} evaluated",
            )
    if result.get("level") is not None:
        ax.axhline(result["level"], color="red", lw=1, label=f"level {result['level']:g}")
    failed = [p["params"][name] for p in result["points"] if p["state"] == "failed"]
    if failed:  # no value to place them at: on the bottom edge
        _on_bottom(ax, failed, label=f"failed ({len(failed)})")
    if result["space"][name].get("log"):
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel(", ".join(estimate["values"]))
    ax.set_title(_title(result), fontsize="medium")
    ax.legend(loc="best", fontsize="small")
    return fig


# -- 2-D ------------------------------------------------------------------------------------


def _contour_map(result: Mapping[str, Any], estimate: Mapping[str, Any]) -> Figure:
    fig, ax = _filled_map(result, estimate)
    xname, yname = result["space"]
    x, y = (np.array(estimate["axes"][n], dtype=float) for n in (xname, yname))
    level = float(result["level"])
    log = result.get("transform") == "log"
    for k, (value, entry) in enumerate(estimate["values"].items()):
        z = np.array(entry["mean"], dtype=float).T  # rows along y for matplotlib
        at = level
        if log:  # contour the learned (log) scale, where the surrogate is smooth
            z, at = np.log(np.clip(z, np.finfo(float).tiny, None)), np.log(level)
        style = LINESTYLES[k % len(LINESTYLES)]
        crosses = bool(np.nanmin(z) < at < np.nanmax(z))
        if crosses:
            ax.contour(x, y, z, levels=[at], colors="k", linestyles=style, linewidths=2)
        label = f"{value} = {level:g}" if crosses else f"{value}: does not cross {level:g}"
        ax.plot([], [], style, color="k", lw=2, label=label)
    _draw_points(fig, ax, result)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(_title(result), fontsize="medium")
    return fig


def _surface_map(result: Mapping[str, Any], estimate: Mapping[str, Any]) -> Figure:
    fig, ax = _filled_map(result, estimate)
    xname, yname = result["space"]
    _draw_points(fig, ax, result)
    best = result.get("best")
    if best:
        ax.scatter(
            [best["params"][xname]],
            [best["params"][yname]],
            marker="*",
            s=400,
            color="gold",
            edgecolors="k",
            zorder=5,
            label=f"best: {best['value']:.4g}",
        )
        ax.legend(loc="best", fontsize="small")
    ax.set_title(_title(result), fontsize="medium")
    return fig


def _filled_map(result: Mapping[str, Any], estimate: Mapping[str, Any]) -> tuple[Figure, Axes]:
    """A figure with the first value's mean as a filled contour map, log axes where log."""
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator

    fig = Figure(figsize=(8.5, 6), layout="constrained")
    ax = fig.subplots()
    xname, yname = result["space"]
    x, y = (np.array(estimate["axes"][n], dtype=float) for n in (xname, yname))
    z = np.array(estimate["mean"], dtype=float).T
    norm: Normalize
    if result.get("transform") == "log":
        top = float(np.nanmax(z)) if np.isfinite(z).any() and np.nanmax(z) > 0 else 1.0
        positive = z[z > 0]
        bottom = max(float(positive.min()) if positive.size else top, top * LOG_RANGE)
        if bottom >= top:
            bottom, top = top / 10, top * 10
        z = np.clip(z, bottom, top)
        norm = LogNorm(bottom, top)
        levels = np.geomspace(bottom, top, 21)
    else:
        low, high = float(np.nanmin(z)), float(np.nanmax(z))
        if not high > low:
            low, high = low - 0.5, high + 0.5
        norm = Normalize(low, high)
        levels = np.linspace(low, high, 21)
    filled = ax.contourf(x, y, z, levels=levels, norm=norm, cmap=MAP_CMAP)
    bar = fig.colorbar(filled, ax=ax)
    if isinstance(norm, LogNorm):  # ticks at decades, not at the (many) filled levels
        bar.locator, bar.formatter = LogLocator(), LogFormatterSciNotation()
        bar.update_ticks()
    bar.set_label(f"{estimate['value']} (surrogate mean)")
    if result.get("level") is not None:
        bar.ax.axhline(result["level"], color="red", lw=1.5)
    for name, setter in ((xname, ax.set_xscale), (yname, ax.set_yscale)):
        if result["space"][name].get("log"):
            setter("log")
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    return fig, ax


def _draw_points(fig: Figure, ax: Axes, result: Mapping[str, Any]) -> None:
    """The evaluated points coloured by round (a colour bar), failed ones as red crosses."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm

    xname, yname = result["space"]
    points = result["points"]
    last = max((int(p["round"]) for p in points), default=0)
    cmap = _round_cmap(last + 1)
    norm = BoundaryNorm(np.arange(-0.5, last + 1.5), cmap.N)
    done = _done(result)
    if done:
        ax.scatter(
            [p["params"][xname] for p in done],
            [p["params"][yname] for p in done],
            c=[p["round"] for p in done],
            cmap=cmap,
            norm=norm,
            s=45,
            edgecolors="k",
            linewidths=0.6,
            zorder=4,
            clip_on=False,  # points on the box's edge stay whole
        )
    failed = [p for p in points if p["state"] == "failed"]
    if failed:
        ax.scatter(
            [p["params"][xname] for p in failed],
            [p["params"][yname] for p in failed],
            marker="x",
            s=70,
            color="red",
            linewidths=2,
            zorder=4,
            clip_on=False,
            label=f"failed ({len(failed)})",
        )
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    bar.set_label("round")
    bar.set_ticks(_round_ticks(last))


def _round_cmap(n: int) -> Any:
    """``n`` discrete colours of the round colour map."""
    from matplotlib import colormaps

    return colormaps[ROUND_CMAP].resampled(max(n, 1))


def _round_ticks(last: int) -> list[int]:
    step = max(1, (last + 1) // 10)
    return list(range(0, last + 1, step))


# -- history --------------------------------------------------------------------------------


def _history(result: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    rounds = list(result.get("rounds") or [])
    if result["goal"] == "contour":
        _draw_excluded(top, rounds, result["values"])
    else:
        _draw_best(top, rounds, result)
    changes = [(r["evaluations"], r["change"]) for r in rounds if r.get("change") is not None]
    if changes:
        evals, change = zip(*changes, strict=True)
        bottom.plot(evals, change, "o-", color="C3")
        if all(c > 0 for c in change):
            bottom.set_yscale("log")
    else:
        bottom.text(0.5, 0.5, "no change yet", transform=bottom.transAxes, ha="center")
    what = "cells that changed side" if result["goal"] == "contour" else "relative change"
    bottom.set_ylabel(f"change ({what})", fontsize="small")
    bottom.set_xlabel("evaluations")
    if not rounds:
        top.text(0.5, 0.5, "no round finished", transform=top.transAxes, ha="center")
    top.set_title(_title(result), fontsize="medium")
    return fig


def _draw_excluded(ax: Axes, rounds: Sequence[Mapping[str, Any]], values: Sequence[str]) -> None:
    shown = [r for r in rounds if r.get("below") is not None]
    for k, value in enumerate(values):
        if shown:
            ax.plot(
                [r["evaluations"] for r in shown],
                [r["below"][k] for r in shown],
                LINESTYLES[k % len(LINESTYLES)],
                marker="o",
                color=f"C{k}",
                label=value,
            )
    ax.set_ylabel("fraction of the box below the level")
    ax.set_ylim(-0.02, 1.02)
    if shown:
        ax.legend(loc="best", fontsize="small")


def _draw_best(ax: Axes, rounds: Sequence[Mapping[str, Any]], result: Mapping[str, Any]) -> None:
    value = result["values"][0]
    measured = [(p["index"] + 1, p["values"][value]) for p in _done(result)]
    if measured:
        ax.plot(*zip(*measured, strict=True), "o", color="C0", alpha=0.5, label="evaluated")
    shown = [r for r in rounds if r.get("best") is not None]
    if shown:
        ax.step(
            [r["evaluations"] for r in shown],
            [r["best"] for r in shown],
            where="post",
            color="C1",
            lw=2,
            label="best (surrogate mean)",
        )
    failed = [p["index"] + 1 for p in result["points"] if p["state"] == "failed"]
    if failed:  # no value to place them at: on the bottom edge
        _on_bottom(ax, failed, label=f"failed ({len(failed)})")
    if result.get("transform") == "log":
        ax.set_yscale("log")
    ax.set_ylabel(f"{value} ({result['goal']})")
    if measured or shown or failed:
        ax.legend(loc="best", fontsize="small")


# -- shared ---------------------------------------------------------------------------------


def _done(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [p for p in result["points"] if p["state"] == "done" and p.get("values")]


def _on_bottom(ax: Axes, xs: Sequence[float], label: str) -> None:
    """Red crosses on the bottom edge of the plot, at ``xs``: points that have no value."""
    ax.plot(
        xs,
        [0] * len(xs),
        "x",
        color="red",
        ms=9,
        mew=2,
        transform=ax.get_xaxis_transform(),
        clip_on=False,
        label=label,
    )


def _title(result: Mapping[str, Any]) -> str:
    goal = result["goal"]
    what = (
        f"contour at {result['level']:g}" if goal == "contour" else f"{goal} {result['values'][0]}"
    )
    failed = f", {result['failed']} failed" if result.get("failed") else ""
    return (
        f"active search: {what} — {result.get('evaluations', len(result['points']))} "
        f"evaluations{failed}, stopped: {result.get('stopped', '?')}"
    )


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
