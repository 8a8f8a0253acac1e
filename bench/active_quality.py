"""Active-learning quality: evaluations to find a contour, and regret when maximizing.

``pilotwave.active.Learner`` against a dense grid, random sampling and (maximizing) Optuna,
on 2-D test functions with known answers, all in this process.

1. **Contours.**  Three problems, each with a known contour on the learner's 41 x 41
   estimate grid (truth = f < level on that grid, the "excluded region"):

   - ``smooth``: sin(3x) + cos(3y) + 0.5xy on [-2, 2]^2, level 0.5 (two regions, 67 % of
     the box);
   - ``two-dips``: 1 - 0.9 exp(-|p - a|^2 / 2(0.13)^2) - 0.9 exp(-|p - b|^2 / 2(0.11)^2)
     on [0, 1]^2, a = (0.28, 0.30), b = (0.72, 0.68), level 0.5 (two disjoint discs, 10 %);
   - ``cls``: a CLs-like value, P(n <= 10 | 10 + s) / P(n <= 10 | 10) with
     s = 400 g^2 exp(-(m - 100) / 200), mass m in [100, 1000], coupling g in [0.01, 1] on a
     log axis, learned with ``transform="log"``, level 0.05 (CLs spans 1 to 1e-159; the
     excluded corner is 19 % of the box, a third of it below the learner's 1e-12 floor).

   The score after n evaluations is the IoU (intersection over union) of the learner's
   ``estimate()["below"]`` with the truth.  Per run: *first* = the evaluations after which
   the IoU is first >= ``--target-iou`` (0.95), *stays* = the evaluations from which it
   stays >= 0.95 up to the run's last evaluation (``--budget``); ">budget" when never.
   Contenders:

   - pilotwave sequential: ``Learner(batch=1)``, one evaluation at a time;
   - pilotwave batch=8, asynchronous: ``Learner(batch=8)`` with 8 evaluations in flight,
     each lasting an exponentially distributed time (mean 1, seeded); the earliest to finish
     is told first and a new point is asked at once (as the ``search`` driver does).  The
     IoU counts evaluations *finished*;
   - random: uniform random points (uniform on the log axis), the learner's own GP (the
     same kernel and fit, ``pilotwave.active.learner._fit``) refitted after each;
   - grid n x n: a regular grid (n = 2, 3, ...; evaluations = n^2), classified onto the
     41 x 41 grid by linear interpolation (``scipy.interpolate.RegularGridInterpolator`` on
     the unit cube, on the learned scale: log CLs for ``cls``), and, up to
     ``--gp-grid-max``, by the learner's GP fitted to the grid points.  No seeds.

   Every learner runs with ``tol=0.0`` and ``patience`` above its budget, so it never stops
   early.  Targets: IoU >= 0.95 within 60 evaluations on ``smooth`` (sequential); batch=8
   needs at most 1.3x the evaluations of sequential.

   Options for comparing the contour acquisition: ``--acquisition entropy`` (the learner's
   other one) and ``--no-explore``, which sets ``pilotwave.active.learner.EXPLORE_EVERY`` to
   a huge number, so that no choice is the learner's exploration step (the most uncertain
   candidate, every 4th choice after the initial design): it reproduces the learner's old,
   acquisition-only (straddle-only by default) behaviour.

2. **Maximizing.**  ``smooth`` (the function above), ``branin`` (Branin negated, on
   [-5, 10] x [0, 15]) and ``two-bump`` (exp(-|p - (0.2, 0.75)|^2 / 2(0.08)^2) +
   0.7 exp(-|p - (0.7, 0.3)|^2 / 2(0.2)^2) on [0, 1]^2: a narrow global peak and a broad
   lower one).  The true maximum: a 1001 x 1001 grid, polished with L-BFGS-B from its 10
   best points.  Regret after N evaluations = true max - f(the point the contender returns):
   ``Learner.best()["params"]`` for pilotwave (the evaluated point with the best surrogate
   mean), the best evaluated point for random search and Optuna's ``TPESampler(seed=s,
   multivariate=True)`` (sequential).  Optuna's ``GPSampler`` needs PyTorch, which is not
   installed, so it is not a contender.

3. **Reaction time.**  The learner's ``tell`` + the next ``ask`` (ms) around 60 results:
   the time between an evaluation finishing and the driver having its next point.

BLAS and OpenMP are held to one thread, and everything runs in this one process.  The
learner holds BLAS to one thread itself in ``ask``/``tell``/``estimate``/``result``; the
environment variables set below (unless already set) also cover the random and grid
contenders' GP fits.  ``OPENBLAS_NUM_THREADS=2 .venv/bin/python bench/active_quality.py``
leaves those with two threads, to see the learner's own limit at work.

Run from the repository root::

    .venv/bin/python bench/active_quality.py              # 5 seeds; about 7 minutes on 2 cores
    .venv/bin/python bench/active_quality.py --quick      # 1 seed, small budgets; about a minute
    .venv/bin/python bench/active_quality.py --parts contour --seeds 10 --plot iou.png
    .venv/bin/python bench/active_quality.py --parts contour --contour-problems two-dips \
        --seeds 20 --budget 60 --contenders sequential,batch --no-explore
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    # before NumPy loads: with 2 BLAS threads on a busy 2-core machine, each L-BFGS-B step
    # of the GP fit waited on the other thread (a 120-evaluation run: 55 s instead of 12 s).
    # The learner now holds BLAS to one thread itself; this also covers the random and grid
    # contenders, which call the learner's ``_fit`` directly.
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import heapq  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from stats import csv, percentile  # noqa: E402

import pilotwave.active.learner as learner_module  # noqa: E402
from pilotwave.active import Learner  # noqa: E402
from pilotwave.active.learner import LOG_FLOOR, _fit  # noqa: E402
from pilotwave.active.space import Box  # noqa: E402

GRID = 41  # the learner's default estimate grid
SEQ, BATCH, RANDOM, GRID_LIN, GRID_GP, TPE = (
    "sequential",
    "batch",
    "random",
    "grid-linear",
    "grid-gp",
    "optuna-tpe",
)
CONTOUR_CONTENDERS = (SEQ, BATCH, RANDOM, GRID_LIN, GRID_GP)
MAX_CONTENDERS = (SEQ, BATCH, RANDOM, TPE)
LABELS = {
    SEQ: "pilotwave, sequential",
    BATCH: "pilotwave, batch={b} async",
    RANDOM: "random + GP",  # maximizing: "random search" (no GP)
    GRID_LIN: "grid n×n, linear interp.",
    GRID_GP: "grid n×n, GP",
    TPE: "optuna TPE, sequential",
}

# -- problems -------------------------------------------------------------------------------


def smooth(x: float, y: float) -> float:
    return math.sin(3 * x) + math.cos(3 * y) + 0.5 * x * y


def two_dips(x: float, y: float) -> float:
    d1 = ((x - 0.28) ** 2 + (y - 0.30) ** 2) / (2 * 0.13**2)
    d2 = ((x - 0.72) ** 2 + (y - 0.68) ** 2) / (2 * 0.11**2)
    return 1.0 - 0.9 * math.exp(-d1) - 0.9 * math.exp(-d2)


def cls(mass: float, coupling: float) -> float:
    from scipy.stats import poisson

    s = 400.0 * coupling**2 * math.exp(-(mass - 100.0) / 200.0)
    return float(poisson.cdf(10, 10.0 + s) / poisson.cdf(10, 10.0))


def branin_neg(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return -((x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10)


def two_bump(x: float, y: float) -> float:
    narrow = math.exp(-((x - 0.2) ** 2 + (y - 0.75) ** 2) / (2 * 0.08**2))
    broad = 0.7 * math.exp(-((x - 0.7) ** 2 + (y - 0.3) ** 2) / (2 * 0.2**2))
    return narrow + broad


def _box(**dims: tuple[float, float] | tuple[float, float, bool]) -> dict[str, Any]:
    return {
        name: {"low": d[0], "high": d[1], **({"log": True} if len(d) > 2 else {})}
        for name, d in dims.items()
    }


@dataclass(frozen=True)
class Problem:
    """A 2-D test function, its space, and (for a contour) the level and learned scale."""

    name: str
    fn: Callable[..., float]
    space: dict[str, Any]
    level: float | None = None
    transform: str | None = None

    def value(self, params: Mapping[str, float]) -> float:
        return self.fn(**params)

    def learned(self, v: float) -> float:
        """``v`` on the learner's scale (log with its floor, for ``transform="log"``)."""
        return math.log(max(v, LOG_FLOOR)) if self.transform == "log" else v

    def level_t(self) -> float:
        assert self.level is not None
        return self.learned(self.level)


