"""Python jobs, a shell command and a nested workflow in one run.

    pw.shell("… | awk …")            pedestal from the legacy tool ─────────────┐
    calibrate (nested @pw.workflow)  record_line × 3 ──> fit_calibration ───────┼──> result
                                                  └──> measure_source (python) ┘

A workflow can mix kinds of work:

* ``pw.shell(...)`` runs a command on a pilot: a list of arguments, or — as here — a
  string run by ``/bin/sh -c``.  Its result is ``{"exit_code": 0, "stdout_tail": "..."}``
  (the end of its output); a non-zero exit fails it.
* ``calibrate.submit(...)`` of another ``@pw.workflow`` starts a *nested* workflow with its
  own driver.  It returns a ``Run``, which behaves like a future: ``.result()`` waits for
  it, and passing it to a job makes that job wait for the nested workflow's result.
* ``@pw.job`` functions, as everywhere.

The physics: the energy calibration of a gamma spectrometer.  A legacy tool (``awk`` here)
reads a pedestal run and prints the ADC pedestal and noise.  A nested workflow — reusable
on its own for any set of lines — records three calibration lines (Na-22 and Cs-137) and
fits ADC = offset + E / gain.  A python job then measures an "unknown" source with that
calibration: it should find the 1332.5 keV line of Co-60.  The fitted offset should also
agree with the pedestal the legacy tool measured.

    .venv/bin/python examples/polymorphic.py

It starts a throwaway server (SQLite) and two local pilots in a temporary PILOTWAVE_HOME,
runs the workflow there, and checks the answer against the same workflow called in this
process (``energy_measurement(...)`` runs its jobs and the command here, without a server),
against the pedestal computed in Python, and against the known Co-60 energy.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import pilotwave as pw

TRUE_PEDESTAL_ADC, TRUE_KEV_PER_ADC = 100.0, 0.5  # what the simulation uses
CALIBRATION_LINES_KEV = [511.0, 661.657, 1274.537]  # Na-22, Cs-137, Na-22
CO60_KEV = 1332.492

# A pedestal run (ADC counts with no signal) and the legacy tool that summarises it.
PEDESTAL_RUN = [101, 99, 100, 98, 102, 100, 101, 99, 100, 103, 97, 100, 101, 100, 99, 101]
PEDESTAL_TOOL = (
    f"printf '%s\\n' {' '.join(map(str, PEDESTAL_RUN))} | "
    "awk '{ s += $1; ss += $1 * $1 } END { m = s / NR; printf \"%.4f %.4f\\n\", m, sqrt(ss / NR - m * m) }'"
)


def _adc(rng: np.random.Generator, energy_keV: float, n: int) -> np.ndarray:
    """ADC readings of a gamma line: pedestal + E / gain, with a 2 % energy resolution."""
    energy = rng.normal(energy_keV, 0.02 * energy_keV, n)
    return TRUE_PEDESTAL_ADC + energy / TRUE_KEV_PER_ADC


@pw.job
def record_line(energy_keV: float, seed: int, n: int = 5_000) -> dict:
    """Record a calibration line; return the peak's ADC position and its uncertainty."""
    adc = _adc(np.random.default_rng(seed), energy_keV, n)
    return {
        "energy_keV": energy_keV,
        "adc": float(adc.mean()),
        "adc_err": float(adc.std() / n**0.5),
    }


@pw.job
def fit_calibration(points: list[dict]) -> dict:
    """Weighted straight-line fit ADC = offset + E / gain over the calibration lines."""
    e = np.array([p["energy_keV"] for p in points])
    adc = np.array([p["adc"] for p in points])
    w = 1.0 / np.array([p["adc_err"] for p in points]) ** 2
    design = np.stack([np.ones_like(e), e], axis=1)
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    offset, slope = cov @ design.T @ (w * adc)
    return {
        "offset_adc": float(offset),
        "offset_err": float(np.sqrt(cov[0, 0])),
        "keV_per_adc": float(1.0 / slope),
    }


@pw.workflow
def calibrate(lines_keV: list[float], seed: int) -> dict:
    """A workflow of its own: run it alone, or nested in a bigger one as below."""
    points = record_line.map(lines_keV, [seed + i for i in range(len(lines_keV))])
    return fit_calibration.submit(points).result()


@pw.job
def measure_source(calibration: dict, seed: int, n: int = 5_000) -> dict:
    """Measure an unknown source's line and convert its ADC position to energy."""
    adc = _adc(np.random.default_rng(seed), CO60_KEV, n)  # the simulation knows; we do not
    peak = float(adc.mean())
    return {"energy_keV": (peak - calibration["offset_adc"]) * calibration["keV_per_adc"]}


@pw.workflow
def energy_measurement(seed: int = 4) -> dict:
    pedestal = pw.shell(PEDESTAL_TOOL, name="pedestal tool")  # a shell job
    calibration = calibrate.submit(lines_keV=CALIBRATION_LINES_KEV, seed=seed)  # nested workflow
    source = measure_source.submit(calibration, seed + 100)  # waits for the nested workflow
    mean, rms = (float(x) for x in pedestal.result()["stdout_tail"].split())
    return {
        "pedestal_adc": mean,
        "pedestal_rms": rms,
        **calibration.result(),
        "source_keV": source.result()["energy_keV"],
    }


def main() -> int:
    from pilotwave.provision.local import LocalCluster

    here = energy_measurement(seed=4)  # the same workflow, run in this process

    with tempfile.TemporaryDirectory(prefix="pilotwave-polymorphic-") as home:
        print("starting a server (SQLite) and 2 local pilots…")
        t0 = time.monotonic()
        with LocalCluster(Path(home), pilots=2, slots=1) as cluster:
            cluster.wait_for_pilots()
            pw.connect(cluster.url, cluster.admin_token)
            run = energy_measurement.submit(seed=4)
            print(f"submitted workflow {run.id}")
            r = run.result(timeout=120)
            status = run.status()
        print(f"done in {time.monotonic() - t0:.1f}s")

    for wf in [status, *status["children"]]:
        kinds = ", ".join(f"{j['name']} [{j['kind']}]" for j in wf["jobs"])
        print(f"  workflow {wf['id']} {wf['name']} ({wf['state']}): {kinds}")
    n_ped = len(PEDESTAL_RUN)
    print(f"pedestal (shell):       {r['pedestal_adc']:.2f} ADC, noise {r['pedestal_rms']:.2f} ADC")
    print(
        f"calibration (nested):   {r['keV_per_adc']:.4f} keV/ADC, "
        f"offset {r['offset_adc']:.2f} ± {r['offset_err']:.2f} ADC"
    )
    print(f"unknown source (python): {r['source_keV']:.1f} keV (Co-60: {CO60_KEV} keV)")

    problems = []
    if r != here:
        problems.append(f"the cluster's answer {r} differs from the in-process one {here}")
    if abs(r["pedestal_adc"] - statistics.fmean(PEDESTAL_RUN)) > 1e-3:
        problems.append("the legacy tool's pedestal differs from the mean of the pedestal run")
    ped_err = r["pedestal_rms"] / n_ped**0.5
    if abs(r["pedestal_adc"] - r["offset_adc"]) > 3 * (ped_err**2 + r["offset_err"] ** 2) ** 0.5:
        problems.append("the calibration's offset disagrees with the measured pedestal")
    if abs(r["source_keV"] - CO60_KEV) > 0.003 * CO60_KEV:
        problems.append("the unknown source is not at the Co-60 energy")
    print("\n".join(problems) or "cluster and in-process runs agree, and the physics checks pass")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
