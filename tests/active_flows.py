"""Evaluations for the active-learning tests: importable by pilots from the tests directory."""

from __future__ import annotations

import json
import math
import os
import time

import pilotwave as pw

LEVEL = 0.5


def wave(x: float, y: float) -> float:
    """A smooth 2-D function whose level set at 0.5 winds through the box [-2, 2]²."""
    return math.sin(3 * x) + math.cos(3 * y) + 0.5 * x * y


@pw.job
def bowl(x: float, y: float) -> dict[str, float]:
    return {"value": wave(x, y), "twice": 2 * wave(x, y)}


@pw.job
def flaky(x: float, y: float) -> dict[str, float]:
    """Fails in one corner of the box and returns NaN in another."""
    if x > 1.0 and y > 1.0:
        raise RuntimeError(f"detector simulation crashed at x={x:.3f}, y={y:.3f}")
    if x < -1.0 and y < -1.0:
        return {"value": float("nan")}
    return {"value": wave(x, y)}


@pw.job
def broken(x: float, y: float) -> dict[str, float]:
    raise RuntimeError("no calibration for this run")


@pw.job
def logged(x: float, y: float, log: str, pause_s: float = 0.3) -> dict[str, float]:
    """Appends one line per evaluation to ``log`` (to count runs), then sleeps."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {x} {y}\n")
    time.sleep(pause_s)
    return {"value": wave(x, y)}


@pw.job
def generate(x: float, y: float) -> dict[str, object]:
    """The production step: writes a 'sample' artifact."""
    (pw.outputs() / "sample.json").write_text(json.dumps({"x": x, "y": y}))
    return {"job": pw.job_id(), "file": "sample.json"}


@pw.job
def analyse(sample: dict[str, object]) -> dict[str, float]:
    """The analysis step: reads the production step's artifact."""
    point = json.loads(pw.artifact(sample["job"], str(sample["file"])).read_text())  # type: ignore[arg-type]
    return {"peak": -((point["x"] - 0.3) ** 2) - (point["y"] + 0.5) ** 2}


@pw.workflow
def chain(x: float, y: float) -> dict[str, float]:
    """A production → analysis chain as a nested workflow."""
    return analyse.submit(generate.submit(x, y)).result()


def runs(log: str) -> list[str]:
    return open(log).read().splitlines() if os.path.exists(log) else []
