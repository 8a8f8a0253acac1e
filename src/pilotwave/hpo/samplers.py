"""Optuna samplers and pruners by name, so a run's settings can be plain JSON or YAML.

A spec is a name (``"tpe"``) or a mapping with ``type`` and constructor options
(``{"type": "tpe", "n_startup_trials": 20}``); options are checked against the Optuna
constructor before it is called.  Given the same ``seed``, a sampler proposes the same points.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from optuna import pruners, samplers
from optuna.exceptions import ExperimentalWarning

from pilotwave.hpo.space import grid

SAMPLERS = ("tpe", "gp", "cmaes", "random", "qmc", "grid", "nsga2")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "threshold", "none")
PRUNER_ALIASES = {"asha": "successive_halving", "sh": "successive_halving"}
DIRECTIONS = ("minimize", "maximize")

_SAMPLER_CLASSES: dict[str, type[samplers.BaseSampler]] = {
    "tpe": samplers.TPESampler,
    "gp": samplers.GPSampler,
    "cmaes": samplers.CmaEsSampler,
    "random": samplers.RandomSampler,
    "qmc": samplers.QMCSampler,
    "grid": samplers.GridSampler,
    "nsga2": samplers.NSGAIISampler,
}
_PRUNER_CLASSES: dict[str, type[pruners.BasePruner]] = {
    "median": pruners.MedianPruner,
    "percentile": pruners.PercentilePruner,
    "successive_halving": pruners.SuccessiveHalvingPruner,
    "hyperband": pruners.HyperbandPruner,
    "threshold": pruners.ThresholdPruner,
}
_PRUNER_DEFAULTS: dict[str, dict[str, Any]] = {
    "median": {"n_startup_trials": 5, "n_warmup_steps": 0},
    "percentile": {"percentile": 25.0, "n_startup_trials": 5, "n_warmup_steps": 0},
}


def check_directions(directions: Sequence[str]) -> list[str]:
    """Return ``directions`` as a list after checking each is "minimize" or "maximize"."""
    if isinstance(directions, str) or not isinstance(directions, Sequence):
        raise ValueError(f"directions: expected a list such as ['minimize'], got {directions!r}")
    if not directions:
        raise ValueError("directions: empty; give one direction per objective")
    for direction in directions:
        if direction not in DIRECTIONS:
            raise ValueError(f"directions: {direction!r} is not one of {', '.join(DIRECTIONS)}")
    return list(directions)


def make_sampler(
    spec: str | Mapping[str, Any] | None,
    *,
    seed: int,
    space: Mapping[str, Any],
    directions: Sequence[str],
    parallel: int = 1,
) -> samplers.BaseSampler:
    """Build the sampler ``spec`` names (``None`` means "tpe") for a canonical ``space``.

    ``parallel`` is how many trials of the study are in flight at once.

    Example: ``make_sampler({"type": "tpe", "n_startup_trials": 20}, seed=1, space=space,
    directions=["minimize"])``.
    """
    n_objectives = len(check_directions(directions))
    name, options = _parse(spec, "sampler", SAMPLERS, {}, default="tpe")
    if name == "cmaes" and n_objectives > 1:
        raise ValueError(
            f"the 'cmaes' sampler optimises one objective, not {n_objectives}; use 'nsga2' or 'tpe'"
        )
    if name == "gp" and importlib.util.find_spec("torch") is None:
        raise ValueError("the 'gp' sampler needs PyTorch: pip install torch")
    if "search_space" in options:
        raise ValueError(f"sampler {name!r}: 'search_space' is set from the run's search space")
    defaults: dict[str, Any] = {"seed": seed}
    if name == "tpe":
        # TPE samples at random until n_startup_trials have *finished*; with ``parallel``
        # trials in flight it would draw parallel - 1 more random points than a sequential
        # study.  Counting those keeps the random start at Optuna's 10 points.
        startup = max(1, 11 - parallel)
        defaults |= {"constant_liar": True, "multivariate": True, "n_startup_trials": startup}
    elif name == "qmc":
        defaults["scramble"] = True
    elif name == "cmaes":  # categoricals are sampled at random, as documented: no warning each time
        defaults["warn_independent_sampling"] = False
    elif name == "grid":
        defaults["search_space"] = grid(space)
    return _build(_SAMPLER_CLASSES[name], "sampler", name, defaults, options)


def make_pruner(
    spec: str | Mapping[str, Any] | None, *, directions: Sequence[str]
) -> pruners.BasePruner | None:
    """Build the pruner ``spec`` names; ``None`` or "none" means no pruning and returns None.

    Example: ``make_pruner({"type": "asha", "reduction_factor": 3}, directions=["minimize"])``.
    """
    n_objectives = len(check_directions(directions))
    name, options = _parse(spec, "pruner", PRUNERS, PRUNER_ALIASES, default="none")
    if name == "none":
        if options:
            raise ValueError(f"pruner 'none' takes no options, got {', '.join(options)}")
        return None
    if n_objectives > 1:
        raise ValueError(
            f"pruner {name!r}: Optuna cannot prune a study with {n_objectives} objectives; "
            "use pruner 'none'"
        )
    if name == "threshold" and "lower" not in options and "upper" not in options:
        raise ValueError("pruner 'threshold' needs 'lower' and/or 'upper', e.g. upper: 1.0")
    return _build(_PRUNER_CLASSES[name], "pruner", name, _PRUNER_DEFAULTS.get(name, {}), options)


def _parse(
    spec: str | Mapping[str, Any] | None,
    what: str,
    names: tuple[str, ...],
    aliases: Mapping[str, str],
    *,
    default: str,
) -> tuple[str, dict[str, Any]]:
    """Split a spec into a known name and its options."""
    if spec is None:
        return default, {}
    if isinstance(spec, str):
        raw: Any = spec
        options: dict[str, Any] = {}
    elif isinstance(spec, Mapping):
        options = dict(spec)
        raw = options.pop("type", None)
        if raw is None:
            raise ValueError(f"{what}: a mapping needs 'type' (one of {', '.join(names)})")
    else:
        raise ValueError(f"{what}: expected a name or a mapping with 'type', got {spec!r}")
    name = aliases.get(raw, raw) if isinstance(raw, str) else raw
    if name not in names:
        valid = ", ".join([*names, *aliases])
        raise ValueError(f"unknown {what} {raw!r} (valid: {valid})")
    return name, options


def _build(
    cls: type, what: str, name: str, defaults: dict[str, Any], options: dict[str, Any]
) -> Any:
    """Check ``options`` against ``cls``'s constructor, then call it with defaults overridden."""
    valid = [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "search_space"
    ]
    for option in options:
        if option not in valid:
            raise ValueError(
                f"{what} {name!r}: unknown option {option!r} (valid: {', '.join(valid)})"
            )
    try:
        with warnings.catch_warnings():
            # Several samplers are still marked experimental; a driver would warn on every run.
            warnings.simplefilter("ignore", ExperimentalWarning)
            return cls(**(defaults | options))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} {name!r}: {exc}") from exc
