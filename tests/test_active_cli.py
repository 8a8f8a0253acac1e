"""``pilotwave active`` end to end: a contour and a maximum found by searches whose evaluations run
on real pilots, collected again by id; other workflows and bad configs refused (the configs before
any server is asked); and the plots drawn for every shape of result."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import running_cluster
from typer.testing import CliRunner

from pilotwave.cli.main import app

pytestmark = pytest.mark.slow

PNG = b"\x89PNG"

# Each evaluation module has its own name: the CLI imports it in this process, once per name.
CONTOUR_EVAL = """
import math

import pilotwave as pw


@pw.job
def point(x, y, k):
    s = x + y * y
    return {"cls_obs": math.exp(-k * s), "cls_exp": math.exp(-0.8 * k * s), "s": s}
"""

PEAK_EVAL = """
import pilotwave as pw


@pw.job
def point(x, y):
    return {"value": 1.0 - (x - 0.3) ** 2 - (y - 0.6) ** 2}
"""

CONTOUR_CONFIG = """
name: contour-test
evaluate: contour_eval.py:point
space:
  x: {low: 0, high: 1}
  y: {low: 0.0, high: 1.0}
goal: contour
value: [cls_obs, cls_exp]
level: 0.1
transform: log
budget: 14
batch: 2
init: 6
seed: 3
grid: 21
args: {k: 3.0}
output: results
"""


def config_dir(tmp_path: Path, module: str, code: str, config: str) -> Path:
    """A config's directory, as a user has it: the evaluation module next to the YAML."""
    (tmp_path / f"{module}.py").write_text(code)
    path = tmp_path / "search.yaml"
    path.write_text(config)
    return path


