"""Conditional branching: run the expensive fit only when the quick one is not good enough.

    simulate ──> quick_fit ──> good χ²/ndf?  yes ──> done
                                             no  ──> two_lifetime_fit ──> done

Inside a ``@pw.workflow``, ``future.result()`` waits for a job and returns its value, so
the workflow can decide what to run next with a plain ``if``.  The decision is part of the
durable record: if the driver's pilot dies, the replayed driver sees the same results and
takes the same branch, and nothing that already ran runs again.

The physics: a lifetime measurement on a beam of charged pions (τ = 26.0 ns), and on a beam
contaminated with 30 % kaons (τ = 12.4 ns).  A single-exponential fit is quick; when its
χ²/ndf says one lifetime does not describe the data, a slower grid-scan fit with two
lifetimes is run.  The two workflows are submitted together and run side by side.

    .venv/bin/python examples/branch.py

It starts a throwaway server (SQLite) and two local pilots in a temporary PILOTWAVE_HOME,
runs both workflows there, and checks the answers against the same workflows called in
this process (``lifetime(...)`` runs its jobs here, without a server) and against the truth.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import pilotwave as pw

BIN_NS, N_BINS = 2.0, 75  # decay times from 0 to 150 ns
TAU_PION, TAU_KAON = 26.03, 12.38  # ns
GOOD_CHI2_NDF = 1.5  # below this, one lifetime describes the data


@pw.job
def simulate(seed: int, components: list[list[float]], n_decays: int) -> dict:
    """Decay-time histogram of ``n_decays`` particles; ``components`` is [[fraction, τ], ...]."""
    rng = np.random.default_rng(seed)
    fractions = np.array([c[0] for c in components])
    taus = np.array([c[1] for c in components])
    species = rng.choice(len(components), size=n_decays, p=fractions / fractions.sum())
    times = rng.exponential(taus[species])
    counts, _ = np.histogram(times, bins=N_BINS, range=(0.0, N_BINS * BIN_NS))
    return {"bin_ns": BIN_NS, "counts": counts.tolist()}


def _data(hist: dict) -> tuple[np.ndarray, np.ndarray]:
    n = np.array(hist["counts"], dtype=float)
    return (np.arange(len(n)) + 0.5) * hist["bin_ns"], n


def _chi2(n: np.ndarray, mu: np.ndarray) -> float:
    return float((((n - mu) ** 2) / np.maximum(mu, 1.0)).sum())


@pw.job
def quick_fit(hist: dict) -> dict:
    """One lifetime: a straight-line fit to log(counts); χ²/ndf of the resulting exponential."""
    t, n = _data(hist)
    used = n > 0
    slope, intercept = np.polyfit(t[used], np.log(n[used]), 1, w=np.sqrt(n[used]))
    mu = np.exp(intercept + slope * t)
    return {"tau_ns": float(-1.0 / slope), "chi2_ndf": _chi2(n, mu) / (len(n) - 2)}


@pw.job
def two_lifetime_fit(hist: dict) -> dict:
    """Two lifetimes: scan (τ₁, τ₂) on a grid, fitting both amplitudes at each point; refine once."""
    t, n = _data(hist)
    sigma = np.sqrt(np.maximum(n, 1.0))

    def scan(tau1s: np.ndarray, tau2s: np.ndarray) -> tuple[float, float, float, np.ndarray]:
        best = (np.inf, 0.0, 0.0, np.zeros(2))
        for tau1 in tau1s:
            for tau2 in tau2s[tau2s > tau1]:
                shapes = np.stack([np.exp(-t / tau1), np.exp(-t / tau2)], axis=1)
                amps = np.linalg.lstsq(shapes / sigma[:, None], n / sigma, rcond=None)[0]
                chi2 = _chi2(n, shapes @ amps)
                if chi2 < best[0]:
                    best = (chi2, tau1, tau2, amps)
        return best

    grid = np.geomspace(2.0, 100.0, 60)
    _, tau1, tau2, _ = scan(grid, grid)
    chi2, tau1, tau2, amps = scan(
        np.linspace(0.8 * tau1, 1.2 * tau1, 41), np.linspace(0.8 * tau2, 1.2 * tau2, 41)
    )
    n1, n2 = amps * np.array([tau1, tau2])  # the number of decays in each component
    return {
        "tau_ns": [float(tau1), float(tau2)],
        "fraction_short": float(n1 / (n1 + n2)),
        "chi2_ndf": chi2 / (len(n) - 4),
    }


@pw.workflow
def lifetime(seed: int, components: list[list[float]], n_decays: int = 200_000) -> dict:
    data = simulate.submit(seed, components, n_decays)
    quick = quick_fit.submit(data).result()  # the driver waits here: it needs the number
    if quick["chi2_ndf"] < GOOD_CHI2_NDF:
        return {"model": "one lifetime", "quick": quick}
    full = two_lifetime_fit.submit(data).result()
    return {"model": "two lifetimes", "quick": quick, "full": full}


SAMPLES: dict[str, dict[str, Any]] = {
    "pion beam": {"seed": 1, "components": [[1.0, TAU_PION]]},
    "pion beam with 30% kaons": {"seed": 2, "components": [[0.7, TAU_PION], [0.3, TAU_KAON]]},
}


def check(name: str, result: dict) -> list[str]:
    """Compare with the truth the sample was made with."""
    true_taus = sorted(c[1] for c in SAMPLES[name]["components"])
    if len(true_taus) == 1:
        fitted = [result["quick"]["tau_ns"]] if result["model"] == "one lifetime" else []
    else:
        fitted = result["full"]["tau_ns"] if result["model"] == "two lifetimes" else []
    if len(fitted) != len(true_taus):
        return [
            f"{name}: expected {len(true_taus)} lifetime(s), the workflow chose {result['model']}"
        ]
    return [
        f"{name}: fitted τ = {f:.2f} ns, true {t:.2f} ns"
        for f, t in zip(fitted, true_taus, strict=True)
        if abs(f - t) > 0.1 * t
    ]


def main() -> int:
    from pilotwave.provision.local import LocalCluster

    here = {name: lifetime(**args) for name, args in SAMPLES.items()}  # run in this process

    with tempfile.TemporaryDirectory(prefix="pilotwave-branch-") as home:
        print("starting a server (SQLite) and 2 local pilots…")
        t0 = time.monotonic()
        with LocalCluster(Path(home), pilots=2, slots=1) as cluster:
            cluster.wait_for_pilots()
            pw.connect(cluster.url, cluster.admin_token)
            runs = {name: lifetime.submit(**args) for name, args in SAMPLES.items()}
            results = {name: run.result(timeout=120) for name, run in runs.items()}
            ran = {
                name: [j["name"] for j in run.status()["jobs"] if j["kind"] != "driver"]
                for name, run in runs.items()
            }
        print(f"done in {time.monotonic() - t0:.1f}s")

    problems = []
    for name, result in results.items():
        quick = result["quick"]
        print(f"\n{name} (workflow {runs[name].id}: {' → '.join(ran[name])})")
        print(f"  quick fit: τ = {quick['tau_ns']:.2f} ns, χ²/ndf = {quick['chi2_ndf']:.2f}")
        if "full" in result:
            full = result["full"]
            taus = " and ".join(f"{tau:.2f}" for tau in full["tau_ns"])
            print(
                f"  χ²/ndf too large: two-lifetime fit τ = {taus} ns, "
                f"{100 * full['fraction_short']:.0f} % short-lived, χ²/ndf = {full['chi2_ndf']:.2f}"
            )
        else:
            print("  χ²/ndf is good: the two-lifetime fit was skipped")
        print(f"  → {result['model']}")
        if result != here[name]:
            problems.append(f"{name}: the cluster's answer differs from the in-process one")
        problems += check(name, result)
    print("\n" + ("\n".join(problems) or "cluster and in-process runs agree, and match the truth"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
