"""Active learning over a production → analysis chain: a dark-sector search's exclusion contour.

ATLAS's re-interpretation of the H → Z Zd → 4ℓ search needs, for each new (Zd mass,
coupling) point, a production chain (generate a signal sample) and an analysis chain
(selection, histograms, a statistical fit giving observed and expected CLs).  A Gaussian-
process surrogate chooses the next points; nobody edits a grid by hand.  Here is that loop
in miniature, every step a pilotwave job:

    search (pilotwave.active) ─┬─> point(mass, coupling)          a nested workflow per point
                               │     produce ──> analysis          (itself a nested workflow)
                               │                  select ──> histogram ──> fit (pyhf)
                               └─> the next point, as soon as one finishes

* ``produce`` generates a seeded signal sample for the point (a dilepton resonance of the Zd
  mass with the detector's resolution, lepton pT and η) and saves it as an artifact.
* ``select`` fetches that artifact and applies the lepton cuts; ``histogram`` bins the
  selected signal next to the fixed background expectation and the fixed observed data
  (which hold a small excess near 35 GeV); ``fit`` runs pyhf's asymptotic CLs test of the
  signal hypothesis (μ = 1): ``cls_obs`` and ``cls_exp``.
* The point is excluded where CLs < 0.05.  One search finds that contour for the observed
  and the expected CLs at once; another finds where the observed CLs exceeds the expected
  the most (``cls_obs - cls_exp``): where an excess hides.

    .venv/bin/python examples/active/darksector.py [--quick]

It starts a throwaway server (SQLite) with two local pilots, runs both searches, prints the
coupling limit per mass and the largest excess, and writes plots.  The same searches run
from the command line with ``pilotwave active examples/active/contour.yaml --wait``.
"""

from __future__ import annotations

import sys
import zlib

import numpy as np

import pilotwave as pw

LO, HI, BIN = 12.0, 58.0, 2.0  # GeV: the dilepton-mass histogram
LUMI_XS = 4.0e5  # produced signal events per unit coupling²
BKG_PER_GEV, BKG_SLOPE = 28.0, 15.0  # background: 28/GeV at 12 GeV, falling e-fold per 15 GeV
EXCESS_MASS, EXCESS_EVENTS = 35.0, 14.0  # a fluctuation in the observed data
DATA_SEED = 2026
PT_CUT, ETA_CUT = 8.0, 2.5


@pw.job
def produce(mass: float, coupling: float, n_events: int, seed: int) -> dict:
    """Generate a signal sample for one (mass, coupling) point; saved as an artifact."""
    rng = np.random.default_rng(seed)
    m_ll = rng.normal(mass, 0.02 * mass, n_events)  # 2 % dilepton-mass resolution
    pt = mass / 2 * rng.lognormal(0.0, 0.35, (n_events, 2))
    eta = rng.uniform(-3.0, 3.0, (n_events, 2))
    produced = LUMI_XS * coupling**2 * (1 - mass / 125.0) ** 2  # expected signal events
    name = f"sample-m{mass:.4f}-eps{coupling:.4e}.npz"
    np.savez_compressed(pw.outputs() / name, m_ll=m_ll, pt=pt, eta=eta)
    return {"job": pw.job_id(), "file": name, "events": n_events, "weight": produced / n_events}


@pw.job
def select(sample: dict) -> dict:
    """Both leptons with pT > 8 GeV and |η| < 2.5."""
    data = np.load(pw.artifact(sample["job"], sample["file"]))
    keep = (data["pt"] > PT_CUT).all(axis=1) & (np.abs(data["eta"]) < ETA_CUT).all(axis=1)
    return {
        "m_ll": data["m_ll"][keep].round(4).tolist(),
        "weight": sample["weight"],
        "efficiency": float(keep.mean()),
    }


def background(edges: np.ndarray) -> np.ndarray:
    """Expected background per bin: the integral of a falling exponential."""
    cdf = -BKG_PER_GEV * BKG_SLOPE * np.exp(-(edges - LO) / BKG_SLOPE)
    return np.diff(cdf)


def observed(edges: np.ndarray) -> np.ndarray:
    """The observed data: one fixed Poisson draw of the background plus a small excess."""
    rng = np.random.default_rng(DATA_SEED)
    excess = rng.normal(EXCESS_MASS, 0.02 * EXCESS_MASS, int(EXCESS_EVENTS))
    return rng.poisson(background(edges)) + np.histogram(excess, edges)[0]


@pw.job
def histogram(selected: dict) -> dict:
    """Signal, background and data in the same bins."""
    edges = np.arange(LO, HI + BIN / 2, BIN)
    signal = np.histogram(selected["m_ll"], edges)[0] * selected["weight"]
    return {
        "signal": signal.tolist(),
        "background": background(edges).tolist(),
        "data": observed(edges).tolist(),
        "efficiency": selected["efficiency"],
    }


