"""``search``: active learning as a workflow; each evaluation is a job or a nested workflow.

The driver keeps ``batch`` evaluations in flight.  The moment one finishes, its values are
told to the learner and the next point is chosen, with the points still being evaluated
taken into account (``Learner``): nothing waits for the slowest point of a batch.  Every
step is recorded by the workflow engine and the learner is seeded from ``pw.seed()``, so a
driver re-run after a lost pilot or a server restart makes the same choices and evaluates
no point twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pilotwave as pw
from pilotwave.active import learner as active_learner
from pilotwave.active.learner import Learner


def check(
    evaluate: Any, space: Mapping[str, Any], args: Mapping[str, Any] | None = None, **settings: Any
) -> None:
    """Validate ``search``'s arguments; raises ``ValueError``/``TypeError`` naming the bad one."""
    if not isinstance(evaluate, (pw.JobFunction, pw.WorkflowFunction)):
        raise TypeError(
            "evaluate: pass a @pw.job or @pw.workflow function that takes the parameters "
            "by name and returns a dict of values"
        )
    box, _, _ = active_learner.check(space, **settings)
    if args is not None:
        if not isinstance(args, Mapping):
            raise TypeError(f"args: expected a dict of fixed arguments, got {type(args).__name__}")
        clash = set(args) & set(box.names)
        if clash:
            raise ValueError(f"args: {', '.join(sorted(clash))} is also a dimension of the space")


@pw.workflow(name="active")
def search(
    evaluate: Any,
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
    args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Locate a contour or an extremum of ``evaluate``'s values over ``space``.

    - ``evaluate``: a ``@pw.job`` or ``@pw.workflow`` called with the point's parameters
      (and ``args``) by name, returning a dict of values (a bare number counts as
      ``{"value": x}``).
    - ``space``: ``{"mass": {"low": 15, "high": 60}, "eps": {"low": 1e-4, "high": 1e-2,
      "log": True}}`` as for ``pilotwave.hpo`` (``type`` float by default; int and ``step``
      allowed; bounds must not be empty).
    - ``goal``: ``"contour"`` (where each named ``value`` crosses ``level``), ``"maximize"``
      or ``"minimize"`` (one value).  ``value`` is a returned name or an expression of them
      (``"log(cls_obs) - log(cls_exp)"``).
    - ``transform="log"`` learns the logarithm (values spanning decades, such as CLs).
    - ``acquisition``: ``straddle`` (default) or ``entropy`` for contours; ``ei`` (default)
      or ``ucb`` for extrema.
    - ``budget`` evaluations at most, ``batch`` in flight, the first ``init`` (default
      ``4 × dimensions``) a Latin hypercube; stops early when the estimate changed by at
      most ``tol`` for ``patience`` rounds (``tol=0`` never stops early).

    Returns a JSON-able dict:

    - ``points``: every evaluation in the order chosen, each with ``index``, ``params``,
      ``values`` (the learned values), ``output`` (all that ``evaluate`` returned),
      ``round``, ``state`` (``done``/``failed``), ``error`` and ``job``.
    - ``estimate``: the surrogate on a regular grid (``grid`` points per dimension):
      ``axes`` (``{name: [values]}``), ``mean`` and ``std`` and, for contours, ``below``
      (where the mean is below ``level``), nested lists indexed in the order of ``space``'s
      dimensions, for the first value; every value's under ``values``.  ``std`` is on the
      learned scale (``scale``: ``log`` with ``transform="log"``).
    - ``best`` (extrema): ``params``, ``value`` and ``std`` of the surrogate at the best
      evaluated point, and its ``measured`` value (``std`` on the learned scale, as above).
    - ``rounds``: per round, the evaluations so far, the failures, ``change`` and ``below``
      (the excluded fraction of the box) or ``best``.
    - ``stopped``: ``budget`` or ``converged``; and the settings.
    """
    base_seed = pw.seed() if seed is None else seed
    learner = Learner(
        space, goal, value, level, budget, batch, init, base_seed, acquisition, transform,
        grid, tol, patience,
    )  # fmt: skip
    fixed = dict(args or {})
    inflight: dict[int, active_learner.Point] = {}
    futures: dict[int, pw.Future] = {}
    first_error: str | None = None
    while True:
        while learner.wants_more() and len(inflight) < batch:
            point = learner.ask()
            label = ", ".join(f"{k}={_short(v)}" for k, v in point.params.items())
            call = evaluate.options(name=f"point {point.index}: {label}")
            submitted = call.submit(**point.params, **fixed)
            fut = submitted.future if isinstance(submitted, pw.Run) else submitted
            point.job = fut.id
            inflight[fut.id] = point
            futures[fut.id] = fut
        if not inflight:
            break
        finished, _ = pw.events(list(futures.values()))
        for fut in finished:
            point = inflight.pop(fut.id)
            del futures[fut.id]
            try:
                told = learner.tell(point.index, fut.result())
            except (pw.JobFailed, pw.JobCancelled) as exc:
                told = learner.tell(point.index, error=exc.reason)
            if told.error is not None and first_error is None:
                first_error = told.error
        if learner.finished >= learner.init and learner.surrogates() is None:
            raise RuntimeError(
                f"{learner.finished} evaluations, fewer than 2 of them usable: the search "
                f"cannot learn anything. The first error: {first_error}"
            )
        pw.progress(learner.progress())
    return learner.result()


search.check(check)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
