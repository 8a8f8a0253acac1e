"""A loop whose exit depends on results: add Monte-Carlo rounds until the error is small enough.

    round 1: 4 jobs ──> estimate ± error ──> small enough?  no ──> round 2 ──> … ──> yes: done

A ``@pw.workflow`` is plain Python, so a result-driven loop is a ``while``: submit a round
of jobs, read their results, update the estimate, and decide whether to go on and how big
the next round should be.  Every submission and every result the driver reads is recorded
by the server: a driver restarted elsewhere replays the rounds already done instantly and
continues from the first one that had not finished.

For that the workflow must make the same calls on a replay, so its random numbers (here the
seeds handed to the jobs) come from ``pw.seed()``: a seed drawn once per workflow run and
the same on every replay.  Inside a job, randomness from the seed it was given is fine.

The physics: the geometric acceptance of a square scintillator paddle (10 cm × 10 cm, 5 cm
above a point source emitting isotropically).  Exactly Ω/4π = arcsin(a²/(a²+4d²))/π, which
is 1/6 for this geometry, so the Monte-Carlo answer can be checked.

    .venv/bin/python examples/loop.py

It starts a throwaway server (SQLite) and two local pilots in a temporary PILOTWAVE_HOME,
runs the workflow there, and checks the estimate against the exact acceptance.
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import pilotwave as pw

SIDE_CM, DISTANCE_CM = 10.0, 5.0
JOBS_PER_ROUND = 4
MAX_ROUNDS = 10


@pw.job
def throw(seed: int, n: int, side_cm: float, distance_cm: float) -> dict:
    """``n`` isotropic directions from the source: how many cross the paddle."""
    rng = np.random.default_rng(seed)
    cos_theta = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    up = cos_theta > 0  # towards the paddle's plane
    r = distance_cm * np.sqrt(1.0 - cos_theta[up] ** 2) / cos_theta[up]  # where it crosses
    x, y = r * np.cos(phi[up]), r * np.sin(phi[up])
    hits = (np.abs(x) < side_cm / 2) & (np.abs(y) < side_cm / 2)
    return {"throws": n, "hits": int(hits.sum())}


@pw.workflow
def acceptance(target_rel_err: float = 0.002, first_round: int = 250_000) -> dict:
    rng = random.Random(pw.seed())  # the same seeds on every replay of this run
    throws = hits = 0
    rounds = []
    next_round = first_round
    while True:
        per_job = math.ceil(next_round / JOBS_PER_ROUND)
        seeds = [rng.randrange(2**32) for _ in range(JOBS_PER_ROUND)]
        k = JOBS_PER_ROUND
        batch = throw.map(seeds, [per_job] * k, [SIDE_CM] * k, [DISTANCE_CM] * k)
        for f in batch:  # the driver waits for the round's results
            throws += f.result()["throws"]
            hits += f.result()["hits"]
        p = hits / throws
        rel_err = math.sqrt((1 - p) / (p * throws))  # binomial error, relative
        rounds.append({"throws": throws, "acceptance": p, "rel_err": rel_err})
        if rel_err < target_rel_err or len(rounds) == MAX_ROUNDS:
            break
        # Throws still needed to reach the target, from the estimate so far (10 % margin);
        # at most doubling the total, so that an early, noisy estimate cannot overshoot much.
        needed = 1.1 * (1 - p) / (p * target_rel_err**2) - throws
        next_round = int(min(needed, throws))
    return {"acceptance": p, "error": p * rel_err, "throws": throws, "rounds": rounds}


def exact_acceptance(side_cm: float, distance_cm: float) -> float:
    """Ω/4π of a square of side a seen from a distance d on its axis."""
    a2 = side_cm**2
    return math.asin(a2 / (a2 + 4 * distance_cm**2)) / math.pi


def main() -> int:
    from pilotwave.provision.local import LocalCluster

    target = 0.002
    with tempfile.TemporaryDirectory(prefix="pilotwave-loop-") as home:
        print("starting a server (SQLite) and 2 local pilots…")
        t0 = time.monotonic()
        with LocalCluster(Path(home), pilots=2, slots=1) as cluster:
            cluster.wait_for_pilots()
            pw.connect(cluster.url, cluster.admin_token)
            run = acceptance.submit(target_rel_err=target)
            print(f"submitted workflow {run.id}; target relative error {100 * target:.2f} %")
            result = run.result(timeout=120)
            n_jobs = sum(1 for j in run.status()["jobs"] if j["kind"] != "driver")
        print(f"done in {time.monotonic() - t0:.1f}s")

    for i, r in enumerate(result["rounds"], 1):
        print(
            f"  round {i}: {r['throws']:>9,} throws, acceptance {r['acceptance']:.5f} "
            f"± {100 * r['rel_err']:.2f} %"
        )
    exact = exact_acceptance(SIDE_CM, DISTANCE_CM)
    p, err = result["acceptance"], result["error"]
    pull = (p - exact) / err
    print(f"Monte Carlo: {p:.5f} ± {err:.5f} ({len(result['rounds'])} rounds, {n_jobs} jobs)")
    print(f"exact:       {exact:.5f} (= 1/{1 / exact:.0f}); the estimate is {pull:+.1f} σ from it")
    problems = []
    if result["error"] / p >= target:
        problems.append(f"the loop stopped before reaching the target error of {target}")
    if abs(pull) > 4:
        problems.append("the Monte-Carlo estimate disagrees with the exact acceptance")
    print("\n".join(problems) or "the Monte-Carlo estimate agrees with the exact acceptance")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
