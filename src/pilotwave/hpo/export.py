"""Turn an HPO result back into Optuna studies, in memory or in an Optuna storage.

``export(result, "sqlite:///hpo.db", "mnist")`` writes one Optuna study per study of the
result (``mnist``, or ``mnist.<segment>`` for a segmented run) with every trial, so that
optuna-dashboard and ``optuna.visualization`` can be pointed at it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState, create_trial
from sqlalchemy.exc import SQLAlchemyError

from pilotwave.hpo.space import distributions

TRIAL_STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}


def studies(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The studies of a result by segment name: ``{"": result}`` when it is not segmented."""
    segments = result.get("segments")
    return {"": dict(result)} if segments is None else dict(segments)


@contextmanager
def quiet() -> Iterator[None]:
    """Optuna without its INFO lines ("A new study created ..."), restored afterwards."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def rebuild(study: Mapping[str, Any], result: Mapping[str, Any]) -> optuna.Study:
    """An in-memory Optuna study holding every trial of ``study`` (one of ``studies(result)``)."""
    with quiet():
        rebuilt = optuna.create_study(directions=list(result["directions"]))
    rebuilt.add_trials(_frozen_trials(study, result))
    return rebuilt


def export(
    result: Mapping[str, Any], storage: str, study_name: str, *, overwrite: bool = False
) -> list[str]:
    """Write the studies of ``result`` to the Optuna storage URL ``storage``; return their names.

    An existing study of the same name is an error unless ``overwrite`` is true, in which
    case it is deleted first.
    """
    names = {seg: f"{study_name}.{seg}" if seg else study_name for seg in studies(result)}
    # Build every trial first, so that a bad result fails before the storage is touched.
    trials = {
        seg: _frozen_trials(study, result, {"segment": seg} if seg else {})
        for seg, study in studies(result).items()
    }
    try:
        rdb = optuna.storages.RDBStorage(storage)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ValueError(f"cannot open the Optuna storage {storage!r}: {exc}") from exc
    try:
        clashes = sorted(set(names.values()) & set(optuna.get_all_study_names(rdb)))
        if clashes and not overwrite:
            raise ValueError(
                f"{storage} already has a study named {', '.join(clashes)}; "
                "pass overwrite=True to replace it"
            )
        for name in clashes:
            optuna.delete_study(study_name=name, storage=rdb)
        for seg, name in names.items():
            with quiet():
                created = optuna.create_study(
                    storage=rdb, study_name=name, directions=list(result["directions"])
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                created.set_metric_names(list(result["objectives"]))
            created.set_user_attr("sampler", result.get("sampler"))
            created.set_user_attr("pruner", result.get("pruner"))
            if seg:
                created.set_user_attr("segment", seg)
            created.add_trials(trials[seg])
    finally:
        rdb.engine.dispose()
    return list(names.values())


def _frozen_trials(
    study: Mapping[str, Any], result: Mapping[str, Any], user_attrs: Mapping[str, Any] | None = None
) -> list[FrozenTrial]:
    """Optuna trials for the trials of ``study``, in trial-number order.

    Complete trials carry their value(s), pruned ones their last intermediate value, failed
    ones none; ``job``, ``duration_s``, ``metrics`` and ``error`` become user attributes.
    """
    dists = distributions(result["space"])
    multi = len(result["directions"]) > 1
    return [
        _frozen(trial, dists, multi, user_attrs or {})
        for trial in sorted(study["trials"], key=lambda t: t["number"])
    ]


def _frozen(
    trial: Mapping[str, Any],
    dists: Mapping[str, BaseDistribution],
    multi: bool,
    extra_attrs: Mapping[str, Any],
) -> FrozenTrial:
    number = trial["number"]
    state = TRIAL_STATES.get(trial["state"])
    if state is None:
        raise ValueError(
            f"trial {number}: unknown state {trial['state']!r} (valid: {', '.join(TRIAL_STATES)})"
        )
    unknown = sorted(set(trial["params"]) - set(dists))
    if unknown:
        raise ValueError(f"trial {number}: parameter(s) {', '.join(unknown)} not in the space")
    intermediate = {
        int(step): float(value)
        for step, value in (trial.get("intermediate") or {}).items()
        if value is not None
    }
    values: list[float] | None = None
    if state == TrialState.COMPLETE:
        values = trial.get("values") if multi else _single(trial.get("value"))
        if values is None:
            raise ValueError(f"trial {number} is complete but has no value")
    elif state == TrialState.PRUNED and intermediate and not multi:
        values = [intermediate[max(intermediate)]]
    attrs = {
        key: trial[key] for key in ("job", "duration_s", "error") if trial.get(key) is not None
    }
    if trial.get("metrics"):
        attrs["metrics"] = trial["metrics"]
    try:
        frozen = create_trial(
            state=state,
            values=values,
            params=dict(trial["params"]),
            distributions={name: dists[name] for name in trial["params"]},
            user_attrs=attrs | dict(extra_attrs),
            intermediate_values=intermediate,
        )
    except ValueError as exc:
        raise ValueError(f"trial {number}: {exc}") from exc
    # So that the dashboard shows how long the job ran, not a zero duration.
    if trial.get("duration_s") is not None and frozen.datetime_complete is not None:
        frozen.datetime_start = frozen.datetime_complete - timedelta(seconds=trial["duration_s"])
    return frozen


def _single(value: float | None) -> list[float] | None:
    return None if value is None else [value]
