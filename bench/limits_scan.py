"""Toy-based limits: toys a multi-step CLs scan spends against a uniform grid, and toy throughput.

Workload: a one-bin counting workspace (signal 12, background 50 +- 5 shapesys, observed
52, POI mu in [0, 5]), qtilde, alpha = 0.05.

1. **Toys spent.**  ``limits.upper_limit`` with a ``--precision`` target (relative, on the
   observed limit and each line of the expected band), ``--scans`` times with different
   seeds, through a local cluster of 2 pilots with their default slots (one per core),
   against a **uniform grid** of ``--grid-points`` POI values evenly spaced over (0, 5]
   (mu = 0 is skipped, as the scan skips it: CLs is 1 there by construction) with
   ``--grid-toys`` toy pairs each (default 500: the issue's 2000 / 4, to fit the time),
   thrown as the same ``throw_toys`` jobs on the same cluster and turned into limits by the
   same code (``stats.cls_point``; ``upper._limit``: ``stats.crossing`` +
   ``stats.interpolate``, its uncertainty the toys' statistics and the interpolation's in
   quadrature).  From the grid's two parts, the toys the grid would need to match each
   scan's observed-limit uncertainty: the statistical part scales as 1/sqrt(toys), the
   interpolation part is fixed by the spacing.  ``_limit`` takes the slope of CLs from the
   bracket's two ends, which on a fine grid with few toys is mostly noise, so the match is
   also made with the slope from a weighted log-linear fit of the points near the limit,
   and against the target itself (``precision`` x limit).  Target: the scan needs <= 40 %
   of the grid's toys.  A **reference** (``--reference-points`` POI values
   ``--reference-step`` apart around the scans' limit, ``--reference-toys`` pairs each)
   checks each contender's limit against its stated uncertainty (the pull).

2. **Distribution overhead.**  Toy pairs per second per slot: pyhf's own toy loop
   (``ToyCalculator(...).distributions(mu)``, model built once) in this process, single
   threaded; ``throw_toys.fn`` called in this process (the job's body, no distribution:
   it builds the model and fits the observed data once per call); and ``throw_toys`` jobs
   of ``--toys-per-job`` pairs through a cluster of 1 pilot with 1 slot, timed from the
   submit to the last result in hand after one small warm-up job.  Overhead = 1 - rate /
   pyhf's rate.  Target: under 10 % at >= 200 toys per job.

A toy pair is one signal+background toy and one background-only toy, each with its fits.
BLAS and OpenMP are held to one thread (here and, through the environment, on the pilots).

Run from the repository root::

    .venv/bin/python bench/limits_scan.py                      # about 6 minutes on 2 cores
    .venv/bin/python bench/limits_scan.py --parts toys --grid-toys 2000   # 37 x 2000, ~8 min
    .venv/bin/python bench/limits_scan.py --parts overhead --toys-per-job 50,200,500
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads; the pilots inherit it

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from stats import fmt  # noqa: E402

import pilotwave as pw  # noqa: E402
from pilotwave.limits import stats, upper_limit  # noqa: E402
from pilotwave.limits.toys import model_and_data, throw_toys  # noqa: E402
from pilotwave.limits.upper import CURVES, _limit, toy_seed  # noqa: E402
from pilotwave.provision.local import LocalCluster  # noqa: E402

PARTS = ("toys", "overhead")
ALPHA = 0.05
LO, HI = 0.0, 5.0
TARGET_RATIO = 0.40
TARGET_OVERHEAD = 0.10
CONSOLE = Console(width=None if sys.stdout.isatty() else 160)  # no truncation in logs


def counting(signal: float, background: float, sigma_b: float, observed: float) -> dict[str, Any]:
    """A one-bin HistFactory workspace with an uncertain background; POI mu in [0, 5]."""
    return {
        "channels": [
            {
                "name": "sr",
                "samples": [
                    {
                        "name": "signal",
                        "data": [signal],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [background],
                        "modifiers": [{"name": "bkg_unc", "type": "shapesys", "data": [sigma_b]}],
                    },
                ],
            }
        ],
        "observations": [{"name": "sr", "data": [observed]}],
        "measurements": [
            {
                "name": "m",
                "config": {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[LO, HI]]}]},
            }
        ],
        "version": "1.0.0",
    }


WORKSPACE = counting(12.0, 50.0, 5.0, 52.0)


# -- a local cluster ----------------------------------------------------------------------


@contextmanager
def local_cluster(pilots: int, slots: int | None) -> Iterator[LocalCluster]:
    """A server (SQLite) and ``pilots`` pilots, the SDK connected.

    ``slots=None`` leaves each pilot its default (one slot per core); otherwise the pilot
    offers that many cores and slots.
    """
    pilot_args = [] if slots is None else ["--cores", str(slots)]
    with tempfile.TemporaryDirectory(prefix="pilotwave-limits-") as home:
        cluster = LocalCluster(Path(home), pilots=pilots, slots=slots, pilot_args=pilot_args)
        try:
            cluster.start()
            cluster.wait_for_pilots()
            pw.connect(cluster.url, cluster.admin_token)
            yield cluster
        finally:
            cluster.stop()


def cluster_slots(cluster: LocalCluster) -> int:
    """Job slots the cluster's pilots offer, as they registered them."""
    total = 0
    for p in cluster.client().pilots():
        if p.get("state") != "active":
            continue
        slots = p.get("slots") or (p.get("resources") or {}).get("slots")
        total += int(slots) if slots else 0
    return total


