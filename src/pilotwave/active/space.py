"""The search box: bounded numeric dimensions, mapped to and from the unit cube the GP works in.

The space is written as for ``pilotwave.hpo`` (``{"mass": {"low": 15, "high": 60}}``, ``type``
defaulting to float; ``log``, ``step`` and ``int`` allowed).  Active learning interpolates, so
categorical dimensions and empty ranges (``low == high``) are refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from pilotwave.hpo.space import SpaceError, normalize

MAX_GRID_POINTS = 250_000


class Box:
    """A canonical space and the maps between its parameters and the unit cube."""

    def __init__(self, space: Mapping[str, Any]) -> None:
        canonical = normalize(space)
        for name, d in canonical.items():
            if d["type"] == "categorical":
                raise SpaceError(
                    f"space.{name}: active learning needs numbers; a categorical parameter has "
                    "no distance between its choices (run one search per choice)"
                )
            if not d["low"] < d["high"]:
                raise SpaceError(
                    f"space.{name}: the range [{d['low']}, {d['high']}] is empty; "
                    "give low < high (pass fixed values through args=)"
                )
        self.space = canonical
        self.names = list(canonical)
        self.dim = len(self.names)
        self._lo = np.array([self._t(n, canonical[n]["low"]) for n in self.names], dtype=float)
        self._hi = np.array([self._t(n, canonical[n]["high"]) for n in self.names], dtype=float)

    def _t(self, name: str, x: float) -> float:
        return math.log(x) if self.space[name]["log"] else float(x)

    def to_unit(self, params: Mapping[str, Any]) -> np.ndarray:
        t = np.array([self._t(n, float(params[n])) for n in self.names])
        return (t - self._lo) / (self._hi - self._lo)

    def snap(self, u: np.ndarray) -> np.ndarray:
        """Move unit-cube points (rows) onto values the space allows (integers, steps)."""
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
        if not any(self.space[n]["type"] == "int" or self.space[n]["step"] for n in self.names):
            return u
        return np.array([self.to_unit(self.params(row)) for row in np.atleast_2d(u)]).reshape(
            u.shape
        )

    def params(self, u: np.ndarray) -> dict[str, Any]:
        """The parameter point at unit-cube point ``u``: JSON numbers, on the space's steps."""
        t = self._lo + np.clip(u, 0.0, 1.0) * (self._hi - self._lo)
        out: dict[str, Any] = {}
        for name, v in zip(self.names, t, strict=True):
            d = self.space[name]
            x = math.exp(v) if d["log"] else float(v)
            if d["step"]:
                x = d["low"] + round((x - d["low"]) / d["step"]) * d["step"]
            x = min(max(x, d["low"]), d["high"])
            out[name] = round(x) if d["type"] == "int" else float(x)
        return out

    def axes(self, grid: int) -> dict[str, list[float]]:
        """``grid`` values per dimension, evenly spaced (on a log scale for log dimensions)."""
        out = {}
        for name in self.names:
            d = self.space[name]
            lo, hi = d["low"], d["high"]
            values = np.geomspace(lo, hi, grid) if d["log"] else np.linspace(lo, hi, grid)
            out[name] = [float(v) for v in values]
        return out

    def grid_unit(self, grid: int) -> np.ndarray:
        """The estimate grid in the unit cube, rows in C order of the dimensions."""
        lines = [np.linspace(0.0, 1.0, grid)] * self.dim
        mesh = np.meshgrid(*lines, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)


def check_grid(grid: Any, dim: int) -> None:
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid: {grid!r} is not an integer >= 2")
    if grid**dim > MAX_GRID_POINTS:
        raise ValueError(
            f"grid: {grid}^{dim} = {grid**dim} estimate points is too many "
            f"(at most {MAX_GRID_POINTS}); give a smaller grid"
        )
