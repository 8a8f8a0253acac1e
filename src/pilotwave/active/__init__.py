"""Active learning: a Gaussian-process surrogate chooses which parameter points to evaluate.

``search`` finds a contour (where a value crosses a level: an exclusion contour) or an
extremum of values that each evaluation (a job or a nested workflow) returns; see
``pilotwave.active.search`` and ``Learner`` for the method, ``write_plots`` for pictures
of a result.
"""

from pilotwave.active.learner import Learner
from pilotwave.active.plots import write_plots
from pilotwave.active.search import search

__all__ = ["Learner", "search", "write_plots"]
