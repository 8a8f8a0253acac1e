"""``optimize``: an asynchronous Optuna study run by a workflow driver, its trials run as jobs.

The driver keeps ``parallel`` trials in flight.  The moment one finishes, its value is
told to the study and the sampler is asked for the next point (TPE with a constant liar by
default, so points in flight are not proposed again).  Intermediate values a trial reports
with ``pw.report`` reach the driver as events; the study's pruner decides, and the answer
goes back to the waiting trial through the server.  With ``segments``, one study per
segment shares the same slots: each free slot goes to the segment with the fewest trials
in flight, so every segment progresses, and a segment that is done frees its share.

Every step of this loop is recorded by the workflow engine (submissions, finished trials,
reports, clock readings), and the study is seeded from ``pw.seed()``: a driver that is
re-run after a lost pilot or a server restart rebuilds the same study and goes on without
evaluating a trial twice.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pilotwave as pw
from pilotwave.hpo import samplers as hpo_samplers
from pilotwave.hpo import space as hpo_space
from pilotwave.hpo.trial import render, run_command, run_trial

COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"


@dataclass
class _Trial:
    segment: str | None
    number: int
    params: dict[str, Any]
    handle: Any  # optuna.trial.Trial
    future: pw.Future
    intermediate: dict[int, float] = field(default_factory=dict)
    stop_at: int | None = None  # the step the driver answered with stop


@dataclass
class _Segment:
    name: str | None
    study: Any  # optuna.Study
    budget: int
    asked: int = 0
    running: int = 0
    since_best: int = 0  # completed trials since the best value last improved
    records: list[dict[str, Any]] = field(default_factory=list)

    def wants_more(self, patience: int | None) -> bool:
        converged = patience is not None and self.since_best >= patience
        return self.asked < self.budget and not converged


def check(
    objective: Any,
    space: Mapping[str, Any],
    n_trials: int = 50,
    parallel: int = 4,
    sampler: str | Mapping[str, Any] | None = "tpe",
    directions: Sequence[str] = ("minimize",),
    pruner: str | Mapping[str, Any] | None = None,
    segments: Sequence[str] | None = None,
    seed: int | None = None,
    timeout_s: float | None = None,
    objectives: Sequence[str] | None = None,
    loss_file: str | None = None,
    patience: int | None = None,
    trial_options: Mapping[str, Any] | None = None,
) -> None:
    """Validate ``optimize``'s arguments; raises ``ValueError``/``TypeError`` naming the bad one."""
    canonical = hpo_space.normalize(space)
    dirs = hpo_samplers.check_directions(list(directions))
    hpo_samplers.make_sampler(sampler, seed=0, space=canonical, directions=dirs)
    hpo_samplers.make_pruner(pruner, directions=dirs)
    _positive_int("n_trials", n_trials)
    _positive_int("parallel", parallel)
    if patience is not None:
        _positive_int("patience", patience)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed: {seed!r} is not an integer >= 0")
    if timeout_s is not None and not (
        isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0
    ):
        raise ValueError(f"timeout_s: {timeout_s!r} is not a positive number of seconds")
    names = _objective_names(objectives, dirs, objective)
    if segments is not None:
        if isinstance(segments, str) or not all(isinstance(s, str) and s for s in segments):
            raise ValueError("segments: give a list of non-empty names, e.g. ['barrel', 'endcap']")
        if not segments:
            raise ValueError("segments: the list is empty")
        if len(set(segments)) != len(segments):
            raise ValueError("segments: names must be unique")
    if isinstance(objective, str):
        render(objective, _example(canonical), None, 0, Path("params.json"))
        if not objective.strip():
            raise ValueError("objective: the command is empty")
    elif not isinstance(objective, pw.JobFunction):
        raise TypeError(
            "objective: pass a @pw.job function, or a command template such as "
            "'python train.py --lr {lr}'"
        )
    elif loss_file is not None:
        raise ValueError("loss_file: only a command objective writes a loss file")
    if len(names) != len(dirs):
        raise ValueError(f"objectives: {len(names)} names for {len(dirs)} directions")
    if trial_options is not None:
        allowed = {"cores", "memory_mb", "gpus", "gpu_model", "walltime_s", "max_attempts", "queue"}
        unknown = set(trial_options) - allowed
        if unknown:
            raise ValueError(
                f"trial_options: unknown {', '.join(sorted(unknown))} (valid: {', '.join(sorted(allowed))})"
            )


