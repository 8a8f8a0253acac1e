"""Unit tests of pilotwave.hpo without a server: spaces, samplers, pruners, export, plots."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pilotwave.hpo.export import export, rebuild, studies
from pilotwave.hpo.plots import write_plots
from pilotwave.hpo.samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler
from pilotwave.hpo.space import SpaceError, distributions, grid, grid_size, normalize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = normalize(
    {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
    }
)


# --- search spaces -------------------------------------------------------------------------

BAD_SPACES: list[tuple[Any, str]] = [
    (["lr"], "space: expected a mapping of parameter name to definition, got list"),
    ({}, "space: no parameters"),
    ({3: {"low": 0, "high": 1}}, "space[3]: parameter names must be non-empty strings"),
    ({" ": {"low": 0, "high": 1}}, "space[' ']: parameter names must be non-empty strings"),
    ({"lr": 0.1}, "space.lr: expected a mapping"),
    (
        {"lr": {"type": "double", "low": 0, "high": 1}},
        "space.lr.type: unknown type 'double' (valid: float, int, categorical)",
    ),
    ({"lr": {"type": "float", "high": 1}}, "space.lr.low: missing"),
    ({"lr": {"low": 0}}, "space.lr.high: missing"),
    ({"lr": {"low": 0.5, "high": 0.1}}, "space.lr.low: 0.5 is above high 0.1"),
    ({"n": {"type": "int", "low": 5, "high": 1}}, "space.n.low: 5 is above high 1"),
    ({"lr": {"low": "a", "high": 1}}, "space.lr.low: expected a number, got 'a'"),
    ({"n": {"type": "int", "low": True, "high": 3}}, "space.n.low: expected a number, got True"),
    ({"lr": {"low": float("nan"), "high": 1}}, "space.lr.low: nan is not a finite number"),
    ({"lr": {"low": 0, "high": float("inf")}}, "space.lr.high: inf is not a finite number"),
    ({"n": {"type": "int", "low": 1.5, "high": 3}}, "space.n.low: expected an integer, got 1.5"),
    (
        {"lr": {"low": 0, "high": 1, "log": True}},
        "space.lr.low: 0.0 must be positive on a log scale",
    ),
    ({"lr": {"low": 0.1, "high": 1, "log": "yes"}}, "space.lr.log: expected true or false"),
    (
        {"lr": {"low": 0.1, "high": 1, "log": True, "step": 0.1}},
        "space.lr.step: Optuna cannot combine a step with a log scale",
    ),
    ({"lr": {"low": 0, "high": 1, "step": 0}}, "space.lr.step: 0.0 must be positive"),
    ({"n": {"type": "int", "low": 0, "high": 4, "step": -2}}, "space.n.step: -2 must be positive"),
    (
        {"lr": {"low": 0, "high": 1, "step": 0.3}},
        "space.lr.high: 1.0 is not low 0.0 plus a multiple of step 0.3 (use 0.9)",
    ),
    (
        {"n": {"type": "int", "low": 0, "high": 10, "step": 4}},
        "space.n.high: 10 is not low 0 plus a multiple of step 4 (use 8)",
    ),
    (
        {"lr": {"low": 0, "hihg": 1}},
        "space.lr.hihg: unknown field (did you mean 'high'? valid: type, low, high, log, step)",
    ),
    ({"opt": {"type": "categorical", "choices": ["a"], "low": 0}}, "space.opt.low: unknown field"),
    ({"opt": {"type": "categorical"}}, "space.opt.choices: missing"),
    ({"opt": {"choices": "adam"}}, "space.opt.choices: expected a list, got str"),
    ({"opt": {"choices": []}}, "space.opt.choices: empty"),
    (
        {"opt": {"choices": [[1, 2]]}},
        "space.opt.choices: [1, 2] is not a string, number, boolean or null",
    ),
    ({"opt": {"choices": ["a", "b", "a"]}}, "space.opt.choices: duplicate choice 'a'"),
    ({"opt": {"choices": [1, 1.0]}}, "space.opt.choices: duplicate choice 1.0"),
    ({"opt": {"choices": [float("nan")]}}, "space.opt.choices: nan is not a finite number"),
    # phpo/hpogrid format
    (
        {"lr": {"method": "gauss", "dimension": {}}},
        "space.lr.method: unknown method 'gauss' (valid: categorical, fixed, uniform",
    ),
    ({"lr": {"method": 3, "dimension": {}}}, "space.lr.method: expected a method name, got 3"),
    (
        {"w": {"method": "normal", "dimension": {"mu": 0, "sigma": 1}}},
        "space.w.method: 'normal' is not supported",
    ),
    (
        {"w": {"method": "qloguniform", "dimension": {"low": 1, "high": 9, "q": 1}}},
        "space.w.method: 'qloguniform' is not supported",
    ),
    ({"lr": {"method": "uniform", "dimension": [0, 1]}}, "space.lr.dimension: expected a mapping"),
    ({"lr": {"method": "uniform"}}, "space.lr.dimension: expected a mapping"),
    (
        {"lr": {"method": "uniform", "type": "float", "dimension": {}}},
        "space.lr.type: unknown field (valid: method, dimension)",
    ),
    (
        {"lr": {"method": "uniform", "dimension": {"low": 0}}},
        "space.lr.dimension.high: missing (method 'uniform' needs it)",
    ),
    (
        {"lr": {"method": "uniform", "dimension": {"low": 0, "hgh": 1}}},
        "space.lr.dimension.hgh: unknown field (did you mean 'high'?",
    ),
    (
        {"lr": {"method": "uniform", "dimension": {"low": 1, "high": 0}}},
        "space.lr.dimension.low: 1.0 is above high 0.0",
    ),
    (
        {"lr": {"method": "loguniform", "dimension": {"low": 0, "high": 1}}},
        "space.lr.dimension.low: 0.0 must be positive on a log scale",
    ),
    (
        {"lr": {"method": "loguniform", "dimension": {"low": 1, "high": 2, "base": 1}}},
        "space.lr.dimension.base: 1.0 must be positive and not 1",
    ),
    (
        {"w": {"method": "quniform", "dimension": {"low": 0, "high": 1, "q": -0.5}}},
        "space.w.dimension.q: -0.5 must be positive",
    ),
    (
        {"d": {"method": "categorical", "dimension": {"categories": [1, 1, 2]}}},
        "space.d.dimension.categories: duplicate choice 1",
    ),
    (
        {"d": {"method": "categorical", "dimension": {"categories": []}}},
        "space.d.dimension.categories: empty",
    ),
]


@pytest.mark.parametrize(("space", "message"), BAD_SPACES)
def test_bad_space_is_refused_with_a_message_naming_parameter_and_field(
    space: Any, message: str
) -> None:
    with pytest.raises(SpaceError, match=re.escape(message)):
        normalize(space)


def test_optuna_like_space_is_normalized_with_defaults() -> None:
    space = {
        "lr": {"low": 1e-4, "high": 0.1, "log": True},
        "layers": {"type": "int", "low": 1, "high": 4},
        "units": {"type": "int", "low": 32.0, "high": 256, "step": 32},
        "dropout": {"low": 0, "high": 0.5, "step": 0.1},
        "opt": {"choices": ["adam", "sgd", None, True]},
    }

    assert normalize(space) == {
        "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "step": None},
        "layers": {"type": "int", "low": 1, "high": 4, "log": False, "step": 1},
        "units": {"type": "int", "low": 32, "high": 256, "log": False, "step": 32},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False, "step": 0.1},
        "opt": {"type": "categorical", "choices": ["adam", "sgd", None, True]},
    }


def test_canonical_space_normalizes_to_itself() -> None:
    canonical = normalize(
        {"lr": {"low": 1e-4, "high": 0.1, "log": True}, "n": {"type": "int", "low": 1, "high": 3}}
    )

    assert normalize(canonical) == canonical


def test_equal_bounds_pin_a_parameter() -> None:
    space = normalize({"x": {"low": 0.5, "high": 0.5}, "n": {"type": "int", "low": 2, "high": 2}})

    assert space["x"]["low"] == space["x"]["high"] == 0.5
    assert grid({"n": space["n"]}) == {"n": [2]}


def test_phpo_space_maps_every_supported_method() -> None:
    space = {
        "lr": {"method": "loguniform", "dimension": {"low": 1e-5, "high": 1e-2, "base": 10}},
        "batch": {
            "method": "categorical",
            "dimension": {"categories": [32, 64, 128], "grid_search": 0},
        },
        "layers": {"method": "uniformint", "dimension": {"low": 3, "high": 10}},
        "momentum": {"method": "uniform", "dimension": {"low": 0.5, "high": 1.0}},
        "width": {"method": "quniform", "dimension": {"low": 0.0, "high": 2.0, "q": 0.5}},
        "depth": {"method": "quniformint", "dimension": {"low": 2, "high": 8, "q": 2}},
        "units": {"method": "loguniformint", "dimension": {"low": 8, "high": 512}},
        "activation": {"method": "fixed", "dimension": {"value": "relu"}},
    }

    assert normalize(space) == {
        "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True, "step": None},
        "batch": {"type": "categorical", "choices": [32, 64, 128]},
        "layers": {"type": "int", "low": 3, "high": 10, "log": False, "step": 1},
        "momentum": {"type": "float", "low": 0.5, "high": 1.0, "log": False, "step": None},
        "width": {"type": "float", "low": 0.0, "high": 2.0, "log": False, "step": 0.5},
        "depth": {"type": "int", "low": 2, "high": 8, "log": False, "step": 2},
        "units": {"type": "int", "low": 8, "high": 512, "log": True, "step": 1},
        "activation": {"type": "categorical", "choices": ["relu"]},
    }


def test_formats_can_be_mixed_in_one_space() -> None:
    space = normalize(
        {
            "lr": {"method": "loguniform", "dimension": {"low": 1e-4, "high": 1e-1}},
            "n": {"type": "int", "low": 1, "high": 3},
        }
    )

    assert [p["type"] for p in space.values()] == ["float", "int"]


def test_distributions_match_the_canonical_space() -> None:
    dists = distributions(
        {
            "lr": {"low": 1e-4, "high": 0.1, "log": True},
            "n": {"type": "int", "low": 0, "high": 8, "step": 2},
            "opt": {"choices": ["adam", "sgd"]},
        }
    )

    assert dists == {
        "lr": FloatDistribution(1e-4, 0.1, log=True),
        "n": IntDistribution(0, 8, step=2),
        "opt": CategoricalDistribution(["adam", "sgd"]),
    }


def test_grid_lists_every_value_with_exact_float_steps() -> None:
    space = {
        "x": {"low": 0.0, "high": 0.5, "step": 0.1},
        "n": {"type": "int", "low": 1, "high": 7, "step": 3},
        "opt": {"choices": ["adam", "sgd"]},
    }

    assert grid(space) == {
        "x": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
        "n": [1, 4, 7],
        "opt": ["adam", "sgd"],
    }
    assert grid_size(space) == 6 * 3 * 2


def test_grid_needs_a_step_for_float_parameters() -> None:
    with pytest.raises(SpaceError, match=r"space\.x\.step: grid sampling needs a step for float"):
        grid({"x": {"low": 0, "high": 1}})


def test_grid_refuses_more_than_ten_thousand_values() -> None:
    with pytest.raises(SpaceError, match=r"space\.n\.step: the grid would have 10001 values"):
        grid({"n": {"type": "int", "low": 0, "high": 10_000}})


# --- samplers and pruners ------------------------------------------------------------------

SAMPLER_CLASSES = {
    "tpe": optuna.samplers.TPESampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "random": optuna.samplers.RandomSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
}


@pytest.mark.parametrize("name", sorted(SAMPLER_CLASSES))
def test_sampler_is_built_by_name(name: str) -> None:
    space = normalize({"x": {"low": 0, "high": 1, "step": 0.25}, "opt": {"choices": ["a", "b"]}})

    sampler = make_sampler(name, seed=1, space=space, directions=["minimize"])

    assert type(sampler) is SAMPLER_CLASSES[name]


def test_default_sampler_is_tpe() -> None:
    sampler = make_sampler(None, seed=1, space=SPACE, directions=["minimize"])

    assert isinstance(sampler, optuna.samplers.TPESampler)


def test_every_listed_sampler_is_known() -> None:
    assert set(SAMPLERS) == {*SAMPLER_CLASSES, "gp"}


def test_unknown_sampler_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown sampler 'bayes' .*tpe, gp, cmaes"):
        make_sampler("bayes", seed=1, space=SPACE, directions=["minimize"])


def test_unknown_sampler_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"sampler 'tpe': unknown option 'n_startup' .*n_startup_trials"
    ):
        make_sampler({"type": "tpe", "n_startup": 3}, seed=1, space=SPACE, directions=["minimize"])


def test_bad_sampler_option_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"sampler 'qmc': .*qmc_type"):
        make_sampler(
            {"type": "qmc", "qmc_type": "nope"}, seed=1, space=SPACE, directions=["minimize"]
        )


def test_sampler_mapping_needs_a_type() -> None:
    with pytest.raises(ValueError, match="sampler: a mapping needs 'type'"):
        make_sampler({"seed": 3}, seed=1, space=SPACE, directions=["minimize"])


def test_grid_sampler_takes_its_values_from_the_space() -> None:
    with pytest.raises(ValueError, match="'search_space' is set from the run's search space"):
        make_sampler(
            {"type": "grid", "search_space": {}}, seed=1, space=SPACE, directions=["minimize"]
        )
    with pytest.raises(SpaceError, match="grid sampling needs a step"):
        make_sampler("grid", seed=1, space=SPACE, directions=["minimize"])


def test_cmaes_refuses_several_objectives() -> None:
    with pytest.raises(ValueError, match="'cmaes' sampler optimises one objective, not 2"):
        make_sampler("cmaes", seed=1, space=SPACE, directions=["minimize", "maximize"])


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_gp_sampler_without_torch_says_how_to_install_it() -> None:
    with pytest.raises(
        ValueError, match=re.escape("the 'gp' sampler needs PyTorch: pip install torch")
    ):
        make_sampler("gp", seed=1, space=SPACE, directions=["minimize"])


@pytest.mark.parametrize(
    ("directions", "message"),
    [
        ([], "directions: empty"),
        (["min"], "directions: 'min' is not one of minimize, maximize"),
        ("minimize", "directions: expected a list"),
    ],
)
def test_bad_directions_are_refused(directions: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_sampler("random", seed=1, space=SPACE, directions=directions)
    with pytest.raises(ValueError, match=message):
        make_pruner("median", directions=directions)


def _first_points(
    sampler: optuna.samplers.BaseSampler, directions: list[str]
) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=sampler, directions=directions)
    dists = distributions(SPACE)
    points = []
    for _ in range(5):
        trial = study.ask(dists)
        x = trial.params["x"]
        values = [(x - 0.3) ** 2, x] if len(directions) > 1 else [(x - 0.3) ** 2]
        study.tell(trial, values)
        points.append(trial.params)
    return points


@pytest.mark.parametrize(
    ("spec", "directions"),
    [
        ({"type": "tpe", "n_startup_trials": 2}, ["minimize"]),
        ("random", ["minimize"]),
        ("qmc", ["minimize"]),
        ("cmaes", ["minimize"]),
        ({"type": "nsga2", "population_size": 2}, ["minimize", "minimize"]),
    ],
)
def test_same_seed_proposes_the_same_points(spec: Any, directions: list[str]) -> None:
    def points(seed: int) -> list[dict[str, Any]]:
        sampler = make_sampler(spec, seed=seed, space=SPACE, directions=directions)
        return _first_points(sampler, directions)

    assert points(7) == points(7)
    assert points(7) != points(8)


PRUNER_CLASSES = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "asha": optuna.pruners.SuccessiveHalvingPruner,
    "sh": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}


@pytest.mark.parametrize("name", sorted(PRUNER_CLASSES))
def test_pruner_is_built_by_name_or_alias(name: str) -> None:
    assert type(make_pruner(name, directions=["minimize"])) is PRUNER_CLASSES[name]


def test_threshold_pruner_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="'threshold' needs 'lower' and/or 'upper'"):
        make_pruner("threshold", directions=["minimize"])
    pruner = make_pruner({"type": "threshold", "upper": 1.0}, directions=["minimize"])

    assert isinstance(pruner, optuna.pruners.ThresholdPruner)


@pytest.mark.parametrize("spec", [None, "none", {"type": "none"}])
def test_no_pruner_means_none(spec: Any) -> None:
    assert make_pruner(spec, directions=["minimize", "maximize"]) is None


def test_every_listed_pruner_is_known() -> None:
    assert set(PRUNERS) == {*PRUNER_CLASSES, "threshold", "none"} - {"asha", "sh"}


def test_pruning_several_objectives_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot prune a study with 2 objectives"):
        make_pruner("median", directions=["minimize", "maximize"])


def test_pruner_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"unknown pruner 'early' .*median"):
        make_pruner("early", directions=["minimize"])
    with pytest.raises(
        ValueError, match=r"pruner 'median': unknown option 'warmup' .*n_warmup_steps"
    ):
        make_pruner({"type": "median", "warmup": 3}, directions=["minimize"])
    with pytest.raises(ValueError, match="pruner 'none' takes no options"):
        make_pruner({"type": "none", "warmup": 3}, directions=["minimize"])
    with pytest.raises(ValueError, match="pruner 'percentile': "):
        make_pruner({"type": "percentile", "percentile": 150}, directions=["minimize"])


# --- results, export, plots ----------------------------------------------------------------


def _trial(number: int, state: str, value: float | None = None, **extra: Any) -> dict[str, Any]:
    trial: dict[str, Any] = {
        "number": number,
        "params": {"x": 0.1 * (number + 1), "opt": "adam" if number % 2 else "sgd"},
        "value": value,
        "state": state,
        "duration_s": 1.5,
        "job": 100 + number,
        "intermediate": {},
        "metrics": {},
        "error": None,
    }
    return trial | extra


def _trials() -> list[dict[str, Any]]:
    return [
        _trial(0, "complete", 0.5, intermediate={"0": 0.9, "1": 0.5}, metrics={"acc": 0.8}),
        _trial(1, "complete", 0.2, intermediate={"0": 0.6, "1": 0.2}),
        _trial(2, "pruned", intermediate={"0": 0.95, "1": 0.93}),
        _trial(3, "failed", error="Traceback: boom", duration_s=None),
        _trial(4, "complete", 0.3),
    ]


def _result(**overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "directions": ["minimize"],
        "objectives": ["loss"],
        "space": SPACE,
        "sampler": "tpe",
        "pruner": "median",
        "n_trials": 5,
        "best": {"params": _trials()[1]["params"], "value": 0.2, "trial": 1, "job": 101},
        "trials": _trials(),
    }
    return result | overrides


def _multi_result() -> dict[str, Any]:
    trials = [
        _trial(n, "complete", values=values)
        for n, values in enumerate([[0.5, 4.5], [0.2, 5.0], [0.4, 4.0], [0.6, 1.0], [0.7, 6.0]])
    ]
    for trial in trials:
        del trial["value"]
    trials.append(_trial(5, "failed") | {"values": None})
    pareto = [
        {"params": trials[n]["params"], "values": trials[n]["values"], "trial": n, "job": 100 + n}
        for n in (1, 2, 3)
    ]
    return _result(
        directions=["minimize", "minimize"],
        objectives=["loss", "latency_ms"],
        pruner=None,
        best=None,
        pareto=pareto,
        trials=trials,
    )


def _segmented_result() -> dict[str, Any]:
    result = _result()
    del result["best"], result["trials"]
    only_failed = [_trial(0, "failed", error="no GPU"), _trial(1, "failed", error="no GPU")]
    result["segments"] = {
        "barrel": {
            "best": {"params": {}, "value": 0.2, "trial": 1, "job": 101},
            "trials": _trials(),
        },
        "end cap/A": {"best": None, "trials": only_failed},
    }
    return result


def test_studies_of_an_unsegmented_result_is_the_result_itself() -> None:
    result = _result()

    assert studies(result) == {"": result}
    assert list(studies(_segmented_result())) == ["barrel", "end cap/A"]


def test_rebuild_keeps_states_values_and_attributes() -> None:
    result = _result()

    study = rebuild(result, result)

    assert study.best_value == 0.2
    assert study.best_trial.user_attrs == {"job": 101, "duration_s": 1.5}
    pruned, failed = study.trials[2], study.trials[3]
    assert pruned.state == TrialState.PRUNED
    assert pruned.value == 0.93
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs == {"job": 103, "error": "Traceback: boom"}
    assert study.trials[0].duration is not None
    assert study.trials[0].duration.total_seconds() == 1.5


def test_rebuild_refuses_trials_that_do_not_fit_the_result() -> None:
    result = _result(trials=[_trial(0, "complete", 0.1, params={"y": 1.0})])
    with pytest.raises(ValueError, match="trial 0: parameter\\(s\\) y not in the space"):
        rebuild(result, result)
    result = _result(trials=[_trial(0, "complete", None)])
    with pytest.raises(ValueError, match="trial 0 is complete but has no value"):
        rebuild(result, result)
    result = _result(trials=[_trial(0, "complete", 0.1, params={"x": 7.0, "opt": "adam"})])
    with pytest.raises(ValueError, match=re.escape("trial 0: The value 7.0 of parameter 'x'")):
        rebuild(result, result)


def test_export_round_trip_through_sqlite(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/x.db"

    names = export(_result(), storage, "mnist")

    assert names == ["mnist"]
    study = optuna.load_study(study_name="mnist", storage=storage)
    assert study.best_value == 0.2
    assert study.best_trial.params == {"x": 0.2, "opt": "adam"}
    assert study.metric_names == ["loss"]
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 3
    assert states.count(TrialState.PRUNED) == 1
    assert states.count(TrialState.FAIL) == 1
    assert study.trials[0].intermediate_values == {0: 0.9, 1: 0.5}
    assert study.trials[0].user_attrs["metrics"] == {"acc": 0.8}
    assert study.user_attrs == {"sampler": "tpe", "pruner": "median"}


def test_export_refuses_an_existing_study_unless_overwrite(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/x.db"
    export(_result(), storage, "mnist")

    with pytest.raises(ValueError, match="already has a study named mnist; pass overwrite=True"):
        export(_result(), storage, "mnist")
    export(_result(trials=_trials()[:2]), storage, "mnist", overwrite=True)

    assert len(optuna.load_study(study_name="mnist", storage=storage).trials) == 2


def test_export_writes_one_study_per_segment(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/x.db"

    names = export(_segmented_result(), storage, "calo")

    assert names == ["calo.barrel", "calo.end cap/A"]
    assert sorted(optuna.get_all_study_names(storage)) == names
    barrel = optuna.load_study(study_name="calo.barrel", storage=storage)
    assert barrel.best_value == 0.2
    assert {t.user_attrs["segment"] for t in barrel.trials} == {"barrel"}
    end_cap = optuna.load_study(study_name="calo.end cap/A", storage=storage)
    assert [t.state for t in end_cap.trials] == [TrialState.FAIL, TrialState.FAIL]


def test_export_multi_objective_keeps_the_pareto_front(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/x.db"

    export(_multi_result(), storage, "multi")

    study = optuna.load_study(study_name="multi", storage=storage)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    assert sorted(t.number for t in study.best_trials) == [1, 2, 3]


@pytest.mark.parametrize("storage", ["not a url", "sqlite:////no/such/directory/x.db"])
def test_export_to_a_bad_storage_says_why(storage: str) -> None:
    with pytest.raises(ValueError, match="cannot open the Optuna storage"):
        export(_result(), storage, "mnist")


def _assert_pngs(paths: list[Path], directory: Path, expected: set[str]) -> None:
    assert {p.name for p in paths} == expected
    assert {p.name for p in directory.iterdir()} == expected
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_plots_of_a_single_objective_study(tmp_path: Path) -> None:
    paths = write_plots(_result(), tmp_path / "plots")

    _assert_pngs(paths, tmp_path / "plots", {"history.png", "importance.png"})


def test_plots_of_a_multi_objective_study(tmp_path: Path) -> None:
    paths = write_plots(_multi_result(), tmp_path)

    _assert_pngs(paths, tmp_path, {"history.png", "importance.png"})


def test_plots_of_a_study_maximizing_its_first_objective(tmp_path: Path) -> None:
    result = _multi_result() | {"directions": ["maximize", "minimize"], "pareto": []}

    paths = write_plots(result, tmp_path)

    _assert_pngs(paths, tmp_path, {"history.png", "importance.png"})


def test_plots_of_a_segmented_study_use_safe_file_names(tmp_path: Path) -> None:
    paths = write_plots(_segmented_result(), tmp_path)

    _assert_pngs(
        paths,
        tmp_path,
        {"history-barrel.png", "importance-barrel.png", "history-end_cap_A.png", "segments.png"},
    )


def test_segments_whose_names_clash_after_sanitizing_get_distinct_files(tmp_path: Path) -> None:
    result = _segmented_result()
    result["segments"] = {"a/b": {"trials": []}, "a b": {"trials": []}}

    paths = write_plots(result, tmp_path)

    assert [p.name for p in paths] == ["history-a_b.png", "history-a_b-2.png", "segments.png"]


@pytest.mark.parametrize(
    "trials",
    [[], [_trial(0, "failed"), _trial(1, "failed")], [_trial(0, "pruned"), _trial(1, "pruned")]],
    ids=["no trials", "only failed", "pruned without values"],
)
def test_plots_without_complete_trials_write_only_the_history(
    tmp_path: Path, trials: list[dict[str, Any]]
) -> None:
    paths = write_plots(_result(best=None, trials=trials), tmp_path)

    _assert_pngs(paths, tmp_path, {"history.png"})


def test_importance_is_skipped_when_no_parameter_varies(tmp_path: Path) -> None:
    params = {"x": 0.5, "opt": "adam"}
    trials = [_trial(n, "complete", 0.1 * n, params=params) for n in range(4)]

    paths = write_plots(_result(trials=trials), tmp_path)

    _assert_pngs(paths, tmp_path, {"history.png"})
