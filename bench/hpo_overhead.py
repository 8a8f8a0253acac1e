"""HPO overhead: how much of 8 workers' time an ``hpo.optimize`` study keeps busy, and its gaps.

``--trials`` trials (default 200) of an objective that sleeps ``--pause`` s (default 0.5;
``fixed_sleep`` in ``bench/hpo_problems.py``), ``parallel=8`` on 2 local pilots x 4 slots,
once with the random sampler and once with TPE (constant liar, the default); then the same
objective driven in this process by Optuna's ``study.optimize(n_jobs=8)`` (threads: an
ideal-case peer with no network, no database and no separate processes).  A warm-up study
starts the pilots' workers first.

Metrics (``time.time()`` everywhere; one machine, one clock):

- wall s: ``optimize.submit`` -> the result in the client's hands (peer: the ``optimize``
  call); ideal s = trials x pause / slots; lead s: submit -> first objective body began;
  tail s: last body ended -> result in hand.
- util %: the share of the slots' time spent inside the objective: sum of body times /
  (slots x (last body end - first body start)).  srv util %: the same from the server's
  records of the trial jobs (``started_at`` = claim, ``finished_at`` = success recorded).
- gap ms (p50/p95): for each trial after the first ``parallel`` (in start order), its start
  minus the latest end before it: bodies (gap) or the server's records (srv gap).
- where a gap goes (pilotwave, p50 of each leg, ms), pairing each trial with the trial whose
  recorded success came last before it was submitted: report (that body ended -> its success
  recorded), driver (-> the next trial submitted: the driver is woken, tells the study, asks
  for a point and submits), claim (-> a pilot claims it), dispatch (-> its body begins);
  turnaround, their sum, is how long the slot the finished trial freed stood idle (the gap
  above takes the latest end on *any* slot, so with 8 slots it understates a slot's idle).

Run from the repository root::

    .venv/bin/python bench/hpo_overhead.py                       # 200 x 0.5 s, random and TPE
    .venv/bin/python bench/hpo_overhead.py --trials 400 --pause 0.1 --samplers tpe
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# hpo_problems must import as a top-level module, so that its directory ships as the sandbox.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import hpo_problems as hp  # noqa: E402
from stats import fmt, percentile  # noqa: E402

import pilotwave as pw  # noqa: E402
from pilotwave import hpo  # noqa: E402
from pilotwave.provision.local import LocalCluster  # noqa: E402
from pilotwave.sdk.client import Client  # noqa: E402
from pilotwave.store.pgcluster import PostgresCluster  # noqa: E402

BACKENDS = ("sqlite", "postgresql")
IDS_PER_LIST = 500  # job ids per listing request (they travel in the query string)
LEGS = ("report", "driver", "claim", "dispatch")


# -- a local cluster ----------------------------------------------------------------------


@contextmanager
def local_cluster(
    pilots: int, slots: int, backend: str, prefetch: int | None = None
) -> Iterator[LocalCluster]:
    """A server (SQLite, or a throwaway PostgreSQL) and ``pilots`` pilots, the SDK connected."""
    # A job asks for one core, and a pilot runs no more jobs at once than the cores it
    # offers: offer one per slot (the objectives sleep), or 2 cores would cap 4 slots at 2.
    pilot_args = ["--cores", str(slots)]
    if prefetch is not None:
        pilot_args += ["--prefetch", str(prefetch)]
    pg = PostgresCluster().start() if backend == "postgresql" else None
    try:
        with tempfile.TemporaryDirectory(prefix="pilotwave-hpo-") as home:
            db = pg.new_database() if pg is not None else None
            cluster = LocalCluster(
                Path(home), pilots=pilots, slots=slots, db=db, pilot_args=pilot_args
            )
            try:
                cluster.start()
                cluster.wait_for_pilots()
                pw.connect(cluster.url, cluster.admin_token)
                yield cluster
            finally:
                cluster.stop()
    finally:
        if pg is not None:
            pg.stop()


def warm_up(slots: int, pause_s: float, timeout_s: float) -> None:
    """A short study, so that every slot has a warm worker and the pilots have seen jobs of
    the length to come (a pilot holds jobs ahead of its free slots while recent jobs are short).
    """
    run = hpo.optimize.submit(
        objective=hp.fixed_sleep,
        space=sleep_space(pause_s),
        n_trials=2 * slots,
        parallel=slots,
        sampler="random",
    )
    run.result(timeout=timeout_s)


# -- one study's timings ------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One trial's clocks: its objective body's, and (pilotwave) the server's records of its job."""

    body_start: float
    body_end: float
    created: float | None = None  # the trial's job was submitted
    claimed: float | None = None  # a pilot claimed it (its latest attempt)
    recorded: float | None = None  # its success was recorded


