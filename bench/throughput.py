"""Throughput benchmark: N no-op jobs through pilotwave (SQLite, PostgreSQL) and through Dask.

For each backend it starts a pilotwave server and K local pilots with one slot each (a fresh
temporary PILOTWAVE_HOME per run; PostgreSQL is a throwaway cluster started here), submits N
no-op jobs and waits for them; then it runs the same N no-op tasks on a Dask ``LocalCluster``
with K single-threaded worker processes.  It prints one row per run and the ratio of
pilotwave jobs/s to Dask tasks/s per backend.

Run from the repository root::

    .venv/bin/python bench/throughput.py                       # 5000 jobs, 2 pilots, both DBs
    .venv/bin/python bench/throughput.py --jobs 300 --backends sqlite --skip-dask

Metrics (the timer starts when the first submit begins):

- wall s, jobs/s: N / (first submit -> last completion seen by the client).
- p50/p99 ms: client-observed latency, the same method for both systems: the start of the
  submit call that carried the job (jobs are submitted in chunks of ``SUBMIT_BATCH``) to the
  moment the client sees it complete (``pw.as_completed`` / ``distributed.as_completed``).
- srv p50/p99 ms: pilotwave only, the server's own ``finished_at - created_at`` per job.
- server MB: peak RSS of the pilotwave server process (with any children; not PostgreSQL);
  for Dask, the scheduler, which ``LocalCluster`` runs inside this benchmark process, so the
  number includes the client.
- workers MB: peak RSS of all pilot processes and their job workers / all Dask nannies and
  workers, summed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
# bench_jobs must import as a top-level module, so that its directory ships as the sandbox.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_jobs import noop, noop_plain  # noqa: E402
from stats import fmt, percentile  # noqa: E402

import pilotwave as pw  # noqa: E402
from pilotwave.provision.local import LocalCluster  # noqa: E402
from pilotwave.sdk.client import SUBMIT_BATCH  # noqa: E402
from pilotwave.store.pgcluster import PostgresCluster  # noqa: E402

MiB = 1024 * 1024
BACKENDS = ("sqlite", "postgresql")


@dataclass
class Result:
    system: str
    backend: str
    workers: int
    jobs: int
    wall_s: float
    p50_ms: float
    p99_ms: float
    server_rss_mb: float
    workers_rss_mb: float
    srv_p50_ms: float | None = None
    srv_p99_ms: float | None = None
    failed: int = 0

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s if self.wall_s > 0 else float("nan")


def chunks(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


# -- memory ------------------------------------------------------------------------------


def _tree(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes ``pids`` and all their descendants that are still alive."""
    out: list[psutil.Process] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return out


