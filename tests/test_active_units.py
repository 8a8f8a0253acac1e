"""The active learner without a server: spaces, expressions, bad settings, the initial design,
batches that spread out, convergence, failures and NaN values, and the result's shape."""

from __future__ import annotations

import math
from typing import Any

import active_flows as af
import numpy as np
import pytest

import pilotwave as pw
from pilotwave.active import Learner, search
from pilotwave.active.expr import Expression
from pilotwave.active.space import Box
from pilotwave.hpo.space import SpaceError

SPACE = {"x": {"low": -2.0, "high": 2.0}, "y": {"low": -2.0, "high": 2.0}}


def run(learner: Learner, f: Any, in_flight: int = 1) -> Learner:
    """Drive a learner to its end, ``in_flight`` points at a time, oldest finishing first."""
    pending: list[Any] = []
    while learner.wants_more() or pending:
        while learner.wants_more() and len(pending) < in_flight:
            pending.append(learner.ask())
        p = pending.pop(0)
        learner.tell(p.index, f(**p.params))
    return learner


def test_box_maps_log_int_and_step_dimensions() -> None:
    box = Box(
        {
            "mass": {"low": 10, "high": 1000, "log": True},
            "n": {"type": "int", "low": 1, "high": 9},
            "cut": {"low": 0.0, "high": 1.0, "step": 0.25},
        }
    )
    assert box.params(np.array([0.5, 0.5, 0.4])) == {
        "mass": pytest.approx(100.0),
        "n": 5,
        "cut": 0.5,
    }
    assert box.to_unit({"mass": 1000, "n": 1, "cut": 0.25}) == pytest.approx([1.0, 0.0, 0.25])
    snapped = box.snap(np.array([[0.52, 0.07, 0.3]]))
    assert box.params(snapped[0])["n"] == 2 and box.params(snapped[0])["cut"] == 0.25
    assert box.axes(3)["mass"] == pytest.approx([10, 100, 1000])


@pytest.mark.parametrize(
    "space, message",
    [
        ({"x": {"low": 1.0, "high": 1.0}}, r"space.x: the range \[1.0, 1.0\] is empty"),
        ({"x": {"low": 2.0, "high": 1.0}}, "space.x.low: 2.0 is above high 1.0"),
        ({"x": {"choices": ["a", "b"]}}, "space.x: active learning needs numbers"),
        ({"x": {"high": 1.0}}, "space.x.low: missing"),
        ({}, "space: no parameters"),
    ],
)
def test_bad_spaces_are_refused_with_the_parameter_named(space: Any, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        Box(space)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"budget": 5}, "budget: 5 evaluations cannot hold the initial design of 8 points"),
        ({"budget": 10, "init": 12}, "budget: 10 evaluations cannot hold the initial design of 12"),
        ({"level": None}, "level: a contour search needs the level"),
        ({"level": float("nan")}, "level: nan is not a finite number"),
        ({"goal": "explore"}, "goal: 'explore' is not one of contour, maximize, minimize"),
        ({"goal": "maximize"}, "level: only a contour search has a level"),
        ({"goal": "maximize", "level": None, "value": ["a", "b"]}, "maximize takes one value"),
        ({"acquisition": "ei"}, "acquisition: 'ei' does not fit goal contour"),
        ({"transform": "sqrt"}, "transform: 'sqrt' is not one of none, log"),
        ({"transform": "log", "level": -1.0}, "level: -1.0 must be positive"),
        ({"batch": 0}, "batch: 0 is not an integer >= 1"),
        ({"value": "cls_obs +"}, "not a valid expression"),
        ({"value": "__import__('os')"}, "only numbers, names"),
        ({"value": []}, "value: name at least one value"),
        ({"grid": 1}, "grid: 1 is not an integer >= 2"),
        ({"tol": 1.5}, r"tol: 1.5 is not a number in \[0, 1\)"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(
    settings: dict[str, Any], message: str
) -> None:
    kwargs = {"evaluate": af.bowl, "space": SPACE, "level": 0.5, **settings}
    with pytest.raises(ValueError, match=message):
        search.submit(**kwargs)  # the check runs before any server is asked
    with pytest.raises(ValueError, match=message):
        search(**kwargs)


def test_evaluate_must_be_a_job_or_workflow_and_args_must_not_shadow_the_space() -> None:
    with pytest.raises(TypeError, match=r"evaluate: pass a @pw\.job or @pw\.workflow"):
        search.submit(evaluate=af.wave, space=SPACE, level=0.5)
    with pytest.raises(ValueError, match="args: x is also a dimension"):
        search.submit(evaluate=af.bowl, space=SPACE, level=0.5, args={"x": 1})


def test_expressions_read_named_values_and_say_what_is_missing() -> None:
    e = Expression("log(cls_obs) - log(cls_exp) + 2 ** -1")
    assert e.names == {"cls_obs", "cls_exp"}
    assert e({"cls_obs": math.e, "cls_exp": 1.0}) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="returned no 'cls_exp' \\(it returned cls_obs\\)"):
        e({"cls_obs": 1.0})
    with pytest.raises(ValueError, match="cls_exp = 'x' is not a number"):
        e({"cls_obs": 1.0, "cls_exp": "x"})


