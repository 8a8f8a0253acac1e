"""HPO quality: regret of asynchronous TPE on 8 pilot slots against sequential Optuna TPE.

Two test functions with known minima (``bench/hpo_problems.py``): Hartmann6 (6-D on
[0, 1]^6, minimum -3.32237) and Branin (2-D on [-5, 10] x [0, 15], minimum 0.397887).
Each contender minimises each function ``--seeds`` times (default 10, seeds 0..9) with
``--trials`` evaluations (default 100); regret = best value found - the global minimum.

Contenders, in the same run:

- pilotwave: ``hpo.optimize`` with its default sampler (TPE, multivariate, constant liar),
  ``parallel=8`` on 2 local pilots x 4 slots.  Each evaluation sleeps 0.05-0.4 s, drawn
  from an RNG keyed on the parameters, so the 8 trials in flight finish out of order and the
  sampler proposes each point knowing only the trials finished so far.
- optuna TPE: the same sampler configuration (``TPESampler(seed=s, multivariate=True,
  constant_liar=True)``), sequential, in this process, no sleep: every point is proposed
  with all earlier results known.  The target: pilotwave's median final regret no worse.
- optuna TPE n_jobs=8: the same sampler, in this process, 8 threads sleeping as the pilots'
  trials do: the cost of asynchrony alone, without pilotwave.
- random: Optuna's ``RandomSampler(seed=s)``, in this process.

Regret after 25, 50 and 100 evaluations counts trials in the order they were asked (trial
number), not in the order they finished.  The table gives, per function and contender, the
median and the interquartile range (25-75 %) over seeds, and a two-sided Mann-Whitney U
test of pilotwave's final regrets against sequential TPE's.

Run from the repository root::

    .venv/bin/python bench/hpo_quality.py                          # 10 seeds, both functions
    .venv/bin/python bench/hpo_quality.py --seeds 20 --plot regret.png
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# hpo_problems must import as a top-level module, so that its directory ships as the sandbox.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import hpo_problems as hp  # noqa: E402
from hpo_overhead import BACKENDS, local_cluster  # noqa: E402
from stats import csv, fmt, percentile  # noqa: E402

from pilotwave import hpo  # noqa: E402

PILOTWAVE, TPE, TPE_THREADS, RANDOM = "pilotwave", "optuna-tpe", "optuna-tpe-threads", "random"
CONTENDERS = (PILOTWAVE, TPE, TPE_THREADS, RANDOM)
LABELS = {
    PILOTWAVE: "pilotwave, parallel={p}",
    TPE: "optuna TPE, sequential",
    TPE_THREADS: "optuna TPE, n_jobs={p}",
    RANDOM: "random search",
}
JOBS: dict[str, Any] = {"hartmann6": hp.hartmann6, "branin": hp.branin}


@dataclass
class Study:
    """One contender's study of one function with one seed: values in the order asked."""

    problem: str
    contender: str
    seed: int
    values: list[float | None]  # by trial number; None for a trial without a value
    wall_s: float

    def regret_at(self, k: int) -> float:
        """Best value among the first ``k`` trials asked, minus the function's minimum."""
        seen = [v for v in self.values[:k] if v is not None]
        if not seen:
            return float("nan")
        return min(seen) - hp.PROBLEMS[self.problem].minimum


# -- contenders ---------------------------------------------------------------------------


def run_pilotwave(problem: hp.Problem, seed: int, args: argparse.Namespace) -> Study:
    space = {**problem.space(), **hp.sleep_space(*args.sleep)}
    t0 = time.perf_counter()
    run = hpo.optimize.submit(
        objective=JOBS[problem.name],
        space=space,
        n_trials=args.trials,
        parallel=args.parallel,
        seed=seed,
    )
    result = run.result(timeout=args.timeout)
    wall = time.perf_counter() - t0
    values: list[float | None] = [None] * args.trials
    for t in result["trials"]:
        if t["state"] == "complete":
            values[t["number"]] = t["value"]
    return Study(problem.name, PILOTWAVE, seed, values, wall)


