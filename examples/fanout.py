"""Dynamic fan-out and fan-in: one job per chunk of data, where the chunks are known only at run time.

                    ┌──> process_chunk ──┐
    list_chunks ────┼──> process_chunk ──┼──> merge
                    └──> … (one per chunk, however many there are)

The workflow cannot know in advance how many jobs it will run: ``list_chunks`` splits each
data-taking run into chunks of at most 50 000 events, and only its *result* says how many
chunks there are.  ``process_chunk.map(chunks)`` then submits one job per chunk in a single
request (fan-out), and ``merge.submit(futures)`` (fan-in) takes the whole list of futures
as one argument: the server starts it when every chunk is done and hands it their results,
in the order of the list.

While the chunks run, the driver also follows them with ``pw.as_completed`` — in the order
they finish — to count the events processed; that number must agree with the merge's.

The physics: Z → μμ candidates.  Each chunk's events are simulated (a Breit–Wigner peak on
a flat background, smeared by the detector resolution); the selection keeps dimuon masses
within 10 GeV of the Z, and the merged mass histogram gives the peak and the efficiency.

    .venv/bin/python examples/fanout.py

It starts a throwaway server (SQLite) and two local pilots in a temporary PILOTWAVE_HOME,
runs the workflow there, and checks the answer against the same workflow called in this
process (``select_z(...)`` runs its jobs here, without a server).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

import pilotwave as pw

Z_MASS, Z_WIDTH, RESOLUTION = 91.19, 2.50, 1.5  # GeV
LO, HI = 70.0, 110.0  # the histogram's range, 1 GeV bins

# The runs to process and the number of events each recorded.
RUNS = {"run 358031": 120_000, "run 358096": 45_000, "run 358129": 210_000, "run 358300": 80_000}


@pw.job
def list_chunks(runs: dict[str, int], max_events: int) -> list[dict]:
    """Split every run into chunks of at most ``max_events`` events (a stand-in for a file catalogue)."""
    chunks = []
    for run, n_events in sorted(runs.items()):
        for first in range(0, n_events, max_events):
            chunks.append({"run": run, "first": first, "n": min(max_events, n_events - first)})
    return chunks


@pw.job
def process_chunk(chunk: dict) -> dict:
    """Simulate the chunk's events, select Z candidates, histogram their mass."""
    run_number = int(chunk["run"].split()[-1])
    rng = np.random.default_rng([run_number, chunk["first"]])  # the same events on every rerun
    n = chunk["n"]
    is_z = rng.random(n) < 0.8
    mass = np.where(
        is_z,
        Z_MASS + 0.5 * Z_WIDTH * rng.standard_cauchy(n) + rng.normal(0.0, RESOLUTION, n),
        rng.uniform(40.0, 140.0, n),
    )
    selected = np.abs(mass - Z_MASS) < 10.0
    counts, _ = np.histogram(mass[selected], bins=int(HI - LO), range=(LO, HI))
    return {"events": n, "selected": int(selected.sum()), "counts": counts.tolist()}


@pw.job
def merge(parts: list[dict]) -> dict:
    """Add up the chunks: event counts, selected candidates, mass histogram; find the peak."""
    counts = np.sum([p["counts"] for p in parts], axis=0)
    centres = np.arange(len(counts)) + LO + 0.5
    top = slice(max(counts.argmax() - 3, 0), counts.argmax() + 4)  # ±3 bins around the maximum
    events = sum(p["events"] for p in parts)
    selected = sum(p["selected"] for p in parts)
    return {
        "chunks": len(parts),
        "events": events,
        "selected": selected,
        "efficiency": selected / events,
        "peak_GeV": float((centres[top] * counts[top]).sum() / counts[top].sum()),
    }


@pw.workflow
def select_z(runs: dict[str, int], max_events: int = 50_000) -> dict:
    chunks = list_chunks.submit(runs, max_events).result()  # the work items, known only now
    parts = process_chunk.map(chunks)  # fan-out: one job per chunk, one request
    total = merge.submit(parts)  # fan-in: released by the server when all parts are done
    seen = 0
    for f in pw.as_completed(parts):  # meanwhile, in the order the chunks finish
        seen += f.result()["events"]
    return {**total.result(), "events_seen_by_driver": seen}


def main() -> int:
    from pilotwave.provision.local import LocalCluster

    here = select_z(runs=RUNS)  # the same workflow, run in this process

    with tempfile.TemporaryDirectory(prefix="pilotwave-fanout-") as home:
        print("starting a server (SQLite) and 2 local pilots…")
        t0 = time.monotonic()
        with LocalCluster(Path(home), pilots=2, slots=1) as cluster:
            cluster.wait_for_pilots()
            pw.connect(cluster.url, cluster.admin_token)
            run = select_z.submit(runs=RUNS)
            print(f"submitted workflow {run.id} over {len(RUNS)} runs")
            result = run.result(timeout=120)
            status = run.status()
        jobs = Counter(
            j["name"] + (" (driver)" if j["kind"] == "driver" else "") for j in status["jobs"]
        )
        print(f"done in {time.monotonic() - t0:.1f}s")
    print("jobs:", ", ".join(f"{n} × {name}" for name, n in jobs.items()), status["counts"])

    print(f"{result['chunks']} chunks, {result['events']:,} events")
    print(
        f"{result['selected']:,} Z → μμ candidates, efficiency {100 * result['efficiency']:.1f} %, "
        f"peak at {result['peak_GeV']:.2f} GeV"
    )
    problems = []
    if result != here:
        problems.append(f"the cluster's answer {result} differs from the in-process one {here}")
    if not result["events"] == result["events_seen_by_driver"] == sum(RUNS.values()):
        problems.append(f"events processed {result['events']}, expected {sum(RUNS.values())}")
    if abs(result["peak_GeV"] - Z_MASS) > 0.5:
        problems.append(f"the peak is not at the Z mass {Z_MASS} GeV")
    print("\n".join(problems) or "cluster and in-process runs agree, and every event was processed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
