"""``scan``: a 2-D exclusion by toy-based CLs over a model family, refined where it is decided.

A ``@pw.job`` factory builds the workspace of each parameter point (``mass=…,
coupling=…``); each point is tested at ``poi`` (the signal strength, 1 by default) and is
excluded where CLs < ``alpha``.  Step 1 evaluates a coarse grid.  Each next step looks at
the grid's cells: a cell whose corners disagree (some excluded, some not) is split in four
(its centre and edge midpoints are evaluated); a corner whose CLs is within its Monte-Carlo
uncertainty of ``alpha`` gets more toys.  Everywhere else nothing more is spent.  The
result holds every point evaluated, the step it was added in, and the boundary of the
excluded region (observed and expected), interpolated along the cell edges it crosses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import pilotwave as pw
from pilotwave.limits import stats
from pilotwave.limits.toys import TEST_STATS, toy_statistics
from pilotwave.limits.upper import plan_jobs, toy_seed

Node = tuple[float, float]


def axes_of(grid: Mapping[str, Any]) -> dict[str, list[float]]:
    """The coarse grid's values per dimension: a list, or ``{low, high, points[, log]}``."""
    if not isinstance(grid, Mapping) or len(grid) != 2:
        raise ValueError("grid: give exactly two dimensions, e.g. {mass: [...], coupling: [...]}")
    axes: dict[str, list[float]] = {}
    for name, spec in grid.items():
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"low", "high", "points", "log"}
            if unknown:
                raise ValueError(f"grid.{name}: unknown {', '.join(sorted(unknown))}")
            try:
                lo, hi, n = float(spec["low"]), float(spec["high"]), int(spec.get("points", 5))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"grid.{name}: needs numbers low and high (and points)") from None
            if not lo < hi:
                raise ValueError(f"grid.{name}: low {lo} is not below high {hi}")
            if n < 2:
                raise ValueError(f"grid.{name}.points: {n} is fewer than 2")
            if spec.get("log"):
                if lo <= 0:
                    raise ValueError(f"grid.{name}.low: {lo} must be positive on a log scale")
                values = np.geomspace(lo, hi, n)
            else:
                values = np.linspace(lo, hi, n)
            axes[name] = [round(float(v), 12) for v in values]
        else:
            try:
                listed = sorted(float(v) for v in spec)
            except (TypeError, ValueError):
                raise ValueError(f"grid.{name}: expected a list of numbers") from None
            if len(listed) < 2 or len(set(listed)) != len(listed):
                raise ValueError(f"grid.{name}: needs at least 2 distinct values")
            axes[name] = [round(v, 12) for v in listed]
    return axes


def check(
    factory: Any,
    grid: Mapping[str, Any],
    alpha: float = 0.05,
    poi: float = 1.0,
    toys: int = 300,
    toys_per_job: int = 300,
    max_steps: int = 3,
    max_toys: int = 200_000,
    test_stat: str = "qtilde",
    seed: int | None = None,
) -> None:
    """Validate ``scan``'s arguments; ``ValueError``/``TypeError`` naming the bad one."""
    if not isinstance(factory, pw.JobFunction):
        raise TypeError("factory: pass a @pw.job function that returns a workspace (a dict)")
    axes_of(grid)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: {alpha} is not between 0 and 1")
    for name, value, least in (
        ("toys", toys, 10),
        ("toys_per_job", toys_per_job, 10),
        ("max_steps", max_steps, 1),
        ("max_toys", max_toys, 10),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name}: {value!r} is not an integer >= {least}")
    if test_stat not in TEST_STATS:
        raise ValueError(f"test_stat: {test_stat!r} is not one of {', '.join(TEST_STATS)}")


@pw.job(name="toys", max_attempts=2)
def factory_toys(
    factory: Any, params: dict[str, float], poi: float, n_toys: int, seed: int, test_stat: str
) -> dict[str, Any]:
    """Build the point's workspace with ``factory(**params)`` and throw its toys."""
    return toy_statistics(factory(**params), poi, n_toys, seed, test_stat)


