"""Late-binding matching: which queued jobs a pilot with some free resources should take.

Order: priority first; within a priority, fair share between owners (the owner using the
fewest cores goes next), then age.  Lower-priority jobs backfill resources that no
higher-priority job can use.  Pure functions: the claim transaction feeds them rows.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from pilotwave.protocol import Gpu
from pilotwave.protocol.globs import glob_search


@dataclass(frozen=True)
class Demand:
    """What one job needs from a pilot."""

    id: int
    owner_id: int
    priority: int = 0
    cores: int = 1
    memory_mb: int = 0
    gpus: int = 0
    gpu_model: str | None = None
    gpu_memory_mb: int | None = None
    labels: frozenset[str] = field(default_factory=frozenset)


@dataclass
class Capacity:
    """Free resources of a pilot, consumed as jobs are picked."""

    slots: int
    cores: int
    memory_mb: int
    gpus: list[Gpu]
    labels: frozenset[str] = field(default_factory=frozenset)

    def gpus_for(self, job: Demand) -> tuple[int, ...] | None:
        """The GPU indices this job would get, or ``None`` if its GPU request cannot be met."""
        if job.gpus == 0:
            return ()
        chosen = [
            g.index
            for g in self.gpus
            if (job.gpu_model is None or glob_search(job.gpu_model, g.model))
            and (job.gpu_memory_mb is None or g.memory_mb >= job.gpu_memory_mb)
        ]
        return tuple(chosen[: job.gpus]) if len(chosen) >= job.gpus else None

    def fit(self, job: Demand) -> tuple[int, ...] | None:
        """GPU assignment if ``job`` fits now, else ``None``."""
        if self.slots < 1 or job.cores > self.cores or job.memory_mb > self.memory_mb:
            return None
        if not job.labels <= self.labels:
            return None
        return self.gpus_for(job)

    def take(self, job: Demand, gpus: tuple[int, ...]) -> None:
        self.slots -= 1
        self.cores -= job.cores
        self.memory_mb -= job.memory_mb
        self.gpus = [g for g in self.gpus if g.index not in gpus]


def select(
    candidates: Sequence[Demand],
    capacity: Capacity,
    usage: Mapping[int, float] | None = None,
    limit: int | None = None,
) -> list[tuple[Demand, tuple[int, ...]]]:
    """Pick jobs for one pilot.

    ``candidates`` come ordered by priority (descending), then age (ascending), as the
    claim query returns them.  ``usage`` maps owner id to cores in use now (fair share).
    Returns ``(job, gpu indices)`` pairs; ``capacity`` is left holding what remains.
    """
    used: dict[int, float] = defaultdict(float, usage or {})
    picked: list[tuple[Demand, tuple[int, ...]]] = []
    budget = capacity.slots if limit is None else min(limit, capacity.slots)
    for _, group in groupby(candidates, key=lambda d: d.priority):
        by_owner: dict[int, deque[Demand]] = defaultdict(deque)
        for job in group:
            by_owner[job.owner_id].append(job)
        while by_owner and len(picked) < budget:
            # Fewest cores in use goes first; ties go to the owner with the oldest job.
            owner = min(by_owner, key=lambda o: (used[o], by_owner[o][0].id))
            fit, gpus = _first_fit(by_owner[owner], capacity)
            if fit is None or gpus is None:
                del by_owner[owner]
                continue
            capacity.take(fit, gpus)
            used[owner] += fit.cores
            picked.append((fit, gpus))
            if not by_owner[owner]:
                del by_owner[owner]
        if len(picked) >= budget or capacity.slots < 1:
            break
    return picked


def _first_fit(
    jobs: deque[Demand], capacity: Capacity
) -> tuple[Demand | None, tuple[int, ...] | None]:
    """Remove and return the oldest of ``jobs`` that fits, or ``(None, None)``."""
    for i, job in enumerate(jobs):
        gpus = capacity.fit(job)
        if gpus is not None:
            del jobs[i]
            return job, gpus
    return None, None