# -- part 1: toys a scan spends, against a uniform grid -----------------------------------


@dataclass
class Contender:
    """One way to the limit: its toys, wall time and the limits it found, by curve."""

    name: str
    toys: int  # toy pairs thrown
    wall_s: float
    limits: dict[str, dict[str, Any]]
    points_at: list[stats.Point]
    toys_per_point: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    converged: bool | None = None


def run_scan(args: argparse.Namespace, seed: int) -> Contender:
    """``upper_limit`` through the cluster, its steps shown as they finish."""
    t0 = time.time()
    run = upper_limit.submit(
        workspace=WORKSPACE,
        alpha=ALPHA,
        precision=args.precision,
        toys_per_job=args.scan_toys_per_job,
        initial_toys=args.initial_toys,
        max_toys=args.max_toys,
        seed=seed,
    )
    shown = 0
    while not run.done():
        prog = (run.status().get("progress") or {}) if run.client else {}
        if prog.get("kind") == "limits" and prog.get("step", 0) > shown:
            shown = prog["step"]
            obs = prog["limits"]["observed"]
            CONSOLE.print(
                f"  step {shown}: {prog['toys']} toys so far, {prog['points']} points, observed "
                f"{fmt(obs['limit'], '.4f')} +- {fmt(obs['uncertainty'], '.4f')}",
                markup=False,
            )
        try:
            run.future.exception(timeout=1.0)
        except TimeoutError:
            pass
    result = run.result(timeout=args.timeout)
    wall = time.time() - t0
    limits = {"observed": result["observed"]}
    limits.update({f"expected{k}": v for k, v in result["expected"].items()})
    points = [
        stats.Point(
            p["poi"],
            p["cls"],
            p["cls_err"],
            p["clsb"],
            p["clb"],
            tuple(p["cls_expected"]),
            tuple(p["cls_expected_err"]),
            p["toys"],
            p["failed_toys"],
        )
        for p in sorted(result["points"], key=lambda p: p["poi"])
    ]
    scan = Contender(
        f"multi-step scan, seed {seed}",
        result["toys"],
        wall,
        limits,
        points,
        converged=bool(result["converged"]),
        steps=result["steps"],
    )
    return scan


def grid_pois(n: int) -> list[float]:
    """``n`` POI values evenly over (LO, HI], as the scan lays its first grid when LO is 0."""
    return [round(float(p), 12) for p in np.linspace(LO, HI, n + 1)[1:]]