def run_optuna(problem: hp.Problem, contender: str, seed: int, args: argparse.Namespace) -> Study:
    import optuna
    from optuna.samplers import RandomSampler, TPESampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (
        RandomSampler(seed=seed)
        if contender == RANDOM
        else TPESampler(seed=seed, multivariate=True, constant_liar=True)
    )
    threads = contender == TPE_THREADS

    def objective(trial: optuna.Trial) -> float:
        params = {k: trial.suggest_float(k, lo, hi) for k, (lo, hi) in problem.dims.items()}
        if threads:
            time.sleep(hp.pause_for(params, *args.sleep))
        return problem.value(params)

    study = optuna.create_study(sampler=sampler)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=args.trials, n_jobs=args.parallel if threads else 1)
    wall = time.perf_counter() - t0
    values: list[float | None] = [None] * args.trials
    for t in study.trials:
        if t.value is not None:
            values[t.number] = t.value
    return Study(problem.name, contender, seed, values, wall)


# -- report -------------------------------------------------------------------------------


def cell(xs: Sequence[float]) -> str:
    """Median and interquartile range: ``0.0123 (0.0045-0.0310)``."""
    if not xs:
        return "-"
    return f"{percentile(xs, 50):.3g} ({percentile(xs, 25):.3g}–{percentile(xs, 75):.3g})"


def report(studies: Sequence[Study], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 180)  # no truncation in logs
    table = Table(
        title=f"HPO regret (best found - global minimum): median (IQR 25–75 %) over "
        f"{args.seeds} seeds, {args.trials} evaluations"
    )
    for col in ("function", "contender", "studies"):
        table.add_column(col)
    for k in args.checkpoints:
        table.add_column(f"regret @{k}", justify="right")
    table.add_column("wall s / study", justify="right")
    for problem in args.problems:
        for contender in args.contenders:
            mine = [s for s in studies if s.problem == problem and s.contender == contender]
            if not mine:
                continue
            table.add_row(
                problem,
                LABELS[contender].format(p=args.parallel),
                str(len(mine)),
                *(cell([s.regret_at(k) for s in mine]) for k in args.checkpoints),
                fmt(percentile([s.wall_s for s in mine], 50), ".2f"),
            )
    console.print(table)
    for line in verdicts(studies, args):
        console.print(line, markup=False)
    console.print(
        f"Regret @k: best of the first k trials asked (trial number). pilotwave: "
        f"{args.pilots} pilots x {args.slots} slots, each evaluation sleeps "
        f"{args.sleep[0]:g}–{args.sleep[1]:g} s (n_jobs rows: the same sleeps in threads).",
        markup=False,
    )


def verdicts(studies: Sequence[Study], args: argparse.Namespace) -> list[str]:
    """The target, per function: pilotwave's median final regret <= sequential TPE's.

    With the p-value of a two-sided Mann-Whitney U test against sequential TPE, and against
    Optuna's own asynchronous TPE (n_jobs threads), when that ran.
    """
    from scipy.stats import mannwhitneyu

    def finals(problem: str, contender: str) -> list[float]:
        return [
            s.regret_at(args.trials)
            for s in studies
            if s.problem == problem and s.contender == contender
        ]

    out = []
    for problem in args.problems:
        pw_r, tpe_r, thr_r = (finals(problem, c) for c in (PILOTWAVE, TPE, TPE_THREADS))
        if not pw_r or not tpe_r:
            continue
        a, b = percentile(pw_r, 50), percentile(tpe_r, 50)
        p = mannwhitneyu(pw_r, tpe_r, alternative="two-sided").pvalue
        line = (
            f"target {problem}: pilotwave median final regret {a:.3g} <= sequential TPE "
            f"{b:.3g}: {'met' if a <= b else 'MISSED'} (ratio {a / b if b else float('inf'):.2f}, "
            f"Mann-Whitney p={p:.2f})"
        )
        if thr_r:
            c = percentile(thr_r, 50)
            q = mannwhitneyu(pw_r, thr_r, alternative="two-sided").pvalue
            line += f"; vs optuna TPE n_jobs={args.parallel} {c:.3g} (p={q:.2f})"
        out.append(line)
    return out


