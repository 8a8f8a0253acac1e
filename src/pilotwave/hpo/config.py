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

from pilotwave.errors import ConfigError
from pilotwave.sdk import yamlconfig

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
    return parse(yamlconfig.read(path), path.resolve())


def parse(data: Any, path: Path) -> HpoConfig:
    data = yamlconfig.check_keys(data, TOP_KEYS, ("objective", "space"), command="pilotwave hpo")
    obj = data["objective"]
    if isinstance(obj, str):  # a bare command
        obj = {"command": obj}
    if not isinstance(obj, Mapping):
        raise ConfigError("objective: expected {command: ...} or {function: module:name}")
    yamlconfig.check_keys(obj, OBJECTIVE_KEYS, prefix="objective.")
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
    name, output = yamlconfig.name_and_output(data, path, "hpo")
    export = data.get("export")
    if export is not None and (not isinstance(export, str) or "://" not in export):
        raise ConfigError("export: expected an Optuna storage URL such as sqlite:///study.db")
    return HpoConfig(
        path=path,
        name=name,
        function=obj.get("function"),
        kwargs=kwargs,
        output=output,
        export=export,
    )