CONTOURS = {
    p.name: p
    for p in (
        Problem("smooth", smooth, _box(x=(-2.0, 2.0), y=(-2.0, 2.0)), 0.5),
        Problem("two-dips", two_dips, _box(x=(0.0, 1.0), y=(0.0, 1.0)), 0.5),
        Problem("cls", cls, _box(mass=(100.0, 1000.0), coupling=(0.01, 1.0, True)), 0.05, "log"),
    )
}
MAXIMA = {
    p.name: p
    for p in (
        Problem("smooth", smooth, _box(x=(-2.0, 2.0), y=(-2.0, 2.0))),
        Problem("branin", branin_neg, _box(x1=(-5.0, 10.0), x2=(0.0, 15.0))),
        Problem("two-bump", two_bump, _box(x=(0.0, 1.0), y=(0.0, 1.0))),
    )
}


def values_at(problem: Problem, box: Box, u: np.ndarray) -> np.ndarray:
    """The problem's values at unit-cube points (rows)."""
    return np.array([problem.value(box.params(row)) for row in u])


def truth_below(problem: Problem) -> np.ndarray:
    """f < level on the learner's estimate grid, shaped (41, 41) like ``estimate()["below"]``."""
    box = Box(problem.space)
    assert problem.level is not None
    return (values_at(problem, box, box.grid_unit(GRID)) < problem.level).reshape(GRID, GRID)


