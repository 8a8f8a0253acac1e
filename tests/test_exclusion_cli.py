"""``pilotwave limits scan CONFIG.yaml`` end to end: a 2-D exclusion over a model family whose
factory lives next to the config (shipped as the sandbox), its toys run on real pilots; the map
drawn; collected again by id; bad configs refused before any server is asked."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pilotwave.cli.main import app

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent

CONFIG = """\
factory: family.py:make_workspace
grid:
  mass: {low: 100, high: 500, points: 3}
  coupling: {low: 0.1, high: 1.0, points: 3}
toys: 100
toys_per_job: 100
max_steps: 2
seed: 1
"""

NOT_A_JOB = '''\
def make_workspace(mass, coupling):
    """A plain function: the pilots cannot run it as a job."""
    return {}
'''


@pytest.fixture(autouse=True)
def fresh_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test imports the factory from its own directory, not one an earlier test cached."""
    for name in ("family", "not_a_job"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield
    for name in ("family", "not_a_job"):
        sys.modules.pop(name, None)


def shown(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines


def project(where: Path, config: str) -> Path:
    """A config directory with the model family (the tests' own, copied) next to it."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "family.py").write_text((HERE / "limits_flows.py").read_text())
    (where / "not_a_job.py").write_text(NOT_A_JOB)
    (where / "scan.yaml").write_text(config)
    return where / "scan.yaml"


def test_scan_from_a_config_excludes_a_region_and_is_collected_again_by_id(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = project(tmp_path / "model", CONFIG)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["limits", "scan", str(config), "--out", "res", "--json"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    result = json.loads((tmp_path / "res" / "result.json").read_text())
    assert printed["result"] == result
    assert result["axes"] == ["mass", "coupling"] and result["failed_jobs"] == 0
    assert len([p for p in result["points"] if p["step"] == 1]) == 9
    assert len(result["steps"]) == 2 and len(result["points"]) > 9  # refined where it is decided
    assert result["boundary"]["observed"]
    assert any(p["excluded"] for p in result["points"])
    assert not all(p["excluded"] for p in result["points"])
    assert (tmp_path / "res" / "exclusion.png").read_bytes()[:4] == b"\x89PNG"

    # The same scan later, by id: recognised as a 2-D scan, summarised for a person.
    r = CliRunner().invoke(app, ["limits", str(printed["id"]), "--out", "again"])
    assert r.exit_code == 0, r.output
    text = shown(r.output)
    excluded = sum(p["excluded"] for p in result["points"])
    assert f"{excluded} of {len(result['points'])} points excluded" in text
    assert "new points" in text and "exclusion.png" in text
    assert json.loads((tmp_path / "again" / "result.json").read_text()) == result
    assert (tmp_path / "again" / "exclusion.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        (CONFIG + "toy: 5\n", [], "toy: unknown setting"),
        ("factory: family.py:make_workspace\n", [], "grid: missing"),
        (
            "factory: family.py:make_workspace\ngrid: {mass: [100, 200]}\n",
            [],
            "grid: give exactly two dimensions",
        ),
        (CONFIG.replace("family.py", "not_a_job.py"), [], "is a function, not a @pw.job function"),
        (CONFIG.replace("family.py", "nowhere.py"), [], "factory: no file nowhere.py"),
        (CONFIG.replace("mass:", "width:"), [], "factory: make_workspace cannot be called"),
        ("factory: [family.py\ngrid: {", [], "not valid YAML"),
        (CONFIG + "alpha: 2\n", [], "alpha: 2.0 is not between 0 and 1"),
        (CONFIG.replace("toys: 100", "toys: 1"), [], "toys: 1 is not an integer >= 10"),
        (CONFIG, ["--precision", "0.1"], "--precision is for an upper limit"),
    ],
    ids=[
        "unknown-key",
        "no-grid",
        "one-dimension",
        "not-a-job",
        "no-factory-file",
        "factory-arguments",
        "not-yaml",
        "alpha",
        "toys",
        "1-d-option",
    ],
)
def test_bad_scan_configs_are_refused_before_contacting_a_server(
    pw_home: Path, tmp_path: Path, config: str, args: list[str], message: str
) -> None:
    path = project(tmp_path, config)
    r = CliRunner().invoke(app, ["limits", "scan", str(path), *args])
    assert r.exit_code == 2 and message in shown(r.output), r.output


def test_scan_without_a_config_or_with_an_extra_argument_is_refused(pw_home: Path) -> None:
    r = CliRunner().invoke(app, ["limits", "scan"])
    assert r.exit_code == 2 and "pilotwave limits scan CONFIG.yaml" in shown(r.output), r.output
    r = CliRunner().invoke(app, ["limits", "ws.json", "other.yaml"])
    assert r.exit_code == 2 and "unexpected other.yaml" in shown(r.output), r.output


def point(mass: float, coupling: float, cls: float, step: int) -> dict[str, Any]:
    return {
        "params": {"mass": mass, "coupling": coupling},
        "cls": cls,
        "excluded": cls < 0.05,
        "step": step,
    }


@pytest.mark.parametrize(
    ("points", "boundary"),
    [
        ([], {"observed": [], "expected": []}),
        ([point(100, 0.1, 0.5, 1), point(500, 1.0, 0.0, 1)], {"observed": [], "expected": []}),
        ([point(100, 0.1, 0.5, 1), point(100, 1.0, 0.01, 2)], {"observed": [[100, 0.5]]}),
        (
            [point(m, c, 0.5 if c < 0.5 else 0.001, 1) for m in (1, 10, 100) for c in (0.1, 1)],
            {"observed": [[1, 0.4], [10, 0.5], [100, 0.6]], "expected": [[100, 0.7], [1, 0.3]]},
        ),
    ],
    ids=["no-points", "no-boundary", "one-boundary-point", "log-axis"],
)
def test_exclusion_map_draws_results_with_few_points_or_no_boundary(
    tmp_path: Path, points: list[dict[str, Any]], boundary: dict[str, Any]
) -> None:
    from pilotwave.limits.plots import exclusion_map

    result = {"axes": ["mass", "coupling"], "alpha": 0.05, "poi": 1.0, "toys": 0}
    path = exclusion_map(result | {"points": points, "boundary": boundary}, tmp_path / "map.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_boundary_points_are_joined_along_the_line_they_lie_on() -> None:
    from pilotwave.limits.plots import _ordered

    # A steep boundary: sorted by mass, the points would zig-zag between the two ends.
    steep = [[300.0, 0.9], [290.0, 0.1], [310.0, 0.5], [295.0, 0.3], [305.0, 0.7]]
    line = _ordered(steep, (False, False))
    assert line[:, 1].tolist() == [0.1, 0.3, 0.5, 0.7, 0.9]
    flat = [[500.0, 0.4], [100.0, 0.2], [300.0, 0.3]]
    assert _ordered(flat, (False, False))[:, 0].tolist() == [100.0, 300.0, 500.0]
    assert len(_ordered([], (False, False))) == 0
