"""Workflow hop latency: how long a finished job takes to start the job that depends on it.

Three graphs of trivial jobs (``bench/latency_jobs.py``), on pilotwave (SQLite, PostgreSQL)
and on Dask in the same run:

- chain: N jobs, each taking the previous one's result as its argument.  On pilotwave a
  future passed as an argument is a server-side dependency: the server releases the next
  job in the transaction that records the previous one's success.
- fan-out/fan-in: a root, W branches that each take the root's result, and a sink that
  takes the list of all W results.
- chain, driver loop: the chain written as ``v = inc.submit(v).result()`` in a loop inside a
  ``@pw.workflow`` (on Dask: a task that submits the next task through ``worker_client()``).
  Each hop goes through the workflow's code: job finished -> driver woken -> driver submits
  the next job -> a pilot claims it.

The chain and the fan-out hang from a *gate* job that waits for a file to appear: once a
pilot runs the gate, the whole graph is submitted, then the gate opens, so that no hop waits
for its job to be submitted.  Pilots and Dask workers are warmed up with a few jobs before
anything is timed; each system gets K workers (pilots with one slot each / single-threaded
worker processes).  A fresh cluster (and database) serves each repetition.

Every job records ``time.time()`` when its body begins and ends, and returns both.  Metrics:

- hop ms: the dependent job's body began - the upstream job's body ended, for each edge:
  the N-1 links of a chain; for the fan-out, each of the W branches after the root plus the
  sink after the last branch (so with W >> K its percentiles are mostly the queue of
  branches waiting for a free worker; ``first`` and ``fan-in`` show the single hops).
  The same method on both systems.
- srv hop ms (pilotwave): the same edge from the server's own records, the dependent's claim
  (``started_at`` of its first attempt) - the upstream's recorded success (``finished_at``).
- where a hop goes (pilotwave, p50 of each leg), cut at the server's timestamps, which are
  taken when a write transaction begins: report (upstream body ended -> the transaction
  recording its success begins), driver (-> the driver's next job is submitted; driver loop
  only), claim (-> the transaction that claims the dependent begins: 0 when the report and
  the claim share one), dispatch (-> the dependent's body begins: that transaction's work,
  including releasing dependents, the reply, and the pilot starting the job in a warm worker).
- wall s: gate opened (chain, fan-out) or workflow submitted (driver loop) -> the final
  result is in the client's hands.
- report >= 10 ms (pilotwave): the share of hops whose report leg took 10 ms or more.

After the tables, one line per graph and system lists each run's wall time and hop p50, and
a run much slower than the others is taken apart (before its first job, its largest hop
with its legs, after its last job, and the gate's own times).

Run from the repository root::

    .venv/bin/python bench/latency.py --repeat 3 --backends sqlite,postgresql   # and Dask
    .venv/bin/python bench/latency.py --backends sqlite --chain 50 --width 200 --skip-dask
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
# latency_jobs must import as a top-level module, so that its directory ships as the sandbox.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import latency_jobs as lj  # noqa: E402
from stats import fmt, percentile  # noqa: E402

import pilotwave as pw  # noqa: E402
from pilotwave.provision.local import LocalCluster  # noqa: E402
from pilotwave.store.pgcluster import PostgresCluster  # noqa: E402

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

BACKENDS = ("sqlite", "postgresql")
CHAIN, FAN, LOOP = "chain", "fan-out/in", "chain, driver loop"
GRAPHS = (CHAIN, FAN, LOOP)
IDS_PER_LIST = 500  # job ids per listing request (they travel in the query string)
GATE_CHECK_S = 0.005
SLOW_REPORT_MS = 10.0


@dataclass(frozen=True)
class Timing:
    """One job's clocks (``time.time()`` seconds): its body's, and the server's records."""

    body_start: float
    body_end: float
    created: float | None = None  # submitted
    claimed: float | None = None  # its first attempt was claimed
    recorded: float | None = None  # its success was recorded


