"""Job functions the end-to-end tests submit (shipped to pilots in the tests/ sandbox)."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pilotwave as pw


@pw.job
def add(a: int, b: int) -> int:
    return a + b


@pw.job
def square(x: int) -> int:
    return x * x


@pw.job
def noop() -> None:
    return None


PROCESS = uuid.uuid4().hex  # which process ran a job, in whatever PID namespace


@pw.job
def whoami() -> dict:
    return {
        "pid": os.getpid(),
        "process": PROCESS,
        "uid": os.getuid(),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "job": os.environ.get("PILOTWAVE_JOB_ID"),
        "cwd": os.getcwd(),
    }


@pw.job(max_attempts=1)
def explode(message: str) -> None:
    print("about to fail", flush=True)
    raise ValueError(message)


@pw.job(max_attempts=1)
def not_json() -> object:
    return {1, 2, 3}


@pw.job(max_attempts=1)
def huge_result() -> str:
    return "x" * (2 * 1024 * 1024)


@pw.job
def sleep_then(seconds: float, value: int = 0) -> int:
    print(f"sleeping {seconds}", flush=True)
    time.sleep(seconds)
    return value


@pw.job
def sleep_forever(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(0.1)


@pw.job
def chatty(lines: int, delay: float) -> int:
    for i in range(lines):
        print(f"line {i}", flush=True)
        print(f"err {i}", file=sys.stderr, flush=True)
        time.sleep(delay)
    return lines


@pw.job
def write_outputs(text: str) -> str:
    out = pw.outputs()
    (out / "result.txt").write_text(text)
    (out / "sub").mkdir(exist_ok=True)
    (out / "sub" / "data.bin").write_bytes(bytes(range(256)))
    return "ok"


@pw.job
def flaky(marker: str, failures: int) -> int:
    """Fail the first ``failures`` attempts (counted in a file), then succeed."""
    path = Path(marker)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    if n < failures:
        raise RuntimeError(f"flaky failure {n + 1}")
    return n + 1


@pw.job
def count_runs(marker_dir: str, tag: str) -> str:
    """Record one run per call (a file per run) so tests can check exactly-once execution."""
    d = Path(marker_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{tag}.{os.getpid()}.{time.monotonic_ns()}").touch()
    return tag


@pw.job(max_attempts=1)
def hard_exit() -> None:
    os._exit(3)
