"""HPO segmented: 20 studies x 20 trials in one ``hpo.optimize`` workflow sharing 8 slots.

One workflow with ``segments`` (default 20 names, ``s00``..``s19``) runs one TPE study per
segment, ``--trials`` each (default 20), ``parallel=8`` on 2 local pilots x 4 slots.  Segment
``s``'s objective is a shifted and scaled Branin, ``scale * branin(x1 - d1, x2 - d2) +
offset`` with (d1, d2, scale, offset) drawn from the segment's name (``Shift`` in
``bench/hpo_problems.py``): its minimum, ``scale * 0.397887 + offset``, is known and lies
inside the space.  Each evaluation sleeps 0.02-0.1 s (an RNG keyed on the parameters).

Reported:

- utilization and gaps, as in ``bench/hpo_overhead.py``: util % = sum of objective body
  times / (8 x first body start..last body end); ideal s = sum of body times / 8 (the wall
  time of a perfect packing); gap = a trial's start - the latest end before it; the legs of
  a slot's idle time (report, driver, claim, dispatch; their sum, turnaround).
- per-segment final regret, in Branin units ((best - minimum) / scale), median and IQR over
  all segments of all ``--seeds`` workflows, after 10 and after ``--trials`` trials (by trial
  number within the segment), against the same 20 studies run one after another in this
  process with Optuna TPE (the same sampler configuration and the same seed for segment k,
  ``seed + 7919 k``, as pilotwave gives it) and with random search.

Run from the repository root::

    .venv/bin/python bench/hpo_segmented.py                       # 3 workflows of 20 x 20
    .venv/bin/python bench/hpo_segmented.py --segments 50 --trials 40 --seeds 1
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

import hpo_overhead as ho  # noqa: E402
import hpo_problems as hp  # noqa: E402
from stats import fmt, percentile  # noqa: E402

PILOTWAVE, TPE, RANDOM = "pilotwave", "optuna-tpe", "random"
LABELS = {
    PILOTWAVE: "pilotwave, one workflow, parallel={p}",
    TPE: "optuna TPE, sequential, one study per segment",
    RANDOM: "random search, one study per segment",
}
SEED_STRIDE = 7919  # pilotwave seeds segment k's sampler with seed + 7919 k


@dataclass
class Segment:
    """One segment's study: its values in the order asked."""

    contender: str
    seed: int
    name: str
    values: list[float | None]

    def regret_at(self, k: int) -> float:
        seen = [v for v in self.values[:k] if v is not None]
        if not seen:
            return float("nan")
        return hp.Shift.of(self.name).regret(min(seen))


def space(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {**hp.PROBLEMS["branin"].space(), **hp.sleep_space(*args.sleep)}


def run_pilotwave(seed: int, args: argparse.Namespace) -> tuple[ho.Row, list[Segment]]:
    names = hp.segment_names(args.segments)
    run = ho.run_study(
        args.timeout,
        objective=hp.branin_segment,
        space=space(args),
        n_trials=args.trials,
        parallel=args.parallel,
        segments=names,
        seed=seed,
    )
    slots = min(args.parallel, args.pilots * args.slots)
    busy = sum(s.body_end - s.body_start for s in run.spans)
    row = ho.pilotwave_row(
        f"tpe, {args.segments} segments", run, slots, args.parallel, busy / slots
    )
    segments = []
    for name, study in ho.studies(run.result).items():
        assert name is not None
        values: list[float | None] = [None] * args.trials
        for t in study["trials"]:
            if t["state"] == "complete":
                values[t["number"]] = t["value"]
        segments.append(Segment(PILOTWAVE, seed, name, values))
    return row, segments


def run_optuna(contender: str, seed: int, args: argparse.Namespace) -> list[Segment]:
    """One sequential in-process study per segment, seeded as pilotwave seeds its segments."""
    import optuna
    from optuna.samplers import RandomSampler, TPESampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for k, name in enumerate(hp.segment_names(args.segments)):
        s = (seed + SEED_STRIDE * k) % (1 << 32)
        sampler = (
            RandomSampler(seed=s)
            if contender == RANDOM
            else TPESampler(seed=s, multivariate=True, constant_liar=True)
        )
        shift = hp.Shift.of(name)

        def objective(trial: optuna.Trial, shift: hp.Shift = shift) -> float:
            x1 = trial.suggest_float("x1", -5.0, 10.0)
            x2 = trial.suggest_float("x2", 0.0, 15.0)
            return shift.value(x1, x2)

        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=args.trials)
        values: list[float | None] = [None] * args.trials
        for t in study.trials:
            if t.value is not None:
                values[t.number] = t.value
        out.append(Segment(contender, seed, name, values))
    return out


# -- report -------------------------------------------------------------------------------


def cell(xs: Sequence[float]) -> str:
    if not xs:
        return "-"
    return f"{percentile(xs, 50):.3g} ({percentile(xs, 25):.3g}–{percentile(xs, 75):.3g})"


