"""The examples run end to end (the demo is what `make demo` runs)."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).parent.parent / "examples"


def test_demo_tunes_a_classifier_per_eta_segment(tmp_path: Path) -> None:
    stdout = run_example("demo.py", tmp_path, timeout=300)
    assert "best trials" in stdout and "best model:" in stdout
    out = tmp_path / "hpo-demo"
    result = json.loads((out / "result.json").read_text())
    assert list(result["segments"]) == ["barrel", "endcap", "forward"]
    losses = {}
    for name, seg in result["segments"].items():
        assert len(seg["trials"]) == 30
        assert {t["state"] for t in seg["trials"]} <= {"complete", "pruned"}
        losses[name] = seg["best"]["value"]
        model = pickle.loads((out / f"best-{name}" / "model.pkl").read_bytes())
        assert model.get_params()["learning_rate"] == seg["best"]["params"]["learning_rate"]
        assert (out / f"history-{name}.png").exists() and (out / f"importance-{name}.png").exists()
    # The detector's resolution worsens with |η|, and so does the best achievable loss.
    assert losses["barrel"] < losses["endcap"] < losses["forward"]


def test_toys_example_agrees_with_the_exact_answer(tmp_path: Path) -> None:
    stdout = run_example("toys.py", tmp_path, timeout=300)
    assert "exact Poisson tail" in stdout and "σ(MC) from the exact one" in stdout
    csv = (tmp_path / "pw_outputs" / "toys" / "toy_distribution.csv").read_text().splitlines()
    assert csv[0] == "n,toys" and sum(int(line.split(",")[1]) for line in csv[1:]) == 5_600_000


def run_example(name: str, cwd: Path, timeout: float = 180) -> str:
    """Run examples/<name> as a user would; its stdout, after checking it exited cleanly."""
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_dag_example_passes_data_along_a_diamond(tmp_path: Path) -> None:
    out = run_example("dag.py", tmp_path)
    for name in ("simulate", "fit_background", "measure_peak", "combine"):
        assert re.search(rf"job +\d+ {name} +succeeded", out), out
    m = re.search(r"peak: +m = ([\d.]+) GeV", out)
    assert m and abs(float(m.group(1)) - 125.0) < 1.0, out
    assert "significance:" in out
    assert "cluster and in-process runs agree, and match the truth" in out


def test_branch_example_runs_the_expensive_fit_only_when_needed(tmp_path: Path) -> None:
    out = run_example("branch.py", tmp_path)
    pions, mixed = out.split("pion beam with 30% kaons")
    assert "simulate → quick_fit)" in pions and "two-lifetime fit was skipped" in pions
    assert "→ one lifetime" in pions and "two_lifetime_fit" not in pions
    assert "simulate → quick_fit → two_lifetime_fit)" in mixed
    assert "χ²/ndf too large" in mixed and "→ two lifetimes" in mixed
    taus = re.search(r"two-lifetime fit τ = ([\d.]+) and ([\d.]+) ns", mixed)
    assert taus, out
    assert abs(float(taus.group(1)) - 12.38) < 1.3 and abs(float(taus.group(2)) - 26.03) < 2.6
    assert "cluster and in-process runs agree, and match the truth" in out


def test_loop_example_adds_rounds_until_the_error_is_small(tmp_path: Path) -> None:
    out = run_example("loop.py", tmp_path)
    rounds = re.findall(r"round (\d+): +[\d,]+ throws, acceptance [\d.]+ ± ([\d.]+) %", out)
    assert len(rounds) >= 2, out
    errors = [float(e) for _, e in rounds]
    assert errors[-1] < 0.2 <= min(errors[:-1])  # it stopped at the first round below target
    p = re.search(r"Monte Carlo: ([\d.]+) ± ([\d.]+)", out)
    assert p and abs(float(p.group(1)) - 1 / 6) < 4 * float(p.group(2)), out
    assert "exact:       0.16667 (= 1/6)" in out
    assert "the Monte-Carlo estimate agrees with the exact acceptance" in out


def test_fanout_example_maps_over_work_found_at_run_time(tmp_path: Path) -> None:
    out = run_example("fanout.py", tmp_path)
    # 4 runs of 120k, 45k, 210k and 80k events in chunks of at most 50k: 3 + 1 + 5 + 2.
    assert "11 chunks, 455,000 events" in out
    assert "1 × list_chunks, 11 × process_chunk, 1 × merge" in out
    assert "{'succeeded': 14}" in out  # the driver too
    peak = re.search(r"peak at ([\d.]+) GeV", out)
    assert peak and abs(float(peak.group(1)) - 91.19) < 0.5, out
    assert "cluster and in-process runs agree, and every event was processed" in out


def test_polymorphic_example_mixes_python_shell_and_a_nested_workflow(tmp_path: Path) -> None:
    out = run_example("polymorphic.py", tmp_path)
    assert "pedestal tool [shell]" in out and "measure_source [python]" in out
    assert re.search(r"workflow \d+ calibrate \(succeeded\): calibrate \[driver\]", out), out
    assert out.count("record_line [python]") == 3
    assert "pedestal (shell):       100.06 ADC" in out  # the mean of the pedestal run
    source = re.search(r"unknown source \(python\): ([\d.]+) keV", out)
    assert source and abs(float(source.group(1)) - 1332.5) < 4.0, out
    assert "cluster and in-process runs agree, and the physics checks pass" in out


def test_active_example_finds_the_contour_and_the_excess_without_a_human(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "active" / "darksector.py"), "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the excess is found where the data hold it" in r.stdout
    out = tmp_path / "darksector-results"
    contour = json.loads((out / "contour" / "result.json").read_text())
    excess = json.loads((out / "excess" / "result.json").read_text())
    assert (out / "contour" / "contour.png").exists() and (out / "excess" / "surface.png").exists()
    assert len(contour["points"]) == 24 and contour["failed"] == 0
    below = contour["estimate"]["values"]["cls_obs"]["below"]
    assert any(any(row) for row in below) and not all(all(row) for row in below)
    # What the pilots computed through production, artifact and analysis chain is what the
    # same chain computes in this process.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES / "active"))
    import darksector

    for p in [*contour["points"][::8], excess["points"][excess["best"]["index"]]]:
        here = darksector.point(**p["params"], n_events=4000)
        assert here == pytest.approx(p["output"], rel=1e-6)  # the fits' last digits may differ
