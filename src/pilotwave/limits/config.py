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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilotwave.limits.exclusion import axes_of

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


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key."""


@dataclass(frozen=True)
class ScanConfig:
    """A checked config: the factory to import and ``scan``'s other arguments."""

    path: Path
    factory: str  # module:name or file.py:name, relative to the config's directory
    kwargs: dict[str, Any]  # scan's arguments, all but the factory
    name: str = DEFAULT_NAME
    output: Path | None = None

    @property
    def root(self) -> Path:
        return self.path.parent


def load(path: Path) -> ScanConfig:
    """Read and check a config file; ``ConfigError`` says what is wrong and where."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {_first_line(exc)}") from None
    return parse(data, path.resolve())


def parse(data: Any, path: Path) -> ScanConfig:
    """Check the settings' names and shapes; the values' ranges are ``exclusion.check``'s."""
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping of settings at the top, e.g. factory: ... grid: ...")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown setting (valid: {', '.join(TOP_KEYS)})")
    for key in ("factory", "grid"):
        if key not in data:
            raise ConfigError(f"{key}: missing (see `pilotwave limits --help` for an example)")
    factory = data["factory"]
    if not isinstance(factory, str) or ":" not in factory.strip(":"):
        raise ConfigError("factory: expected file.py:NAME or module:NAME, a @pw.job")
    _grid(data["grid"])
    kwargs = {k: data[k] for k in SCAN_KEYS if k in data}
    for key in ("alpha", "poi"):
        if key in kwargs:
            kwargs[key] = _number(key, kwargs[key])
    seed = kwargs.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed: {seed!r} is not an integer")
    name = data.get("name", DEFAULT_NAME)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name: expected a short name for the workflow")
    output = data.get("output")
    if output is not None and (not isinstance(output, str) or not output):
        raise ConfigError("output: expected a directory name")
    return ScanConfig(
        path=path,
        factory=factory,
        kwargs=kwargs,
        name=name,
        output=path.parent / output if output else None,
    )


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


def _number(key: str, value: Any) -> float:
    # PyYAML reads 5e-2 (no dot) as a string: accept what float() accepts.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key}: expected a number, not {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, not {value!r}") from None


def _first_line(exc: Exception) -> str:
    """PyYAML's errors run over lines with a snippet of the file: keep what and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem
