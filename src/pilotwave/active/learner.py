"""The learner: a Gaussian-process surrogate that chooses where to evaluate next.

``Learner`` holds no workflow machinery, so the same code runs in the ``search`` workflow's
driver, in tests and in the benchmark.  It is driven by two calls: ``ask()`` returns the
next point (the space-filling initial design first, then the acquisition's choice), and
``tell(index, output)`` gives it what the evaluation returned (or why it failed).

* One GP per learned value (scikit-learn; a Matérn-5/2 kernel with one length scale per
  dimension plus a noise term, fitted by maximum likelihood), on the unit cube.
* ``goal="contour"``: find where each value crosses ``level``.  Acquisitions: ``straddle``
  (1.96·σ − |μ − level|, Bryan et al. 2005) or ``entropy`` (the binary entropy of the
  probability of being below the level), the largest over the values.
  Every ``EXPLORE_EVERY``-th choice after the initial design takes the most uncertain
  point instead: once one excluded region is mapped, the fitted length scales grow and a
  second, disjoint region can look certain; the benchmark saw straddle alone miss one for
  good in half of its runs (docs/benchmarks.md).
* ``goal="maximize"``/``"minimize"``: expected improvement (``ei``) or an upper confidence
  bound (``ucb``).
* Points chosen while others are still being evaluated see those as if their values were
  the surrogate's mean there (the "kriging believer"): their uncertainty collapses, so a
  batch spreads out instead of piling onto one spot.
* A failed evaluation is recorded and its neighbourhood is not proposed again.
* A *round* is ``batch`` consecutive choices (round 0 is the initial design).  Each time
  ``batch`` more evaluations have finished the estimate is taken on the grid; the search
  has converged when it changed by at most ``tol`` for ``patience`` rounds in a row (the
  fraction of grid cells that changed side of a contour, or the best value's change
  relative to the values' range).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np

from pilotwave.active.expr import Expression
from pilotwave.active.space import Box, check_grid

GOALS = ("contour", "maximize", "minimize")
ACQUISITIONS = {
    "contour": ("straddle", "entropy"),
    "maximize": ("ei", "ucb"),
    "minimize": ("ei", "ucb"),
}
TRANSFORMS = (None, "log")
LOG_FLOOR = 1e-12  # a value <= 0 learned on a log scale counts as this
# On a log scale, a contour's values far below the level only matter as "below": they are
# clipped at this fraction of the level, so that a CLs of 1e-30 deep inside an excluded
# region does not bend the surrogate near the contour.
CONTOUR_FLOOR = 1e-3
RUNNING, DONE, FAILED = "running", "done", "failed"
_CANDIDATES = 2048  # random candidates per choice, plus local ones around the best few
_AVOID = 0.03  # no point closer than this (unit cube, per dimension scaled) to a failed one
EXPLORE_EVERY = 4  # contours: every 4th choice after the initial design is the most uncertain


F = TypeVar("F", bound=Callable[..., Any])


def _one_blas_thread(fn: F) -> F:
    """Run ``fn`` with BLAS on one thread: the GP's small matrices gain nothing from more, and
    a driver sharing its cores with evaluations lost 5x to thread contention in the benchmark."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return cast(F, wrapper)


@dataclass
class Point:
    index: int
    params: dict[str, Any]
    unit: np.ndarray
    round: int
    state: str = RUNNING
    output: Any = None
    targets: list[float] | None = None  # the learned values, on the learned scale
    error: str | None = None
    job: int | None = None

    def as_json(self, names: Sequence[str], transform: str | None) -> dict[str, Any]:
        targets = None
        if self.targets is not None:
            back = [_untransform(t, transform) for t in self.targets]
            targets = dict(zip(names, back, strict=True))
        return {
            "index": self.index,
            "params": self.params,
            "values": targets,
            "output": self.output,
            "round": self.round,
            "state": self.state,
            "error": self.error,
            "job": self.job,
        }


def _untransform(v: float, transform: str | None) -> float:
    return math.exp(v) if transform == "log" else v


def default_init(dim: int) -> int:
    return max(4, 4 * dim)


