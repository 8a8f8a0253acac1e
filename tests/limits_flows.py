"""A model family for the exclusion tests: importable by pilots from the tests directory."""

from __future__ import annotations

from typing import Any

import pilotwave as pw


@pw.job
def make_workspace(mass: float, coupling: float) -> dict[str, Any]:
    """One bin: a signal falling with mass and growing with coupling squared, over 100 events."""
    signal = 400.0 * coupling**2 * (100.0 / mass) ** 2
    return {
        "channels": [
            {
                "name": "sr",
                "samples": [
                    {
                        "name": "signal",
                        "data": [signal],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [100.0],
                        "modifiers": [{"name": "unc", "type": "shapesys", "data": [5.0]}],
                    },
                ],
            }
        ],
        "observations": [{"name": "sr", "data": [100.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