def test_cli_finds_a_contour_on_pilots_and_collects_it_again(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir(tmp_path, "contour_eval", CONTOUR_EVAL, CONTOUR_CONFIG)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["active", "search.yaml", "--wait", "--out", "res", "--json"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    result = json.loads((tmp_path / "res" / "result.json").read_text())
    assert printed["result"] == result
    assert result["goal"] == "contour" and result["values"] == ["cls_obs", "cls_exp"]
    assert result["stopped"] in ("budget", "converged") and result["failed"] == 0
    points = result["points"]
    assert 6 < len(points) <= 14 and [p["index"] for p in points] == list(range(len(points)))
    assert len({p["job"] for p in points}) == len(points)  # one job per point
    for p in points:
        assert p["state"] == "done" and p["output"]["s"] == pytest.approx(
            p["params"]["x"] + p["params"]["y"] ** 2
        )
        assert p["values"]["cls_obs"] == pytest.approx(math.exp(-3.0 * p["output"]["s"]))
    assert [p["round"] for p in points[:6]] == [0] * 6 and points[-1]["round"] >= 1

    estimate = result["estimate"]
    x, y = np.array(estimate["axes"]["x"]), np.array(estimate["axes"]["y"])
    assert len(x) == len(y) == 21 and x[0] == 0 and x[-1] == 1
    assert np.array(estimate["mean"]).shape == (21, 21)
    assert set(estimate["values"]) == {"cls_obs", "cls_exp"}
    # The excluded region (cls_obs < 0.1 where x + y^2 > ln(10)/3) is found on most of the grid.
    truth = (x[:, None] + y[None, :] ** 2) > math.log(10) / 3
    assert (np.array(estimate["below"]) == truth).mean() > 0.9
    rounds = result["rounds"]
    assert rounds and rounds[-1]["evaluations"] == len(points)
    assert rounds[-1]["below"][0] == pytest.approx(np.array(estimate["below"]).mean())
    for name in ("contour.png", "history.png"):
        assert (tmp_path / "res" / name).read_bytes()[:4] == PNG
    assert sorted(Path(p).name for p in printed["files"]["plots"]) == [
        "contour.png",
        "history.png",
    ]

    # The same search later, by id: the results again, and a summary for a person.
    r = CliRunner().invoke(app, ["active", str(printed["id"]), "--out", "again"])
    assert r.exit_code == 0, r.output
    shown = " ".join(r.output.split())
    assert "cls_obs" in shown and "excluded fraction" in shown and "stopped:" in shown
    assert f"{len(points)} points" in shown
    assert json.loads((tmp_path / "again" / "result.json").read_text()) == result
    assert (tmp_path / "again" / "contour.png").exists()

    r = CliRunner().invoke(app, ["active", str(printed["id"]), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["result"] == result
    # Without --out the config's output is unknown by id: active-ID in the current directory.
    assert (tmp_path / f"active-{printed['id']}" / "result.json").exists()


def test_cli_finds_a_maximum_and_refuses_other_workflows(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workflows_basic as wb

    config = """
evaluate: peak_eval.py:point
space: {x: {low: 0, high: 1}, y: {low: 0, high: 1}}
goal: maximize
budget: 12
batch: 2
init: 6
seed: 1
grid: 21
output: peak
"""
    config_dir(tmp_path, "peak_eval", PEAK_EVAL, config)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["active", "search.yaml", "--wait"])
    assert r.exit_code == 0, r.output
    shown = " ".join(r.output.split())
    assert "best (maximize value)" in shown and "rounds" in shown
    result = json.loads((tmp_path / "peak" / "result.json").read_text())  # the config's output
    assert result["goal"] == "maximize" and "below" not in result["estimate"]
    best = result["best"]
    assert best["value"] > 0.98 and best["measured"] == pytest.approx(
        1.0 - (best["params"]["x"] - 0.3) ** 2 - (best["params"]["y"] - 0.6) ** 2
    )
    assert all("best" in r for r in result["rounds"])
    for name in ("surface.png", "history.png"):
        assert (tmp_path / "peak" / name).read_bytes()[:4] == PNG

    other = wb.diamond.submit(x=1)
    other.result(timeout=60)
    r = CliRunner().invoke(app, ["active", str(other.id)])
    assert r.exit_code == 2 and "is not a pilotwave active search" in r.output


def test_cli_started_without_wait_prints_the_id_and_refuses_a_missing_evaluation(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pilotwave as pw

    config = CONTOUR_CONFIG.replace("contour_eval.py:point", "started_eval.py:point")
    config_dir(tmp_path, "started_eval", CONTOUR_EVAL, config.replace("budget: 14", "budget: 6"))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["active", "search.yaml", "--json"])
    assert r.exit_code == 0, r.output
    wid = json.loads(r.stdout)["id"]
    assert pw.Client().workflow(wid)["name"] == "contour-test"
    r = CliRunner().invoke(app, ["active", str(wid), "--wait", "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["result"]["points"]) == 6

    (tmp_path / "search.yaml").write_text(config.replace("started_eval.py", "missing.py"))
    r = CliRunner().invoke(app, ["active", "search.yaml"])
    assert r.exit_code == 2 and "evaluate: no file missing.py" in " ".join(r.output.split())
    assert [w["id"] for w in pw.Client().workflows()] == [wid]  # nothing more was submitted


NESTED_EVAL = """
import pilotwave as pw


@pw.job
def square(v):
    return v * v


@pw.workflow
def point(x, y):
    return {"value": square.submit(x).result() + y}
"""


def test_nested_evaluations_wider_than_the_driver_slots_finish(
    pw_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch 7 of workflow evaluations on one pilot with one driver slot: the search and its
    points park while they wait (this needed 9 slots before drivers parked)."""
    config = CONTOUR_CONFIG.replace("contour_eval.py:point", "nested_eval.py:point")
    config = config.replace("value: [cls_obs, cls_exp]", "value: value").replace(
        "args: {k: 3.0}", ""
    )
    config = config.replace("batch: 2", "batch: 7").replace("budget: 14", "budget: 10")
    config_dir(tmp_path, "nested_eval", NESTED_EVAL, config.replace("transform: log", ""))
    monkeypatch.chdir(tmp_path)
    with running_cluster(pw_home, pilots=1, pilot_args=["--driver-slots", "1"]):
        r = CliRunner().invoke(app, ["active", "search.yaml", "--wait", "--json"])
    assert r.exit_code == 0, r.output
    points = json.loads(r.stdout)["result"]["points"]
    assert len(points) == 10 and all(p["state"] == "done" for p in points)


GOOD = {
    "evaluate": "good_eval.py:point",
    "space": "{x: {low: 0, high: 1}, y: {low: 0, high: 1}}",
    "level": "0.1",
    "args": "{k: 3.0}",
}


def yaml_of(settings: dict[str, str]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in settings.items())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budgte": "12"}, "budgte: unknown setting"),
        ({"space": None}, "space: missing"),
        ({"evaluate": None}, "evaluate: missing"),
        ({"space": "{x: {low: 1, high: 0}, y: {low: 0, high: 1}}"}, "space.x.low: 1.0 is above"),
        ({"space": "{x: {low: 0, high: 0}, y: {low: 0, high: 1}}"}, "space.x: the range"),
        ({"space": "[x, y]"}, "space: expected a mapping"),
        ({"budget": "4", "init": "6"}, "budget: 4 evaluations cannot hold the initial design"),
        ({"level": "low"}, "level: expected a number, not 'low'"),
        ({"level": None}, "level: a contour search needs the level"),
        ({"budget": "ten"}, "budget: expected an integer"),
        ({"goal": "maximise"}, "goal: 'maximise' is not one of"),
        ({"goal": "maximize"}, "level: only a contour search has a level"),
        ({"acquisition": "ei"}, "acquisition: 'ei' does not fit goal contour"),
        ({"transform": "sqrt"}, "transform: 'sqrt' is not one of"),
        ({"value": "[cls_obs, 1 +]"}, "value '1 +': not a valid expression"),
        ({"args": "{x: 2}"}, "args: x is also a dimension of the space"),
        ({"args": "[1]"}, "args: expected a mapping"),
        ({"grid": "1000"}, "grid: 1000^2 = 1000000 estimate points is too many"),
        (
            {"evaluate": "good_eval.py:helper"},
            "evaluate: good_eval.py:helper is a function, not a @pw.job",
        ),
        ({"evaluate": "good_eval.py:nothing"}, "good_eval.py has no 'nothing'"),
        ({"evaluate": "no_such_module:point"}, "evaluate: cannot import no_such_module"),
        ({"evaluate": "point"}, "evaluate: expected file.py:NAME"),
        ({"output": "[a]"}, "output: expected a directory name"),
    ],
)
def test_cli_refuses_a_bad_config_before_contacting_a_server(
    pw_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, str | None],
    message: str,
) -> None:
    settings = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    code = "import pilotwave as pw\n\n\n@pw.job\ndef point(x, y, k):\n    return x + y\n\n\n"
    code += "def helper(x, y):\n    return x\n"
    config_dir(tmp_path, "good_eval", code, yaml_of(settings))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["active", "search.yaml"])  # pw_home: no server configured
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output


def test_a_config_reads_yaml_numbers_written_without_a_dot(tmp_path: Path) -> None:
    from pilotwave.active.config import parse

    data = {
        "evaluate": "m.py:f",
        "space": {"c": {"low": "1e-3", "high": 0.1, "log": True}},
        "level": "5e-2",
        "transform": "none",
        "value": "log(a) - log(b)",
    }
    cfg = parse(data, tmp_path / "c.yaml")
    assert cfg.kwargs["space"]["c"]["low"] == 0.001 and cfg.kwargs["level"] == 0.05
    assert cfg.kwargs["transform"] is None and cfg.name == "active" and cfg.output is None
    assert cfg.root == tmp_path


# -- plots on synthetic results ------------------------------------------------------------


def synthetic(
    space: dict[str, Any], goal: str, values: list[str], failed: tuple[int, ...] = ()
) -> dict[str, Any]:
    """A result dict as ``search`` returns it, from an analytic function on a 9-point grid."""
    grid = 9
    names = list(space)
    axes = {
        n: (
            np.geomspace(d["low"], d["high"], grid)
            if d.get("log")
            else np.linspace(d["low"], d["high"], grid)
        ).tolist()
        for n, d in space.items()
    }
    mesh = np.meshgrid(*[np.linspace(0, 1, grid)] * len(names), indexing="ij")
    s = sum(mesh)
    rng = np.random.default_rng(0)
    contour = goal == "contour"
    by_value = {}
    for k, v in enumerate(values):
        mean = np.exp(-3 * (1 + 0.2 * k) * s) if contour else 1 - (s - 0.7) ** 2
        entry = {"mean": mean.tolist(), "std": (0.1 + 0 * s).tolist()}
        if contour:
            entry["below"] = (mean < 0.1).tolist()
        by_value[v] = entry
    points = []
    for i in range(12):
        u = rng.random(len(names))
        params = {
            n: axes[n][0] + float(u[j]) * (axes[n][-1] - axes[n][0]) for j, n in enumerate(names)
        }
        bad = i in failed
        points.append(
            {
                "index": i,
                "params": params,
                "values": None if bad else {v: float(np.exp(-3 * u.sum())) for v in values},
                "output": None,
                "round": 0 if i < 6 else 1 + (i - 6) // 2,
                "state": "failed" if bad else "done",
                "error": "boom" if bad else None,
                "job": 100 + i,
            }
        )
    rounds = [
        {
            "round": r,
            "evaluations": 6 + 2 * r,
            "failed": len(failed),
            "change": None if r == 0 else 0.1 / r,
        }
        | ({"below": [0.3 + 0.01 * r] * len(values)} if contour else {"best": 0.9 + 0.01 * r})
        for r in range(4)
    ]
    result: dict[str, Any] = {
        "goal": goal,
        "values": values,
        "level": 0.1 if contour else None,
        "transform": "log" if contour else None,
        "space": {n: {"type": "float", "log": False, "step": None, **d} for n, d in space.items()},
        "stopped": "budget",
        "evaluations": 12,
        "failed": len(failed),
        "points": points,
        "rounds": rounds,
        "estimate": {
            "grid": grid,
            "axes": axes,
            "value": values[0],
            "scale": "log" if contour else "linear",
            **by_value[values[0]],
            "values": by_value,
        },
    }
    if not contour:
        best = max(points, key=lambda p: p["values"][values[0]] if p["values"] else -1)
        result["best"] = {
            "index": best["index"],
            "params": best["params"],
            "value": 0.99,
            "std": 0.01,
            "measured": 0.98,
        }
    return result


@pytest.mark.parametrize(
    ("space", "goal", "values", "failed", "files"),
    [
        (
            {"m": {"low": 1, "high": 100, "log": True}},
            "contour",
            ["obs", "exp"],
            (2,),
            ["estimate"],
        ),
        (
            {"m": {"low": 15, "high": 60}, "g": {"low": 1e-3, "high": 0.1, "log": True}},
            "contour",
            ["obs", "exp"],
            (1, 7),
            ["contour"],
        ),
        (
            {"x": {"low": -1, "high": 1}, "y": {"low": 0, "high": 2}},
            "maximize",
            ["value"],
            (),
            ["surface"],
        ),
        ({"x": {"low": 0, "high": 1}}, "minimize", ["value"], (3,), ["estimate"]),
        ({n: {"low": 0, "high": 1} for n in "xyz"}, "contour", ["obs"], (4,), []),
        ({n: {"low": 0, "high": 1} for n in "xyz"}, "maximize", ["value"], (), []),
    ],
    ids=[
        "1d-contour",
        "2d-contour-failed",
        "2d-maximize",
        "1d-minimize",
        "3d-contour",
        "3d-maximize",
    ],
)
def test_plots_are_written_for_every_shape_of_result(
    tmp_path: Path,
    space: dict[str, Any],
    goal: str,
    values: list[str],
    failed: tuple[int, ...],
    files: list[str],
) -> None:
    from pilotwave.active.plots import write_plots

    written = write_plots(synthetic(space, goal, values, failed), tmp_path / "plots")
    assert [p.name for p in written] == [f"{f}.png" for f in [*files, "history"]]
    for path in written:
        assert path.read_bytes()[:4] == PNG


def test_plots_of_a_result_without_an_estimate_show_the_history_only(tmp_path: Path) -> None:
    from pilotwave.active.plots import write_plots

    result = synthetic({"x": {"low": 0, "high": 1}, "y": {"low": 0, "high": 1}}, "contour", ["v"])
    result |= {"estimate": None, "rounds": []}
    assert [p.name for p in write_plots(result, tmp_path)] == ["history.png"]


def test_a_flat_estimate_still_draws(tmp_path: Path) -> None:
    from pilotwave.active.plots import write_plots

    result = synthetic({"x": {"low": 0, "high": 1}, "y": {"low": 0, "high": 1}}, "contour", ["v"])
    flat = np.zeros((9, 9)).tolist()  # every CLs rounded to 0: nothing crosses the level
    result["estimate"]["mean"] = result["estimate"]["values"]["v"]["mean"] = flat
    assert [p.name for p in write_plots(result, tmp_path)] == ["contour.png", "history.png"]


def test_cli_reports_an_evaluation_module_that_raises_on_import(
    pw_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = "raise RuntimeError('calibration database unreachable')\n"
    config_dir(
        tmp_path, "crashing_eval", code, yaml_of({**GOOD, "evaluate": "crashing_eval.py:point"})
    )
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["active", "search.yaml"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "evaluate: importing crashing_eval.py failed" in text, r.output
    assert "calibration database unreachable" in text
