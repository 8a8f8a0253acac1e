"""Trivial job functions for the hop-latency benchmark (imported by pilots and Dask workers).

Every job returns a *stamp* ``[value, started, ended]``: its value and the wall-clock times
(``time.time()``, the clock the server stamps with too) at which its body began and ended.
A dependent job receives its upstream's stamp as its argument, so the chain carries values
like any real pipeline, and the benchmark reads every job's timing from its result.

Each ``@pw.job`` has a plain twin (``*_plain``) with the same body for Dask.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pilotwave as pw

Stamp = list[float]  # [value, started, ended]
GATE_POLL_S = 0.001


def _gate(path: str, timeout_s: float) -> Stamp:
    started = time.time()
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was not opened within {timeout_s:g}s")
        time.sleep(GATE_POLL_S)
    return [0.0, started, time.time()]


def _inc(prev: Stamp) -> Stamp:
    started = time.time()
    return [prev[0] + 1, started, time.time()]


def _make(gate: Stamp) -> Stamp:
    started = time.time()
    return [1.0, started, time.time()]


def _work(root: Stamp, i: int) -> Stamp:
    started = time.time()
    return [root[0] + i, started, time.time()]


def _total(values: list[Stamp]) -> Stamp:
    started = time.time()
    return [sum(v[0] for v in values), started, time.time()]


def _warm(i: int) -> int:
    time.sleep(0.2)  # long enough that every worker takes one
    return i


# -- pilotwave -----------------------------------------------------------------------------


@pw.job(max_attempts=1)
def gate(path: str, timeout_s: float) -> Stamp:
    """Hold the graph back until ``path`` exists, so that it runs only once fully submitted."""
    return _gate(path, timeout_s)


@pw.job
def inc(prev: Stamp) -> Stamp:
    """One link of the chain: the upstream value plus one."""
    return _inc(prev)


@pw.job
def make(gate: Stamp) -> Stamp:
    """The fan-out's root."""
    return _make(gate)


@pw.job
def work(root: Stamp, i: int) -> Stamp:
    """One of the fan-out's branches."""
    return _work(root, i)


@pw.job
def total(values: list[Stamp]) -> Stamp:
    """The fan-in: the sum of every branch's value."""
    return _total(values)


@pw.job
def warm(i: int) -> int:
    """Start each pilot's warm worker before anything is timed."""
    return _warm(i)


@pw.workflow
def loop(n: int) -> list[Stamp]:
    """The chain as a driver loop: the workflow waits for each job before it submits the next."""
    v: Stamp = [0.0, 0.0, 0.0]
    stamps: list[Stamp] = []
    for _ in range(n):
        v = inc.submit(v).result()
        stamps.append(v)
    return stamps


# -- Dask ----------------------------------------------------------------------------------


def gate_plain(path: str, timeout_s: float) -> Stamp:
    return _gate(path, timeout_s)


def inc_plain(prev: Stamp) -> Stamp:
    return _inc(prev)


def make_plain(gate: Stamp) -> Stamp:
    return _make(gate)


def work_plain(root: Stamp, i: int) -> Stamp:
    return _work(root, i)


def total_plain(values: list[Stamp]) -> Stamp:
    return _total(values)


def warm_plain(i: int) -> int:
    return _warm(i)


def loop_plain(n: int) -> list[Stamp]:
    """The driver loop as a Dask task that submits the next task once the last one is done."""
    from distributed import worker_client

    v: Any = [0.0, 0.0, 0.0]
    stamps: list[Stamp] = []
    with worker_client() as client:  # secedes: the loop does not hold a worker thread
        for _ in range(n):
            v = client.submit(inc_plain, v, pure=False).result()
            stamps.append(v)
    return stamps
