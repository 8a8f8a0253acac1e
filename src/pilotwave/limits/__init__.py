"""Toy-based CLs limits on pyhf (HistFactory JSON) models, their toys spread over pilots.

>>> from pilotwave import limits
>>> run = limits.upper_limit.submit(workspace=json.load(open("ws.json")), alpha=0.05)
>>> run.result()["observed"]["limit"]
"""

from pilotwave.limits.scan import upper_limit

__all__ = ["upper_limit"]
