"""The examples run end to end (the demo is what `make demo` runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).parent.parent / "examples"


def test_demo_runs_and_agrees_with_the_exact_answer(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exact Poisson tail" in r.stdout and "σ(MC) from the exact one" in r.stdout
    csv = (tmp_path / "pw_outputs" / "demo" / "toy_distribution.csv").read_text().splitlines()
    assert csv[0] == "n,toys" and sum(int(line.split(",")[1]) for line in csv[1:]) == 5_600_000
