"""``pilotwave limits scan CONFIG.yaml``: a 2-D exclusion described in YAML.

```yaml
factory: family.py:make_workspace   # a @pw.job building the workspace of one point
grid:                               # exactly two dimensions: the factory's arguments
  mass: {low: 100, high: 500, points: 5}        # add log: true for geometric spacing
  coupling: [0.1, 0.3, 1.0]
alpha: 0.05           # excluded where CLs < alpha
poi: 1.0              # the signal strength tested at each point
toys: 300             # toys per point in the first step (more where undecided)
toys_per_job: 300
max_steps: 3          # the coarse grid, then refinements where the boundary runs
max_toys: 200000      # no new step starts once this many were thrown
test_stat: qtilde
seed: 1               # same seed, same toys (default: random)
name: exclusion       # the workflow's name
output: results       # result.json and exclusion.png (default exclusion-<id>)
```

Paths (the factory's file, ``output``) are relative to the config file's directory, which
is shipped to the pilots as the toy jobs' sandbox.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pilotwave.errors import ConfigError
from pilotwave.limits.exclusion import axes_of
from pilotwave.sdk import yamlconfig
from pilotwave.sdk.yamlconfig import RunConfig

SCAN_KEYS = (
    "grid",
    "alpha",
    "poi",
    "toys",
    "toys_per_job",
    "max_steps",
    "max_toys",
    "test_stat",
    "seed",
)
TOP_KEYS = ("factory", *SCAN_KEYS, "name", "output")
DEFAULT_NAME = "exclusion"


__all__ = ["ConfigError", "RunConfig", "check_factory", "load", "parse"]


def load(path: Path) -> RunConfig:
    """Read and check a config file; ``ConfigError`` says what is wrong and where."""
    return parse(yamlconfig.read(path), path.resolve())


def parse(data: Any, path: Path) -> RunConfig:
    """Check the settings' names and shapes; the values' ranges are ``exclusion.check``'s."""
    data = yamlconfig.check_keys(data, TOP_KEYS, ("factory", "grid"), command="pilotwave limits")
    factory = yamlconfig.target(data, "factory", "a @pw.job")
    _grid(data["grid"])
    kwargs = {k: data[k] for k in SCAN_KEYS if k in data}
    for key in ("alpha", "poi"):
        if key in kwargs:
            kwargs[key] = yamlconfig.number(key, kwargs[key])
    seed = kwargs.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed: {seed!r} is not an integer")
    name, output = yamlconfig.name_and_output(data, path, DEFAULT_NAME)
    return RunConfig(path=path, target=factory, kwargs=kwargs, name=name, output=output)


def check_factory(factory: Any, grid: Mapping[str, Any]) -> None:
    """The factory must take the grid's two dimensions (and need nothing else) as arguments."""
    names = list(grid)
    fn = getattr(factory, "fn", factory)
    try:
        inspect.signature(fn).bind(**dict.fromkeys(names, 1.0))
    except TypeError as exc:
        raise ConfigError(
            f"factory: {getattr(fn, '__name__', fn)} cannot be called with the grid's "
            f"{' and '.join(names)}: {exc}"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): the workflow will tell
        return


def _grid(grid: Any) -> None:
    if isinstance(grid, Mapping):
        for name in grid:
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(
                    f"grid: {name!r} is not a name; a dimension is the factory's argument"
                )
    try:
        axes_of(grid)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