def check(
    space: Mapping[str, Any],
    goal: str = "contour",
    value: str | Sequence[str] = "value",
    level: float | None = None,
    budget: int = 60,
    batch: int = 1,
    init: int | None = None,
    seed: int | None = None,
    acquisition: str | None = None,
    transform: str | None = None,
    grid: int = 41,
    tol: float = 0.002,
    patience: int = 5,
) -> tuple[Box, list[Expression], int]:
    """Validate a search's settings; returns the box, the value expressions and ``init``."""
    box = Box(space)
    if goal not in GOALS:
        raise ValueError(f"goal: {goal!r} is not one of {', '.join(GOALS)}")
    texts = [value] if isinstance(value, str) else list(value) if value is not None else []
    if not texts:
        raise ValueError("value: name at least one value to learn")
    exprs = [Expression(t) for t in texts]
    if len({e.text for e in exprs}) != len(exprs):
        raise ValueError(f"value: {texts} names a value twice")
    if goal == "contour":
        if level is None:
            raise ValueError("level: a contour search needs the level to find, e.g. level=0.05")
        if (
            isinstance(level, bool)
            or not isinstance(level, (int, float))
            or not math.isfinite(level)
        ):
            raise ValueError(f"level: {level!r} is not a finite number")
        if transform == "log" and level <= 0:
            raise ValueError(f"level: {level} must be positive with transform='log'")
    else:
        if len(exprs) != 1:
            raise ValueError(f"value: {goal} takes one value or expression, not {len(exprs)}")
        if level is not None:
            raise ValueError(f"level: only a contour search has a level (goal is {goal})")
    if acquisition is not None and acquisition not in ACQUISITIONS[goal]:
        raise ValueError(
            f"acquisition: {acquisition!r} does not fit goal {goal} "
            f"(valid: {', '.join(ACQUISITIONS[goal])})"
        )
    if transform not in TRANSFORMS:
        raise ValueError(f"transform: {transform!r} is not one of none, log")
    for name, v in (("budget", budget), ("batch", batch), ("patience", patience)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: {v!r} is not an integer >= 1")
    n_init = default_init(box.dim) if init is None else init
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 2:
        raise ValueError(f"init: {init!r} is not an integer >= 2 (the initial design's size)")
    if budget < n_init:
        raise ValueError(
            f"budget: {budget} evaluations cannot hold the initial design of {n_init} points; "
            f"give budget >= {n_init} or a smaller init"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed: {seed!r} is not an integer >= 0")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
        raise ValueError(f"tol: {tol!r} is not a number in [0, 1)")
    check_grid(grid, box.dim)
    return box, exprs, n_init


class Learner:
    """Chooses points and learns from their values; see the module docstring."""

    def __init__(
        self,
        space: Mapping[str, Any],
        goal: str = "contour",
        value: str | Sequence[str] = "value",
        level: float | None = None,
        budget: int = 60,
        batch: int = 1,
        init: int | None = None,
        seed: int = 0,
        acquisition: str | None = None,
        transform: str | None = None,
        grid: int = 41,
        tol: float = 0.002,
        patience: int = 5,
    ) -> None:
        self.box, self.exprs, self.init = check(
            space, goal, value, level, budget, batch, init, seed, acquisition, transform,
            grid, tol, patience,
        )  # fmt: skip
        self.goal = goal
        self.level = level
        self.budget = budget
        self.batch = batch
        self.seed = seed
        self.acquisition = acquisition or ACQUISITIONS[goal][0]
        self.transform = transform
        self.grid = grid
        self.tol = float(tol)
        self.patience = patience
        self.points: list[Point] = []
        self.rounds: list[dict[str, Any]] = []
        self.converged = False
        self._design = self._initial_design()
        self._gps: list[Any] | None = None
        self._fitted_on = -1
        self._quiet = 0
        self._done_at_close = 0
        self._last_mask: np.ndarray | None = None
        self._last_best: float | None = None
        self._grid_u = self.box.grid_unit(grid)
        self._floor = LOG_FLOOR
        if goal == "contour" and transform == "log":
            assert level is not None
            self._floor = level * CONTOUR_FLOOR

    # -- names and scales ------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [e.text for e in self.exprs]

    def _level_t(self) -> float:
        assert self.level is not None
        return math.log(self.level) if self.transform == "log" else float(self.level)

    def _sign(self) -> float:
        return -1.0 if self.goal == "minimize" else 1.0

    # -- the loop --------------------------------------------------------------------

    def wants_more(self) -> bool:
        return len(self.points) < self.budget and not self.converged

    @property
    def running(self) -> list[Point]:
        return [p for p in self.points if p.state == RUNNING]

    @property
    def finished(self) -> int:
        return sum(p.state != RUNNING for p in self.points)

    @_one_blas_thread
    def ask(self) -> Point:
        """The next point to evaluate (marked running until ``tell``)."""
        i = len(self.points)
        if i >= self.budget:
            raise RuntimeError(f"the budget of {self.budget} evaluations is spent")
        if i < self.init:
            u = self._design[i]
            rnd = 0
        else:
            u = self._choose(i)
            rnd = 1 + (i - self.init) // self.batch
        point = Point(i, self.box.params(u), self.box.to_unit(self.box.params(u)), rnd)
        self.points.append(point)
        return point

    @_one_blas_thread
    def tell(self, index: int, output: Any = None, error: str | None = None) -> Point:
        """What evaluating point ``index`` gave: its output (a dict of values) or an error."""
        p = self.points[index]
        if p.state != RUNNING:
            raise ValueError(f"point {index} was already told ({p.state})")
        p.output = output
        if error is None:
            try:
                p.targets = self._targets(output)
            except (ValueError, ArithmeticError) as exc:
                error = str(exc)
        if error is not None:
            p.state, p.error, p.targets = FAILED, error, None
        else:
            p.state = DONE
        done = self.finished
        if done >= self.init and (done - self.init) % self.batch == 0:
            self._close_round((done - self.init) // self.batch)
        return p

    def _targets(self, output: Any) -> list[float]:
        if isinstance(output, (int, float)) and not isinstance(output, bool):
            output = {"value": output}
        if not isinstance(output, Mapping):
            raise ValueError(
                f"the evaluation returned {type(output).__name__}, not a dict of values"
            )
        out = []
        for e in self.exprs:
            v = e(output)
            if not math.isfinite(v):
                raise ValueError(f"{e.text} = {v} is not a finite number")
            if self.transform == "log":
                v = math.log(max(v, self._floor))
            out.append(v)
        return out

    # -- the surrogate ---------------------------------------------------------------

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        done = [p for p in self.points if p.state == DONE]
        x = np.array([p.unit for p in done]).reshape(len(done), self.box.dim)
        y = np.array([p.targets for p in done], dtype=float).reshape(len(done), len(self.exprs))
        return x, y

    def surrogates(self) -> list[Any] | None:
        """One fitted GP per value (refitted when new values arrived); ``None`` before 2 values."""
        x, y = self._data()
        if len(x) < 2:
            return None
        if self._gps is None or self._fitted_on != len(x):
            self._gps = [
                _fit(x, y[:, j], seed=(self.seed + 7919 * j + len(x)) % (1 << 31))
                for j in range(y.shape[1])
            ]
            self._fitted_on = len(x)
        return self._gps

    def _choose(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, i])
        gps = self.surrogates()
        avoid = np.array([p.unit for p in self.points if p.state == FAILED])
        taken = np.array([p.unit for p in self.points])
        if gps is None:  # nothing to learn from yet (failed points): keep exploring
            return self._allowed(rng.random((_CANDIDATES, self.box.dim)), avoid, taken)[0]
        pending = [p.unit for p in self.running]
        if pending:
            gps = self._believe(gps, np.array(pending))
        _x, y = self._data()
        cand = rng.random((_CANDIDATES, self.box.dim))
        explore = self.goal == "contour" and (i - self.init) % EXPLORE_EVERY == EXPLORE_EVERY - 1
        score = self._uncertainty(gps, cand, y) if explore else self._acquire(gps, cand, y)
        top = cand[np.argsort(score)[-8:]]
        local = (top[:, None, :] + rng.normal(0, 0.03, (len(top), 64, self.box.dim))).reshape(
            -1, self.box.dim
        )
        cand = self.box.snap(np.concatenate([cand, np.clip(local, 0, 1)]))
        score = self._uncertainty(gps, cand, y) if explore else self._acquire(gps, cand, y)
        order = np.argsort(-score, kind="stable")
        ranked = self._allowed(cand[order], avoid, taken)
        return ranked[0]

    def _allowed(self, cand: np.ndarray, avoid: np.ndarray, taken: np.ndarray) -> np.ndarray:
        """Candidates (in order) away from failed points and not already taken."""
        ok = np.ones(len(cand), dtype=bool)
        if len(avoid):
            d = np.abs(cand[:, None, :] - avoid[None, :, :]).max(axis=2)
            ok &= d.min(axis=1) > _AVOID
        if len(taken):
            d = np.abs(cand[:, None, :] - taken[None, :, :]).max(axis=2)
            ok &= d.min(axis=1) > 1e-6
        if not ok.any():  # everything is near a failure: take the least bad
            return cand
        return cand[ok]

    def _believe(self, gps: list[Any], pending: np.ndarray) -> list[Any]:
        """GPs that also 'know' the pending points, at the surrogate's mean, kernels kept."""
        x, y = self._data()
        out = []
        for j, gp in enumerate(gps):
            believed = gp.predict(pending)
            out.append(
                _fit(
                    np.concatenate([x, pending]),
                    np.concatenate([y[:, j], believed]),
                    kernel=gp.kernel_,
                )
            )
        return out

    def _uncertainty(self, gps: list[Any], cand: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The largest surrogate std over the values, each in units of its values' spread."""
        return np.max(
            [
                gp.predict(cand, return_std=True)[1] / max(float(np.std(y[:, j])), 1e-12)
                for j, gp in enumerate(gps)
            ],
            axis=0,
        )

    def _acquire(self, gps: list[Any], cand: np.ndarray, y: np.ndarray) -> np.ndarray:
        from scipy.stats import norm

        if self.goal == "contour":
            level = self._level_t()
            scores = []
            for j, gp in enumerate(gps):
                mu, sd = gp.predict(cand, return_std=True)
                sd = np.maximum(sd, 1e-12)
                if self.acquisition == "straddle":
                    scale = max(float(np.std(y[:, j])), 1e-12)
                    scores.append((1.96 * sd - np.abs(mu - level)) / scale)
                else:
                    p = np.clip(norm.cdf((level - mu) / sd), 1e-12, 1 - 1e-12)
                    scores.append(-(p * np.log(p) + (1 - p) * np.log(1 - p)))
            return np.max(scores, axis=0)
        sign = self._sign()
        mu, sd = gps[0].predict(cand, return_std=True)
        sd = np.maximum(sd, 1e-12)
        f = sign * mu
        if self.acquisition == "ucb":
            return f + 2.0 * sd
        best = float(np.max(sign * y[:, 0]))
        xi = 0.01 * max(float(np.std(y[:, 0])), 1e-12)
        z = (f - best - xi) / sd
        return (f - best - xi) * norm.cdf(z) + sd * norm.pdf(z)

    def _initial_design(self) -> np.ndarray:
        from scipy.stats import qmc

        lhs = qmc.LatinHypercube(d=self.box.dim, seed=np.random.default_rng([self.seed, 0]))
        return self.box.snap(lhs.random(self.init))

    # -- what it knows ---------------------------------------------------------------

    def predict(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Surrogate mean and std (learned scale) per value at unit points: arrays (values, n)."""
        gps = self.surrogates()
        if gps is None:
            nan = np.full((len(self.exprs), len(u)), np.nan)
            return nan, nan.copy()
        pairs = [gp.predict(u, return_std=True) for gp in gps]
        return np.array([m for m, _ in pairs]), np.array([s for _, s in pairs])

    def _best(self) -> tuple[Point, float, float] | None:
        """The evaluated point with the best surrogate mean, that mean and std (learned scale)."""
        done = [p for p in self.points if p.state == DONE]
        if self.goal == "contour" or not done:
            return None
        mean, std = self.predict(np.array([p.unit for p in done]))
        k = int(np.argmax(self._sign() * mean[0]))
        return done[k], float(mean[0][k]), float(std[0][k])

    def best(self) -> dict[str, Any] | None:
        """For an extremum: the evaluated point where the surrogate's mean is best."""
        found = self._best()
        if found is None:
            return None
        p, mean, std = found
        assert p.targets is not None
        return {
            "index": p.index,
            "params": p.params,
            "value": _untransform(mean, self.transform),
            "std": std,
            "measured": _untransform(p.targets[0], self.transform),
        }

    def _close_round(self, k: int) -> None:
        summary: dict[str, Any] = {
            "round": k,
            "evaluations": self.finished,
            "failed": sum(p.state == FAILED for p in self.points),
            "change": None,
        }
        if self.goal == "contour":
            mean, _ = self.predict(self._grid_u)
            if not np.isnan(mean).any():
                mask = mean < self._level_t()
                summary["below"] = [float(m.mean()) for m in mask]  # fraction of the box
                if self._last_mask is not None:
                    summary["change"] = float((mask != self._last_mask).mean())
                self._last_mask = mask
        else:
            found = self._best()
            if found is not None:
                _, mean_t, _ = found
                summary["best"] = _untransform(mean_t, self.transform)
                _, y = self._data()
                span = float(np.ptp(y[:, 0])) or 1.0
                if self._last_best is not None:
                    summary["change"] = abs(mean_t - self._last_best) / span
                self._last_best = mean_t
        done = sum(p.state == DONE for p in self.points)
        if done == self._done_at_close:  # only failures since: nothing learned, not "quiet"
            summary["change"] = None
        self._done_at_close = done
        self.rounds.append(summary)
        change = summary["change"]
        self._quiet = self._quiet + 1 if change is not None and change <= self.tol else 0
        if self._quiet >= self.patience:
            self.converged = True

    @_one_blas_thread
    def estimate(self) -> dict[str, Any]:
        """The surrogate on the grid, as nested lists in the order of the space's dimensions."""
        shape = (self.grid,) * self.box.dim
        mean, std = self.predict(self._grid_u)
        by_value: dict[str, dict[str, Any]] = {}
        for j, name in enumerate(self.names):
            m = mean[j].reshape(shape)
            entry: dict[str, Any] = {
                "mean": _nested(np.exp(m) if self.transform == "log" else m),
                "std": _nested(std[j].reshape(shape)),
            }
            if self.goal == "contour":
                entry["below"] = (m < self._level_t()).tolist()
            by_value[name] = entry
        primary = by_value[self.names[0]]
        return {
            "grid": self.grid,
            "axes": self.box.axes(self.grid),
            "value": self.names[0],
            "scale": self.transform or "linear",
            **primary,
            "values": by_value,
        }

    def progress(self) -> dict[str, Any]:
        last = self.rounds[-1] if self.rounds else {}
        out = {
            "kind": "active",
            "goal": self.goal,
            "budget": self.budget,
            "evaluated": sum(p.state == DONE for p in self.points),
            "failed": sum(p.state == FAILED for p in self.points),
            "running": len(self.running),
            "round": max((p.round for p in self.points), default=0),
            "change": last.get("change"),
            "rounds": len(self.rounds),  # the rounds closed; change etc. are the last one's
            "at": last.get("evaluations"),
        }
        if "below" in last:
            out["below"] = dict(zip(self.names, last["below"], strict=True))
        if "best" in last:
            out["best"] = last["best"]
        return out

    @_one_blas_thread
    def result(self) -> dict[str, Any]:
        """The documented result dict (see ``pilotwave.active.search``)."""
        done = self.finished
        if done > self.init and (not self.rounds or self.rounds[-1]["evaluations"] < done):
            self._close_round(len(self.rounds))
        if self.converged:
            stopped = "converged"
        elif len(self.points) >= self.budget:
            stopped = "budget"
        else:
            stopped = "cancelled"
        out: dict[str, Any] = {
            "goal": self.goal,
            "values": self.names,
            "level": self.level,
            "transform": self.transform,
            "acquisition": self.acquisition,
            "space": self.box.space,
            "budget": self.budget,
            "batch": self.batch,
            "init": self.init,
            "seed": self.seed,
            "grid": self.grid,
            "tol": self.tol,
            "patience": self.patience,
            "stopped": stopped,
            "evaluations": done,
            "failed": sum(p.state == FAILED for p in self.points),
            "points": [p.as_json(self.names, self.transform) for p in self.points],
            "rounds": self.rounds,
            "estimate": self.estimate() if self.surrogates() is not None else None,
        }
        if self.goal != "contour":
            out["best"] = self.best()
        return out


def _nested(a: np.ndarray) -> Any:
    return np.round(a.astype(float), 10).tolist()


def _fit(x: np.ndarray, y: np.ndarray, seed: int = 0, kernel: Any = None) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    if kernel is None:
        dim = x.shape[1]
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
            length_scale=np.full(dim, 0.3), length_scale_bounds=(1e-2, 1e1), nu=2.5
        ) + WhiteKernel(1e-6, (1e-10, 1e-1))
        gp = GaussianProcessRegressor(
            kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed
        )
    else:
        gp = GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x, y)
    return gp
