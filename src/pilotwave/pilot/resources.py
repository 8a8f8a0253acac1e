"""What this machine offers: cores, memory and GPUs (detected with ``nvidia-smi``, overridable)."""

from __future__ import annotations

import os
import shutil
import subprocess

import psutil

from pilotwave.protocol import Gpu


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def memory_mb() -> int:
    return int(psutil.virtual_memory().total // (1024 * 1024))


def detect_gpus() -> list[Gpu]:
    """GPUs from ``nvidia-smi``, limited to ``CUDA_VISIBLE_DEVICES`` if the pilot itself was given a subset."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            mem = int(float(parts[2])) if parts[2].replace(".", "").isdigit() else 0
            gpus.append(Gpu(index=int(parts[0]), model=parts[1], memory_mb=mem))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        allowed = {int(v) for v in visible.split(",") if v.strip().isdigit()}
        gpus = [g for g in gpus if g.index in allowed]
    return gpus


def parse_gpu(spec: str, index: int) -> Gpu:
    """``MODEL[:MEMORY_MB]`` as given on the command line (``--gpu A100:40960``)."""
    model, _, mem = spec.partition(":")
    if not model:
        raise ValueError(f"invalid --gpu {spec!r}: expected MODEL[:MEMORY_MB]")
    if mem and not mem.isdigit():
        raise ValueError(f"invalid --gpu {spec!r}: memory must be an integer number of MB")
    return Gpu(index=index, model=model, memory_mb=int(mem or 0))
