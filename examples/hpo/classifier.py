"""A signal/background classifier per |η| region: the objective of the HPO demo.

The data are synthetic but shaped like a HEP selection: a resonance (signal) over a
falling continuum (background), seen by a detector whose resolution worsens with |η|.
Each trial trains scikit-learn's histogram gradient boosting on one |η| segment, reports
the validation log-loss every 20 boosting rounds (so the study's pruner can stop a poor
trial early), and saves its model to ``pw.outputs()``: the best trial's model is what
``pilotwave hpo`` downloads.
"""

from __future__ import annotations

import pickle

import numpy as np

import pilotwave as pw

# |η| segments: the resolution (relative) and the fraction of signal in each.
SEGMENTS = {
    "barrel": {"eta": (0.0, 1.37), "resolution": 0.015, "signal": 0.30},
    "endcap": {"eta": (1.52, 2.47), "resolution": 0.030, "signal": 0.25},
    "forward": {"eta": (2.5, 4.0), "resolution": 0.060, "signal": 0.20},
}
N_EVENTS = 20_000
STEP = 20  # boosting rounds between reports


def events(segment: str, n: int = N_EVENTS, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels for one |η| segment; the same for every trial (seeded per segment)."""
    cfg = SEGMENTS[segment]
    rng = np.random.default_rng([seed, list(SEGMENTS).index(segment)])
    y = (rng.random(n) < cfg["signal"]).astype(int)
    sig = y == 1
    res = cfg["resolution"] * (1 + rng.exponential(0.5, n))
    mass = np.where(sig, rng.normal(125.0, 125.0 * res), 100.0 + rng.exponential(40.0, n))
    mass_meas = mass * (1 + rng.normal(0, res))
    pt1 = np.where(sig, rng.gamma(4.0, 12.0, n), rng.gamma(2.5, 12.0, n))
    pt2 = pt1 * np.where(sig, rng.beta(4, 2, n), rng.beta(2, 3, n))
    eta = rng.uniform(*cfg["eta"], n) * rng.choice([-1, 1], n)
    iso = np.where(sig, rng.exponential(0.05, n), rng.exponential(0.15, n))
    dphi = np.where(sig, rng.normal(np.pi, 0.4, n), rng.uniform(0, np.pi, n)) % np.pi
    njets = rng.poisson(np.where(sig, 1.2, 2.0))
    x = np.column_stack([mass_meas, pt1, pt2, np.abs(eta), iso, dphi, njets, res])
    return x.astype(np.float32), y


@pw.job(cores=1, max_attempts=2)
def train(
    learning_rate: float,
    max_leaf_nodes: int,
    l2_regularization: float,
    min_samples_leaf: int,
    segment: str,
    rounds: int = 160,
) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import log_loss, roc_auc_score

    x, y = events(segment)
    cut = int(0.7 * len(y))
    model = HistGradientBoostingClassifier(
        learning_rate=learning_rate,
        max_leaf_nodes=max_leaf_nodes,
        l2_regularization=l2_regularization,
        min_samples_leaf=min_samples_leaf,
        early_stopping=False,
        warm_start=True,
        random_state=0,
    )
    loss = float("inf")
    for step, n in enumerate(range(STEP, rounds + 1, STEP)):
        model.set_params(max_iter=n)
        model.fit(x[:cut], y[:cut])
        p = model.predict_proba(x[cut:])[:, 1]
        loss = float(log_loss(y[cut:], p))
        if pw.report(step, loss):  # the study's pruner says this trial will not win
            raise pw.Pruned(step)
    auc = float(roc_auc_score(y[cut:], p))
    (pw.outputs() / "model.pkl").write_bytes(pickle.dumps(model))
    print(f"{segment}: log-loss {loss:.4f}, AUC {auc:.4f}")
    return {"loss": loss, "auc": auc}
