"""Search spaces: validate a user's space and turn it into Optuna distributions or a grid.

Two input formats are accepted, per parameter:

* Optuna-like: ``{"type": "float", "low": 1e-4, "high": 1e-1, "log": true}``,
  ``{"type": "int", "low": 1, "high": 8, "step": 1}``,
  ``{"type": "categorical", "choices": ["adam", "sgd"]}``.  ``type`` may be left out:
  it is ``categorical`` when ``choices`` is given and ``float`` otherwise.
* hpogrid/phpo (ATLAS): ``{"method": "loguniform", "dimension": {"low": 1e-4, "high": 1e-1}}``
  with the methods in ``PHPO_METHODS``.  ``q`` becomes the step (values ``low + k * q``);
  ``base`` is checked and dropped, as it does not change a log-uniform distribution;
  ``fixed`` becomes a single choice; a categorical ``grid_search`` flag is accepted and
  ignored (the ``grid`` sampler always enumerates every choice).  The unbounded ``normal``
  family and ``qloguniform`` have no Optuna distribution and are refused.

``normalize`` returns the canonical form, which is itself valid input::

    {"lr": {"type": "float", "low": 0.0001, "high": 0.1, "log": True, "step": None}}

``low == high`` is allowed for numbers: it pins a parameter without editing the objective.
A stepped range must end on a step (``high - low`` a multiple of ``step``), because Optuna
would otherwise move ``high`` quietly.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

TYPES = ("float", "int", "categorical")
MAX_GRID_VALUES = 10_000

_NUMERIC_FIELDS = ("type", "low", "high", "log", "step")
_FIELDS = {"float": _NUMERIC_FIELDS, "int": _NUMERIC_FIELDS, "categorical": ("type", "choices")}

# method -> (type, log, dimension fields, of which required)
PHPO_METHODS: dict[str, tuple[str, bool, tuple[str, ...], tuple[str, ...]]] = {
    "categorical": ("categorical", False, ("categories", "grid_search"), ("categories",)),
    "fixed": ("categorical", False, ("value",), ("value",)),
    "uniform": ("float", False, ("low", "high"), ("low", "high")),
    "quniform": ("float", False, ("low", "high", "q"), ("low", "high", "q")),
    "loguniform": ("float", True, ("low", "high", "base"), ("low", "high")),
    "uniformint": ("int", False, ("low", "high"), ("low", "high")),
    "quniformint": ("int", False, ("low", "high", "q"), ("low", "high", "q")),
    "loguniformint": ("int", True, ("low", "high", "base"), ("low", "high")),
}
_PHPO_UNSUPPORTED = {
    "qloguniform": "Optuna cannot combine a log scale with a step; use loguniform or quniform",
    "normal": "Optuna samples bounded ranges only; use uniform with low and high",
    "qnormal": "Optuna samples bounded ranges only; use quniform with low, high and q",
    "lognormal": "Optuna samples bounded ranges only; use loguniform with low and high",
    "qlognormal": "Optuna samples bounded ranges only; use loguniform with low and high",
}


class SpaceError(ValueError):
    """A search space that cannot be used; the message names the parameter and field."""


def normalize(space: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate ``space`` and return its canonical form (see the module docstring)."""
    if not isinstance(space, Mapping):
        raise SpaceError(
            f"space: expected a mapping of parameter name to definition, got {type(space).__name__}"
        )
    if not space:
        raise SpaceError("space: no parameters; give at least one")
    canonical: dict[str, dict[str, Any]] = {}
    for name, entry in space.items():
        if not isinstance(name, str) or not name.strip():
            raise SpaceError(f"space[{name!r}]: parameter names must be non-empty strings")
        if not isinstance(entry, Mapping):
            raise SpaceError(
                f"space.{name}: expected a mapping such as "
                f'{{"type": "float", "low": 0, "high": 1}}, got {type(entry).__name__}'
            )
        canonical[name] = _phpo(name, entry) if "method" in entry else _optuna_like(name, entry)
    return canonical


