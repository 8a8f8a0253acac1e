"""Toy-based limits against pyhf itself: the same toys give pyhf's CLs and bands, toys merged
from several jobs agree with pyhf's own toys within their Monte-Carlo uncertainty, and a
scan through real pilots agrees with pyhf's asymptotic limit where asymptotics hold."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyhf
import pytest

from pilotwave.limits import stats, toys, upper_limit
from pilotwave.limits.upper import toy_seed

pytestmark = pytest.mark.slow


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
                "config": {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[0, 5]]}]},
            }
        ],
        "version": "1.0.0",
    }


SMALL = counting(12.0, 50.0, 5.0, 52.0)


@pytest.fixture
def pyhf_on_this_numpy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pyhf 0.7.6 passes NumPy's removed ``interpolation=``: give it ``method=`` for the comparison."""
    from pyhf.tensor import numpy_backend

    def percentile(
        self: Any, tensor_in: Any, q: Any, axis: Any = None, interpolation: str = "linear"
    ) -> Any:
        return np.percentile(tensor_in, q, axis=axis, method=interpolation)

    monkeypatch.setattr(numpy_backend.numpy_backend, "percentile", percentile)
    yield


def model_data(spec: dict[str, Any]) -> tuple[Any, list[float]]:
    ws = pyhf.Workspace(spec)
    model = ws.model()
    return model, list(ws.data(model))


@pytest.mark.skipif(
    tuple(int(x) for x in np.__version__.split(".")[:2]) < (2, 4), reason="the trap needs NumPy 2.4"
)
def test_pyhfs_own_toys_trip_on_this_numpy_and_ours_do_not() -> None:
    model, data = model_data(SMALL)
    with pytest.raises(TypeError, match="interpolation"):
        pyhf.infer.hypotest(1.0, data, model, calctype="toybased", ntoys=5, track_progress=False)
    out = toys.throw_toys.fn(SMALL, 1.0, 20, seed=1)
    assert len(stats.cls_point(1.0, out["sb"], out["b"], out["observed"]).cls_expected) == 5


def test_merged_jobs_give_pyhfs_cls_and_band_for_the_same_toys(pyhf_on_this_numpy: None) -> None:
    from pyhf.infer.calculators import EmpiricalDistribution, ToyCalculator

    outs = [toys.throw_toys.fn(SMALL, 1.0, 150, seed=s) for s in (11, 12, 13)]
    sb = [q for o in outs for q in o["sb"]]
    b = [q for o in outs for q in o["b"]]
    q_obs = outs[0]["observed"]
    assert {o["observed"] for o in outs} == {q_obs}  # every job fits the same observed data
    ours = stats.cls_point(1.0, sb, b, q_obs)

    model, data = model_data(SMALL)
    calc = ToyCalculator(data, model, ntoys=1, track_progress=False)
    assert float(calc.teststatistic(1.0)) == pytest.approx(q_obs)
    sb_dist, b_dist = EmpiricalDistribution(np.array(sb)), EmpiricalDistribution(np.array(b))
    clsb, clb, cls = (float(v) for v in calc.pvalues(q_obs, sb_dist, b_dist))
    assert (ours.clsb, ours.clb, ours.cls) == pytest.approx((clsb, clb, cls))
    band = [float(v) for v in calc.expected_pvalues(sb_dist, b_dist)[2]]
    assert list(ours.cls_expected) == pytest.approx(band)


def test_merged_jobs_agree_with_pyhfs_own_toys_within_their_uncertainty(
    pyhf_on_this_numpy: None,
) -> None:
    model, data = model_data(SMALL)
    np.random.seed(2026)
    theirs = float(
        pyhf.infer.hypotest(1.0, data, model, calctype="toybased", ntoys=800, track_progress=False)
    )
    outs = [toys.throw_toys.fn(SMALL, 1.0, 200, seed=s) for s in range(4)]
    ours = stats.cls_point(
        1.0,
        [q for o in outs for q in o["sb"]],
        [q for o in outs for q in o["b"]],
        outs[0]["observed"],
    )
    their_err = ours.cls_err * math.sqrt(len(outs) * 200 / 800)  # same CLs, 800 toys
    assert abs(ours.cls - theirs) < 4 * math.hypot(ours.cls_err, their_err)


def test_toys_are_reproducible_from_their_seed_and_differ_between_seeds() -> None:
    one, again, other = (toys.throw_toys.fn(SMALL, 1.5, 30, seed=s) for s in (7, 7, 8))
    assert one == again
    assert one["sb"] != other["sb"] and one["b"] != other["b"]
    assert toy_seed(1, 0.5, 0) == toy_seed(1, 0.5, 0) != toy_seed(1, 0.5, 1) != toy_seed(2, 0.5, 1)