@pw.workflow(name="exclusion")
def scan(
    factory: Any,
    grid: Mapping[str, Any],
    alpha: float = 0.05,
    poi: float = 1.0,
    toys: int = 300,
    toys_per_job: int = 300,
    max_steps: int = 3,
    max_toys: int = 200_000,
    test_stat: str = "qtilde",
    seed: int | None = None,
) -> dict[str, Any]:
    """The region of a 2-D model family excluded at ``1 - alpha`` by toy-based CLs at ``poi``.

    Returns a JSON-able dict: ``axes`` (the two names), ``points`` (``params``, ``cls``,
    ``cls_err``, ``cls_expected`` (-2..+2 sigma), ``excluded``, ``excluded_expected``,
    ``toys``, ``step``, ``failed_toys``, ``failed_jobs``), ``boundary`` (``observed`` and
    ``expected``: points where CLs crosses alpha along the grid's edges), ``steps``,
    ``toys``, ``failed_toys``, ``failed_jobs``.
    """
    axes = axes_of(grid)
    (xname, xs), (yname, ys) = axes.items()
    base_seed = pw.seed() if seed is None else seed
    merged: dict[Node, dict[str, Any]] = {}
    jobs_at: dict[Node, int] = {}
    first_step: dict[Node, int] = {}
    cells = [
        ((xs[i], ys[j]), (xs[i + 1], ys[j + 1]))
        for i in range(len(xs) - 1)
        for j in range(len(ys) - 1)
    ]
    wanted = {(x, y): toys for x in xs for y in ys}
    steps: list[dict[str, Any]] = []
    total = 0
    results: dict[Node, stats.Point] = {}
    last_error = ""
    for step in range(1, max_steps + 1):
        for node in wanted:
            first_step.setdefault(node, step)
        plan = plan_jobs(wanted, toys_per_job, max_toys - total, jobs_at)
        if not plan:
            break
        batch = factory_toys.map(
            [factory] * len(plan),
            [{xname: node[0], yname: node[1]} for node, _ in plan],
            [poi] * len(plan),
            [toys_per_job] * len(plan),
            [toy_seed(base_seed, hash_node(node), k) for node, k in plan],
            [test_stat] * len(plan),
        )
        node_of = {fut.id: node for fut, (node, _) in zip(batch, plan, strict=True)}
        thrown = len(plan) * toys_per_job
        total += thrown
        for fut in pw.as_completed(batch):
            acc = merged.setdefault(
                node_of[fut.id], {"sb": [], "b": [], "failed": 0, "failed_jobs": 0}
            )
            try:
                out = fut.result()
            except (pw.JobFailed, pw.JobCancelled) as exc:
                acc["failed_jobs"] += 1
                last_error = exc.reason
                continue
            acc["sb"] += out["sb"]
            acc["b"] += out["b"]
            acc["failed"] += out["failed"]
            acc["observed"] = out["observed"]
        results = {
            node: stats.cls_point(poi, acc["sb"], acc["b"], acc["observed"], acc["failed"])
            for node, acc in merged.items()
            if acc["sb"] and acc["b"]
        }
        if not results:
            raise RuntimeError(f"every toy job failed; the last error: {last_error}")
        steps.append({"step": step, "points": [list(n) for n in sorted(wanted)], "toys": thrown})
        pw.progress(
            {
                "kind": "exclusion",
                "step": step,
                "toys": total,
                "points": len(results),
                "excluded": sum(p.cls < alpha for p in results.values()),
            }
        )
        if step == max_steps or total >= max_toys:
            break
        cells, wanted = _refine(cells, results, alpha, toys * 2**step)
        if not wanted:
            break
    return {
        "axes": [xname, yname],
        "alpha": alpha,
        "poi": poi,
        "points": [
            {
                "params": {xname: node[0], yname: node[1]},
                "cls": p.cls,
                "cls_err": p.cls_err,
                "cls_expected": list(p.cls_expected),
                "excluded": p.cls < alpha,
                "excluded_expected": p.cls_expected[2] < alpha,
                "toys": p.toys,
                "step": first_step[node],
                "failed_toys": p.failed_toys,
                "failed_jobs": merged[node]["failed_jobs"],
            }
            for node, p in sorted(results.items())
        ],
        "boundary": {
            "observed": _boundary(cells, results, alpha, lambda p: p.cls),
            "expected": _boundary(cells, results, alpha, lambda p: p.cls_expected[2]),
        },
        "steps": steps,
        "toys": total,
        "failed_toys": sum(a["failed"] for a in merged.values()),
        "failed_jobs": sum(a["failed_jobs"] for a in merged.values()),
    }


scan.check(check)


def hash_node(node: Node) -> float:
    """One number standing for a 2-D point in its toys' seeds."""
    return node[0] * 1e6 + node[1]


Cell = tuple[Node, Node]  # lower-left and upper-right corners


def _corners(cell: Cell) -> list[Node]:
    (x0, y0), (x1, y1) = cell
    return [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]


def _refine(
    cells: list[Cell], results: Mapping[Node, stats.Point], alpha: float, toys: int
) -> tuple[list[Cell], dict[Node, int]]:
    """Split the cells the boundary crosses; more toys where a corner is undecided."""
    wanted: dict[Node, int] = {}
    out: list[Cell] = []
    for cell in cells:
        corners = [results.get(c) for c in _corners(cell)]
        known = [p for p in corners if p is not None]
        for node, p in zip(_corners(cell), corners, strict=True):
            if p is not None and abs(p.cls - alpha) < 2 * p.cls_err:
                wanted[node] = max(wanted.get(node, 0), p.toys)  # as many again
        if len({p.cls < alpha for p in known}) < 2:
            out.append(cell)
            continue
        (x0, y0), (x1, y1) = cell
        xm, ym = round((x0 + x1) / 2, 12), round((y0 + y1) / 2, 12)
        for node in ((xm, y0), (xm, y1), (x0, ym), (x1, ym), (xm, ym)):
            if node not in results:
                wanted[node] = toys
        out += [
            ((x0, y0), (xm, ym)),
            ((xm, y0), (x1, ym)),
            ((x0, ym), (xm, y1)),
            ((xm, ym), (x1, y1)),
        ]
    return out, wanted


def _boundary(
    cells: Sequence[Cell], results: Mapping[Node, stats.Point], alpha: float, value: Any
) -> list[list[float]]:
    """Where CLs crosses alpha along the cells' edges (log-linear), sorted, without repeats."""
    found: set[tuple[float, float]] = set()
    for cell in cells:
        a, b, c, d = _corners(cell)
        for p, q in ((a, b), (c, d), (a, c), (b, d)):
            rp, rq = results.get(p), results.get(q)
            if rp is None or rq is None:
                continue
            vp, vq = value(rp), value(rq)
            if (vp < alpha) == (vq < alpha):
                continue
            lo, hi = (p, q) if vp >= alpha else (q, p)
            vlo, vhi = max(vp, vq), min(vp, vq)
            t = stats.interpolate(0.0, vlo, 1.0, vhi, alpha)[0]
            t = min(max(t, 0.0), 1.0)
            found.add(
                (round(lo[0] + t * (hi[0] - lo[0]), 9), round(lo[1] + t * (hi[1] - lo[1]), 9))
            )
    return [list(pt) for pt in sorted(found)]
