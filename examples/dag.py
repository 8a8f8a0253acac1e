"""A diamond DAG with data passing: simulate a mass spectrum, analyse it two ways at once, combine.

    simulate ──> fit_background ──┐
        └──────> measure_peak ────┴──> combine

A ``@pw.job`` submitted inside a ``@pw.workflow`` returns a future at once.  Passing that
future as an argument to another ``submit`` makes the second job depend on the first: the
server holds it until the upstream job succeeds, then hands it the upstream's *result* in
place of the future.  The driver never waits in between: the two analyses are released the
moment the simulation is done and can run side by side on the two pilots.

The physics: a narrow resonance (1000 events at 125 GeV) on a falling exponential background.
One analysis fits the background in the sidebands, the other measures the peak in the
signal window; ``combine`` subtracts the background and quotes the significance.

    .venv/bin/python examples/dag.py

It starts a throwaway server (SQLite) and two local pilots in a temporary PILOTWAVE_HOME,
runs the workflow there, and checks the answer against the same workflow called in this
process (``bump_hunt(...)`` runs its jobs here, without a server) and against the truth.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import pilotwave as pw

LO, HI = 100.0, 160.0  # GeV: the histogram's range, 1 GeV bins
WINDOW = (115.0, 135.0)  # the signal window; the rest are the sidebands
TRUE_MASS, TRUE_WIDTH = 125.0, 2.0


@pw.job
def simulate(seed: int, n_signal: int, n_background: int) -> dict:
    """Pseudo-data: a Gaussian peak on an exponential background, as a 1 GeV histogram."""
    rng = np.random.default_rng(seed)
    background = LO + rng.exponential(25.0, size=4 * n_background)
    background = background[background < HI][:n_background]
    signal = rng.normal(TRUE_MASS, TRUE_WIDTH, size=n_signal)
    counts, _ = np.histogram(
        np.concatenate([background, signal]), bins=int(HI - LO), range=(LO, HI)
    )
    return {"lo": LO, "hi": HI, "counts": counts.tolist()}


def _centres(hist: dict) -> np.ndarray:
    return np.arange(len(hist["counts"])) + hist["lo"] + 0.5


@pw.job
def fit_background(hist: dict) -> dict:
    """Fit log(counts) = a + b·m in the sidebands; predict the background under the peak."""
    m, n = _centres(hist), np.array(hist["counts"], dtype=float)
    inside = (m > WINDOW[0]) & (m < WINDOW[1])
    side = ~inside & (n > 0)
    b, a = np.polyfit(m[side], np.log(n[side]), 1, w=np.sqrt(n[side]))
    return {
        "slope_per_GeV": float(b),
        "expected": float(np.exp(a + b * m[inside]).sum()),
        "observed": int(n[inside].sum()),
    }


@pw.job
def measure_peak(hist: dict) -> dict:
    """Peak position and width in the window, above a straight line through its edge bins."""
    m, n = _centres(hist), np.array(hist["counts"], dtype=float)
    inside = (m > WINDOW[0]) & (m < WINDOW[1])
    m, n = m[inside], n[inside]
    edges = np.r_[0:3, -3:0]  # three bins at each end: background only
    line = np.polyval(np.polyfit(m[edges], n[edges], 1), m)
    excess = np.clip(n - line, 0.0, None)
    mean = float((m * excess).sum() / excess.sum())
    width = float(np.sqrt((excess * (m - mean) ** 2).sum() / excess.sum()))
    return {"mass": mean, "width": width}


@pw.job
def combine(background: dict, peak: dict) -> dict:
    """Signal = observed − expected background in the window; significance ≈ S/√B."""
    s = background["observed"] - background["expected"]
    return {
        **peak,
        "signal": s,
        "background": background["expected"],
        "significance": s / background["expected"] ** 0.5,
    }


@pw.workflow
def bump_hunt(seed: int = 7, n_signal: int = 1000, n_background: int = 20_000) -> dict:
    hist = simulate.submit(seed, n_signal, n_background)
    background = fit_background.submit(hist)  # both wait for `hist`, then may run in parallel
    peak = measure_peak.submit(hist)
    return combine.submit(background, peak).result()  # the only wait in the driver


def main() -> int:
    from pilotwave.provision.local import LocalCluster

    args = {"seed": 7, "n_signal": 1000, "n_background": 20_000}
    here = bump_hunt(**args)  # the same workflow, run in this process

    with tempfile.TemporaryDirectory(prefix="pilotwave-dag-") as home:
        print("starting a server (SQLite) and 2 local pilots…")
        t0 = time.monotonic()
        with LocalCluster(Path(home), pilots=2, slots=1) as cluster:
            cluster.wait_for_pilots()
            pw.connect(cluster.url, cluster.admin_token)
            run = bump_hunt.submit(**args)
            print(f"submitted workflow {run.id}")
            result = run.result(timeout=120)
            jobs = [j for j in run.status()["jobs"] if j["kind"] != "driver"]
        print(f"done in {time.monotonic() - t0:.1f}s")
    for j in jobs:
        print(f"  job {j['id']:>2} {j['name']:<15} {j['state']}")

    m, width = result["mass"], result["width"]
    s, b = result["signal"], result["background"]
    err = (s + b) ** 0.5
    print(
        f"peak:         m = {m:.2f} GeV, σ = {width:.2f} GeV (true {TRUE_MASS:g}, {TRUE_WIDTH:g})"
    )
    print(f"signal:       {s:.0f} ± {err:.0f} events (true {args['n_signal']}), {b:.0f} background")
    print(f"significance: {result['significance']:.1f} σ (S/√B)")
    problems = []
    if result != here:
        problems.append(f"the cluster's answer {result} differs from the in-process one {here}")
    if abs(m - TRUE_MASS) > 1.0:
        problems.append(f"the peak is not at the true mass {TRUE_MASS} GeV")
    if abs(s - args["n_signal"]) > 3 * err:
        problems.append("the signal yield is more than 3 σ from the truth")
    print("\n".join(problems) or "cluster and in-process runs agree, and match the truth")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
