"""Does one user's heavy request stall everybody else's?  /health latency on SQLite while one
client submits 10 000 jobs, watches 1 000 000 ids, cancels 10 000 jobs, lists 10 000 jobs.

A real server (``pilotwave server`` on SQLite, no pilots, a fresh temporary home per run) is
probed by a thread that sends ``GET /api/v1/health`` back to back on one keep-alive
connection, while another thread sends one heavy request as a user:

- submit 10k: ``POST /api/v1/jobs`` with 10 000 shell jobs (one batch, the largest allowed);
- watch 1M: ``POST /api/v1/jobs/watch`` over the ids 1..1 000 000 with ``timeout_s=0`` (the
  largest watch allowed; most of those ids do not exist, so it answers 404 after looking
  them all up, which costs the server the same reads);
- cancel 10k: ``POST /api/v1/jobs/cancel`` for the 10 000 jobs just submitted;
- list 10k: ``GET /api/v1/jobs?limit=10000``.

For each, the table gives the heavy request's own time and the /health probes that overlapped
it: how many, their median and their maximum latency.  "idle" is the probe alone.  With
``--repeat`` each run is a fresh server; the summary gives the median and range over runs.

Run from the repository root::

    .venv/bin/python bench/health_stall.py --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from stats import percentile  # noqa: E402

from pilotwave.provision.local import LocalCluster  # noqa: E402

SHELL = {"kind": "shell", "argv": ["true"]}
SCENARIOS = ("idle", "submit 10k", "watch 1M", "cancel 10k", "list 10k")


@dataclass
class Row:
    run: int
    scenario: str
    heavy_s: float
    status: int
    probes: int
    p50_ms: float
    max_ms: float


class Prober:
    """``GET /api/v1/health`` back to back in a thread; keeps (start, seconds) of each."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=120)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            self.client.get("/api/v1/health").raise_for_status()
            self.samples.append((t0, time.perf_counter() - t0))
            time.sleep(0.002)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def during(self, start: float, end: float) -> list[float]:
        """Latencies (s) of the probes in flight at some time in [start, end] (once the probe
        in flight at ``end`` has come back)."""
        while not any(t0 > end for t0, _ in list(self.samples)):
            time.sleep(0.01)
        return [d for t0, d in list(self.samples) if t0 <= end and t0 + d >= start]


def measure(run: int, name: str, prober: Prober, heavy: Callable[[], httpx.Response] | None) -> Row:
    time.sleep(0.3)  # a few probes before, so the prober is warm
    start = time.perf_counter()
    status = 0
    if heavy is None:
        time.sleep(1.0)
    else:
        status = heavy().status_code
    end = time.perf_counter()
    lat = prober.during(start, end)
    return Row(
        run,
        name,
        end - start,
        status,
        len(lat),
        percentile(lat, 50) * 1000,
        max(lat, default=float("nan")) * 1000,
    )


def one_run(run: int, home: Path) -> list[Row]:
    with LocalCluster(home, pilots=0) as cluster:
        admin = httpx.Client(
            base_url=cluster.url, headers={"authorization": f"Bearer {cluster.admin_token}"}
        )
        admin.post("/api/v1/admin/users", json={"name": "heavy"}).raise_for_status()
        token = admin.post("/api/v1/admin/tokens", json={"user": "heavy"}).json()["token"]
        admin.close()
        user = httpx.Client(
            base_url=cluster.url, headers={"authorization": f"Bearer {token}"}, timeout=600
        )
        ids: list[int] = []

        def submit() -> httpx.Response:
            r = user.post("/api/v1/jobs", json={"jobs": [SHELL] * 10_000})
            ids[:] = r.json()["ids"]
            return r

        def watch() -> httpx.Response:
            body = {"ranges": [[1, 1_000_000]], "timeout_s": 0}
            return user.post("/api/v1/jobs/watch", json=body)

        heavies: dict[str, Callable[[], httpx.Response] | None] = {
            "idle": None,
            "submit 10k": submit,
            "watch 1M": watch,
            "cancel 10k": lambda: user.post("/api/v1/jobs/cancel", json={"ids": ids}),
            "list 10k": lambda: user.get("/api/v1/jobs", params={"limit": 10_000}),
        }
        user.post("/api/v1/jobs", json={"jobs": [SHELL] * 100}).raise_for_status()  # warm up
        with Prober(cluster.url) as prober:
            rows = [measure(run, name, prober, heavies[name]) for name in SCENARIOS]
        user.close()
        return rows


def print_rows(rows: list[Row]) -> None:
    print(
        f"{'run':>3} {'scenario':<11} {'status':>6} {'heavy s':>8} {'probes':>6} "
        f"{'health p50 ms':>13} {'health max ms':>13}"
    )
    for r in rows:
        print(
            f"{r.run:>3} {r.scenario:<11} {r.status:>6} {r.heavy_s:>8.2f} {r.probes:>6} "
            f"{r.p50_ms:>13.1f} {r.max_ms:>13.1f}"
        )


def print_summary(rows: list[Row]) -> None:
    print("\nmedian over runs [min-max]")
    print(f"{'scenario':<11} {'heavy s':>18} {'health p50 ms':>20} {'health max ms':>22}")

    def cell(xs: list[float], spec: str) -> str:
        return f"{statistics.median(xs):{spec}} [{min(xs):{spec}}-{max(xs):{spec}}]"

    for name in SCENARIOS:
        rs = [r for r in rows if r.scenario == name]
        print(
            f"{name:<11} {cell([r.heavy_s for r in rs], '.2f'):>18} "
            f"{cell([r.p50_ms for r in rs], '.1f'):>20} {cell([r.max_ms for r in rs], '.0f'):>22}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh servers, one run each")
    args = parser.parse_args()
    rows: list[Row] = []
    for run in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="pw-stall-") as tmp:
            rows += one_run(run, Path(tmp) / "home")
    print_rows(rows)
    print_summary(rows)


if __name__ == "__main__":
    main()
