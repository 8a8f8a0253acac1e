"""Objectives for the HPO tests: importable by pilots from the tests directory (the sandbox)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pilotwave as pw


@pw.job
def quad(x: float, y: float) -> float:
    return (x - 1) ** 2 + (y + 2) ** 2


@pw.job
def quad_segment(x: float, segment: str) -> float:
    centre = {"a": 0.5, "b": -2.0, "c": 3.0}[segment]
    return (x - centre) ** 2


@pw.job
def two_goals(x: float) -> list[float]:
    return [x**2, (x - 2) ** 2]


@pw.job
def with_metrics(x: float) -> dict[str, float]:
    return {"loss": (x - 0.3) ** 2, "accuracy": 1 - abs(x - 0.3)}


@pw.job
def curve(rate: float, steps: int = 8, pause_s: float = 0.02) -> float:
    """A learning curve that ends at ``1 / rate``: slow rates are pruned early."""
    loss = 10.0
    for step in range(steps):
        loss = 1 / rate + 9.0 * math.exp(-step)
        time.sleep(pause_s)
        if pw.report(step, loss):
            raise pw.Pruned(step)
    return loss


@pw.job
def sometimes_bad(x: float) -> object:
    """NaN above 0.6, not a number between 0.3 and 0.6, a good value below."""
    if x > 0.6:
        return float("nan")
    if x > 0.3:
        return "not a number"
    return x


@pw.job(max_attempts=1)
def crashes_above(x: float) -> float:
    if x > 0.5:
        raise RuntimeError(f"diverged at x={x}")
    return x


@pw.job
def logged_slow(x: float, log: str, pause_s: float = 0.3) -> float:
    """Appends one line per evaluation to ``log`` (to count runs), then sleeps."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {x}\n")
    time.sleep(pause_s)
    return (x - 0.25) ** 2


def runs(log: str) -> list[str]:
    path = Path(log)
    return path.read_text().split("\n")[:-1] if path.exists() else []
