"""``pilotwave limits`` end to end: a toy-based CLs limit on a counting workspace, its toys run on
real pilots, checked against pyhf's asymptotic limit; collected again by id; bad input refused
before any server is asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyhf
import pytest
from typer.testing import CliRunner

from pilotwave.cli.main import app

pytestmark = pytest.mark.slow

WORKSPACE = {
    "channels": [
        {
            "name": "singlechannel",
            "samples": [
                {
                    "name": "signal",
                    "data": [12.0],
                    "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                },
                {
                    "name": "background",
                    "data": [50.0],
                    "modifiers": [{"name": "bkg_uncertainty", "type": "shapesys", "data": [5.0]}],
                },
            ],
        }
    ],
    "observations": [{"name": "singlechannel", "data": [52.0]}],
    "measurements": [
        {
            "name": "meas",
            "config": {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[0, 5]]}]},
        }
    ],
    "version": "1.0.0",
}


def asymptotic_observed_limit() -> float:
    ws = pyhf.Workspace(WORKSPACE)
    model = ws.model()
    observed, _ = pyhf.infer.intervals.upper_limits.upper_limit(
        ws.data(model), model, scan=np.linspace(0, 5, 51)
    )
    return float(observed)


def test_cli_sets_a_limit_with_toys_on_pilots_and_collects_it_again(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ws.json").write_text(json.dumps(WORKSPACE))
    monkeypatch.chdir(tmp_path)
    args = ["--precision", "0.2", "--toys-per-job", "100", "--max-toys", "3000", "--seed", "1"]
    r = CliRunner().invoke(app, ["limits", "ws.json", *args, "--out", "res", "--json"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    result = json.loads((tmp_path / "res" / "result.json").read_text())
    assert printed["result"] == result
    assert result["toys"] <= 3000 + 6 * 100  # the budget stops the scan (a step may overshoot)
    assert result["failed_jobs"] == 0
    observed = result["observed"]["limit"]
    assert observed == pytest.approx(asymptotic_observed_limit(), rel=0.15)
    assert all(result["expected"][n]["limit"] is not None for n in ("-1", "0", "+1"))
    assert (tmp_path / "res" / "brazil.png").read_bytes()[:4] == b"\x89PNG"

    # The same scan later, by id: the results again, and a table for a person.
    r = CliRunner().invoke(app, ["limits", str(printed["id"]), "--out", "again"])
    assert r.exit_code == 0, r.output
    shown = " ".join(r.output.split())
    assert "observed" in shown and "expected median" in shown and f"{observed:.4g}" in shown
    assert json.loads((tmp_path / "again" / "result.json").read_text()) == result
    assert (tmp_path / "again" / "brazil.png").exists()


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "cannot read the workspace ws.json: No such file or directory"),
        ("{not json", [], "the workspace ws.json is not JSON"),
        ('{"channels": []}', [], "not a valid HistFactory workspace"),
        ("[1, 2]", [], "is not a JSON object"),
        (json.dumps(WORKSPACE), ["--alpha", "2"], "alpha: 2.0 is not between 0 and 1"),
        (json.dumps(WORKSPACE), ["--poi-range", "3", "1"], "poi_range: [3.0, 1.0] is empty"),
        (json.dumps(WORKSPACE), ["--toys-per-job", "0"], "toys_per_job: 0 is not an integer"),
    ],
)
def test_cli_refuses_bad_input_before_contacting_a_server(
    pw_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: str | None,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "ws.json").write_text(content)
    r = CliRunner().invoke(app, ["limits", "ws.json", *args])
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output


def point(poi: float, cls: float, step: int) -> dict[str, Any]:
    band = [cls * f for f in (0.0, 0.5, 1.0, 1.5, 2.0)]
    return {"poi": poi, "cls": cls, "cls_err": 0.01, "cls_expected": band, "step": step}


@pytest.mark.parametrize(
    "points",
    [[], [point(1.0, 0.3, 1)], [point(1.0, 0.3, 1), point(2.0, 0.0, 2)]],
    ids=["no-points", "one-point", "two-points"],
)
def test_brazil_plot_draws_a_scan_without_limits_or_with_few_points(
    tmp_path: Path, points: list[dict[str, Any]]
) -> None:
    from pilotwave.limits.plots import brazil

    missing = {"limit": None, "uncertainty": None, "reason": "CLs stays above alpha"}
    result = {
        "alpha": 0.05,
        "poi_range": [0.0, 5.0],
        "observed": missing,
        "expected": {n: missing for n in ("-2", "-1", "0", "+1", "+2")},
        "points": points,
    }
    path = brazil(result, tmp_path / "plots" / "brazil.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_an_unknown_poi_is_refused_before_contacting_a_server(tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(WORKSPACE))
    r = CliRunner().invoke(app, ["limits", str(path), "--poi", "lumi_nope"])
    assert r.exit_code == 2 and "lumi_nope" in " ".join(r.output.split()), r.output