@dataclass(frozen=True)
class Hop:
    """One edge of a graph: the upstream job and the job it released."""

    up: Timing
    down: Timing

    @property
    def ms(self) -> float:
        return (self.down.body_start - self.up.body_end) * 1000

    def srv_ms(self) -> float | None:
        if self.down.claimed is None or self.up.recorded is None:
            return None
        return (self.down.claimed - self.up.recorded) * 1000

    def legs_ms(self) -> dict[str, float] | None:
        """The hop split at the server's records: report, driver, claim, dispatch."""
        up, down = self.up, self.down
        if up.recorded is None or down.claimed is None or down.created is None:
            return None
        submitted = max(up.recorded, down.created)  # a dependency was submitted long before
        return {
            "report": (up.recorded - up.body_end) * 1000,
            "driver": (submitted - up.recorded) * 1000,
            "claim": (down.claimed - submitted) * 1000,
            "dispatch": (down.body_start - down.claimed) * 1000,
        }


@dataclass
class Result:
    graph: str
    system: str
    backend: str
    jobs: int
    started: float  # time.time(): the gate opened / the workflow was submitted
    seen: float  # time.time(): the final result is in the client's hands
    submit_s: float | None
    hops: list[Hop] = field(repr=False)
    fan_in: Hop | None = None
    retried: int = 0
    gate: Timing | None = None  # pilotwave: the gate job, with the server's records

    @property
    def wall_s(self) -> float:
        return self.seen - self.started

    @property
    def lead_ms(self) -> float:
        """Start -> the first job's body began (the gate's hop, or starting the driver)."""
        return (self.hops[0].up.body_start - self.started) * 1000

    @property
    def tail_ms(self) -> float:
        """The last job's body ended -> its result is in the client's hands."""
        last = self.fan_in.down if self.fan_in else self.hops[-1].down
        return (self.seen - last.body_end) * 1000

    @property
    def hop_ms(self) -> list[float]:
        return [h.ms for h in self.hops]

    @property
    def srv_ms(self) -> list[float]:
        return [x for x in (h.srv_ms() for h in self.hops) if x is not None]

    def leg_p50(self, leg: str) -> float | None:
        legs = [x[leg] for x in (h.legs_ms() for h in self.hops) if x is not None]
        return percentile(legs, 50) if legs else None


def body(stamp: Sequence[float]) -> Timing:
    return Timing(body_start=stamp[1], body_end=stamp[2])


def chain_hops(timings: Sequence[Timing]) -> list[Hop]:
    return [Hop(a, b) for a, b in itertools.pairwise(timings)]


def fan_hops(root: Timing, mids: Sequence[Timing], sink: Timing) -> tuple[list[Hop], Hop]:
    last = max(mids, key=lambda t: t.body_end)
    fan_in = Hop(last, sink)
    return [*(Hop(root, m) for m in mids), fan_in], fan_in


# -- pilotwave ---------------------------------------------------------------------------