@dataclass
class StudyRun:
    """A pilotwave study as the client saw it: wall clock, result, and each trial's clocks."""

    submitted: float
    seen: float
    result: dict[str, Any]
    spans: list[Span]
    retried: int = 0

    @property
    def wall_s(self) -> float:
        return self.seen - self.submitted


def run_study(timeout_s: float, **kwargs: Any) -> StudyRun:
    """Submit ``hpo.optimize(**kwargs)``, wait for its result and read its trials' clocks."""
    submitted = time.time()
    run = hpo.optimize.submit(**kwargs)
    result = run.result(timeout=timeout_s)
    seen = time.time()
    trials = [t for seg in studies(result).values() for t in seg["trials"]]
    assert run.client is not None
    rows = job_rows(run.client, [t["job"] for t in trials])
    spans = []
    for t in trials:
        if t["state"] != "complete":
            continue
        r = rows[t["job"]]
        m = t["metrics"]
        spans.append(Span(m["start"], m["end"], r["created_at"], r["started_at"], r["finished_at"]))
    retried = sum(1 for t in trials if rows[t["job"]]["attempts"] != 1)
    return StudyRun(submitted, seen, result, spans, retried)


def studies(result: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    """A result's studies by segment name (``None`` for an unsegmented study)."""
    if "segments" in result:
        return dict(result["segments"])
    return {None: result}


def job_rows(client: Client, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for i in range(0, len(ids), IDS_PER_LIST):
        part = list(ids[i : i + IDS_PER_LIST])
        rows.update((r["id"], r) for r in client.jobs(ids=part, limit=len(part)))
    return rows


# -- metrics ------------------------------------------------------------------------------


def utilization(pairs: Sequence[tuple[float, float]], slots: int) -> float:
    """Busy share of ``slots`` workers: sum of (end - start) / (slots x first start..last end)."""
    span = max(e for _, e in pairs) - min(s for s, _ in pairs)
    return sum(e - s for s, e in pairs) / (slots * span)


def gaps_ms(pairs: Sequence[tuple[float, float]], skip: int) -> list[float]:
    """For each (start, end) after the first ``skip`` starts: start - the latest end before it."""
    ordered = sorted(pairs)
    ends = sorted(e for _, e in pairs)
    out = []
    for start, _ in ordered[skip:]:
        k = bisect.bisect_right(ends, start)
        if k:
            out.append((start - ends[k - 1]) * 1000)
    return out


def body_pairs(spans: Sequence[Span]) -> list[tuple[float, float]]:
    return [(s.body_start, s.body_end) for s in spans]


def srv_pairs(spans: Sequence[Span]) -> list[tuple[float, float]]:
    return [
        (s.claimed, s.recorded) for s in spans if s.claimed is not None and s.recorded is not None
    ]


def legs_ms(spans: Sequence[Span], skip: int) -> dict[str, list[float]]:
    """Each later trial's gap cut at the server's records (see the module docstring)."""
    done = sorted((s for s in spans if s.recorded is not None), key=lambda s: s.recorded or 0.0)
    recorded = [s.recorded or 0.0 for s in done]
    out: dict[str, list[float]] = {leg: [] for leg in (*LEGS, "turnaround")}
    for t in sorted(spans, key=lambda s: s.body_start)[skip:]:
        if t.created is None or t.claimed is None:
            continue
        k = bisect.bisect_right(recorded, t.created)
        if not k:
            continue
        prev = done[k - 1]
        assert prev.recorded is not None
        out["report"].append((prev.recorded - prev.body_end) * 1000)
        out["driver"].append((t.created - prev.recorded) * 1000)
        out["claim"].append((t.claimed - t.created) * 1000)
        out["dispatch"].append((t.body_start - t.claimed) * 1000)
        out["turnaround"].append((t.body_start - prev.body_end) * 1000)
    return out


@dataclass
class Row:
    """One study's figures: a line of the overhead table before runs are combined."""

    system: str
    sampler: str
    trials: int
    slots: int
    wall_s: float
    ideal_s: float
    lead_s: float
    tail_s: float
    util: float
    gaps: list[float]
    srv_util: float | None = None
    srv_gaps: list[float] | None = None
    legs: dict[str, list[float]] | None = None
    retried: int = 0

    def figures(self) -> dict[str, float | None]:
        """The numbers the tables show, by column (percent and ms)."""
        out: dict[str, float | None] = {
            "wall": self.wall_s,
            "ratio": self.wall_s / self.ideal_s if self.ideal_s else None,
            "lead": self.lead_s,
            "tail": self.tail_s,
            "util": 100 * self.util,
            "gap50": _pct(self.gaps, 50),
            "gap95": _pct(self.gaps, 95),
            "srv_util": None if self.srv_util is None else 100 * self.srv_util,
            "srv_gap50": _pct(self.srv_gaps, 50),
            "srv_gap95": _pct(self.srv_gaps, 95),
        }
        for leg, xs in (self.legs or {}).items():
            out[f"{leg}50"], out[f"{leg}95"] = _pct(xs, 50), _pct(xs, 95)
        return out


def _pct(xs: Sequence[float] | None, q: float) -> float | None:
    return percentile(xs, q) if xs else None


def medians(rows: Sequence[Row]) -> dict[str, float | None]:
    """Each figure's median over repeated runs."""
    runs = [r.figures() for r in rows]
    out: dict[str, float | None] = {}
    for key in runs[0]:
        values = [v for v in (f.get(key) for f in runs) if v is not None]
        out[key] = statistics.median(values) if values else None
    return out


def pilotwave_row(sampler: str, run: StudyRun, slots: int, parallel: int, ideal_s: float) -> Row:
    body = body_pairs(run.spans)
    srv = srv_pairs(run.spans)
    return Row(
        system="pilotwave",
        sampler=sampler,
        trials=len(run.spans),
        slots=slots,
        wall_s=run.wall_s,
        ideal_s=ideal_s,
        lead_s=min(s for s, _ in body) - run.submitted,
        tail_s=run.seen - max(e for _, e in body),
        util=utilization(body, slots),
        gaps=gaps_ms(body, parallel),
        srv_util=utilization(srv, slots) if srv else None,
        srv_gaps=gaps_ms(srv, parallel) if srv else None,
        legs=legs_ms(run.spans, parallel),
        retried=run.retried,
    )


# -- the two systems ----------------------------------------------------------------------


def sleep_space(pause_s: float) -> dict[str, dict[str, Any]]:
    return {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "y": {"type": "float", "low": 0.0, "high": 1.0},
        "pause_s": {"type": "float", "low": pause_s, "high": pause_s},
    }


def optuna_sampler(name: str, seed: int) -> Any:
    """The sampler pilotwave builds for ``name`` (TPE: multivariate, constant liar)."""
    from optuna.samplers import RandomSampler, TPESampler

    if name == "random":
        return RandomSampler(seed=seed)
    return TPESampler(seed=seed, multivariate=True, constant_liar=True)


def run_optuna_threads(args: argparse.Namespace, sampler: str, seed: int) -> Row:
    """The same trials through ``study.optimize(n_jobs=parallel)`` in this process."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pairs: list[tuple[float, float]] = []
    lock = threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        y = trial.suggest_float("y", 0.0, 1.0)
        out = hp.fixed_sleep.fn(x, y, args.pause)  # the same body the pilots run
        with lock:
            pairs.append((out["start"], out["end"]))
        return out["value"]

    study = optuna.create_study(sampler=optuna_sampler(sampler, seed))
    t0 = time.time()
    study.optimize(objective, n_trials=args.trials, n_jobs=args.parallel)
    seen = time.time()
    return Row(
        system=f"optuna n_jobs={args.parallel}",
        sampler=sampler,
        trials=len(pairs),
        slots=args.parallel,
        wall_s=seen - t0,
        ideal_s=ideal(args),
        lead_s=min(s for s, _ in pairs) - t0,
        tail_s=seen - max(e for _, e in pairs),
        util=utilization(pairs, args.parallel),
        gaps=gaps_ms(pairs, args.parallel),
    )


def ideal(args: argparse.Namespace) -> float:
    return args.trials * args.pause / min(args.parallel, args.pilots * args.slots)


# -- report -------------------------------------------------------------------------------

COLUMNS = (
    ("wall s", "wall", ".2f"),
    ("wall÷ideal", "ratio", ".3f"),
    ("lead s", "lead", ".2f"),
    ("tail s", "tail", ".2f"),
    ("util %", "util", ".1f"),
    ("gap p50 ms", "gap50", ".1f"),
    ("gap p95 ms", "gap95", ".1f"),
    ("srv util %", "srv_util", ".1f"),
    ("srv gap p50", "srv_gap50", ".1f"),
    ("srv gap p95", "srv_gap95", ".1f"),
)


def groups(rows: Sequence[Row]) -> dict[tuple[str, str], list[Row]]:
    out: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        out.setdefault((r.system, r.sampler), []).append(r)
    return out


def report(rows: Sequence[Row], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 180)  # no truncation in logs
    by_group = groups(rows)
    table = Table(
        title=f"HPO overhead: {args.trials} trials x {args.pause:g} s, parallel={args.parallel}, "
        f"{args.pilots} pilots x {args.slots} slots, {args.backend} "
        f"(ideal {ideal(args):.2f} s; median of {args.repeat})"
    )
    for col in ("system", "sampler", "trials"):
        table.add_column(col)
    for col, _, _ in COLUMNS:
        table.add_column(col, justify="right")
    for (system, sampler), runs in by_group.items():
        m = medians(runs)
        trials = "/".join(sorted({str(r.trials) for r in runs}))
        table.add_row(system, sampler, trials, *(fmt(m[key], spec) for _, key, spec in COLUMNS))
    console.print(table)
    print_legs(console, by_group)
    for (system, sampler), runs in by_group.items():
        if len(runs) > 1:
            utils = "/".join(f"{100 * r.util:.1f}" for r in runs)
            walls = "/".join(f"{r.wall_s:.2f}" for r in runs)
            console.print(
                f"runs of {system} {sampler}: util {utils} %, wall {walls} s", markup=False
            )
    console.print(
        "util: sum of objective body times / (slots x first body start..last body end); srv: "
        "the same from the server's claim and recorded-success times.\n"
        "gap: a trial's start - the latest end (on any slot) before it, for each trial after "
        f"the first {args.parallel}. Target: util >= 95 %.",
        markup=False,
    )
    retried = sum(r.retried for r in rows)
    if retried:
        console.print(f"{retried} trial job(s) needed more than one attempt.", markup=False)


def print_legs(console: Any, by_group: dict[tuple[str, str], list[Row]]) -> None:
    from rich.table import Table

    table = Table(
        title="where a pilotwave slot's idle time goes: p50 (p95) of each leg, ms (median of runs)"
    )
    for col in ("system", "sampler"):
        table.add_column(col)
    for col in (*LEGS, "turnaround"):
        table.add_column(col, justify="right")
    for (system, sampler), runs in by_group.items():
        if not runs[0].legs:
            continue
        m = medians(runs)
        table.add_row(
            system,
            sampler,
            *(
                f"{fmt(m[leg + '50'], '.1f')} ({fmt(m[leg + '95'], '.1f')})"
                for leg in (*LEGS, "turnaround")
            ),
        )
    if table.row_count:
        console.print(table)


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--trials", type=int, default=200, help="trials per study (default 200)")
    ap.add_argument("--pause", type=float, default=0.5, help="objective's sleep, s (default 0.5)")
    ap.add_argument("--parallel", type=int, default=8, help="trials in flight (default 8)")
    ap.add_argument("--pilots", type=int, default=2, help="local pilots (default 2)")
    ap.add_argument("--slots", type=int, default=4, help="job slots per pilot (default 4)")
    ap.add_argument(
        "--samplers", default="random,tpe", help="comma-separated: random,tpe (default both)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="studies of each kind (default 3)")
    ap.add_argument("--backend", choices=BACKENDS, default="sqlite", help="default sqlite")
    ap.add_argument(
        "--prefetch", type=int, default=None, help="pilots' --prefetch (default: theirs, 16)"
    )
    ap.add_argument("--seed", type=int, default=0, help="sampler seed of the first run (default 0)")
    ap.add_argument("--skip-optuna", action="store_true", help="do not run the in-process peer")
    ap.add_argument(
        "--timeout", type=float, default=600.0, help="give up on one study after S seconds"
    )
    args = ap.parse_args(argv)
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if not args.samplers or set(args.samplers) - {"random", "tpe"}:
        ap.error("--samplers takes a comma-separated list of random,tpe")
    if min(args.trials, args.parallel, args.pilots, args.slots, args.repeat) < 1:
        ap.error("--trials, --parallel, --pilots, --slots and --repeat must be at least 1")
    if args.pause < 0:
        ap.error("--pause must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    slots = min(args.parallel, args.pilots * args.slots)
    rows: list[Row] = []
    with local_cluster(args.pilots, args.slots, args.backend, args.prefetch):
        print("pilotwave warm-up ...", flush=True)
        warm_up(args.pilots * args.slots, args.pause, args.timeout)
        for rep in range(args.repeat):
            for sampler in args.samplers:
                print(f"[{rep + 1}/{args.repeat}] pilotwave {sampler} ...", flush=True)
                run = run_study(
                    args.timeout,
                    objective=hp.fixed_sleep,
                    space=sleep_space(args.pause),
                    n_trials=args.trials,
                    parallel=args.parallel,
                    sampler=sampler,
                    seed=args.seed + rep,
                )
                rows.append(pilotwave_row(sampler, run, slots, args.parallel, ideal(args)))
    if not args.skip_optuna:
        for rep in range(args.repeat):
            for sampler in args.samplers:
                print(
                    f"[{rep + 1}/{args.repeat}] optuna n_jobs={args.parallel} {sampler} ...",
                    flush=True,
                )
                rows.append(run_optuna_threads(args, sampler, args.seed + rep))
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