@pw.job
def fit(hists: dict) -> dict:
    """pyhf: asymptotic CLs of the signal hypothesis (μ = 1), observed and expected."""
    import pyhf

    signal, bkg = np.array(hists["signal"]), np.array(hists["background"])
    # The bins that matter: those holding 2 % or more of the signal (the resonance's window).
    window = signal >= 0.02 * max(signal.max(), 1e-12)
    model = pyhf.simplemodels.uncorrelated_background(
        signal=(signal[window] + 1e-6).tolist(),  # never an empty signal template
        bkg=bkg[window].tolist(),
        bkg_uncertainty=(0.1 * bkg[window]).tolist(),
    )
    data = np.array(hists["data"])[window].tolist() + model.config.auxdata
    cls_obs, cls_exp = pyhf.infer.hypotest(
        1.0, data, model, test_stat="qtilde", return_expected=True
    )
    return {
        "cls_obs": float(cls_obs),
        "cls_exp": float(cls_exp),
        "signal": float(sum(hists["signal"])),
        "efficiency": hists["efficiency"],
    }


@pw.workflow
def analysis(sample: dict) -> dict:
    """The analysis chain; the jobs pass their results along without the driver waiting."""
    return fit.submit(histogram.submit(select.submit(sample))).result()


def seed_for(mass: float, coupling: float) -> int:
    """The same point, the same sample: a seed derived from the parameters."""
    return zlib.crc32(f"{mass:.6g}/{coupling:.6g}".encode())


@pw.workflow
def point(mass: float, coupling: float, n_events: int = 4000) -> dict:
    """One parameter point: production, then the analysis of what it produced."""
    sample = produce.submit(mass, coupling, n_events, seed_for(mass, coupling)).result()
    return analysis.submit(sample=sample).result()


SPACE = {
    "mass": {"low": 15.0, "high": 55.0},
    "coupling": {"low": 1.0e-3, "high": 3.0e-2, "log": True},
}


def main() -> int:
    import json
    import tempfile
    import time
    from pathlib import Path

    from pilotwave.active import search, write_plots
    from pilotwave.provision.local import LocalCluster

    quick = "--quick" in sys.argv
    budget, batch = (24, 2) if quick else (48, 4)
    common = {"evaluate": point, "space": SPACE, "batch": batch, "seed": 11}
    out = Path("darksector-results")
    with tempfile.TemporaryDirectory(prefix="pilotwave-active-") as home:
        print("starting a server (SQLite) and 2 local pilots…")
        t0 = time.monotonic()
        # Each point in flight is two nested workflows (the point, its analysis): waiting
        # drivers park, so the pilots' default driver slots are enough for both searches.
        with LocalCluster(Path(home), pilots=2, slots=1) as c:
            c.wait_for_pilots()
            pw.connect(c.url, c.admin_token)
            contour = search.submit(
                **common, goal="contour", value=["cls_obs", "cls_exp"], level=0.05,
                transform="log", budget=budget,
            )  # fmt: skip
            excess = search.submit(
                **common, goal="maximize", value="cls_obs - cls_exp", budget=budget // 2 + 8
            )
            print(f"submitted searches {contour.id} (contour) and {excess.id} (largest excess)")
            results = {"contour": contour.result(timeout=900), "excess": excess.result(timeout=900)}
        print(f"done in {time.monotonic() - t0:.1f}s")
    files = []
    for name, result in results.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "result.json").write_text(json.dumps(result, indent=1))
        files += [str(f) for f in write_plots(result, out / name)]
    return report(results["contour"], results["excess"], files)


def limits_per_mass(result: dict, value: str) -> list[tuple[float, float | None]]:
    """The excluded coupling per mass from the estimate: the lowest coupling below the level."""
    axes = result["estimate"]["axes"]
    below = np.array(result["estimate"]["values"][value]["below"])
    out = []
    for i, m in enumerate(axes["mass"]):
        excluded = np.nonzero(below[i])[0]
        out.append((m, axes["coupling"][excluded[0]] if len(excluded) else None))
    return out


def report(contour: dict, excess: dict, files: list[str]) -> int:
    ok = [p for p in contour["points"] if p["state"] == "done"]
    print(
        f"contour: {len(ok)} points evaluated ({contour['failed']} failed), "
        f"stopped: {contour['stopped']}"
    )
    obs = limits_per_mass(contour, "cls_obs")
    exp = dict(limits_per_mass(contour, "cls_exp"))
    print("  mass [GeV]   coupling excluded above (observed / expected)")
    for m, lim in obs[::5]:
        e = exp[m]
        shown = f"{lim:.2e}" if lim else "none"
        print(f"  {m:10.1f}   {shown} / {f'{e:.2e}' if e else 'none'}")
    best = excess["best"]
    print(
        f"largest excess: CLs_obs - CLs_exp = {best['value']:.3f} ± {best['std']:.3f} at "
        f"mass {best['params']['mass']:.1f} GeV, coupling {best['params']['coupling']:.2e} "
        f"(the data hold an excess at {EXCESS_MASS:g} GeV)"
    )
    print("plots: " + ", ".join(files))
    problems = []
    if abs(best["params"]["mass"] - EXCESS_MASS) > 5.0:
        problems.append("the largest excess is not where the data hold one")
    if not any(lim for _, lim in obs):
        problems.append("no point was excluded")
    print("\n".join(problems) or "the excess is found where the data hold it")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