def throw_points(
    args: argparse.Namespace, name: str, pois: Sequence[float], toys: int, base_seed: int
) -> Contender:
    """``toys`` pairs at each POI as ``throw_toys`` jobs on the cluster; limits as the scan finds them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    per_job = args.scan_toys_per_job
    n_jobs = max(1, math.ceil(toys / per_job))
    calls = [(poi, k) for poi in pois for k in range(n_jobs)]
    sb: dict[float, list[float]] = {}
    b: dict[float, list[float]] = {}
    observed: dict[float, float] = {}
    failed: dict[float, int] = {}
    t0 = time.time()
    futures = throw_toys.options(name=f"{name} toys").map(
        [WORKSPACE] * len(calls),
        [poi for poi, _ in calls],
        [per_job] * len(calls),
        [toy_seed(base_seed, poi, k) for poi, k in calls],
    )
    with Progress(
        f"{name} jobs", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=CONSOLE
    ) as bar:
        task = bar.add_task(name, total=len(futures))
        for fut in pw.as_completed(futures, timeout=args.timeout):
            out = fut.result()
            poi = float(out["poi"])
            sb.setdefault(poi, []).extend(out["sb"])
            b.setdefault(poi, []).extend(out["b"])
            observed[poi] = out["observed"]
            failed[poi] = failed.get(poi, 0) + out["failed"]
            bar.advance(task)
    wall = time.time() - t0
    points = [stats.cls_point(p, sb[p], b[p], observed[p], failed[p]) for p in sorted(sb)]
    return Contender(
        f"{name}, {len(pois)} x {n_jobs * per_job}",
        len(calls) * per_job,
        wall,
        {curve: _limit(points, curve, ALPHA) for curve in CURVES},
        points,
        toys_per_point=n_jobs * per_job,
    )


def reference_pois(scans: Sequence[Contender], n: int, step: float) -> list[float]:
    """``n`` POI values ``step`` apart, centred on the scans' median observed limit."""
    found = [c.limits["observed"]["limit"] for c in scans if c.limits["observed"]["limit"]]
    centre = statistics.median(found) if found else (LO + HI) / 2
    return [round(centre + step * (i - (n - 1) / 2), 4) for i in range(n)]


def toys_to_reach(stat: float, interp: float, toys_per_point: int, target: float) -> float | None:
    """Toys per point at which a limit with these uncertainty parts would be ``target``.

    ``stat`` was measured with ``toys_per_point`` and scales as 1/sqrt(toys); ``interp`` is
    fixed by the spacing.  ``None`` when ``interp`` alone reaches the target.
    """
    if target <= interp:
        return None
    return toys_per_point * (stat / math.sqrt(target**2 - interp**2)) ** 2


def fitted_stat(points: Sequence[stats.Point], lim: dict[str, Any], window: float) -> float | None:
    """The observed limit's statistical uncertainty as ``upper._limit`` computes it, but with
    the slope of CLs from a weighted log-linear fit of the points within ``window`` of the
    limit instead of the difference between the bracket's two ends (itself noisy)."""
    if lim.get("limit") is None:
        return None
    near = [p for p in points if abs(p.poi - lim["limit"]) <= window and p.cls > 0]
    if len(near) < 3:
        return None
    log_slope, _ = np.polyfit(
        [p.poi for p in near],
        [math.log(p.cls) for p in near],
        1,
        w=[p.cls / p.cls_err for p in near],  # 1 / the uncertainty of ln CLs
    )
    by_poi = {p.poi: p for p in points}
    p0, p1 = lim["bracket"]
    frac = (lim["limit"] - p0) / (p1 - p0)
    err_cls = math.hypot((1 - frac) * by_poi[p0].cls_err, frac * by_poi[p1].cls_err)
    return err_cls / (ALPHA * abs(float(log_slope)))


