"""``pilotwave hpo CONFIG.yaml``: a study described in YAML, like ATLAS's ``phpo`` configurations.

```yaml
objective:
  command: python train.py --lr {lr} --layers {layers}   # or  function: train.py:objective
  loss_file: loss.json        # JSON the command writes; default: its last printed line
space:
  lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  layers: {type: int, low: 1, high: 4}
n_trials: 40
parallel: 8
sampler: tpe                  # gp, cmaes, random, qmc, grid, nsga2, or {type: tpe, ...}
pruner: median                # percentile, asha, hyperband, threshold, none
segments: [barrel, endcap]    # one study per segment
trial: {cores: 1, gpus: 0, walltime_s: 3600, max_attempts: 2}
output: results               # plots, best models and result.json (default hpo-<id>)
export: sqlite:///study.db    # also write the trials to this Optuna storage
```

Paths (the command's files, ``function``'s file, ``output``) are relative to the config
file's directory, which is shipped to the pilots as the trials' sandbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STUDY_KEYS = (
    "space",
    "n_trials",
    "parallel",
    "sampler",
    "pruner",
    "directions",
    "segments",
    "seed",
    "timeout_s",
    "patience",
)
TOP_KEYS = ("name", "objective", "trial", "output", "export", *STUDY_KEYS)
OBJECTIVE_KEYS = ("function", "command", "loss_file", "objectives")


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key."""


@dataclass
class HpoConfig:
    path: Path
    name: str
    function: str | None  # module:name or file.py:name, relative to the config's directory
    kwargs: dict[str, Any] = field(default_factory=dict)  # for optimize (without objective)
    output: Path | None = None
    export: str | None = None

    @property
    def root(self) -> Path:
        return self.path.parent


def load(path: Path) -> HpoConfig:
    """Read and check a config file; ``ConfigError`` says what is wrong and where."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    return parse(data, path.resolve())


def parse(data: Any, path: Path) -> HpoConfig:
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping of settings at the top")
    _known(data, TOP_KEYS, "")
    for key in ("objective", "space"):
        if key not in data:
            raise ConfigError(f"{key}: missing (see `pilotwave hpo --help` for an example)")
    obj = data["objective"]
    if isinstance(obj, str):  # a bare command
        obj = {"command": obj}
    if not isinstance(obj, Mapping):
        raise ConfigError("objective: expected {command: ...} or {function: module:name}")
    _known(obj, OBJECTIVE_KEYS, "objective.")
    if ("command" in obj) == ("function" in obj):
        raise ConfigError("objective: give exactly one of 'command' or 'function'")
    kwargs: dict[str, Any] = {k: data[k] for k in STUDY_KEYS if k in data}
    if "command" in obj:
        if not isinstance(obj["command"], str) or not obj["command"].strip():
            raise ConfigError("objective.command: expected a command line")
        kwargs["objective"] = obj["command"]
        if "loss_file" in obj:
            if not isinstance(obj["loss_file"], str) or not obj["loss_file"]:
                raise ConfigError("objective.loss_file: expected a file name")
            kwargs["loss_file"] = obj["loss_file"]
    elif "loss_file" in obj:
        raise ConfigError("objective.loss_file: only a command objective writes a loss file")
    if "objectives" in obj:
        names = obj["objectives"]
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError("objective.objectives: expected a list of names")
        kwargs["objectives"] = names
    if "directions" in kwargs and isinstance(kwargs["directions"], str):
        kwargs["directions"] = [kwargs["directions"]]
    if "trial" in data:
        if not isinstance(data["trial"], Mapping):
            raise ConfigError("trial: expected a mapping such as {cores: 2, walltime_s: 600}")
        kwargs["trial_options"] = dict(data["trial"])
    output = data.get("output")
    if output is not None and not isinstance(output, str):
        raise ConfigError("output: expected a directory name")
    export = data.get("export")
    if export is not None and (not isinstance(export, str) or "://" not in export):
        raise ConfigError("export: expected an Optuna storage URL such as sqlite:///study.db")
    name = data.get("name", "hpo")
    if not isinstance(name, str) or not name:
        raise ConfigError("name: expected a short name for the workflow")
    return HpoConfig(
        path=path,
        name=name,
        function=obj.get("function"),
        kwargs=kwargs,
        output=path.parent / output if output else None,
        export=export,
    )


def _known(data: Mapping[str, Any], keys: tuple[str, ...], prefix: str) -> None:
    unknown = [k for k in data if k not in keys]
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting (valid: {', '.join(keys)})")
