"""PNG plots of an HPO result: optimisation history, parameter importance, best per segment.

Figures are built with matplotlib's object API and saved through the Agg canvas, so no
display is needed and nothing global (the pyplot figure registry, the backend) is touched.
"""

from __future__ import annotations

import itertools
import logging
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from pilotwave.hpo.export import rebuild, studies

log = logging.getLogger("pilotwave.hpo")

MIN_TRIALS_FOR_IMPORTANCE = 3


def write_plots(result: Mapping[str, Any], directory: Path) -> list[Path]:
    """Write ``history[-seg].png``, ``importance[-seg].png`` and, when segmented,
    ``segments.png`` into ``directory``; return the paths written.

    An importance plot is skipped when fewer than three trials completed or no parameter
    varies among them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    by_segment = studies(result)
    suffixes = _file_suffixes(by_segment)
    written: list[Path] = []
    for segment, study in by_segment.items():
        suffix = suffixes[segment]
        written.append(_save(_history(study, result, segment), directory / f"history{suffix}.png"))
        importance = _importance(study, result, segment)
        if importance is not None:
            written.append(_save(importance, directory / f"importance{suffix}.png"))
    if result.get("segments") is not None:
        written.append(_save(_segments(result, by_segment), directory / "segments.png"))
    return written


def _history(study: Mapping[str, Any], result: Mapping[str, Any], segment: str) -> Figure:
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    if not study["trials"]:
        ax.text(0.5, 0.5, "no trials yet", transform=ax.transAxes, ha="center", va="center")
    directions, objectives = result["directions"], result["objectives"]
    if len(directions) == 1:
        _draw_history(ax, study["trials"], directions[0], objectives[0])
        ax.set_title(_title("optimisation history", segment))
    else:
        _draw_pareto(ax, study, directions, objectives)
        shown = "" if len(directions) == 2 else f" (first two of {len(directions)} objectives)"
        ax.set_title(_title(f"trials and Pareto front{shown}", segment))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    return fig


def _draw_history(
    ax: Axes, trials: Sequence[Mapping[str, Any]], direction: str, objective: str
) -> None:
    complete = sorted(
        (t["number"], t["value"])
        for t in trials
        if t["state"] == "complete" and t.get("value") is not None
    )
    if complete:
        numbers, values = zip(*complete, strict=True)
        ax.plot(numbers, values, "o", color="C0", label=f"complete ({len(complete)})")
        better = min if direction == "minimize" else max
        best = list(itertools.accumulate(values, better))
        ax.step(numbers, best, where="post", color="C1", label="best so far")
    pruned = [t for t in trials if t["state"] == "pruned"]
    if pruned:
        style: dict[str, Any] = {"marker": "o", "mfc": "none", "mec": "grey", "ls": "none"}
        shown = [(t["number"], _last_intermediate(t)) for t in pruned]
        with_value = [(n, v) for n, v in shown if v is not None]
        label = f"pruned ({len(pruned)})"
        if with_value:
            ax.plot(*zip(*with_value, strict=True), **style, label=label)
            label = "_" + label  # one legend entry: matplotlib skips labels starting with _
        _on_axis(ax, [n for n, v in shown if v is None], **style, label=label)
    failed = [t["number"] for t in trials if t["state"] == "failed"]
    _on_axis(ax, failed, marker="x", color="red", ls="none", label=f"failed ({len(failed)})")
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"{objective} ({direction})")


def _draw_pareto(
    ax: Axes, study: Mapping[str, Any], directions: Sequence[str], objectives: Sequence[str]
) -> None:
    front_numbers = {best["trial"] for best in study.get("pareto") or []}
    complete = [t for t in study["trials"] if t["state"] == "complete" and t.get("values")]
    others = [t["values"][:2] for t in complete if t["number"] not in front_numbers]
    front = sorted(t["values"][:2] for t in complete if t["number"] in front_numbers)
    if others:
        ax.scatter(
            *zip(*others, strict=True), color="C0", alpha=0.6, label=f"trials ({len(others)})"
        )
    if front:
        ax.plot(*zip(*front, strict=True), "o--", color="C3", label=f"Pareto front ({len(front)})")
    not_shown = len(study["trials"]) - len(complete)
    if not_shown:
        ax.plot([], [], " ", label=f"pruned or failed: {not_shown}")
    ax.set_xlabel(f"{objectives[0]} ({directions[0]})")
    ax.set_ylabel(f"{objectives[1]} ({directions[1]})")


def _importance(study: Mapping[str, Any], result: Mapping[str, Any], segment: str) -> Figure | None:
    complete = [t for t in study["trials"] if t["state"] == "complete"]
    varying = [
        name for name in result["space"] if len({t["params"].get(name) for t in complete}) > 1
    ]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE or not varying:
        log.info(
            "importance plot skipped segment=%r complete=%d varying=%d",
            segment,
            len(complete),
            len(varying),
        )
        return None
    try:
        with warnings.catch_warnings():
            # The evaluator warns that a target is minimised; _first_objective makes it so.
            warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator computes", UserWarning)
            importances = optuna.importance.get_param_importances(
                rebuild(study, result), target=_first_objective(result["directions"])
            )
    except (ValueError, RuntimeError) as exc:
        log.warning("importance plot skipped segment=%r error=%s", segment, exc)
        return None
    names = list(importances)[::-1]  # largest at the top
    fig = Figure(figsize=(7, 1.2 + 0.4 * len(names)), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [importances[name] for name in names], color="C0")
    ax.set_xlabel(f"importance for {result['objectives'][0]}")
    ax.set_title(_title("parameter importance", segment))
    return fig


def _first_objective(directions: Sequence[str]) -> Callable[[FrozenTrial], float] | None:
    """The importance target: the study's objective, or the first of several.

    The first objective is negated when maximised, since the evaluator takes low as good.
    """
    if len(directions) == 1:
        return None
    sign = 1.0 if directions[0] == "minimize" else -1.0
    return lambda trial: sign * trial.values[0]


def _segments(result: Mapping[str, Any], by_segment: Mapping[str, Mapping[str, Any]]) -> Figure:
    direction, objective = result["directions"][0], result["objectives"][0]
    names = list(by_segment)
    bests = [_best_first(study["trials"], direction) for study in by_segment.values()]
    fig = Figure(figsize=(max(5.0, 0.8 * len(names) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    # A segment without a result gets an empty bar and a label, so it is still listed.
    ax.bar(names, [0.0 if v is None else v for v in bests], color="C0")
    for i, best in enumerate(bests):
        if best is None:
            ax.text(i, 0, "no result", transform=ax.get_xaxis_transform(), ha="center", va="bottom")
    ax.set_ylabel(f"best {objective} ({direction})")
    ax.set_title("best per segment")
    ax.tick_params(axis="x", labelrotation=30 if len(names) > 6 else 0)
    return fig


def _on_axis(ax: Axes, numbers: Sequence[int], **style: Any) -> None:
    """Mark trials without a value at the bottom edge of the plot, at their trial numbers."""
    if numbers:
        ax.plot(
            numbers, [0] * len(numbers), transform=ax.get_xaxis_transform(), clip_on=False, **style
        )


def _last_intermediate(trial: Mapping[str, Any]) -> float | None:
    steps = {int(step): value for step, value in (trial.get("intermediate") or {}).items()}
    return steps[max(steps)] if steps else None


def _best_first(trials: Sequence[Mapping[str, Any]], direction: str) -> float | None:
    """The best value of the first objective among complete trials, None without any."""
    values = [
        value for t in trials if t["state"] == "complete" and (value := _first_value(t)) is not None
    ]
    if not values:
        return None
    return min(values) if direction == "minimize" else max(values)


def _first_value(trial: Mapping[str, Any]) -> float | None:
    values = trial.get("values")
    return values[0] if values else trial.get("value")


def _title(what: str, segment: str) -> str:
    return f"{what} — segment {segment}" if segment else what


def _file_suffixes(segments: Mapping[str, Any]) -> dict[str, str]:
    """File-name suffixes per segment: ``""`` unsegmented, else ``-<safe name>``, unique."""
    suffixes: dict[str, str] = {}
    used: set[str] = set()
    for segment in segments:
        if not segment:
            suffixes[segment] = ""
            continue
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", segment).strip("._-") or "segment"
        candidate = safe
        for n in itertools.count(2):
            if candidate not in used:
                break
            candidate = f"{safe}-{n}"
        used.add(candidate)
        suffixes[segment] = f"-{candidate}"
    return suffixes


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