def report_toys(
    args: argparse.Namespace,
    scans: Sequence[Contender],
    grid: Contender,
    ref: Contender | None,
) -> None:
    table = Table(title=f"Toys spent: limits at CL {1 - ALPHA:.0%} (qtilde), limit ± uncertainty")
    for col in ("contender", "toy pairs", "per step", "points", "wall s", "observed"):
        table.add_column(col, justify="left" if col == "contender" else "right")
    for col in ("stat", "interp", "pull", "expected median"):
        table.add_column(col, justify="right")
    ref_obs = ref.limits["observed"] if ref is not None else {}
    for c in (*scans, grid, *([ref] if ref is not None else [])):
        obs, med = c.limits["observed"], c.limits["expected0"]
        table.add_row(
            c.name,
            str(c.toys),
            "/".join(str(s["toys"]) for s in c.steps) or "-",
            str(len(c.points_at)),
            f"{c.wall_s:.1f}",
            limit_text(obs),
            fmt(obs.get("stat"), ".4f"),
            fmt(obs.get("interp"), ".4f"),
            fmt(pull(obs, ref_obs) if c is not ref else None, "+.1f"),
            limit_text(med),
        )
    CONSOLE.print(table)
    if ref is not None:
        CONSOLE.print(
            "pull: (observed limit - the reference's) / both uncertainties in quadrature; the "
            "reference throws many toys at a few points close to the limit (its stat part from "
            "the log-linear fit's slope).",
            markup=False,
        )
    print_curves(args, scans[0], grid)
    print_observed(args, scans, grid)


def pull(lim: dict[str, Any], ref: dict[str, Any]) -> float | None:
    if lim.get("limit") is None or ref.get("limit") is None:
        return None
    return float((lim["limit"] - ref["limit"]) / math.hypot(lim["uncertainty"], ref["uncertainty"]))


def print_curves(args: argparse.Namespace, scan: Contender, grid: Contender) -> None:
    """Per curve: the grid's toys to match one scan's uncertainty, as ``_limit`` has it."""
    assert grid.toys_per_point is not None
    table = Table(
        title=f"Every curve: toys the {args.grid_points}-point grid needs to match the "
        f"uncertainty of the {scan.name} (_limit's estimate)"
    )
    for col in ("curve", "scan", "grid", "grid stat", "grid interp", "grid needs", "scan ÷ that"):
        table.add_column(col, justify="left" if col == "curve" else "right")
    for name in CURVES:
        s, g = scan.limits[name], grid.limits[name]
        need = None
        if s.get("limit") is not None and g.get("limit") is not None:
            need = toys_to_reach(g["stat"], g["interp"], grid.toys_per_point, s["uncertainty"])
        total = None if need is None else need * args.grid_points
        table.add_row(
            curve_label(name),
            limit_text(s),
            limit_text(g),
            fmt(g.get("stat"), ".4f"),
            fmt(g.get("interp"), ".4f"),
            "unreachable" if total is None else f"{total:.0f}",
            fmt(scan.toys / total if total else None, ".1%"),
        )
    CONSOLE.print(table)


@dataclass(frozen=True)
class Match:
    """The grid's toys to reach one uncertainty on the observed limit, and the scan's share."""

    target: float  # the uncertainty to reach
    grid_toys: float | None  # None: the grid's interpolation part alone is larger
    ratio: float | None


def match(
    scan: Contender, grid: Contender, n_points: int, target: float, grid_stat: float
) -> Match:
    assert grid.toys_per_point is not None
    interp = grid.limits["observed"]["interp"]
    need = toys_to_reach(grid_stat, interp, grid.toys_per_point, target)
    total = None if need is None else need * n_points
    return Match(target, total, None if total is None else scan.toys / total)