def test_a_failed_fit_is_counted_and_the_toy_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyhf.infer import utils

    real = utils.get_test_stat("qtilde")
    calls = {"n": 0}

    def flaky(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] % 7 == 0:  # the observed data's fit (call 1) succeeds
            raise pyhf.exceptions.FailedMinimization(type("R", (), {"message": "no"})())
        return real(*args)

    monkeypatch.setattr(utils, "get_test_stat", lambda name: flaky)
    out = toys.throw_toys.fn(SMALL, 1.0, 35, seed=3)
    assert out["failed"] == 10 and len(out["sb"]) + len(out["b"]) == 70 - 10


def test_a_toy_job_that_fails_for_good_leaves_its_point_with_fewer_toys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = toys.throw_toys.fn
    seen: set[float] = set()

    def first_job_per_point_fails(*args: Any, **kwargs: Any) -> Any:
        poi = args[1]
        if poi not in seen:
            seen.add(poi)
            raise RuntimeError(f"worker lost at poi={poi}")
        return real(*args, **kwargs)

    monkeypatch.setattr(toys.throw_toys, "fn", first_job_per_point_fails)
    result = upper_limit(
        workspace=SMALL, initial_toys=200, toys_per_job=100, max_toys=1200, max_steps=1, seed=5
    )
    assert result["failed_jobs"] == 6 and all(p["failed_jobs"] == 1 for p in result["points"])
    assert all(p["toys"] == 100 for p in result["points"])  # one of the two jobs each
    assert result["observed"]["limit"] is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"precision": 0}, "precision"),
        ({"poi_range": [3, 1]}, "poi_range: [3.0, 1.0] is empty or inverted"),
        ({"poi_range": [0, "x"]}, "poi_range"),
        ({"toys_per_job": 1}, "toys_per_job"),
        ({"test_stat": "q0"}, "test_stat"),
        ({"workspace": {"channels": []}}, "not a valid HistFactory workspace"),
    ],
)
def test_bad_arguments_are_refused_at_submission(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        upper_limit.submit(**{"workspace": SMALL, **kwargs})
    assert message in str(info.value)


def test_upper_limit_through_pilots_agrees_with_asymptotics_at_large_counts(cluster: Any) -> None:
    spec = counting(60.0, 1000.0, 20.0, 1010.0)
    model, data = model_data(spec)
    asym_obs, asym_exp = pyhf.infer.intervals.upper_limits.upper_limit(
        data, model, scan=np.linspace(0, 5, 101), level=0.05
    )
    run = upper_limit.submit(
        workspace=spec, precision=0.04, initial_toys=300, toys_per_job=150, max_toys=20_000, seed=3
    )
    result = run.result(timeout=600)
    observed, median = result["observed"]["limit"], result["expected"]["0"]["limit"]
    assert abs(observed - float(asym_obs)) / float(asym_obs) < 0.05, (observed, float(asym_obs))
    assert abs(median - float(asym_exp[2])) / float(asym_exp[2]) < 0.05, (median, asym_exp[2])
    # The scan refined only around the crossings: later steps add few points.
    steps = result["steps"]
    assert len(steps) >= 2 and all(len(s["points"]) <= 2 * 6 for s in steps[1:])
    assert result["toys"] == sum(s["toys"] for s in steps) and result["failed_jobs"] == 0
    assert run.status()["progress"]["kind"] == "limits"


def test_exclusion_scan_refines_only_where_the_boundary_runs(cluster: Any) -> None:
    from limits_flows import make_workspace

    from pilotwave import limits

    grid = {
        "mass": {"low": 100, "high": 500, "points": 3},
        "coupling": {"low": 0.1, "high": 1.0, "points": 3},
    }
    result = limits.scan.submit(
        factory=make_workspace, grid=grid, toys=100, toys_per_job=100, max_steps=2, seed=1
    ).result(timeout=300)
    assert result["axes"] == ["mass", "coupling"] and result["failed_jobs"] == 0
    points = {(p["params"]["mass"], p["params"]["coupling"]): p for p in result["points"]}
    coarse = [p for p in points.values() if p["step"] == 1]
    assert len(coarse) == 9 and len(points) > 9
    for (m, c), p in points.items():  # far from the boundary, toys and asymptotics agree
        model, data = model_data(make_workspace.fn(mass=m, coupling=c))
        asym = float(pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde"))
        if abs(asym - 0.05) > 0.04:
            assert p["excluded"] == (asym < 0.05), (m, c, p["cls"], asym)
        if p["step"] == 2:  # a new point lies in a cell whose corners disagreed
            cell = [
                q
                for (qm, qc), q in points.items()
                if q["step"] == 1 and abs(qm - m) <= 200 + 1e-6 and abs(qc - c) <= 0.45 + 1e-6
            ]
            assert {q["excluded"] for q in cell} == {True, False}
    # The boundary runs between excluded and allowed points: more coupling is excluded.
    for m, c in result["boundary"]["observed"]:
        below = [p for (pm, pc), p in points.items() if pm == m and pc < c]
        above = [p for (pm, pc), p in points.items() if pm == m and pc > c]
        if below and above:
            assert not max(below, key=lambda p: p["params"]["coupling"])["excluded"]
            assert min(above, key=lambda p: p["params"]["coupling"])["excluded"]
    assert result["boundary"]["expected"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid": {"mass": [1, 2]}}, "exactly two dimensions"),
        ({"grid": {"mass": {"low": 5, "high": 1}, "coupling": [1, 2]}}, "grid.mass: low 5.0"),
        ({"grid": {"mass": [1, 1], "coupling": [1, 2]}}, "grid.mass: needs at least 2 distinct"),
        ({"grid": {"mass": {"low": 0, "high": 1, "log": True}, "coupling": [1, 2]}}, "log scale"),
        ({"factory": print}, "factory: pass a @pw.job"),
        ({"alpha": 0}, "alpha"),
    ],
)
def test_bad_exclusion_arguments_are_refused_at_submission(
    kwargs: dict[str, Any], message: str
) -> None:
    from limits_flows import make_workspace

    from pilotwave import limits

    args = {"factory": make_workspace, "grid": {"mass": [100, 200], "coupling": [0.1, 1]}, **kwargs}
    with pytest.raises((ValueError, TypeError)) as info:
        limits.scan.submit(**args)
    assert message in str(info.value)


def test_at_low_counts_toys_give_the_known_difference_from_asymptotics() -> None:
    """One expected background event: the toys' band cannot fall as low as the asymptotic one.

    With n = 0 the best outcome an experiment can have, the background-only toys pile up
    there and the lower expected limits stay near the median, while the asymptotic formulae
    extrapolate a Gaussian band far below it (measured: -2 sigma 0.75 from toys, 0.36
    asymptotic; observed 0.94 and 0.85).
    """
    spec = counting(4.0, 1.0, 0.1, 1.0)
    model, data = model_data(spec)
    asym_obs, asym_exp = pyhf.infer.intervals.upper_limits.upper_limit(
        data, model, scan=np.linspace(0, 5, 201), level=0.05
    )
    result = upper_limit(
        workspace=spec, precision=0.2, initial_toys=200, toys_per_job=200, max_toys=3000, seed=2
    )
    assert result["toys"] <= 3000  # the budget holds
    toys_minus2 = result["expected"]["-2"]["limit"]
    assert toys_minus2 > 1.5 * float(asym_exp[0]), (toys_minus2, float(asym_exp[0]))
    observed = result["observed"]["limit"]
    assert observed > float(asym_obs)  # asymptotics are too optimistic here


def test_a_scan_whose_toy_jobs_all_fail_fails_with_their_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no pyhf on this pilot")

    monkeypatch.setattr(toys.throw_toys, "fn", broken)
    with pytest.raises(
        RuntimeError,
        match="every toy job failed; the last error: RuntimeError: no pyhf on this pilot",
    ):
        upper_limit(workspace=SMALL, initial_toys=100, toys_per_job=100, max_steps=1, seed=1)


def test_the_bands_uncertainty_matches_the_spread_of_independent_toy_sets() -> None:
    """A band value is a ratio at a quantile: its stated error must not be smaller than the
    spread a re-run shows (a binomial error was 2-4x too small); the bootstrap errs on the
    safe side in the lower band, where the ratios pile up near 0."""
    rng = np.random.default_rng(5)

    def draw() -> tuple[np.ndarray, np.ndarray]:  # q under s+b sits above q under b-only
        return np.sort(rng.chisquare(1, 1000) + 1.0), np.sort(rng.chisquare(1, 1000))

    spread = np.std([stats.expected_band(*draw()) for _ in range(30)], axis=0, ddof=1)
    stated = np.array(stats.expected_band_errors(*draw()))
    assert np.all(stated > spread * 0.7) and np.all(stated < spread * 4), (stated, spread)
