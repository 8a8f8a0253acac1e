"""``@pw.job``: a plain function that can also run as a job on any pilot, and ``pw.shell`` for commands."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pilotwave.sdk.client import Client, default_client
from pilotwave.sdk.futures import Future
from pilotwave.sdk.refs import FunctionRef, reference

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Resources:
    """Where and how a job runs; every field maps to the REST job spec."""

    cores: int = 1
    memory_mb: int = 0
    gpus: int = 0
    gpu_model: str | None = None
    gpu_memory_mb: int | None = None
    walltime_s: float | None = None
    max_attempts: int = 3
    queue: str = "default"
    labels: tuple[str, ...] = field(default=())
    priority: int = 0
    isolate: bool = False
    name: str | None = None

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cores": self.cores,
            "memory_mb": self.memory_mb,
            "gpus": self.gpus,
            "max_attempts": self.max_attempts,
            "queue": self.queue,
            "labels": list(self.labels),
            "priority": self.priority,
            "isolate": self.isolate,
        }
        for k in ("gpu_model", "gpu_memory_mb", "walltime_s"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


def check_json(value: Any, what: str) -> None:
    """Raise ``TypeError`` naming ``what`` unless ``value`` survives a strict JSON round trip."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} is not JSON-serializable ({exc}); pass numbers, strings, lists and dicts, "
            "and ship larger data as files in the sandbox"
        ) from None


class JobFunction(Generic[P, R]):
    """A function that runs locally when called and on a pilot when submitted."""

    def __init__(self, fn: Callable[P, R], resources: Resources) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.resources = resources
        self._ref: FunctionRef | None = None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<pw.job {self.fn.__module__}.{self.fn.__qualname__}>"

    @property
    def ref(self) -> FunctionRef:
        if self._ref is None:
            self._ref = reference(self.fn)
        return self._ref

    def options(self, **overrides: Any) -> JobFunction[P, R]:
        """A copy with other resources, e.g. ``train.options(gpus=1, queue="gpu").submit(...)``."""
        if "labels" in overrides:
            overrides["labels"] = tuple(overrides["labels"])
        return JobFunction(self.fn, replace(self.resources, **overrides))

    def spec(self, args: Sequence[Any], kwargs: dict[str, Any], client: Client) -> dict[str, Any]:
        ref = self.ref
        for i, a in enumerate(args):
            check_json(a, f"argument {i} of {ref}")
        for k, v in kwargs.items():
            check_json(v, f"argument {k!r} of {ref}")
        spec = {
            "kind": "python",
            "name": self.resources.name or self.fn.__qualname__,
            "key": uuid.uuid4().hex,
            "function": ref.as_json(),
            "args": list(args),
            "kwargs": kwargs,
            **self.resources.spec(),
        }
        if ref.root is not None:
            spec["sandbox"] = client.sandbox_for(ref.root)
        return spec

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Future:
        """Run on a pilot; returns a ``Future`` at once."""
        client = default_client()
        (job_id,) = client.submit([self.spec(args, kwargs, client)])
        return Future(job_id, client, self.fn.__qualname__)

    def map(self, *iterables: Iterable[Any]) -> list[Future]:
        """Submit one job per item (zipping several iterables, like ``map``) in one batch request."""
        client = default_client()
        specs = [self.spec(items, {}, client) for items in zip(*iterables, strict=False)]
        ids = client.submit(specs)
        return [Future(i, client, self.fn.__qualname__) for i in ids]


@overload
def job(fn: Callable[P, R], /) -> JobFunction[P, R]: ...
@overload
def job(
    *,
    cores: int = 1,
    memory_mb: int = 0,
    gpus: int = 0,
    gpu_model: str | None = None,
    gpu_memory_mb: int | None = None,
    walltime_s: float | None = None,
    max_attempts: int = 3,
    queue: str = "default",
    labels: Iterable[str] = (),
    priority: int = 0,
    isolate: bool = False,
    name: str | None = None,
) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...


def job(fn: Any = None, /, **options: Any) -> Any:
    """Make a function submittable as a job: ``@pw.job`` or ``@pw.job(cores=4, gpus=1, max_attempts=3)``.

    Calling the function still runs it here; ``.submit(...)`` runs it on a pilot, ``.map(xs)``
    runs one job per item.  Arguments and return values must be JSON-serializable.
    """
    if "labels" in options:
        options["labels"] = tuple(options["labels"])
    resources = Resources(**options)
    if fn is not None:
        return JobFunction(fn, resources)
    return lambda f: JobFunction(f, resources)


def shell(
    argv: Sequence[str] | str,
    *,
    env: dict[str, str] | None = None,
    sandbox: str | Path | None = None,
    client: Client | None = None,
    **resources: Any,
) -> Future:
    """Run a command on a pilot: ``pw.shell(["python", "train.py", "--lr", "0.01"], sandbox=".", cores=4)``.

    A string is run by ``/bin/sh -c``.  ``sandbox`` ships a directory; the command runs inside
    it.  The result is ``{"exit_code": 0, "stdout_tail": "..."}``; a non-zero exit fails the attempt.
    """
    if isinstance(argv, str):
        argv = ["/bin/sh", "-c", argv]
    if not argv:
        raise ValueError("pw.shell needs a command")
    if "labels" in resources:
        resources["labels"] = tuple(resources["labels"])
    res = Resources(**resources)
    client = client or default_client()
    spec = {
        "kind": "shell",
        "name": res.name or " ".join(argv)[:200],
        "key": uuid.uuid4().hex,
        "argv": list(argv),
        "env": dict(env or {}),
        **res.spec(),
    }
    if sandbox is not None:
        spec["sandbox"] = client.sandbox_for(Path(sandbox))
    (job_id,) = client.submit([spec])
    return Future(job_id, client, spec["name"])