def print_observed(args: argparse.Namespace, scans: Sequence[Contender], grid: Contender) -> None:
    """The observed limit: the grid's toys to match each scan, three ways, and the verdict."""
    g = grid.limits["observed"]
    if g.get("limit") is None or any(s.limits["observed"].get("limit") is None for s in scans):
        CONSOLE.print("No observed limit to compare (see the reasons above).", markup=False)
        return
    g_fit = fitted_stat(grid.points_at, g, args.fit_window)
    table = Table(
        title="Observed limit: toys the grid needs to match each scan's uncertainty; slope of "
        f"CLs from the bracket's ends (_limit) or a log-linear fit ±{args.fit_window:g} around "
        f"the limit; or to reach the target ({args.precision:g} × limit)"
    )
    table.add_column("scan")
    for col in ("toy pairs", "± ends", "grid needs", "scan ÷"):
        table.add_column(col, justify="right")
    for col in ("± fit", "grid needs ", "scan ÷ "):
        table.add_column(col, justify="right")
    for col in ("± target", "grid needs  ", "scan ÷  "):
        table.add_column(col, justify="right")
    ratios: dict[str, list[float | None]] = {"ends": [], "fit": [], "target": []}
    for scan in scans:
        s = scan.limits["observed"]
        ends = match(scan, grid, args.grid_points, s["uncertainty"], g["stat"])
        s_fit = fitted_stat(scan.points_at, s, args.fit_window)
        fit = (
            match(scan, grid, args.grid_points, math.hypot(s_fit, s["interp"]), g_fit)
            if s_fit is not None and g_fit is not None
            else None
        )
        # The target in the grid's own uncertainty terms: take the fitted slope where it exists.
        tgt = match(scan, grid, args.grid_points, args.precision * s["limit"], g_fit or g["stat"])
        ratios["ends"].append(ends.ratio)
        ratios["fit"].append(fit.ratio if fit else None)
        ratios["target"].append(tgt.ratio)
        table.add_row(
            scan.name.removeprefix("multi-step scan, "),
            str(scan.toys),
            *match_cells(ends),
            *(match_cells(fit) if fit else ("-", "too few points", "-")),
            *match_cells(tgt),
        )
    CONSOLE.print(table)
    CONSOLE.print(
        f"grid as run: {grid.toys} toy pairs ({args.grid_points} x {grid.toys_per_point}); its "
        f"observed stat part {g['stat']:.4f} (bracket ends), {fmt(g_fit, '.4f')} (fit); "
        f"interp {g['interp']:.4f}.  Target: the scan needs <= {TARGET_RATIO:.0%} of the grid's "
        "toys for the same observed-limit precision.",
        markup=False,
    )
    for how, rs in ratios.items():
        known = [r for r in rs if r is not None]
        if not known:
            continue
        med = statistics.median(known)
        verdict = "met" if med <= TARGET_RATIO else "missed"
        CONSOLE.print(
            f"  {how}: scan ÷ grid {'/'.join(fmt(r, '.0%') for r in rs)}, median {med:.0%} "
            f"({verdict})",
            markup=False,
        )


def match_cells(m: Match) -> tuple[str, str, str]:
    return (
        f"{m.target:.4f}",
        "unreachable" if m.grid_toys is None else f"{m.grid_toys:.0f}",
        fmt(m.ratio, ".1%"),
    )


def limit_text(lim: dict[str, Any]) -> str:
    if lim.get("limit") is None:
        return str(lim.get("reason", "-"))
    return f"{lim['limit']:.4f} ± {lim['uncertainty']:.4f}"


def curve_label(name: str) -> str:
    return "observed" if name == "observed" else f"expected {name.removeprefix('expected')}σ"