class PilotwaveRunner:
    """Runs the three graphs on one cluster; the server's records complete each job's timing."""

    def __init__(self, cluster: LocalCluster, backend: str, timeout_s: float) -> None:
        self.cluster = cluster
        self.client = cluster.client()
        self.backend = backend
        self.timeout_s = timeout_s
        self.gates = 0

    def warm_up(self, pilots: int) -> None:
        # Drivers first: a pilot keeps only ``slots`` idle workers, so a driver that ends
        # may push out the job worker; the job workers are started last.
        runs = [lj.loop.submit(n=1) for _ in range(pilots)]
        for run in runs:
            run.result(timeout=self.timeout_s)
        pw.wait(lj.warm.map(range(2 * pilots)), timeout=self.timeout_s)

    def _gate(self) -> tuple[pw.Future, Path]:
        """Submit the gate and wait until a pilot runs it, before the graph is submitted.

        On PostgreSQL, submitting a dependent of a job that is still queued can hide that
        job from the pilots until their long-poll ends (a missed wake-up, about 20 s; see
        ``docs/benchmarks.md``); a gate that already runs cannot be hidden.
        """
        self.gates += 1
        path = self.cluster.home / f"gate-{self.gates}"
        gate = lj.gate.submit(str(path), self.timeout_s)
        deadline = time.monotonic() + self.timeout_s
        while self.client.job(gate.id)["state"] == "queued":
            if time.monotonic() > deadline:
                raise TimeoutError(f"no pilot took the gate job {gate.id}")
            time.sleep(GATE_CHECK_S)
        return gate, path

    def _server(self, futures: Sequence[pw.Future]) -> tuple[list[Timing], int]:
        """Each job's timing: its body's (from its result) and the server's; and how many retried."""
        ids = [f.id for f in futures]
        rows: dict[int, dict[str, Any]] = {}
        for i in range(0, len(ids), IDS_PER_LIST):
            part = ids[i : i + IDS_PER_LIST]
            rows.update((r["id"], r) for r in self.client.jobs(ids=part, limit=len(part)))
        out: list[Timing] = []
        retried = 0
        for f in futures:
            r = rows[f.id]
            claimed = r["started_at"]  # the latest attempt's claim; a hop ends at the first
            if r["attempts"] != 1:
                retried += 1
                claimed = self.client.job(f.id)["attempt_history"][0]["started_at"]
            stamp = f.result()
            out.append(Timing(stamp[1], stamp[2], r["created_at"], claimed, r["finished_at"]))
        return out, retried

    def chain(self, n: int) -> Result:
        g, path = self._gate()
        t0 = time.perf_counter()
        futures = [lj.inc.submit(g)]
        for _ in range(n - 1):
            futures.append(lj.inc.submit(futures[-1]))
        submit_s = time.perf_counter() - t0
        path.touch()
        started = time.time()
        futures[-1].result(timeout=self.timeout_s)
        seen = time.time()
        pw.wait(futures, timeout=self.timeout_s)
        (gate, *timings), retried = self._server([g, *futures])
        return Result(
            CHAIN,
            "pilotwave",
            self.backend,
            n,
            started,
            seen,
            submit_s,
            chain_hops(timings),
            retried=retried,
            gate=gate,
        )

    def fan(self, width: int) -> Result:
        g, path = self._gate()
        t0 = time.perf_counter()
        root = lj.make.submit(g)
        mids = lj.work.map([root] * width, range(width))
        sink = lj.total.submit(mids)
        submit_s = time.perf_counter() - t0
        path.touch()
        started = time.time()
        sink.result(timeout=self.timeout_s)
        seen = time.time()
        futures = [root, *mids, sink]
        pw.wait(futures, timeout=self.timeout_s)
        (gate, *timings), retried = self._server([g, *futures])
        hops, fan_in = fan_hops(timings[0], timings[1:-1], timings[-1])
        return Result(
            FAN,
            "pilotwave",
            self.backend,
            width + 2,
            started,
            seen,
            submit_s,
            hops,
            fan_in,
            retried,
            gate,
        )

    def loop(self, n: int) -> Result:
        started = time.time()
        run = lj.loop.submit(n=n)
        run.result(timeout=self.timeout_s)
        seen = time.time()
        status = self.client.workflow(run.id)
        ids = [j["id"] for j in status["jobs"] if j["kind"] == "python"]
        if len(ids) != n:  # the status lists a workflow's first 1000 jobs
            raise RuntimeError(f"workflow {run.id} lists {len(ids)} jobs, expected {n}")
        futures = [pw.Future(i, self.client, "inc") for i in ids]
        pw.wait(futures, timeout=self.timeout_s)
        timings, retried = self._server(futures)
        return Result(
            LOOP,
            "pilotwave",
            self.backend,
            n,
            started,
            seen,
            None,
            chain_hops(timings),
            retried=retried,
        )


def run_pilotwave(
    graphs: Sequence[str], args: argparse.Namespace, backend: str, db: str | None
) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="pilotwave-latency-") as home:
        cluster = LocalCluster(Path(home), pilots=args.pilots, slots=1, db=db)
        try:
            cluster.start()
            cluster.wait_for_pilots()
            pw.connect(cluster.url, cluster.admin_token)
            runner = PilotwaveRunner(cluster, backend, args.timeout)
            runner.warm_up(args.pilots)
            return [_run_graph(runner, g, args) for g in graphs]
        finally:
            cluster.stop()


def _run_graph(
    runner: PilotwaveRunner | DaskRunner, graph: str, args: argparse.Namespace
) -> Result:
    runs: dict[str, Callable[[], Result]] = {
        CHAIN: lambda: runner.chain(args.chain),
        FAN: lambda: runner.fan(args.width),
        LOOP: lambda: runner.loop(args.chain),
    }
    return runs[graph]()


# -- Dask --------------------------------------------------------------------------------


