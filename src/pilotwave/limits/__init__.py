"""Toy-based CLs limits on pyhf (HistFactory JSON) models, their toys spread over pilots.

>>> from pilotwave import limits
>>> run = limits.upper_limit.submit(workspace=json.load(open("ws.json")), alpha=0.05)
>>> run.result()["observed"]["limit"]
>>> limits.scan.submit(factory=make_workspace, grid={"mass": {"low": 100, "high": 800,
...                    "points": 5}, "coupling": [0.1, 0.3, 1.0]}).result()["boundary"]
"""

from pilotwave.limits.exclusion import scan
from pilotwave.limits.upper import upper_limit

__all__ = ["scan", "upper_limit"]