def plot(path: Path, contenders: Sequence[Contender]) -> None:
    """Observed CLs against mu: each contender's points, with their uncertainties."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for c, style, color in zip(contenders, ("o", "s", "^"), ("0.5", "C3", "C0"), strict=False):
        ax.errorbar(
            [p.poi for p in c.points_at],
            [p.cls for p in c.points_at],
            yerr=[p.cls_err for p in c.points_at],
            fmt=style,
            ms=4,
            color=color,
            label=f"{c.name} ({c.toys} toy pairs)",
        )
    ax.axhline(ALPHA, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 1.2)
    ax.set_xlabel("mu")
    ax.set_ylabel("observed CLs")
    ax.legend()
    fig.savefig(path)


def part_toys(args: argparse.Namespace) -> None:
    with local_cluster(pilots=2, slots=None) as cluster:
        slots = cluster_slots(cluster)
        CONSOLE.print(f"2 pilots, {slots or '?'} slots in all", markup=False)
        scans = []
        for k in range(args.scans):
            seed = args.seed + 100 * k
            CONSOLE.print(
                f"multi-step scan, seed {seed} (precision {args.precision:g}) ...", markup=False
            )
            scans.append(run_scan(args, seed))
        CONSOLE.print(
            f"uniform grid ({args.grid_points} x {args.grid_toys} toy pairs) ...", markup=False
        )
        grid = throw_points(
            args, "uniform grid", grid_pois(args.grid_points), args.grid_toys, args.seed + 1
        )
        ref = None
        if args.reference_toys:
            pois = reference_pois(scans, args.reference_points, args.reference_step)
            CONSOLE.print(
                f"reference ({len(pois)} x {args.reference_toys} toy pairs at "
                f"{', '.join(f'{p:g}' for p in pois)}) ...",
                markup=False,
            )
            ref = throw_points(args, "reference", pois, args.reference_toys, args.seed + 2)
            # Its points are close together: the slope between two of them is mostly noise.
            obs = ref.limits["observed"]
            fit = fitted_stat(ref.points_at, obs, args.fit_window)
            if fit is not None:
                obs.update(stat=fit, uncertainty=math.hypot(fit, obs["interp"]))
    report_toys(args, scans, grid, ref)
    if args.plot:
        plot(args.plot, [grid, scans[0], *([ref] if ref is not None else [])])
        CONSOLE.print(f"plot: {args.plot}", markup=False)


# -- part 2: distribution overhead ---------------------------------------------------------


def pyhf_rate(mu: float, ntoys: int, seed: int) -> float:
    """Toy pairs per second of pyhf's own loop, one call of ``ntoys`` pairs, model built once."""
    import pyhf
    from pyhf.infer.calculators import ToyCalculator

    pyhf.set_backend("numpy")
    model, data = model_and_data(WORKSPACE)
    np.random.seed(seed)
    t0 = time.perf_counter()
    ToyCalculator(data, model, ntoys=ntoys, track_progress=False).distributions(mu)
    return ntoys / (time.perf_counter() - t0)


