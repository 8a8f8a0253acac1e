"""Asynchronous, distributed hyperparameter optimization: an Optuna study in a workflow driver.

>>> import pilotwave as pw
>>> from pilotwave import hpo
>>> @pw.job
... def train(lr: float, layers: int) -> float: ...
>>> run = hpo.optimize.submit(objective=train, space={"lr": {"low": 1e-4, "high": 0.1, "log": True},
...                           "layers": {"type": "int", "low": 1, "high": 4}}, n_trials=50, parallel=8)
>>> run.result()["best"]
"""

from pilotwave.hpo.space import SpaceError
from pilotwave.hpo.study import optimize

__all__ = ["SpaceError", "optimize"]