def plot(studies: Sequence[Study], args: argparse.Namespace, path: Path) -> None:
    """Median best-so-far regret against evaluations, with the IQR shaded, per function."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.problems), figsize=(6 * len(args.problems), 4.2))
    axes = [axes] if len(args.problems) == 1 else list(axes)
    xs = list(range(1, args.trials + 1))
    for ax, problem in zip(axes, args.problems, strict=True):
        for contender in args.contenders:
            mine = [s for s in studies if s.problem == problem and s.contender == contender]
            if not mine:
                continue
            curves = [[s.regret_at(k) for s in mine] for k in xs]
            ax.plot(
                xs,
                [percentile(c, 50) for c in curves],
                label=LABELS[contender].format(p=args.parallel),
            )
            ax.fill_between(
                xs,
                [percentile(c, 25) for c in curves],
                [percentile(c, 75) for c in curves],
                alpha=0.2,
            )
        ax.set_yscale("log")
        ax.set_title(f"{problem} ({args.seeds} seeds)")
        ax.set_xlabel("evaluations (in the order asked)")
        ax.set_ylabel("regret")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seeds", type=int, default=10, help="studies per contender (default 10)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from here (default 0)")
    ap.add_argument("--trials", type=int, default=100, help="evaluations per study (default 100)")
    ap.add_argument(
        "--problems", default="hartmann6,branin", help="comma-separated (default hartmann6,branin)"
    )
    ap.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from {','.join(CONTENDERS)} (default all)",
    )
    ap.add_argument(
        "--parallel", type=int, default=8, help="pilotwave trials in flight (default 8)"
    )
    ap.add_argument("--pilots", type=int, default=2, help="local pilots (default 2)")
    ap.add_argument("--slots", type=int, default=4, help="job slots per pilot (default 4)")
    ap.add_argument(
        "--sleep",
        default="0.05,0.4",
        help="an evaluation's sleep range MIN,MAX s (default 0.05,0.4)",
    )
    ap.add_argument(
        "--checkpoints",
        default="25,50,100",
        help="regret after these evaluations (default 25,50,100)",
    )
    ap.add_argument("--backend", choices=BACKENDS, default="sqlite", help="default sqlite")
    ap.add_argument("--plot", type=Path, default=None, help="also write a PNG of regret curves")
    ap.add_argument(
        "--timeout", type=float, default=600.0, help="give up on one study after S seconds"
    )
    args = ap.parse_args(argv)
    args.problems = csv(str, args.problems)
    args.contenders = csv(str, args.contenders)
    args.checkpoints = csv(int, args.checkpoints)
    args.sleep = csv(float, args.sleep)
    if not args.problems or set(args.problems) - set(hp.PROBLEMS):
        ap.error(f"--problems: choose from {', '.join(hp.PROBLEMS)}")
    if not args.contenders or set(args.contenders) - set(CONTENDERS):
        ap.error(f"--contenders: choose from {', '.join(CONTENDERS)}")
    if len(args.sleep) != 2 or not 0 <= args.sleep[0] <= args.sleep[1]:
        ap.error("--sleep takes MIN,MAX with 0 <= MIN <= MAX")
    if min(args.seeds, args.trials, args.parallel, args.pilots, args.slots) < 1:
        ap.error("--seeds, --trials, --parallel, --pilots and --slots must be at least 1")
    args.checkpoints = sorted({min(k, args.trials) for k in args.checkpoints if k > 0})
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    studies: list[Study] = []

    def note(s: Study, i: int, n: int) -> None:
        print(
            f"[{i}/{n}] {s.contender} {s.problem} seed {s.seed}: regret "
            f"{s.regret_at(args.trials):.4g} ({s.wall_s:.1f} s)",
            flush=True,
        )

    if PILOTWAVE in args.contenders:
        n = len(args.problems) * args.seeds
        with local_cluster(args.pilots, args.slots, args.backend):
            for i, (problem, seed) in enumerate(
                ((p, s) for p in args.problems for s in seeds), start=1
            ):
                studies.append(run_pilotwave(hp.PROBLEMS[problem], seed, args))
                note(studies[-1], i, n)
    others = [c for c in args.contenders if c != PILOTWAVE]
    n = len(others) * len(args.problems) * args.seeds
    i = 0
    for contender in others:
        for problem in args.problems:
            for seed in seeds:
                i += 1
                studies.append(run_optuna(hp.PROBLEMS[problem], contender, seed, args))
                note(studies[-1], i, n)
    report(studies, args)
    if args.plot is not None:
        plot(studies, args, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