def fn_rate(mu: float, per_job: int, jobs: int, seed: int) -> float:
    """Toy pairs per second of the job's body called ``jobs`` times in this process."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the job's one log line per call
        for k in range(jobs):
            throw_toys.fn(WORKSPACE, mu, per_job, seed + k)
    return per_job * jobs / (time.perf_counter() - t0)


def pilotwave_rate(mu: float, per_job: int, jobs: int, seed: int, timeout: float) -> float:
    """Toy pairs per second of ``jobs`` toy jobs on a 1-slot pilot: submit -> last result."""
    t0 = time.time()
    futures = throw_toys.map(
        [WORKSPACE] * jobs, [mu] * jobs, [per_job] * jobs, [seed + k for k in range(jobs)]
    )
    for fut in pw.as_completed(futures, timeout=timeout):
        fut.result()
    return per_job * jobs / (time.time() - t0)


def part_overhead(args: argparse.Namespace) -> None:
    rates: dict[tuple[str, int], list[float]] = {}
    jobs_of = {n: max(1, round(args.overhead_toys / n)) for n in args.toys_per_job}
    with local_cluster(pilots=1, slots=1):
        throw_toys.submit(WORKSPACE, args.mu, 10, 1).result(timeout=args.timeout)  # warm worker
        for rep in range(args.repeat):
            seed = 1000 * (rep + 1)
            CONSOLE.print(f"[{rep + 1}/{args.repeat}] in-process pyhf ...", markup=False)
            rates.setdefault(("pyhf", 0), []).append(pyhf_rate(args.mu, args.overhead_toys, seed))
            for n in args.toys_per_job:
                k = jobs_of[n]
                CONSOLE.print(
                    f"[{rep + 1}/{args.repeat}] {k} x {n}: throw_toys.fn, pilotwave ...",
                    markup=False,
                )
                rates.setdefault(("fn", n), []).append(fn_rate(args.mu, n, k, seed))
                rates.setdefault(("pilotwave", n), []).append(
                    pilotwave_rate(args.mu, n, k, seed, args.timeout)
                )
    report_overhead(args, rates, jobs_of)


def report_overhead(
    args: argparse.Namespace,
    rates: dict[tuple[str, int], list[float]],
    jobs_of: dict[int, int],
) -> None:
    peer = statistics.median(rates[("pyhf", 0)])
    table = Table(
        title=f"Toy pairs per second per slot at mu={args.mu:g} (median of {args.repeat}; "
        f"~{args.overhead_toys} pairs per row; 1 pilot x 1 slot)"
    )
    for col in ("system", "toys/job", "jobs", "pairs/s", "runs", "overhead vs pyhf"):
        table.add_column(col, justify="left" if col == "system" else "right")
    table.add_row(
        "pyhf ToyCalculator, in-process",
        str(args.overhead_toys),
        "1",
        f"{peer:.1f}",
        runs_text(rates[("pyhf", 0)]),
        "0 (peer)",
    )
    verdicts = []
    for n in args.toys_per_job:
        for system, label in (("fn", "throw_toys.fn, in-process"), ("pilotwave", "pilotwave")):
            rs = rates[(system, n)]
            rate = statistics.median(rs)
            over = 1 - rate / peer
            table.add_row(
                label, str(n), str(jobs_of[n]), f"{rate:.1f}", runs_text(rs), f"{over:.1%}"
            )
            if system == "pilotwave" and n >= 200:
                verdicts.append((n, over))
    CONSOLE.print(table)
    for n, over in verdicts:
        verdict = "met" if over < TARGET_OVERHEAD else "missed"
        CONSOLE.print(
            f"{n} toys/job: pilotwave overhead {over:.1%} (target < {TARGET_OVERHEAD:.0%}: "
            f"{verdict})",
            markup=False,
        )


def runs_text(rs: Sequence[float]) -> str:
    return "/".join(f"{r:.0f}" for r in rs)


# -- main ---------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--parts", default="toys,overhead", help="comma-separated: toys,overhead")
    ap.add_argument(
        "--precision", type=float, default=0.05, help="scan's relative target (default 0.05)"
    )
    ap.add_argument(
        "--initial-toys", type=int, default=500, help="scan's first-step toys/point (500)"
    )
    ap.add_argument("--max-toys", type=int, default=100_000, help="scan's toy budget (100000)")
    ap.add_argument(
        "--scan-toys-per-job", type=int, default=250, help="toys per job, scan and grid (250)"
    )
    ap.add_argument("--scans", type=int, default=3, help="scans, seeds seed + 100 k (3)")
    ap.add_argument("--grid-points", type=int, default=37, help="uniform grid's points (37)")
    ap.add_argument(
        "--grid-toys",
        type=int,
        default=500,
        help="uniform grid's toy pairs per point (default 500: the issue's 2000 / 4)",
    )
    ap.add_argument(
        "--reference-toys",
        type=int,
        default=4000,
        help="toy pairs per reference point near the limit (4000; 0: no reference)",
    )
    ap.add_argument("--reference-points", type=int, default=5, help="reference points (5)")
    ap.add_argument(
        "--reference-step", type=float, default=0.07, help="reference spacing in mu (0.07)"
    )
    ap.add_argument(
        "--toys-per-job", type=int_list, default=[50, 200, 500], help="overhead: 50,200,500"
    )
    ap.add_argument(
        "--overhead-toys", type=int, default=1000, help="overhead: toy pairs per row (1000)"
    )
    ap.add_argument("--mu", type=float, default=1.0, help="overhead: POI of the toys (1.0)")
    ap.add_argument("--repeat", type=int, default=3, help="overhead: runs of each row (3)")
    ap.add_argument("--seed", type=int, default=7, help="base seed of the toys (7)")
    ap.add_argument(
        "--fit-window", type=float, default=0.5, help="mu either side of the limit to fit (0.5)"
    )
    ap.add_argument("--plot", type=Path, default=None, help="write CLs vs mu to this PNG")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up after S seconds")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        ap.error("--parts takes a comma-separated list of toys,overhead")
    if min(args.scans, args.grid_points, args.grid_toys, args.overhead_toys, args.repeat) < 1:
        ap.error("--scans, --grid-points, --grid-toys, --overhead-toys and --repeat must be >= 1")
    if not args.toys_per_job or min(args.toys_per_job) < 1:
        ap.error("--toys-per-job takes positive integers")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    CONSOLE.print(f"cores: {os.cpu_count()}", markup=False)
    if "toys" in args.parts:
        part_toys(args)
    if "overhead" in args.parts:
        part_overhead(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