def _example(space: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        k: v["choices"][0] if v["type"] == "categorical" else v["low"] for k, v in space.items()
    }


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {value!r} is not an integer >= 1")


def _objective_names(
    objectives: Sequence[str] | None, directions: Sequence[str], objective: Any
) -> list[str]:
    if objectives is not None:
        if isinstance(objectives, str):
            objectives = [objectives]
        return list(objectives)
    base = "loss" if isinstance(objective, str) else "value"  # a command prints its loss
    return [base] if len(directions) == 1 else [f"{base}{i}" for i in range(len(directions))]


@pw.workflow(name="hpo")
def optimize(
    objective: Any,
    space: Mapping[str, Any],
    n_trials: int = 50,
    parallel: int = 4,
    sampler: str | Mapping[str, Any] | None = "tpe",
    directions: Sequence[str] = ("minimize",),
    pruner: str | Mapping[str, Any] | None = None,
    segments: Sequence[str] | None = None,
    seed: int | None = None,
    timeout_s: float | None = None,
    objectives: Sequence[str] | None = None,
    loss_file: str | None = None,
    patience: int | None = None,
    trial_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Minimize (or maximize) ``objective`` over ``space`` with ``n_trials`` trials, ``parallel`` at a time.

    - ``objective``: a ``@pw.job`` function called with the parameters as keyword arguments
      (and ``segment=`` when segmented), returning a number, a list of numbers (one per
      direction) or a dict holding them by name (``objectives``) plus extra metrics; or a
      command template (``"python train.py --lr {lr}"``) whose loss is read from
      ``loss_file`` (JSON) or its last printed line.
    - ``space``: ``{"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}, ...}``
      (or the phpo/hpogrid format).
    - ``sampler``: tpe (default), gp, cmaes, random, qmc, grid, nsga2, or ``{"type": ..., options}``;
      ``pruner``: median, percentile, successive_halving (asha), hyperband, threshold.
    - ``segments``: names; one study per segment, ``n_trials`` each, sharing the slots.
    - ``patience``: a segment stops after this many completed trials without a better value.
    - ``timeout_s``: no new trials after this long (trials in flight finish).

    Returns a JSON-able dict: ``directions``, ``objectives``, ``space``, and ``best``
    (``params``, ``value``/``values``, ``trial``, ``job``), ``pareto`` (several directions)
    and ``trials`` (``number``, ``params``, ``value(s)``, ``state``, ``duration_s``, ``job``,
    ``intermediate``, ``metrics``, ``error``) — per segment under ``segments`` when segmented.
    """
    import optuna

    # A driver's log is for what goes wrong: not Optuna's per-trial notes (a retried trial
    # repeating a step, a sampler falling back to random sampling for a categorical).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    canonical = hpo_space.normalize(space)
    dists = hpo_space.distributions(canonical)
    dirs = hpo_samplers.check_directions(list(directions))
    names = _objective_names(objectives, dirs, objective)
    base_seed = pw.seed() if seed is None else seed
    budget = n_trials
    if _sampler_name(sampler) == "grid":
        budget = min(n_trials, hpo_space.grid_size(canonical))
    segs: list[_Segment] = []
    names_or_none: list[str | None] = list(segments) if segments else [None]
    in_flight = -(-parallel // len(names_or_none))  # trials one segment has in flight at most
    for k, name in enumerate(names_or_none):
        study = optuna.create_study(
            study_name=f"hpo-{name or 'study'}",
            directions=dirs,  # type: ignore[arg-type]
            sampler=hpo_samplers.make_sampler(
                sampler,
                seed=(base_seed + 7919 * k) % (1 << 32),
                space=canonical,
                directions=dirs,
                parallel=in_flight,
            ),
            pruner=hpo_samplers.make_pruner(pruner, directions=dirs),
        )
        segs.append(_Segment(name, study, budget))
    # With a pruner, trials wait in pw.report for the driver's answer; without, they never wait.
    prune = hpo_samplers.make_pruner(pruner, directions=dirs) is not None
    start = pw.now() if timeout_s is not None else 0.0
    timed_out = False
    inflight: dict[int, _Trial] = {}

    def submit(seg: _Segment) -> None:
        handle = seg.study.ask(fixed_distributions=dists)
        params = dict(handle.params)
        label = f"{seg.name}#{handle.number}" if seg.name else f"#{handle.number}"
        if isinstance(objective, str):
            command = run_command.options(
                name=f"trial {label}",
                decisions=prune,
                # The command runs in the workflow's sandbox (the driver runs there too).
                sandbox=os.environ.get("PILOTWAVE_SANDBOX") or None,
                **dict(trial_options or {}),
            )
            fut = command.submit(objective, params, seg.name, handle.number, names, loss_file)
        else:
            opts = {
                k: v for k, v in objective.options_json().items() if k not in ("name", "decisions")
            }
            opts.update(trial_options or {})
            job = run_trial.options(**opts, name=f"trial {label}", decisions=prune)
            fut = job.submit(objective, params, seg.name, names)
        seg.asked += 1
        seg.running += 1
        inflight[fut.id] = _Trial(seg.name, handle.number, params, handle, fut)

    by_name = {s.name: s for s in segs}
    while True:
        while not timed_out and len(inflight) < parallel:
            open_segs = [s for s in segs if s.wants_more(patience)]
            if not open_segs:
                break
            submit(min(open_segs, key=lambda s: (s.running, s.asked)))
        if not inflight:
            break
        wait_s = None
        if timeout_s is not None and not timed_out:
            wait_s = max(0.0, start + timeout_s - pw.now())
        try:
            finished, reports = pw.events([t.future for t in inflight.values()], timeout=wait_s)
        except TimeoutError:
            finished, reports = [], []
        for r in reports:
            _on_report(inflight[r.job_id], by_name[inflight[r.job_id].segment], r, prune)
        for fut in finished:
            t = inflight.pop(fut.id)
            seg = by_name[t.segment]
            seg.running -= 1
            _on_finish(seg, t, names)
        if timeout_s is not None and not timed_out and pw.now() - start >= timeout_s:
            timed_out = True
        pw.progress(_progress(segs, dirs))
    return _result(segs, canonical, dirs, names, sampler, pruner, n_trials, timed_out)


optimize.check(check)


def _sampler_name(sampler: Any) -> str:
    if isinstance(sampler, Mapping):
        return str(sampler.get("type", "tpe"))
    return str(sampler or "tpe")


def _on_report(t: _Trial, seg: _Segment, r: pw.Report, prune: bool) -> None:
    """A trial reported an intermediate value: record it and, with a pruner, answer it."""
    if r.step in t.intermediate:  # a re-run attempt repeating a step: the first value stands
        r.decide(t.stop_at is not None)
        return
    t.intermediate[r.step] = r.value
    stop = False
    if prune and len(seg.study.directions) == 1:
        t.handle.report(r.value, r.step)
        stop = t.stop_at is not None or bool(t.handle.should_prune())
    if stop and t.stop_at is None:
        t.stop_at = r.step
    r.decide(stop)


def _on_finish(seg: _Segment, t: _Trial, names: list[str]) -> None:
    """Tell the study how the trial ended and keep its record."""
    from optuna.trial import TrialState

    record: dict[str, Any] = {
        "number": t.number,
        "params": t.params,
        "state": FAILED,
        "duration_s": None,
        "job": t.future.id,
        "intermediate": {str(k): v for k, v in sorted(t.intermediate.items())},
        "metrics": {},
        "error": None,
    }
    multi = len(names) > 1
    record["values" if multi else "value"] = None
    try:
        out = t.future.result()
    except (pw.JobFailed, pw.JobCancelled) as exc:
        record["error"] = exc.reason
        _tell(seg.study, t.handle, state=TrialState.FAIL)
        seg.records.append(record)
        return
    out = out if isinstance(out, dict) else {}
    record["duration_s"] = out.get("duration_s")
    if "values" in out:
        values = [float(v) for v in out["values"]]
        record["values" if multi else "value"] = values if multi else values[0]
        record["metrics"] = out.get("metrics") or {}
        record["state"] = COMPLETE
        before = _best_value(seg.study)
        _tell(seg.study, t.handle, values=values)
        after = _best_value(seg.study)
        seg.since_best = 0 if after != before else seg.since_best + 1
    elif "pruned" in out:
        record["state"] = PRUNED
        if t.intermediate and not multi:
            record["value"] = t.intermediate[max(t.intermediate)]
        _tell(seg.study, t.handle, state=TrialState.PRUNED)
    else:
        record["error"] = str(out.get("invalid") or f"the trial job returned {out!r}")
        _tell(seg.study, t.handle, state=TrialState.FAIL)
    seg.records.append(record)


def _tell(study: Any, handle: Any, **outcome: Any) -> None:
    try:
        study.tell(handle, **outcome)
    except RuntimeError as exc:
        # The grid sampler stops the study when its grid is used up, which Optuna allows only
        # inside study.optimize; the trial is stored by then, and the budget ends the loop.
        if "Study.stop" not in str(exc):
            raise


def _best_value(study: Any) -> Any:
    if len(study.directions) > 1:
        return len(study.best_trials)
    try:
        return study.best_value
    except ValueError:  # no completed trial yet
        return None


def _progress(segs: list[_Segment], dirs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "hpo", "directions": dirs, "segments": {}}
    for s in segs:
        counts = {COMPLETE: 0, PRUNED: 0, FAILED: 0}
        for r in s.records:
            counts[r["state"]] += 1
        best = _best_value(s.study) if len(dirs) == 1 else None
        out["segments"][s.name or ""] = {
            **counts,
            "running": s.running,
            "n_trials": s.budget,
            "best": best,
        }
    return out


def _result(
    segs: list[_Segment],
    canonical: dict[str, Any],
    dirs: list[str],
    names: list[str],
    sampler: Any,
    pruner: Any,
    n_trials: int,
    timed_out: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "directions": dirs,
        "objectives": names,
        "space": canonical,
        "sampler": sampler if isinstance(sampler, str) or sampler is None else dict(sampler),
        "pruner": pruner if isinstance(pruner, str) or pruner is None else dict(pruner),
        "n_trials": n_trials,
        "timed_out": timed_out,
    }
    studies = {s.name: _summary(s, dirs) for s in segs}
    if len(segs) == 1 and segs[0].name is None:
        out.update(studies[None])
    else:
        out["segments"] = studies
    return out


def _summary(seg: _Segment, dirs: list[str]) -> dict[str, Any]:
    records = sorted(seg.records, key=lambda r: r["number"])
    by_number = {r["number"]: r for r in records}
    out: dict[str, Any] = {"best": None, "trials": records}
    done = [r for r in records if r["state"] == COMPLETE]
    if not done:
        if len(dirs) > 1:
            out["pareto"] = []
        return out
    if len(dirs) == 1:
        best = by_number[seg.study.best_trial.number]
        out["best"] = _best(best, "value")
    else:
        front = sorted(
            (by_number[t.number] for t in seg.study.best_trials), key=lambda r: r["number"]
        )
        out["pareto"] = [_best(r, "values") for r in front]
        sign = 1 if dirs[0] == "minimize" else -1
        out["best"] = _best(min(front, key=lambda r: sign * r["values"][0]), "values")
    return out


def _best(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {
        "params": record["params"],
        key: record[key],
        "trial": record["number"],
        "job": record["job"],
        "metrics": record["metrics"],
    }
