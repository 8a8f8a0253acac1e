"""Toy jobs: pseudo-experiments of a pyhf model at one POI value, and their test statistics.

A job draws ``n_toys`` pseudo-experiments under signal+background (the POI at the tested
value) and as many under background only (POI = 0), with the nuisance parameters at their
conditional fits to the observed data, exactly as pyhf's toy calculator does, and returns
the test statistic of each.  Seeds are given, so a job's toys can be reproduced.  A fit
that fails inside one toy is counted and the toy left out; it does not fail the job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pilotwave as pw

TEST_STATS = ("qtilde", "q")


def load(workspace: dict[str, Any] | str) -> dict[str, Any]:
    """A workspace's JSON: given as a dict, or a path (relative to the sandbox on a pilot)."""
    if isinstance(workspace, dict):
        return workspace
    path = Path(workspace)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the workspace {workspace}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"the workspace {workspace} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the workspace {workspace} is not a JSON object")
    return data


def model_and_data(
    workspace: dict[str, Any] | str, poi_name: str | None = None
) -> tuple[Any, list[float]]:
    """The pyhf model and observed data (main + auxiliary) of a workspace."""
    import pyhf

    spec = load(workspace)
    try:
        ws = pyhf.Workspace(spec)
        overrides = {"poi_name": poi_name} if poi_name else {}
        model = ws.model(**overrides)
    except (pyhf.exceptions.InvalidSpecification, pyhf.exceptions.InvalidModel) as exc:
        raise ValueError(f"not a valid HistFactory workspace: {exc}") from None
    for obs in spec.get("observations", []):
        bins = model.config.channel_nbins.get(obs["name"])
        if bins is not None and len(obs["data"]) != bins:
            raise ValueError(
                f"observations of channel {obs['name']!r}: {len(obs['data'])} values "
                f"for {bins} bins"
            )
    return model, list(ws.data(model))


@pw.job(name="toys", max_attempts=2)
def throw_toys(
    workspace: dict[str, Any] | str,
    poi: float,
    n_toys: int,
    seed: int,
    test_stat: str = "qtilde",
    poi_name: str | None = None,
    poi_bounds: list[float] | None = None,
) -> dict[str, Any]:
    """Test statistics of ``n_toys`` s+b and ``n_toys`` b-only toys at ``poi``; and the observed one."""
    return toy_statistics(workspace, poi, n_toys, seed, test_stat, poi_name, poi_bounds)


def toy_statistics(
    workspace: dict[str, Any] | str,
    poi: float,
    n_toys: int,
    seed: int,
    test_stat: str = "qtilde",
    poi_name: str | None = None,
    poi_bounds: list[float] | None = None,
) -> dict[str, Any]:
    """What a toy job computes: ``{"poi", "observed", "seed", "failed", "sb": [...], "b": [...]}``."""
    import numpy as np
    import pyhf
    from pyhf.infer import mle, utils

    pyhf.set_backend("numpy")
    model, data = model_and_data(workspace, poi_name)
    init = model.config.suggested_init()
    bounds = model.config.suggested_bounds()
    if poi_bounds is not None:
        bounds[model.config.poi_index] = tuple(poi_bounds)
    fixed = model.config.suggested_fixed()
    teststat = utils.get_test_stat(test_stat)
    observed = float(teststat(poi, data, model, init, bounds, fixed))
    # pyhf's pdfs sample from NumPy's global random state: seed it for this job.
    np.random.seed(seed % (1 << 32))
    out: dict[str, Any] = {"poi": poi, "observed": observed, "seed": seed, "failed": 0}
    for name, hypothesis in (("sb", poi), ("b", 0.0)):
        pars = mle.fixed_poi_fit(hypothesis, data, model, init, bounds, fixed)
        samples = model.make_pdf(pars).sample((n_toys,))
        values = []
        for toy in samples:
            try:
                values.append(float(teststat(poi, toy, model, init, bounds, fixed)))
            except pyhf.exceptions.FailedMinimization:
                out["failed"] += 1
        out[name] = values
    print(
        f"poi={poi:g}: {n_toys} + {n_toys} toys, {out['failed']} failed fits, q_obs={observed:.4f}"
    )
    return out