class DaskRunner:
    """The same graphs as plain Dask tasks; timings from the task bodies only."""

    def __init__(self, client: Any, gate_dir: Path, timeout_s: float) -> None:
        self.client = client
        self.gate_dir = gate_dir
        self.timeout_s = timeout_s
        self.gates = 0

    def warm_up(self, workers: int) -> None:
        self.client.gather(self.client.map(lj.warm_plain, range(2 * workers), pure=False))

    def _gate(self) -> tuple[Any, Path]:
        self.gates += 1
        path = self.gate_dir / f"gate-{self.gates}"
        return self.client.submit(lj.gate_plain, str(path), self.timeout_s, pure=False), path

    def chain(self, n: int) -> Result:
        g, path = self._gate()
        t0 = time.perf_counter()
        futures = [self.client.submit(lj.inc_plain, g, pure=False)]
        for _ in range(n - 1):
            futures.append(self.client.submit(lj.inc_plain, futures[-1], pure=False))
        submit_s = time.perf_counter() - t0
        path.touch()
        started = time.time()
        futures[-1].result(timeout=self.timeout_s)
        seen = time.time()
        timings = [body(s) for s in self.client.gather(futures)]
        return Result(CHAIN, "dask", "-", n, started, seen, submit_s, chain_hops(timings))

    def fan(self, width: int) -> Result:
        g, path = self._gate()
        t0 = time.perf_counter()
        root = self.client.submit(lj.make_plain, g, pure=False)
        mids = self.client.map(lj.work_plain, [root] * width, range(width), pure=False)
        sink = self.client.submit(lj.total_plain, mids, pure=False)
        submit_s = time.perf_counter() - t0
        path.touch()
        started = time.time()
        sink.result(timeout=self.timeout_s)
        seen = time.time()
        timings = [body(s) for s in self.client.gather([root, *mids, sink])]
        hops, fan_in = fan_hops(timings[0], timings[1:-1], timings[-1])
        return Result(FAN, "dask", "-", width + 2, started, seen, submit_s, hops, fan_in)

    def loop(self, n: int) -> Result:
        started = time.time()
        stamps = self.client.submit(lj.loop_plain, n, pure=False).result(timeout=self.timeout_s)
        seen = time.time()
        hops = chain_hops([body(s) for s in stamps])
        return Result(LOOP, "dask", "-", n, started, seen, None, hops)


def run_dask(graphs: Sequence[str], args: argparse.Namespace) -> list[Result]:
    from dask.distributed import Client
    from dask.distributed import LocalCluster as DaskCluster

    with (
        tempfile.TemporaryDirectory(prefix="dask-latency-") as gate_dir,
        DaskCluster(
            n_workers=args.pilots,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as dask_cluster,
        Client(dask_cluster) as client,
    ):
        client.wait_for_workers(args.pilots)
        runner = DaskRunner(client, Path(gate_dir), args.timeout)
        runner.warm_up(args.pilots)
        return [_run_graph(runner, g, args) for g in graphs]


# -- report ------------------------------------------------------------------------------

LEGS = ("report", "driver", "claim", "dispatch")


def figures(r: Result) -> dict[str, float | None]:
    """One run's numbers, by column."""
    hops = r.hop_ms
    srv = r.srv_ms
    released = [h.ms for h in r.hops if h is not r.fan_in]  # the fan-in is no release hop
    out: dict[str, float | None] = {
        "wall": r.wall_s,
        "submit": r.submit_s,
        "p50": percentile(hops, 50),
        "p99": percentile(hops, 99),
        "first": min(released),
        "srv_p50": percentile(srv, 50) if srv else None,
        "srv_p99": percentile(srv, 99) if srv else None,
        "fan_in": r.fan_in.ms if r.fan_in else None,
    }
    out.update((leg, r.leg_p50(leg)) for leg in LEGS)
    reports = [x["report"] for x in (h.legs_ms() for h in r.hops) if x is not None]
    out["slow_reports"] = (
        100 * sum(1 for x in reports if x >= SLOW_REPORT_MS) / len(reports) if reports else None
    )
    return out


def medians(results: Sequence[Result]) -> dict[str, float | None]:
    """Each column's median over repeated runs of one graph on one system."""
    runs = [figures(r) for r in results]
    out: dict[str, float | None] = {}
    for key in runs[0]:
        values = [v for v in (f[key] for f in runs) if v is not None]
        out[key] = statistics.median(values) if values else None
    return out


def _ms(x: float | None) -> str:
    return "-" if x is None else format(x, ".1f" if abs(x) < 100 else ".0f")


Group = tuple[str, str, str]  # backend ("-" for Dask), graph, system


def report(results: Sequence[Result], backends: Sequence[str]) -> None:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 180)  # no truncation in logs
    groups: dict[Group, list[Result]] = {}
    for r in results:
        groups.setdefault((r.backend, r.graph, r.system), []).append(r)
    med = {k: medians(v) for k, v in groups.items()}
    n_runs = max(len(v) for v in groups.values())
    jobs = {r.graph: r.jobs for r in results}
    for backend in backends:
        console.print(_hop_table(backend, med, jobs, n_runs))
    console.print(_legs_table(backends, med))
    _print_runs(console, groups, results)


