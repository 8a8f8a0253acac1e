"""What keeping users apart costs a job: the same jobs under ``--isolation none``, ``user`` and
``container``, and the same command run by bare ``podman run`` in the same run.

Each mode gets a fresh local cluster (SQLite, one pilot, one slot; ``user`` and ``container``
need root).  Timed one at a time, from the client's submit to the result in its hands:

- shell: ``pw.shell("true")``, a new process (and, under ``container``, a new container)
  for every job;
- python first: the first Python job, which starts a warm worker (in its container);
- python warm: later Python jobs, which reuse that worker.

The peer row runs ``podman run --rm`` of ``true`` in the same kind of container the pilot
starts (the host's /usr and /etc read-only), so the ``container`` row's shell time can be
read as podman's own start-up plus pilotwave's.

Run from the repository root, as root::

    .venv/bin/python bench/isolation.py --jobs 10 --repeat 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench_jobs, shipped as the sandbox
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the cluster helper

import bench_jobs
from harness import running_cluster

import pilotwave as pw
from pilotwave.pilot.isolation import ContainerIsolator


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def one_mode(isolation: str, jobs: int) -> dict[str, float]:
    def noop(i: int) -> float:
        return _time(lambda: bench_jobs.noop.submit(i).result(timeout=120))

    with (
        tempfile.TemporaryDirectory() as home,
        running_cluster(Path(home), pilots=1, slots=1, isolation=isolation),
    ):
        pw.shell("true").result(timeout=120)  # the pilot's first job: not timed
        shell = [_time(lambda: pw.shell("true").result(timeout=120)) for _ in range(jobs)]
        first = noop(0)
        warm = [noop(i) for i in range(1, jobs + 1)]
    return {"shell": statistics.median(shell), "first": first, "warm": statistics.median(warm)}


def bare_podman(jobs: int) -> float:
    with tempfile.TemporaryDirectory() as work:
        iso = ContainerIsolator(Path(work))
        iso.probe()  # picks the runtime, as the pilot does
        opts = iso.run_options(1, [])
        cmd = [*iso.podman, *opts, "--rootfs", str(iso.rootfs), "/bin/true"]
        times = [_time(lambda: subprocess.run(cmd, check=True)) for _ in range(jobs)]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10, help="timed jobs of each kind per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs (fresh clusters)")
    args = parser.parse_args()
    if shutil.which("podman") is None:
        sys.exit("podman is not installed: make tools (or apt-get install podman runc)")
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in ("none", "user", "container")}
    peer: list[float] = []
    for _ in range(args.repeat):
        for mode, results in runs.items():
            results.append(one_mode(mode, args.jobs))
        peer.append(bare_podman(args.jobs))

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):6.0f} [{min(values):.0f}–{max(values):.0f}]"

    print(f"\n{args.repeat} runs, {args.jobs} jobs of each kind per run: median ms [range of runs]")
    print(
        f"| {'isolation':<24} | {'shell job':>18} | {'python, first':>18} | {'python, warm':>18} |"
    )
    print(f"|{'-' * 26}|{'-' * 19}:|{'-' * 19}:|{'-' * 19}:|")
    for mode, results in runs.items():
        cols = [cell([r[k] for r in results]) for k in ("shell", "first", "warm")]
        print(f"| pilotwave {mode:<14} | {cols[0]:>18} | {cols[1]:>18} | {cols[2]:>18} |")
    print(f"| {'bare podman run (peer)':<24} | {cell(peer):>18} | {'':>18} | {'':>18} |")


if __name__ == "__main__":
    main()
