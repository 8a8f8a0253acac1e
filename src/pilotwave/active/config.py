"""``pilotwave active CONFIG.yaml``: an active-learning search described in YAML.

```yaml
name: darksector-contour
evaluate: darksector.py:point     # a @pw.job or @pw.workflow returning a dict of values
space:
  mass: {low: 15, high: 60}
  coupling: {low: 1.0e-3, high: 1.0e-1, log: true}
goal: contour                     # or maximize, minimize
value: [cls_obs, cls_exp]         # returned names or expressions of them
level: 0.05                       # a contour's level
transform: log                    # learn the logarithm (values spanning decades)
budget: 40                        # evaluations at most
batch: 2                          # evaluations in flight
init: 8                           # the initial Latin hypercube
seed: 1                           # same seed, same choices (default: random)
acquisition: straddle             # entropy; ei or ucb for extrema
grid: 41                          # estimate points per dimension
tol: 0.002                        # converged when the estimate changed by at most tol ...
patience: 5                       # ... this many rounds in a row
args: {n_events: 2000}            # fixed keyword arguments of every evaluation
output: results                   # result.json and plots (default active-<id>)
```

Paths (``evaluate``'s file, ``output``) are relative to the config file's directory, which
is shipped to the pilots as the evaluations' sandbox.  This module checks the settings'
names and shapes; their values are checked by ``pilotwave.active.search.check``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pilotwave.errors import ConfigError
from pilotwave.sdk import yamlconfig
from pilotwave.sdk.yamlconfig import RunConfig

SEARCH_KEYS = (
    "space",
    "goal",
    "value",
    "level",
    "transform",
    "budget",
    "batch",
    "init",
    "seed",
    "acquisition",
    "grid",
    "tol",
    "patience",
    "args",
)
TOP_KEYS = ("name", "evaluate", *SEARCH_KEYS, "output")
INTEGER_KEYS = ("budget", "batch", "init", "seed", "grid", "patience")
NUMBER_KEYS = ("level", "tol")
STRING_KEYS = ("goal", "acquisition")
DEFAULT_NAME = "active"


__all__ = ["ConfigError", "RunConfig", "load", "parse"]


def load(path: Path) -> RunConfig:
    """Read and check a config file; ``ConfigError`` says what is wrong and where."""
    return parse(yamlconfig.read(path), path.resolve())


def parse(data: Any, path: Path) -> RunConfig:
    """Check the settings' names and types; the values' ranges are ``search.check``'s."""
    data = yamlconfig.check_keys(data, TOP_KEYS, ("evaluate", "space"), command="pilotwave active")
    evaluate = yamlconfig.target(data, "evaluate", "a @pw.job or @pw.workflow")
    kwargs = {k: data[k] for k in SEARCH_KEYS if k in data and data[k] is not None}
    kwargs["space"] = _space(data["space"])
    for key in INTEGER_KEYS:
        if key in kwargs and (isinstance(kwargs[key], bool) or not isinstance(kwargs[key], int)):
            raise ConfigError(f"{key}: expected an integer, not {kwargs[key]!r}")
    for key in NUMBER_KEYS:
        if key in kwargs:
            kwargs[key] = yamlconfig.number(key, kwargs[key])
    for key in STRING_KEYS:
        if key in kwargs and not isinstance(kwargs[key], str):
            raise ConfigError(f"{key}: expected a name, not {kwargs[key]!r}")
    if "value" in kwargs:
        kwargs["value"] = _values(kwargs["value"])
    if "transform" in kwargs:
        kwargs["transform"] = _transform(kwargs["transform"])
    if "args" in kwargs and not isinstance(kwargs["args"], Mapping):
        raise ConfigError(f"args: expected a mapping of fixed arguments, not {kwargs['args']!r}")
    name, output = yamlconfig.name_and_output(data, path, DEFAULT_NAME)
    return RunConfig(path=path, target=evaluate, kwargs=kwargs, name=name, output=output)


def _space(space: Any) -> dict[str, Any]:
    """The space as written, with numbers PyYAML read as strings (``1e-3``) made numbers."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError("space: expected a mapping such as {mass: {low: 15, high: 60}}")
    out: dict[str, Any] = {}
    for name, entry in space.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"space: {name!r} is not a name; a dimension is evaluate's argument")
        if not isinstance(entry, Mapping):
            raise ConfigError(f"space.{name}: expected a mapping such as {{low: 0, high: 1}}")
        out[name] = {k: _bound(f"space.{name}.{k}", k, v) for k, v in entry.items()}
    return out


def _bound(key: str, field: str, value: Any) -> Any:
    numeric = field in ("low", "high", "step") and isinstance(value, str)
    return yamlconfig.number(key, value) if numeric else value


def _values(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"value: expected a value name or a list of them, not {value!r}")


def _transform(transform: Any) -> str | None:
    if isinstance(transform, str) and transform.lower() in ("none", "linear"):
        return None
    if not isinstance(transform, str):
        raise ConfigError(f"transform: expected log or none, not {transform!r}")
    return transform