def distributions(space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """Optuna distributions for ``space`` (canonical, or any form ``normalize`` accepts)."""
    result: dict[str, BaseDistribution] = {}
    for name, p in normalize(space).items():
        if p["type"] == "float":
            result[name] = FloatDistribution(p["low"], p["high"], log=p["log"], step=p["step"])
        elif p["type"] == "int":
            result[name] = IntDistribution(p["low"], p["high"], log=p["log"], step=p["step"])
        else:
            result[name] = CategoricalDistribution(p["choices"])
    return result


def grid(space: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The values of every parameter, for Optuna's ``GridSampler``.

    Categorical parameters give their choices, int parameters every value from low to high
    by step; float parameters need a step.  More than ``MAX_GRID_VALUES`` values for one
    parameter is refused.
    """
    values: dict[str, list[Any]] = {}
    for name, p in normalize(space).items():
        if p["type"] == "categorical":
            values[name] = list(p["choices"])
            continue
        if p["step"] is None:
            raise SpaceError(f"space.{name}.step: grid sampling needs a step for float parameters")
        low, step = Decimal(str(p["low"])), Decimal(str(p["step"]))
        count = int((Decimal(str(p["high"])) - low) / step) + 1
        if count > MAX_GRID_VALUES:
            raise SpaceError(
                f"space.{name}.step: the grid would have {count} values "
                f"(at most {MAX_GRID_VALUES}); give a larger step"
            )
        number = int if p["type"] == "int" else float
        values[name] = [number(low + k * step) for k in range(count)]
    return values


def grid_size(space: Mapping[str, Any]) -> int:
    """How many points the grid of ``space`` has (the product of the value counts)."""
    return math.prod(len(v) for v in grid(space).values())


def _optuna_like(name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    kind = entry.get("type", "categorical" if "choices" in entry else "float")
    if kind not in TYPES:
        raise SpaceError(f"space.{name}.type: unknown type {kind!r} (valid: {', '.join(TYPES)})")
    _check_fields(name, entry, _FIELDS[kind], prefix="")
    if kind == "categorical":
        if "choices" not in entry:
            raise SpaceError(f"space.{name}.choices: missing (a categorical parameter needs it)")
        return {"type": kind, "choices": _choices(name, "choices", entry["choices"])}
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"space.{name}.log: expected true or false, got {log!r}")
    return _numeric(name, kind, entry, log=log, step_field="step", prefix="")


def _phpo(name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    _check_fields(name, entry, ("method", "dimension"), prefix="")
    method = entry["method"]
    if not isinstance(method, str):
        raise SpaceError(f"space.{name}.method: expected a method name, got {method!r}")
    if method in _PHPO_UNSUPPORTED:
        raise SpaceError(
            f"space.{name}.method: {method!r} is not supported: {_PHPO_UNSUPPORTED[method]}"
        )
    if method not in PHPO_METHODS:
        raise SpaceError(
            f"space.{name}.method: unknown method {method!r} (valid: {', '.join(PHPO_METHODS)})"
        )
    dimension = entry.get("dimension")
    if not isinstance(dimension, Mapping):
        raise SpaceError(
            f"space.{name}.dimension: expected a mapping such as "
            f'{{"low": 0, "high": 1}}, got {type(dimension).__name__}'
        )
    kind, log, fields, required = PHPO_METHODS[method]
    _check_fields(name, dimension, fields, prefix="dimension.")
    for field in required:
        if field not in dimension:
            raise SpaceError(
                f"space.{name}.dimension.{field}: missing (method {method!r} needs it)"
            )
    if method == "fixed":
        return {"type": kind, "choices": _choices(name, "dimension.value", [dimension["value"]])}
    if kind == "categorical":
        return {
            "type": kind,
            "choices": _choices(name, "dimension.categories", dimension["categories"]),
        }
    if "base" in dimension:
        base = _finite(name, "dimension.base", dimension["base"])
        if base <= 0 or base == 1:
            raise SpaceError(f"space.{name}.dimension.base: {base} must be positive and not 1")
    return _numeric(name, kind, dimension, log=log, step_field="q", prefix="dimension.")


def _numeric(
    name: str, kind: str, fields: Mapping[str, Any], *, log: bool, step_field: str, prefix: str
) -> dict[str, Any]:
    """Check and build a float or int parameter; ``prefix`` and ``step_field`` name fields in errors."""
    where = f"space.{name}.{prefix}"
    for field in ("low", "high"):
        if field not in fields:
            raise SpaceError(f"{where}{field}: missing (a {kind} parameter needs low and high)")
    parse = _integer if kind == "int" else _finite
    low = parse(name, f"{prefix}low", fields["low"])
    high = parse(name, f"{prefix}high", fields["high"])
    if low > high:
        raise SpaceError(f"{where}low: {low} is above high {high}")
    if log and low <= 0:
        raise SpaceError(f"{where}low: {low} must be positive on a log scale")
    step = fields.get(step_field)
    if kind == "int" and log and step == 1:
        step = None  # an int on a log scale has the implied step 1 (the canonical form says so)
    if step is not None:
        if log:
            raise SpaceError(f"{where}{step_field}: Optuna cannot combine a step with a log scale")
        step = parse(name, f"{prefix}{step_field}", step)
        if step <= 0:
            raise SpaceError(f"{where}{step_field}: {step} must be positive")
        _check_ends_on_step(f"{where}high", low, high, step)
    elif kind == "int":
        step = 1
    return {"type": kind, "low": low, "high": high, "log": log, "step": step}


def _check_ends_on_step(where: str, low: float, high: float, step: float) -> None:
    # Decimal on the shortest repr, so 0.1 + 3 * 0.3 ends on the step as a user means it.
    span, size = Decimal(str(high)) - Decimal(str(low)), Decimal(str(step))
    if span % size:
        fitting = Decimal(str(low)) + (span // size) * size
        raise SpaceError(
            f"{where}: {high} is not low {low} plus a multiple of step {step} (use {fitting})"
        )


def _finite(name: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpaceError(f"space.{name}.{field}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise SpaceError(f"space.{name}.{field}: {value} is not a finite number")
    return float(value)


def _integer(name: str, field: str, value: Any) -> int:
    number = _finite(name, field, value)
    if not number.is_integer():
        raise SpaceError(f"space.{name}.{field}: expected an integer, got {value!r}")
    return int(number)


def _choices(name: str, field: str, choices: Any) -> list[Any]:
    if not isinstance(choices, list | tuple):
        raise SpaceError(f"space.{name}.{field}: expected a list, got {type(choices).__name__}")
    if not choices:
        raise SpaceError(f"space.{name}.{field}: empty; give at least one choice")
    seen: list[Any] = []
    for choice in choices:
        if choice is not None and not isinstance(choice, str | int | float | bool):
            raise SpaceError(
                f"space.{name}.{field}: {choice!r} is not a string, number, boolean or null"
            )
        if isinstance(choice, float) and not math.isfinite(choice):
            raise SpaceError(f"space.{name}.{field}: {choice} is not a finite number")
        # Optuna finds a choice by ==, so 1, 1.0 and True are one choice to it.
        if any(choice == other for other in seen):
            raise SpaceError(f"space.{name}.{field}: duplicate choice {choice!r}")
        seen.append(choice)
    return seen


def _check_fields(name: str, entry: Mapping[str, Any], valid: tuple[str, ...], prefix: str) -> None:
    for field in entry:
        if field not in valid:
            close = difflib.get_close_matches(str(field), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpaceError(
                f"space.{name}.{prefix}{field}: unknown field ({hint}valid: {', '.join(valid)})"
            )