def true_max(problem: Problem) -> float:
    """The maximum on a 1001 x 1001 grid, polished with L-BFGS-B from its 10 best points."""
    from scipy.optimize import minimize

    box = Box(problem.space)
    u = box.grid_unit(1001)
    lo = np.array([problem.space[n]["low"] for n in box.names])
    hi = np.array([problem.space[n]["high"] for n in box.names])
    x = lo + u * (hi - lo)  # no log axes among the maximize problems
    v = np.array([problem.fn(*row) for row in x])
    best = float(v.max())
    for i in np.argsort(v)[-10:]:
        res = minimize(
            lambda z: -problem.fn(*z),
            x[i],
            method="L-BFGS-B",
            bounds=list(zip(lo, hi, strict=True)),
        )
        best = max(best, -float(res.fun))
    return best


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


# -- runs -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One contender on one problem with one seed.

    ``score[n]``: IoU (contours) or regret (maximizing) after ``n`` evaluations; a grid's
    scores sit at n = side^2.  ``react_ms[n]``: tell + next ask for the n-th result, in ms.
    """

    goal: str
    problem: str
    contender: str
    seed: int
    score: dict[int, float] = field(default_factory=dict)
    react_ms: dict[int, float] = field(default_factory=dict)
    ask_ms: dict[int, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def reach(self, target: float, *, stays: bool) -> float:
        """Evaluations to IoU >= target (first time, or for good); inf when never."""
        ns = sorted(self.score)
        if not stays:
            return next((n for n in ns if self.score[n] >= target), math.inf)
        out = math.inf
        for n in reversed(ns):
            if self.score[n] < target:
                break
            out = n
        return out

    def at(self, k: int) -> float:
        """The score after at most ``k`` evaluations (the last one recorded at or below k)."""
        ns = [n for n in self.score if n <= k]
        return self.score[max(ns)] if ns else math.nan


def drive(
    learner: Learner,
    problem: Problem,
    parallel: int,
    seed: int,
    run: Run,
    after: Callable[[Learner, int], None],
    stop: int,
) -> None:
    """Evaluate with ``parallel`` points in flight until ``stop`` evaluations have finished.

    Each evaluation lasts an exponential time (mean 1, seeded); the earliest to finish is
    told, a new point is asked at once, then ``after(learner, finished)`` scores the state.
    The learner's budget is ``stop + parallel``, so it asks after every result up to
    ``stop``: the score after n results is a longer search's at its n-th result (with
    ``parallel > 1``, points asked near the end may finish before earlier ones).
    """
    rng = np.random.default_rng([seed, 2])
    flight: list[tuple[float, int]] = []

    def start(now: float) -> None:
        p = learner.ask()
        heapq.heappush(flight, (now + float(rng.exponential(1.0)), p.index))

    while len(learner.points) < min(parallel, learner.budget):
        start(0.0)
    finished = 0
    while flight and finished < stop:
        now, index = heapq.heappop(flight)
        output = {"value": problem.value(learner.points[index].params)}
        t0 = time.perf_counter()
        learner.tell(index, output)
        t1 = time.perf_counter()
        if len(learner.points) < learner.budget:
            start(now)
        t2 = time.perf_counter()
        finished += 1
        run.react_ms[finished] = (t2 - t0) * 1e3
        run.ask_ms[finished] = (t2 - t1) * 1e3
        after(learner, finished)


def learner_for(
    problem: Problem,
    goal: str,
    stop: int,
    batch: int,
    seed: int,
    acquisition: str | None = None,
) -> Learner:
    kw: dict[str, Any] = dict(
        goal=goal,
        level=problem.level,
        budget=stop + batch,
        batch=batch,
        seed=seed,
        acquisition=acquisition,
        transform=problem.transform,
        tol=0.0,
        patience=stop + batch + 1,  # never converged: it never stops asking
    )
    return Learner(problem.space, **kw)


def contour_learner(
    problem: Problem, truth: np.ndarray, batch: int, seed: int, args: argparse.Namespace
) -> Run:
    run = Run("contour", problem.name, SEQ if batch == 1 else BATCH, seed)
    learner = learner_for(problem, "contour", args.budget, batch, seed, args.acquisition)

    def after(lr: Learner, n: int) -> None:
        run.score[n] = iou(np.array(lr.estimate()["below"], dtype=bool), truth)

    t0 = time.perf_counter()
    drive(learner, problem, batch, seed, run, after, args.budget)
    run.wall_s = time.perf_counter() - t0
    return run


def contour_random(problem: Problem, truth: np.ndarray, seed: int, args: argparse.Namespace) -> Run:
    run = Run("contour", problem.name, RANDOM, seed)
    box = Box(problem.space)
    grid_u = box.grid_unit(GRID)
    u = box.snap(np.random.default_rng([seed, 1]).random((args.budget, box.dim)))
    y = np.array([problem.learned(v) for v in values_at(problem, box, u)])
    t0 = time.perf_counter()
    run.score[1] = 0.0  # one point: no GP yet (as the learner's estimate)
    for n in range(2, args.budget + 1):
        gp = _fit(u[:n], y[:n], seed=(seed + n) % (1 << 31))
        below = (gp.predict(grid_u) < problem.level_t()).reshape(GRID, GRID)
        run.score[n] = iou(below, truth)
    run.wall_s = time.perf_counter() - t0
    return run


def contour_grid(problem: Problem, truth: np.ndarray, args: argparse.Namespace) -> list[Run]:
    from scipy.interpolate import RegularGridInterpolator

    box = Box(problem.space)
    grid_u = box.grid_unit(GRID)
    lin = Run("contour", problem.name, GRID_LIN, 0)
    gpr = Run("contour", problem.name, GRID_GP, 0)
    t0 = time.perf_counter()
    for side in range(2, args.grid_max + 1):
        u = box.grid_unit(side)
        y = np.array([problem.learned(v) for v in values_at(problem, box, u)])
        line = np.linspace(0.0, 1.0, side)
        interp = RegularGridInterpolator((line, line), y.reshape(side, side), method="linear")
        lin.score[side**2] = iou((interp(grid_u) < problem.level_t()).reshape(GRID, GRID), truth)
        if side <= args.gp_grid_max:
            gp = _fit(u, y, seed=side)
            below = (gp.predict(grid_u) < problem.level_t()).reshape(GRID, GRID)
            gpr.score[side**2] = iou(below, truth)
    lin.wall_s = gpr.wall_s = time.perf_counter() - t0
    return [lin, gpr]


def max_learner(
    problem: Problem, fmax: float, batch: int, seed: int, args: argparse.Namespace
) -> Run:
    run = Run("maximize", problem.name, SEQ if batch == 1 else BATCH, seed)
    learner = learner_for(problem, "maximize", max(args.checkpoints), batch, seed)

    def after(lr: Learner, n: int) -> None:
        if n in args.checkpoints:
            best = lr.best()
            assert best is not None
            run.score[n] = fmax - problem.value(best["params"])

    t0 = time.perf_counter()
    drive(learner, problem, batch, seed, run, after, max(args.checkpoints))
    run.wall_s = time.perf_counter() - t0
    return run


def max_random(problem: Problem, fmax: float, seed: int, args: argparse.Namespace) -> Run:
    run = Run("maximize", problem.name, RANDOM, seed)
    box = Box(problem.space)
    u = np.random.default_rng([seed, 1]).random((max(args.checkpoints), box.dim))
    v = values_at(problem, box, u)
    for k in args.checkpoints:
        run.score[k] = fmax - float(v[:k].max())
    return run


def max_tpe(problem: Problem, fmax: float, seed: int, args: argparse.Namespace) -> Run:
    import optuna
    from optuna.samplers import TPESampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = Run("maximize", problem.name, TPE, seed)

    def objective(trial: optuna.Trial) -> float:
        params = {
            k: trial.suggest_float(k, d["low"], d["high"], log=bool(d.get("log")))
            for k, d in problem.space.items()
        }
        return problem.value(params)

    study = optuna.create_study(
        direction="maximize", sampler=TPESampler(seed=seed, multivariate=True)
    )
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=max(args.checkpoints))
    run.wall_s = time.perf_counter() - t0
    values = [t.value for t in sorted(study.trials, key=lambda t: t.number)]
    for k in args.checkpoints:
        run.score[k] = fmax - max(v for v in values[:k] if v is not None)
    return run


# -- report ---------------------------------------------------------------------------------


def spread(xs: Sequence[float], spec: str = "g", cap: int | None = None) -> str:
    """Median (min–max); values past ``cap`` (inf) as ">cap"."""
    if not xs:
        return "-"

    def one(x: float) -> str:
        if math.isinf(x):
            return f">{cap}" if cap is not None else "inf"
        return format(x, spec)

    lo, mid, hi = min(xs), median(xs), max(xs)
    if len(xs) == 1:
        return one(mid)
    return f"{one(mid)} ({one(lo)}–{one(hi)})"


def label(contender: str, args: argparse.Namespace, goal: str = "contour") -> str:
    if goal == "maximize" and contender == RANDOM:
        return "random search"
    text = LABELS[contender].format(b=args.batch)
    if goal == "contour" and contender in (SEQ, BATCH):
        if args.acquisition:
            text += f", {args.acquisition}"
        if args.no_explore:
            text += ", no exploration step"
    return text


def median(xs: Sequence[float]) -> float:
    """The median, with inf allowed (``stats.percentile`` gives NaN for inf - inf)."""
    return statistics.median(xs) if xs else math.nan


def mine(runs: Sequence[Run], goal: str, problem: str, contender: str) -> list[Run]:
    return [r for r in runs if (r.goal, r.problem, r.contender) == (goal, problem, contender)]


def report_contours(runs: Sequence[Run], args: argparse.Namespace, console: Any) -> None:
    from rich.table import Table

    t = args.target_iou
    table = Table(
        title=f"Contours: evaluations to IoU >= {t} with the truth on the {GRID}x{GRID} grid, "
        f"median (min–max) over {args.seeds} seeds; budget {args.budget}"
    )
    for col in ("problem", "contender", "runs", f"first >= {t}", f"stays >= {t}", "never"):
        table.add_column(col, justify="left" if col in ("problem", "contender") else "right")
    for k in args.iou_at:
        table.add_column(f"IoU @{k}", justify="right")
    for problem in args.contour_problems:
        for contender in CONTOUR_CONTENDERS:
            rs = mine(runs, "contour", problem, contender)
            if not rs:
                continue
            cap = args.grid_max**2 if contender == GRID_LIN else args.budget
            if contender == GRID_GP:
                cap = args.gp_grid_max**2
            table.add_row(
                problem,
                label(contender, args),
                str(len(rs)),
                spread([r.reach(t, stays=False) for r in rs], cap=cap),
                spread([r.reach(t, stays=True) for r in rs], cap=cap),
                str(sum(math.isinf(r.reach(t, stays=True)) for r in rs)),
                *(spread([r.at(k) for r in rs], ".3f") for k in args.iou_at),
            )
    console.print(table)
    console.print(
        "first: evaluations after which the IoU first reached the target; stays: from which it "
        "stayed there to the end of the run (the grid: to the largest n); never: runs in which "
        "it did not end there. Grid rows: "
        "evaluations = n², IoU @k = the largest grid with n² <= k. batch rows count "
        "evaluations finished.",
        markup=False,
    )
    for line in contour_verdicts(runs, args):
        console.print(line, markup=False)


def contour_verdicts(runs: Sequence[Run], args: argparse.Namespace) -> list[str]:
    t = args.target_iou
    out = []

    def med(problem: str, contender: str, stays: bool) -> float:
        rs = mine(runs, "contour", problem, contender)
        return median([r.reach(t, stays=stays) for r in rs])

    if "smooth" in args.contour_problems:
        first, stays = med("smooth", SEQ, False), med("smooth", SEQ, True)
        if not math.isnan(stays):
            out.append(
                f"target smooth, sequential: IoU >= {t} within 60 evaluations: "
                f"{'met' if stays <= 60 else 'MISSED'} (median first {first:g}, stays {stays:g})"
            )
    for problem in args.contour_problems:
        s, b = med(problem, SEQ, True), med(problem, BATCH, True)
        if math.isnan(s) or math.isnan(b):
            continue
        ratio = b / s if math.isfinite(s) else math.nan
        out.append(
            f"target {problem}, batch={args.batch} <= 1.3x sequential (median stays): "
            f"{'met' if ratio <= 1.3 else 'MISSED'} ({b:g} vs {s:g}, ratio {ratio:.2f})"
        )
    return out


def report_maxima(runs: Sequence[Run], args: argparse.Namespace, console: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"Maximizing: regret (true max - f at the returned point), median (min–max) "
        f"over {args.seeds} seeds"
    )
    for col in ("problem", "true max", "contender", "runs"):
        table.add_column(col, justify="right" if col in ("true max", "runs") else "left")
    for k in args.checkpoints:
        table.add_column(f"regret @{k}", justify="right")
    for problem in args.max_problems:
        for contender in MAX_CONTENDERS:
            rs = mine(runs, "maximize", problem, contender)
            if rs:
                table.add_row(
                    problem,
                    f"{args.fmax[problem]:.6g}",
                    label(contender, args, "maximize"),
                    str(len(rs)),
                    *(spread([r.score[k] for r in rs], ".3g") for k in args.checkpoints),
                )
    console.print(table)


def report_reaction(runs: Sequence[Run], args: argparse.Namespace, console: Any) -> None:
    from rich.table import Table

    table = Table(
        title="Learner reaction time: tell + next ask, ms, median (p95) over results 55–65 "
        "of every run"
    )
    for col in ("goal", "contender", "results", "tell + ask ms", "ask ms"):
        table.add_column(col, justify="left" if col in ("goal", "contender") else "right")
    for goal in ("contour", "maximize"):
        for contender in (SEQ, BATCH):
            rs = [r for r in runs if r.goal == goal and r.contender == contender]
            react = [v for r in rs for n, v in r.react_ms.items() if 55 <= n <= 65]
            ask = [v for r in rs for n, v in r.ask_ms.items() if 55 <= n <= 65]
            if react:
                table.add_row(
                    goal,
                    label(contender, args, goal),
                    str(len(react)),
                    f"{percentile(react, 50):.0f} ({percentile(react, 95):.0f})",
                    f"{percentile(ask, 50):.0f} ({percentile(ask, 95):.0f})",
                )
    console.print(table)
    console.print(
        "tell refits the GP when it closes a round (every result with batch=1, every 8th with "
        "batch=8); ask refits it when new values arrived, and with points in flight fits a GP "
        "with them at the believed mean.",
        markup=False,
    )


def plot(runs: Sequence[Run], args: argparse.Namespace, path: Path) -> None:
    """Median IoU against evaluations, one panel per contour problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = args.contour_problems
    fig, axes = plt.subplots(1, len(probs), figsize=(5.5 * len(probs), 4))
    axes = [axes] if len(probs) == 1 else list(axes)
    for ax, problem in zip(axes, probs, strict=True):
        for contender in CONTOUR_CONTENDERS:
            rs = mine(runs, "contour", problem, contender)
            if not rs:
                continue
            ns = sorted(rs[0].score)
            ys = [percentile([r.score.get(n, math.nan) for r in rs], 50) for n in ns]
            style = "o-" if contender in (GRID_LIN, GRID_GP) else "-"
            ax.plot(ns, ys, style, ms=3, label=label(contender, args))
        ax.axhline(args.target_iou, color="grey", lw=0.8, ls="--")
        ax.set_xlim(0, args.budget)
        ax.set_ylim(0, 1.01)
        ax.set_title(f"{problem} ({args.seeds} seeds, median)")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("IoU with the true excluded region")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seeds", type=int, default=None, help="runs per contender (default 5)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from here (default 0)")
    ap.add_argument(
        "--quick", action="store_true", help="1 seed, budget 60, checkpoints 20,40: ~1 minute"
    )
    ap.add_argument(
        "--parts", default="contour,maximize", help="comma-separated (default contour,maximize)"
    )
    ap.add_argument(
        "--contour-problems", default=",".join(CONTOURS), help="default " + ",".join(CONTOURS)
    )
    ap.add_argument("--max-problems", default=",".join(MAXIMA), help="default " + ",".join(MAXIMA))
    ap.add_argument("--budget", type=int, default=None, help="contour evaluations (default 100)")
    ap.add_argument(
        "--contenders",
        default="sequential,batch,random,grid",
        help="contours: comma-separated from sequential,batch,random,grid (default all)",
    )
    ap.add_argument(
        "--acquisition",
        choices=("straddle", "entropy"),
        default=None,
        help="contours: default straddle",
    )
    ap.add_argument(
        "--no-explore",
        action="store_true",
        help="contours: no exploration step (pilotwave.active.learner.EXPLORE_EVERY set huge); "
        "reproduces the learner's old straddle-only behaviour (entropy-only with "
        "--acquisition entropy)",
    )
    ap.add_argument("--batch", type=int, default=8, help="points in flight (default 8)")
    ap.add_argument("--target-iou", type=float, default=0.95, help="default 0.95")
    ap.add_argument("--iou-at", default="20,40,60", help="IoU columns (default 20,40,60)")
    ap.add_argument("--checkpoints", default=None, help="regret after (default 20,40,60)")
    ap.add_argument("--grid-max", type=int, default=20, help="largest grid side (default 20)")
    ap.add_argument("--gp-grid-max", type=int, default=None, help="GP on grids up to (def. 12)")
    ap.add_argument("--plot", type=Path, default=None, help="also write a PNG of IoU curves")
    args = ap.parse_args(argv)
    quick = args.quick
    args.seeds = args.seeds or (1 if quick else 5)
    args.budget = args.budget or (60 if quick else 100)
    args.checkpoints = csv(int, args.checkpoints or ("20,40" if quick else "20,40,60"))
    args.gp_grid_max = args.gp_grid_max or (8 if quick else 12)
    args.parts = csv(str, args.parts)
    args.contour_problems = csv(str, args.contour_problems)
    args.contenders = csv(str, args.contenders)
    args.max_problems = csv(str, args.max_problems)
    args.iou_at = [k for k in csv(int, args.iou_at) if k <= args.budget]
    if set(args.parts) - {"contour", "maximize"} or not args.parts:
        ap.error("--parts: choose from contour, maximize")
    if set(args.contenders) - {SEQ, BATCH, RANDOM, "grid"} or not args.contenders:
        ap.error("--contenders: choose from sequential, batch, random, grid")
    if set(args.contour_problems) - set(CONTOURS):
        ap.error(f"--contour-problems: choose from {', '.join(CONTOURS)}")
    if set(args.max_problems) - set(MAXIMA):
        ap.error(f"--max-problems: choose from {', '.join(MAXIMA)}")
    if min(args.seeds, args.batch, *args.checkpoints) < 1 or args.budget < 8:
        ap.error("--seeds, --batch and --checkpoints must be >= 1, --budget >= 8")
    if args.grid_max < 2 or args.gp_grid_max < 2:
        ap.error("--grid-max and --gp-grid-max must be >= 2")
    args.checkpoints = sorted(set(args.checkpoints))
    return args


