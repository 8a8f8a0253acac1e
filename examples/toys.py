"""The significance of an excess, from Monte-Carlo toys spread over local pilots.

A counting experiment sees 40 events where the background model predicts 22.  How
unlikely is that under background only?  We throw Poisson toys in many seeded jobs, merge
their tails, and keep adding rounds of toys until the p-value's Monte-Carlo uncertainty
is below 2.5 %, then compare with the exact Poisson tail.  A shell job reports where the
work ran, and the last job writes the toy distribution as an artifact.

    .venv/bin/python examples/toys.py

Everything runs on the embedded default: a server on SQLite and two local pilots, in a
temporary PILOTWAVE_HOME that is removed at the end.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import pilotwave as pw

N_OBS = 40
BACKGROUND = 22.0
TOYS_PER_JOB = 100_000
TARGET_REL_ERR = 0.025


@pw.job(cores=1, max_attempts=3)
def throw_toys(seed: int, n_toys: int, background: float, n_obs: int) -> dict:
    """Background-only pseudo-experiments: how many fluctuate up to ``n_obs`` or more."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(background, size=n_toys)
    print(f"seed {seed}: {n_toys} toys, mean {counts.mean():.3f}")
    return {
        "toys": n_toys,
        "tail": int((counts >= n_obs).sum()),
        "histogram": np.bincount(counts, minlength=80)[:80],
    }


@pw.job(cores=1)
def summarize(histograms: list[list[int]], n_obs: int) -> dict:
    """Merge the toy distributions and write them as a CSV artifact."""
    total = np.sum(np.array(histograms), axis=0)
    lines = ["n,toys"] + [f"{n},{int(c)}" for n, c in enumerate(total)]
    (pw.outputs() / "toy_distribution.csv").write_text("\n".join(lines) + "\n")
    return {"mode": int(total.argmax()), "toys": int(total.sum())}


def exact_tail(background: float, n_obs: int) -> float:
    """P(N >= n_obs) for N ~ Poisson(background)."""
    below = sum(math.exp(-background) * background**k / math.factorial(k) for k in range(n_obs))
    return 1.0 - below


def significance(p: float) -> float:
    return statistics.NormalDist().inv_cdf(1.0 - p)


def run(console: Console) -> None:
    pw.wait([pw.shell(["uname", "-sm"])])  # a shell job, too
    rounds: list[dict] = []
    futures: list[pw.Future] = []
    toys = tail = 0
    seed = 2026
    while True:  # a loop whose exit depends on the results
        n_jobs = 8 if not rounds else 16
        batch = throw_toys.map(
            range(seed, seed + n_jobs),
            [TOYS_PER_JOB] * n_jobs,
            [BACKGROUND] * n_jobs,
            [N_OBS] * n_jobs,
        )
        seed += n_jobs
        pw.wait(batch, progress=sys.stderr.isatty())
        results = [f.result() for f in batch]
        futures += batch
        toys += sum(r["toys"] for r in results)
        tail += sum(r["tail"] for r in results)
        p = tail / toys
        rel = 1 / math.sqrt(tail) if tail else math.inf
        rounds.append({"jobs": n_jobs, "toys": toys, "tail": tail, "p": p, "rel": rel})
        console.print(
            f"round {len(rounds)}: {toys:,} toys, {tail} in the tail, p = {p:.3e} ± {100 * rel:.1f} %"
        )
        if rel < TARGET_REL_ERR or len(rounds) == 6:
            break

    summary_job = summarize.submit([f.result()["histogram"] for f in futures], N_OBS)
    summary = summary_job.result()
    written = summary_job.client.download(summary_job.id, Path("pw_outputs") / "toys")

    exact = exact_tail(BACKGROUND, N_OBS)
    table = Table(title=f"Excess of {N_OBS} events over a background of {BACKGROUND:g}")
    for col in ("", "p-value", "significance"):
        table.add_column(col)
    table.add_row("toys (pilotwave)", f"{p:.3e} ± {p * rel:.1e}", f"{significance(p):.2f} σ")
    table.add_row("exact Poisson tail", f"{exact:.3e}", f"{significance(exact):.2f} σ")
    console.print(table)
    pull = (p - exact) / (p * rel)
    console.print(
        f"{len(futures)} toy jobs, {summary['toys']:,} toys; the toy p-value is {pull:+.1f} σ(MC) from the exact one. "
        f"Toy distribution: {', '.join(str(w) for w in written)}"
    )


def main() -> None:
    from pilotwave.provision.local import LocalCluster

    console = Console()
    with tempfile.TemporaryDirectory(prefix="pilotwave-toys-") as home:
        console.print("[bold]toys[/] — starting a server (SQLite) and 2 local pilots…")
        t0 = time.monotonic()
        with LocalCluster(Path(home), pilots=2, slots=1) as cluster:
            cluster.wait_for_pilots()
            pw.connect(cluster.url, cluster.admin_token)
            console.print(f"up at {cluster.url} in {time.monotonic() - t0:.1f}s")
            run(console)
        console.print(f"[green]done[/] in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