def report(rows: Sequence[ho.Row], segments: Sequence[Segment], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 180)  # no truncation in logs
    slots = min(args.parallel, args.pilots * args.slots)
    if rows:
        table = Table(
            title=f"segmented HPO: {args.segments} segments x {args.trials} trials in one workflow, "
            f"parallel={args.parallel}, {args.pilots} pilots x {args.slots} slots, "
            f"{args.backend} (median of {len(rows)} workflows)"
        )
        table.add_column("trials")
        table.add_column("ideal s", justify="right")
        for col, _, _ in ho.COLUMNS:
            table.add_column(col, justify="right")
        m = ho.medians(rows)
        ideal_s = percentile([r.ideal_s for r in rows], 50)
        trials = "/".join(sorted({str(r.trials) for r in rows}))
        table.add_row(trials, f"{ideal_s:.2f}", *(fmt(m[key], spec) for _, key, spec in ho.COLUMNS))
        console.print(table)
        ho.print_legs(console, ho.groups(rows))
        if len(rows) > 1:
            utils = "/".join(f"{100 * r.util:.1f}" for r in rows)
            walls = "/".join(f"{r.wall_s:.2f}" for r in rows)
            console.print(f"runs: util {utils} %, wall {walls} s", markup=False)
        console.print(
            f"ideal: sum of objective body times / {slots} slots. util, gap: as in "
            "bench/hpo_overhead.py (bodies; srv: the server's claim and recorded-success times).",
            markup=False,
        )
    quality = Table(
        title=f"per-segment regret in Branin units, median (IQR 25–75 %) over "
        f"{args.segments} segments x {args.seeds} seeds"
    )
    for col in ("contender", "segments"):
        quality.add_column(col)
    checkpoints = sorted({min(10, args.trials), args.trials})
    for k in checkpoints:
        quality.add_column(f"regret @{k}", justify="right")
    for contender in (PILOTWAVE, TPE, RANDOM):
        mine = [s for s in segments if s.contender == contender]
        if mine:
            quality.add_row(
                LABELS[contender].format(p=args.parallel),
                str(len(mine)),
                *(cell([s.regret_at(k) for s in mine]) for k in checkpoints),
            )
    console.print(quality)
    counts = [sum(v is not None for v in s.values) for s in segments if s.contender == PILOTWAVE]
    if counts:
        console.print(
            f"pilotwave completed trials per segment: min {min(counts)}, max {max(counts)}",
            markup=False,
        )


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--segments", type=int, default=20, help="segments (default 20)")
    ap.add_argument("--trials", type=int, default=20, help="trials per segment (default 20)")
    ap.add_argument("--seeds", type=int, default=3, help="workflows, seeds 0.. (default 3)")
    ap.add_argument("--parallel", type=int, default=8, help="trials in flight (default 8)")
    ap.add_argument("--pilots", type=int, default=2, help="local pilots (default 2)")
    ap.add_argument("--slots", type=int, default=4, help="job slots per pilot (default 4)")
    ap.add_argument(
        "--sleep",
        default="0.02,0.1",
        help="an evaluation's sleep range MIN,MAX s (default 0.02,0.1)",
    )
    ap.add_argument("--backend", choices=ho.BACKENDS, default="sqlite", help="default sqlite")
    ap.add_argument("--skip-optuna", action="store_true", help="do not run the in-process peers")
    ap.add_argument(
        "--timeout", type=float, default=600.0, help="give up on one workflow after S seconds"
    )
    args = ap.parse_args(argv)
    args.sleep = [float(x) for x in args.sleep.split(",") if x.strip()]
    if len(args.sleep) != 2 or not 0 <= args.sleep[0] <= args.sleep[1]:
        ap.error("--sleep takes MIN,MAX with 0 <= MIN <= MAX")
    if min(args.segments, args.trials, args.seeds, args.parallel, args.pilots, args.slots) < 1:
        ap.error("--segments, --trials, --seeds, --parallel, --pilots and --slots must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[ho.Row] = []
    segments: list[Segment] = []
    with ho.local_cluster(args.pilots, args.slots, args.backend):
        print("pilotwave warm-up ...", flush=True)
        ho.warm_up(args.pilots * args.slots, sum(args.sleep) / 2, args.timeout)
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            row, segs = run_pilotwave(seed, args)
            rows.append(row)
            segments += segs
            print(
                f"[{seed + 1}/{args.seeds}] pilotwave seed {seed}: {row.trials} trials, "
                f"util {100 * row.util:.1f} % ({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    if not args.skip_optuna:
        for contender in (TPE, RANDOM):
            print(f"{contender}: {args.seeds} x {args.segments} studies ...", flush=True)
            for seed in range(args.seeds):
                segments += run_optuna(contender, seed, args)
    report(rows, segments, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
