"""pilotwave demo: tune a signal/background classifier per |η| region, on local pilots.

A segmented hyperparameter study: one Optuna study per detector region (barrel, endcap,
forward), all sharing the same pilots.  Each trial trains a gradient-boosted classifier on
synthetic HEP-like events of its region and reports its validation loss as it trains;
poor trials are pruned early, and the moment a trial ends the next one starts.  This is
exactly what a user runs on a cluster with:

    pilotwave hpo examples/hpo/config.yaml --wait

    make demo          (or: .venv/bin/python examples/demo.py)

Everything runs on the embedded default: a server on SQLite and two local pilots with two
slots each, in a temporary PILOTWAVE_HOME removed at the end.  Results (result.json, plots,
the best model of each region) are written to ./hpo-demo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

CONFIG = Path(__file__).resolve().parent / "hpo" / "config.yaml"


def main() -> None:
    from pilotwave.provision.local import LocalCluster

    console = Console()
    out = Path("hpo-demo").resolve()
    with tempfile.TemporaryDirectory(prefix="pilotwave-demo-") as home:
        console.print("[bold]pilotwave demo[/] — starting a server (SQLite) and 2 local pilots…")
        t0 = time.monotonic()
        with LocalCluster(Path(home), pilots=2, slots=2) as cluster:
            cluster.wait_for_pilots()
            console.print(f"up at {cluster.url} in {time.monotonic() - t0:.1f}s")
            console.print(f"$ pilotwave hpo {os.path.relpath(CONFIG)} --wait --out {out.name}")
            env = {
                **os.environ,
                "PILOTWAVE_URL": cluster.url,
                "PILOTWAVE_TOKEN": cluster.admin_token,
            }
            cli = [sys.executable, "-m", "pilotwave.cli.main"]
            done = subprocess.run([*cli, "hpo", str(CONFIG), "--wait", "--out", str(out)], env=env)
            if done.returncode != 0:
                sys.exit(done.returncode)
        console.print(f"[green]done[/] in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