def _hop_table(
    backend: str, med: dict[Group, dict[str, float | None]], jobs: dict[str, int], n_runs: int
) -> Table:
    from rich.table import Table

    table = Table(title=f"workflow hop latency, pilotwave on {backend} (median of {n_runs})")
    for col in ("graph", "system", "jobs"):
        table.add_column(col)
    for col in (
        "wall s",
        "hop p50 ms",
        "hop p99 ms",
        "first ms",
        "fan-in ms",
        "srv hop p50",
        "srv hop p99",
        "Dask÷pw wall",
        "Dask÷pw hop p50",
    ):
        table.add_column(col, justify="right")
    for graph in GRAPHS:
        pwm = med.get((backend, graph, "pilotwave"))
        dm = med.get(("-", graph, "dask"))
        for system, m in (("pilotwave", pwm), ("dask", dm)):
            if m is None:
                continue
            ratio_wall = ratio_hop = None
            if system == "pilotwave" and pwm is not None and dm is not None:
                ratio_wall = _ratio(dm["wall"], pwm["wall"])
                ratio_hop = _ratio(dm["p50"], pwm["p50"])
            table.add_row(
                graph,
                system,
                str(jobs.get(graph, 0)),
                fmt(m["wall"], ".2f"),
                _ms(m["p50"]),
                _ms(m["p99"]),
                _ms(m["first"]),
                _ms(m["fan_in"]),
                _ms(m["srv_p50"]),
                _ms(m["srv_p99"]),
                fmt(ratio_wall, ".2f"),
                fmt(ratio_hop, ".2f"),
            )
    return table


def _legs_table(backends: Sequence[str], med: dict[Group, dict[str, float | None]]) -> Table:
    from rich.table import Table

    legs = Table(title="where a pilotwave hop goes: p50 of each leg, ms (median of runs)")
    for col in ("backend", "graph"):
        legs.add_column(col)
    for col in (*LEGS, "hop p50", f"report ≥{SLOW_REPORT_MS:g} ms", "submit s"):
        legs.add_column(col, justify="right")
    for backend in backends:
        for graph in GRAPHS:
            m = med.get((backend, graph, "pilotwave"))
            if m is not None:
                legs.add_row(
                    backend,
                    graph,
                    *(_ms(m[leg]) for leg in LEGS),
                    _ms(m["p50"]),
                    fmt(m["slow_reports"], ".0f") + " %",
                    fmt(m["submit"], ".2f"),
                )
    return legs