def run_all(args: argparse.Namespace, note: Callable[[Run, str], None]) -> list[Run]:
    """Every contender on every problem and seed, in this process, one run at a time."""
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    t = args.target_iou
    runs: list[Run] = []
    for name in args.contour_problems if "contour" in args.parts else []:
        problem = CONTOURS[name]
        truth = truth_below(problem)
        for r in contour_grid(problem, truth, args) if "grid" in args.contenders else []:
            runs.append(r)
            note(r, f"n² to IoU {t}: {r.reach(t, stays=True)}")
        for seed in seeds:
            for contender in (c for c in (SEQ, BATCH, RANDOM) if c in args.contenders):
                if contender == RANDOM:
                    runs.append(contour_random(problem, truth, seed, args))
                else:
                    batch = 1 if contender == SEQ else args.batch
                    runs.append(contour_learner(problem, truth, batch, seed, args))
                note(runs[-1], f"stays >= {t} from {runs[-1].reach(t, stays=True)}")
    args.fmax = {}
    for name in args.max_problems if "maximize" in args.parts else []:
        problem = MAXIMA[name]
        args.fmax[name] = fmax = true_max(problem)
        k = max(args.checkpoints)
        for seed in seeds:
            runs.append(max_learner(problem, fmax, 1, seed, args))
            runs.append(max_learner(problem, fmax, args.batch, seed, args))
            runs.append(max_random(problem, fmax, seed, args))
            runs.append(max_tpe(problem, fmax, seed, args))
            for r in runs[-4:]:
                note(r, f"regret @{k} {r.score[k]:.4g}")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    if args.no_explore:
        learner_module.EXPLORE_EVERY = 1 << 62  # never reached: the old, acquisition-only learner
    console = Console(width=None if sys.stdout.isatty() else 180)
    started = time.perf_counter()

    def note(r: Run, text: str) -> None:
        print(
            f"[{time.perf_counter() - started:6.0f} s] {r.goal} {r.problem} {r.contender} "
            f"seed {r.seed}: {text} ({r.wall_s:.1f} s)",
            flush=True,
        )

    runs = run_all(args, note)
    console.print(f"total {time.perf_counter() - started:.0f} s")
    if "contour" in args.parts:
        report_contours(runs, args, console)
    if "maximize" in args.parts:
        report_maxima(runs, args, console)
    report_reaction(runs, args, console)
    if args.plot is not None and "contour" in args.parts:
        plot(runs, args, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