def test_initial_design_fills_the_box_and_is_the_same_for_the_same_seed() -> None:
    def design(seed: int) -> np.ndarray:
        learner = Learner(SPACE, level=0.5, budget=20, init=8, seed=seed)
        return np.array([learner.ask().unit for _ in range(8)])

    a = design(1)
    assert (design(1) == a).all() and not (design(2) == a).all()
    for d in range(2):  # a Latin hypercube: one point in each eighth of every axis
        assert sorted((a[:, d] * 8).astype(int)) == list(range(8))


def test_a_batch_chosen_before_any_result_spreads_out() -> None:
    learner = Learner(SPACE, level=0.5, budget=30, init=8, batch=6, seed=2)
    for _ in range(8):
        p = learner.ask()
        learner.tell(p.index, {"value": af.wave(**p.params)})
    batch = np.array([learner.ask().unit for _ in range(6)])  # six in flight, none told
    gaps = np.abs(batch[:, None] - batch[None]).max(axis=2) + np.eye(6)
    assert gaps.min() > 0.03
    assert [p.round for p in learner.points[8:]] == [1] * 6


def test_sequential_learning_finds_the_contour_and_stops_when_it_stops_changing() -> None:
    learner = run(
        Learner(SPACE, level=af.LEVEL, budget=80, seed=1, tol=0.002, patience=5),
        lambda x, y: {"value": af.wave(x, y)},
    )
    result = learner.result()
    assert result["stopped"] == "converged" and result["evaluations"] < 80
    assert [r["change"] for r in result["rounds"][-5:]] == pytest.approx([0.0] * 5, abs=0.002)
    axes = result["estimate"]["axes"]
    xs, ys = np.meshgrid(axes["x"], axes["y"], indexing="ij")
    truth = np.vectorize(af.wave)(xs, ys) < af.LEVEL
    below = np.array(result["estimate"]["below"])
    assert (below & truth).sum() / (below | truth).sum() > 0.95


def test_maximize_finds_the_peak_and_reports_the_surrogate_there() -> None:
    learner = run(
        Learner({"x": {"low": -1, "high": 1}}, goal="maximize", budget=15, seed=3, tol=0.0),
        lambda x: {"value": 1 - (x - 0.37) ** 2},
        in_flight=3,
    )
    best = learner.result()["best"]
    assert best["params"]["x"] == pytest.approx(0.37, abs=0.03)
    assert best["value"] == pytest.approx(1.0, abs=1e-3) and best["measured"] <= 1.0
    low = run(
        Learner({"x": {"low": -1, "high": 1}}, goal="minimize", budget=15, seed=3, tol=0.0),
        lambda x: {"value": (x - 0.37) ** 2},
    ).result()["best"]
    assert low["params"]["x"] == pytest.approx(0.37, abs=0.03)


def test_failures_and_nan_are_recorded_and_a_point_cannot_be_told_twice() -> None:
    learner = Learner(SPACE, level=0.5, budget=12, seed=1)
    p = learner.ask()
    learner.tell(p.index, {"value": float("nan")})
    q = learner.ask()
    learner.tell(q.index, error="worker ran out of memory")
    r = learner.ask()
    learner.tell(r.index, {"other": 1.0})
    s = learner.ask()
    learner.tell(s.index, 0.25)  # a bare number is the value
    out = learner.result()["points"]
    assert [x["state"] for x in out] == ["failed", "failed", "failed", "done"]
    assert out[0]["error"] == "value = nan is not a finite number"
    assert out[1]["error"] == "worker ran out of memory"
    assert out[2]["error"] == "the evaluation returned no 'value' (it returned other)"
    assert out[3]["values"] == {"value": 0.25}
    with pytest.raises(ValueError, match="point 0 was already told"):
        learner.tell(0, {"value": 1.0})


def test_log_scale_clips_values_far_below_the_level() -> None:
    learner = Learner(
        {"m": {"low": 1, "high": 2}}, level=0.05, transform="log", budget=6, init=4, seed=0
    )
    for v in (1e-30, 0.0, 0.5, 1.0):
        learner.tell(learner.ask().index, {"value": v})
    points = learner.result()["points"]
    assert [p["values"]["value"] for p in points] == pytest.approx([5e-5, 5e-5, 0.5, 1.0])
    est = learner.estimate()
    assert est["scale"] == "log" and np.array(est["mean"]).shape == (41,)


def test_budget_is_never_exceeded() -> None:
    learner = Learner(SPACE, level=0.5, budget=8, seed=0)
    for _ in range(8):
        learner.ask()
    assert not learner.wants_more()
    with pytest.raises(RuntimeError, match="the budget of 8 evaluations is spent"):
        learner.ask()


def test_artifact_reads_local_outputs_in_a_local_run_and_refuses_bad_names(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert af.chain(x=0.3, y=-0.5) == {"peak": 0.0}  # generate wrote it, analyse read it
    assert (tmp_path / "pw_outputs" / "sample.json").exists()
    for bad in ("", "/etc/passwd", "../x"):
        with pytest.raises(ValueError, match="is not a relative file name"):
            pw.artifact(1, bad)