def _print_runs(
    console: Console, groups: dict[Group, list[Result]], results: Sequence[Result]
) -> None:
    """Each run's wall time and hop p50, the anatomy of a slow run, and gates that waited."""
    for (backend, graph, system), runs in groups.items():
        if len(runs) > 1:
            where = system if system == "dask" else f"{system} [{backend}]"
            walls = "/".join(f"{r.wall_s:.2f}" for r in runs)
            p50s = "/".join(_ms(percentile(r.hop_ms, 50)) for r in runs)
            line = f"runs of {graph}, {where}: wall {walls} s, hop p50 {p50s} ms"
            if system != "dask":
                slow = "/".join(fmt(figures(r)["slow_reports"], ".0f") for r in runs)
                line += f", report ≥{SLOW_REPORT_MS:g} ms {slow} %"
            console.print(line, markup=False)
            typical = statistics.median(r.wall_s for r in runs)
            for k, r in enumerate(runs):
                if r.wall_s > 1.5 * typical:
                    console.print(f"  run {k + 1} was slow: {anatomy(r)}", markup=False)
    for r in results:
        g = r.gate
        if g is None or g.claimed is None or g.created is None:
            continue
        if g.claimed - g.created > 1.0:
            console.print(
                f"{r.graph} [{r.backend}]: the gate job waited {g.claimed - g.created:.1f} s "
                "for a pilot (the graph was submitted once it ran; wall time excludes this)",
                markup=False,
            )
    retried = sum(r.retried for r in results)
    console.print(
        "hop: dependent's body began - upstream's body ended (time.time() in the jobs). "
        "srv hop: server claim - server's record of the upstream's success.\n"
        "first: smallest hop (for the fan-out: root -> first branch). fan-in: last branch -> sink. "
        "wall: gate opened / workflow submitted -> final result in the client."
        + (f"\n{retried} job(s) needed more than one attempt." if retried else "")
    )


def anatomy(r: Result) -> str:
    """Where a run's wall time went: before the first job, its largest hop, after the last."""
    worst = max(r.hops, key=lambda h: h.ms)
    out = (
        f"wall {r.wall_s:.2f} s: start -> first job {_ms(r.lead_ms)} ms, largest hop "
        f"{_ms(worst.ms)} ms{_legs(worst)}, last job -> client {_ms(r.tail_ms)} ms"
    )
    g = r.gate
    if g is not None and g.created is not None and g.claimed is not None:
        first = Hop(g, r.hops[0].up)
        out += (
            f"; gate: submitted -> claimed {_ms((g.claimed - g.created) * 1000)} ms, "
            f"opened -> its body ended {_ms((g.body_end - r.started) * 1000)} ms, "
            f"gate -> first job {_ms(first.ms)} ms{_legs(first)}"
        )
    return out


def _legs(hop: Hop) -> str:
    legs = hop.legs_ms()
    return "" if legs is None else " (" + ", ".join(f"{k} {_ms(v)}" for k, v in legs.items()) + ")"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--pilots", type=int, default=2, help="local pilots = Dask worker processes (default 2)"
    )
    ap.add_argument("--chain", type=int, default=200, help="jobs in each chain (default 200)")
    ap.add_argument("--width", type=int, default=2000, help="fan-out branches (default 2000)")
    ap.add_argument(
        "--backends",
        default="sqlite",
        help="comma-separated: sqlite,postgresql (default sqlite)",
    )
    ap.add_argument(
        "--graphs",
        default="chain,fan,loop",
        help="comma-separated: chain,fan,loop (default all three)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs of each system (default 1)")
    ap.add_argument("--skip-dask", action="store_true", help="do not run the Dask comparison")
    ap.add_argument(
        "--timeout", type=float, default=600.0, help="give up waiting on one graph after S seconds"
    )
    args = ap.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backend(s) {', '.join(sorted(unknown))}; choose from {BACKENDS}")
    names = {"chain": CHAIN, "fan": FAN, "loop": LOOP}
    picked = [g.strip() for g in args.graphs.split(",") if g.strip()]
    if not picked or set(picked) - set(names):
        ap.error(f"--graphs takes a comma-separated list of {', '.join(names)}")
    args.graphs = [names[g] for g in names if g in picked]
    if args.chain < 2 or args.width < 1 or args.pilots < 1 or args.repeat < 1:
        ap.error("--chain must be at least 2; --width, --pilots and --repeat at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[Result] = []
    pg = PostgresCluster().start() if "postgresql" in args.backends else None
    try:
        for rep in range(args.repeat):
            for backend in args.backends:
                db = pg.new_database() if backend == "postgresql" and pg else None
                print(f"[{rep + 1}/{args.repeat}] pilotwave {backend} ...", flush=True)
                results += run_pilotwave(args.graphs, args, backend, db)
            if not args.skip_dask:
                print(f"[{rep + 1}/{args.repeat}] dask ...", flush=True)
                results += run_dask(args.graphs, args)
    finally:
        if pg is not None:
            pg.stop()
    report(results, args.backends)
    return 0


if __name__ == "__main__":
    sys.exit(main())
