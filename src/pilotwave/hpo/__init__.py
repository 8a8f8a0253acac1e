"""Asynchronous, distributed hyperparameter optimization: an Optuna study in a workflow driver.

>>> import pilotwave as pw
>>> from pilotwave import hpo
>>> @pw.job
... def train(lr: float, layers: int) -> float: ...
>>> run = hpo.optimize.submit(objective=train, space={"lr": {"low": 1e-4, "high": 0.1, "log": True},
...                           "layers": {"type": "int", "low": 1, "high": 4}}, n_trials=50, parallel=8)
>>> result = run.result()
>>> hpo.write_plots(result, Path("plots"))                      # history and importance PNGs
>>> hpo.export_trials(result, "sqlite:///study.db", "my-study")  # for optuna-dashboard
"""

from pilotwave.hpo.export import export as export_trials
from pilotwave.hpo.plots import write_plots
from pilotwave.hpo.space import SpaceError
from pilotwave.hpo.study import optimize

__all__ = ["SpaceError", "export_trials", "optimize", "write_plots"]