def _rss(procs: Iterable[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class PeakRss:
    """Sample the summed RSS of two process groups in a thread; keep the peaks (bytes).

    Finding descendants scans all of /proc, so the groups are re-listed only every
    ``refresh_s``; their RSS is read every ``interval_s``.
    """

    def __init__(
        self,
        server: Callable[[], list[psutil.Process]],
        workers: Callable[[], list[psutil.Process]],
        interval_s: float = 0.1,
        refresh_s: float = 1.0,
    ) -> None:
        self.list_server, self.list_workers = server, workers
        self.interval_s, self.refresh_s = interval_s, refresh_s
        self.server_peak = 0
        self.workers_peak = 0
        self._groups: tuple[list[psutil.Process], list[psutil.Process]] = ([], [])
        self._listed = -float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _sample(self, relist: bool = False) -> None:
        if relist or time.monotonic() - self._listed >= self.refresh_s:
            self._groups = (self.list_server(), self.list_workers())
            self._listed = time.monotonic()
        server, workers = self._groups
        self.server_peak = max(self.server_peak, _rss(server))
        self.workers_peak = max(self.workers_peak, _rss(workers))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._sample(relist=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(relist=True)


# -- pilotwave ---------------------------------------------------------------------------


def run_pilotwave(
    n: int, pilots: int, backend: str, db: str | None, timeout_s: float, prefetch: int
) -> Result:
    with tempfile.TemporaryDirectory(prefix="pilotwave-bench-") as home:
        cluster = LocalCluster(
            Path(home), pilots=pilots, slots=1, db=db, pilot_args=["--prefetch", str(prefetch)]
        )
        try:
            cluster.start()
            cluster.wait_for_pilots()
            pw.connect(cluster.url, cluster.admin_token)
            assert cluster.server is not None
            server_pid = cluster.server.pid
            pilot_pids = [p.pid for p in cluster.pilots]

            futures: list[pw.Future] = []
            submitted: dict[int, float] = {}
            completed: dict[int, float] = {}
            with PeakRss(lambda: _tree([server_pid]), lambda: _tree(pilot_pids)) as rss:
                t0 = time.perf_counter()
                for chunk in chunks(n, SUBMIT_BATCH):
                    t_submit = time.perf_counter()
                    batch = noop.map(chunk)
                    submitted.update((f.id, t_submit) for f in batch)
                    futures += batch
                for f in pw.as_completed(futures, timeout=timeout_s):
                    completed[f.id] = time.perf_counter()
                t_end = time.perf_counter()

            failed = sum(1 for f in futures if f.state() != "succeeded")
            client_ms = [(completed[i] - submitted[i]) * 1000 for i in submitted]
            rows = []
            client = cluster.client()
            for part in chunks(len(futures), 500):
                ids = [futures[i].id for i in part]
                rows += client.jobs(ids=ids, limit=len(ids))
            server_ms = [
                (r["finished_at"] - r["created_at"]) * 1000
                for r in rows
                if r["finished_at"] is not None
            ]
            return Result(
                system=f"pilotwave prefetch={prefetch}",
                backend=backend,
                workers=pilots,
                jobs=n,
                wall_s=t_end - t0,
                p50_ms=percentile(client_ms, 50),
                p99_ms=percentile(client_ms, 99),
                srv_p50_ms=percentile(server_ms, 50),
                srv_p99_ms=percentile(server_ms, 99),
                server_rss_mb=rss.server_peak / MiB,
                workers_rss_mb=rss.workers_peak / MiB,
                failed=failed,
            )
        finally:
            cluster.stop()


# -- Dask --------------------------------------------------------------------------------


def run_dask(n: int, workers: int, timeout_s: float) -> Result:
    from dask.distributed import Client, as_completed
    from dask.distributed import LocalCluster as DaskCluster

    me = psutil.Process()
    with (
        DaskCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as dask_cluster,
        Client(dask_cluster) as client,
    ):
        client.wait_for_workers(workers)
        futures = []
        submitted: dict[str, float] = {}
        completed: dict[str, float] = {}
        with PeakRss(lambda: [me], lambda: me.children(recursive=True)) as rss:
            t0 = time.perf_counter()
            for chunk in chunks(n, SUBMIT_BATCH):
                t_submit = time.perf_counter()
                batch = client.map(noop_plain, chunk, pure=False)
                submitted.update((f.key, t_submit) for f in batch)
                futures += batch
            for f in as_completed(futures, timeout=timeout_s):
                completed[f.key] = time.perf_counter()
            t_end = time.perf_counter()
        client.gather(futures, errors="skip")
        failed = sum(1 for f in futures if f.status != "finished")
        client_ms = [(completed[k] - submitted[k]) * 1000 for k in submitted]
        return Result(
            system="dask",
            backend="-",
            workers=workers,
            jobs=n,
            wall_s=t_end - t0,
            p50_ms=percentile(client_ms, 50),
            p99_ms=percentile(client_ms, 99),
            server_rss_mb=rss.server_peak / MiB,
            workers_rss_mb=rss.workers_peak / MiB,
            failed=failed,
        )


# -- report ------------------------------------------------------------------------------


def report(results: Sequence[Result], backends: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="no-op job throughput")
    for col in ("system", "backend", "workers", "jobs", "failed"):
        table.add_column(col)
    for col in (
        "wall s",
        "jobs/s",
        "p50 ms",
        "p99 ms",
        "srv p50 ms",
        "srv p99 ms",
        "server MB",
        "workers MB",
    ):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r.system,
            r.backend,
            str(r.workers),
            str(r.jobs),
            str(r.failed),
            f"{r.wall_s:.2f}",
            f"{r.jobs_per_s:.1f}",
            f"{r.p50_ms:.0f}",
            f"{r.p99_ms:.0f}",
            fmt(r.srv_p50_ms, ".0f"),
            fmt(r.srv_p99_ms, ".0f"),
            f"{r.server_rss_mb:.0f}",
            f"{r.workers_rss_mb:.0f}",
        )
    console = Console(width=None if sys.stdout.isatty() else 150)  # no truncation in logs
    console.print(table)
    console.print(
        "p50/p99: client-observed (submit call start -> completion seen by the client); "
        "srv: server created_at -> finished_at.\n"
        "server MB: pilotwave server process (PostgreSQL not included) / Dask scheduler, "
        "which shares this process with the client."
    )

    dask_rate = [r.jobs_per_s for r in results if r.system == "dask"]
    if not dask_rate:
        return
    d = statistics.median(dask_rate)
    systems = dict.fromkeys(r.system for r in results if r.system != "dask")
    for system in systems:
        for backend in backends:
            rates = [r.jobs_per_s for r in results if r.system == system and r.backend == backend]
            if rates:
                p = statistics.median(rates)
                console.print(
                    f"ratio {system} [{backend}] / dask: {p / d:.2f}x "
                    f"({p:.1f} jobs/s vs {d:.1f} tasks/s, median of {len(rates)} vs {len(dask_rate)})",
                    markup=False,
                )


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--jobs", type=int, default=5000, help="no-op jobs per run (default 5000)")
    ap.add_argument(
        "--pilots", type=int, default=2, help="local pilots = Dask worker processes (default 2)"
    )
    ap.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated: sqlite,postgresql (default both)",
    )
    ap.add_argument(
        "--prefetch",
        default="16,0",
        help="comma-separated pilot --prefetch values to run (default 16,0: the default, and off)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs of each system (default 1)")
    ap.add_argument("--skip-dask", action="store_true", help="do not run the Dask comparison")
    ap.add_argument(
        "--timeout", type=float, default=1800.0, help="give up waiting on one run after S seconds"
    )
    args = ap.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.prefetch = [int(p) for p in args.prefetch.split(",") if p.strip()]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backend(s) {', '.join(sorted(unknown))}; choose from {BACKENDS}")
    if args.jobs < 1 or args.pilots < 1 or args.repeat < 1:
        ap.error("--jobs, --pilots and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[Result] = []
    pg = PostgresCluster().start() if "postgresql" in args.backends else None
    try:
        for rep in range(args.repeat):
            for backend in args.backends:
                for prefetch in args.prefetch:
                    db = pg.new_database() if backend == "postgresql" and pg else None
                    print(
                        f"[{rep + 1}/{args.repeat}] pilotwave {backend} prefetch={prefetch} ...",
                        flush=True,
                    )
                    results.append(
                        run_pilotwave(args.jobs, args.pilots, backend, db, args.timeout, prefetch)
                    )
            if not args.skip_dask:
                print(f"[{rep + 1}/{args.repeat}] dask ...", flush=True)
                results.append(run_dask(args.jobs, args.pilots, args.timeout))
    finally:
        if pg is not None:
            pg.stop()
    report(results, args.backends)
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
