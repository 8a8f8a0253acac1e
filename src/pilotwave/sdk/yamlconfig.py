"""YAML configs of the applications' commands (``pilotwave hpo``, ``limits scan``, ``active``).

Each command reads one file naming a function (``file.py:NAME`` or ``module:NAME``, relative
to the file's directory, which is shipped to the pilots) and its workflow's arguments.  The
pieces they share: reading the file, refusing unknown and missing keys, numbers PyYAML read
as strings, and the common ``name`` and ``output`` settings.  Every error is a
``ConfigError`` whose message starts with the offending key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilotwave.errors import ConfigError


@dataclass(frozen=True)
class RunConfig:
    """A checked config: the function to import and its workflow's other arguments."""

    path: Path
    target: str  # module:name or file.py:name, relative to the config's directory
    kwargs: dict[str, Any]
    name: str
    output: Path | None = None

    @property
    def root(self) -> Path:
        return self.path.parent


def read(path: Path) -> Any:
    """The file's YAML document; ``ConfigError`` when it cannot be read or parsed."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {_first_line(exc)}") from None


def check_keys(
    data: Any,
    keys: tuple[str, ...],
    required: tuple[str, ...] = (),
    prefix: str = "",
    command: str = "",
) -> Mapping[str, Any]:
    """``data`` as a mapping with only ``keys`` and every one of ``required``."""
    if not isinstance(data, Mapping):
        where = f"{prefix.rstrip('.')}: " if prefix else ""
        example = ": ... ".join(required)
        raise ConfigError(f"{where}expected a mapping of settings, e.g. {example}: ...")
    unknown = [k for k in data if k not in keys]
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting (valid: {', '.join(keys)})")
    for key in required:
        if key not in data:
            hint = f" (see `{command} --help` for an example)" if command else ""
            raise ConfigError(f"{prefix}{key}: missing{hint}")
    return data


def target(data: Mapping[str, Any], key: str, what: str) -> str:
    """A ``file.py:NAME`` or ``module:NAME`` setting."""
    value = data[key]
    if not isinstance(value, str) or ":" not in value.strip(":"):
        raise ConfigError(f"{key}: expected file.py:NAME or module:NAME, {what}")
    return value


def number(key: str, value: Any) -> float:
    """A finite number; PyYAML reads ``5e-2`` (no dot) as a string, so strings are parsed."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key}: expected a number, not {value!r}")
    try:
        result = float(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, not {value!r}") from None
    if not math.isfinite(result):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    return result


def name_and_output(data: Mapping[str, Any], path: Path, default: str) -> tuple[str, Path | None]:
    """The workflow's ``name`` and the ``output`` directory (relative to the config's)."""
    name = data.get("name", default)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name: expected a short name for the workflow")
    output = data.get("output")
    if output is not None and (not isinstance(output, str) or not output):
        raise ConfigError("output: expected a directory name")
    return name, path.parent / output if output else None


def _first_line(exc: Exception) -> str:
    """PyYAML's errors run over lines with a snippet of the file: keep what and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem
