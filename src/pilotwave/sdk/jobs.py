"""``@pw.job``: a plain function that can also run as a job on any pilot, and ``pw.shell`` for commands."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pilotwave.errors import JobCancelled, JobFailed
from pilotwave.protocol import JobOptions, Reason
from pilotwave.protocol.wire import JOB_OPTION_FIELDS, options_json
from pilotwave.sdk import driver
from pilotwave.sdk.args import encode, local_args
from pilotwave.sdk.client import Client, default_client
from pilotwave.sdk.futures import Future
from pilotwave.sdk.refs import FunctionRef, reference

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class Resources(JobOptions):
    """Where and how a job runs (``protocol.JobOptions``), and the SDK's own options."""

    name: str | None = None
    decisions: bool = False  # pw.report() in the job waits for its workflow driver's answer
    sandbox: str | None = None  # a directory to ship and run in, instead of the function's tree

    def spec(self) -> dict[str, Any]:
        """The options as a job submission carries them."""
        out = options_json(self, JOB_OPTION_FIELDS)
        if self.decisions:
            out["decisions"] = True
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

    pw_kind = "job"  # how it travels as an argument (``args.encode``)

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

    def options_json(self) -> dict[str, Any]:
        """The options, as sent when this function travels as an argument."""
        out = asdict(self.resources)
        out["labels"] = list(self.resources.labels)
        out.pop("sandbox")  # a path on this machine: the function travels with its own code
        return out

    def spec(self, args: Sequence[Any], kwargs: dict[str, Any], client: Client) -> dict[str, Any]:
        ref = self.ref
        enc = encode({"args": list(args), "kwargs": kwargs})
        for i, a in enumerate(enc.value["args"]):
            check_json(a, f"argument {i} of {ref}")
        for k, v in enc.value["kwargs"].items():
            check_json(v, f"argument {k!r} of {ref}")
        spec = {
            "kind": "python",
            "name": self.resources.name or self.fn.__qualname__,
            "key": uuid.uuid4().hex,
            "function": ref.as_json(),
            "args": enc.value["args"],
            "kwargs": enc.value["kwargs"],
            **self.resources.spec(),
        }
        own = Path(self.resources.sandbox) if self.resources.sandbox else ref.root
        root = source_root(own, enc.roots, str(ref))
        if root is not None:
            spec["sandbox"] = client.sandbox_for(root)
        return spec

    def submit(self, *args: Any, **kwargs: Any) -> Future:
        """Run on a pilot; returns a ``Future`` at once.

        Arguments may be futures (or runs), also inside lists and dicts: the job waits for
        them on the server and receives their results in their place.
        """
        return self._submit([(args, kwargs)], "submit")[0]

    def map(self, *iterables: Iterable[Any]) -> list[Future]:
        """Submit one job per item (zipping several iterables, like ``map``) in one batch request."""
        return self._submit([(items, {}) for items in zip(*iterables, strict=False)], "map")

    def _submit(self, calls: list[tuple[Sequence[Any], dict[str, Any]]], how: str) -> list[Future]:
        name = self.resources.name or self.fn.__qualname__
        ctx = driver.current()
        if isinstance(ctx, driver.LocalContext):
            return [
                _local_future(ctx, name, lambda a=a, k=k: ctx.call(self.fn, *local_args(a, k)))
                for a, k in calls
            ]
        if isinstance(ctx, driver.DriverContext):
            specs = [self.spec(a, k, ctx.client) for a, k in calls]
            for sp in specs:
                sp.pop("key")
            call = f"{name}.{how}" + (f"({len(specs)} jobs)" if how == "map" else "")
            out = ctx.submit(call, [_material(sp) for sp in specs], {"jobs": specs})
            return [Future(i, ctx.client, name, driver=ctx) for i in out["ids"]]
        client = default_client()
        ids = client.submit([self.spec(a, k, client) for a, k in calls])
        return [Future(i, client, name) for i in ids]


def _material(spec: dict[str, Any]) -> dict[str, Any]:
    """What identifies a submission for replay: everything but its key and sandbox hash."""
    return {k: v for k, v in spec.items() if k not in ("key", "sandbox")}


def _local_future(ctx: driver.LocalContext, name: str, run: Any) -> Future:
    try:
        final = run()
    except (JobFailed, JobCancelled) as exc:  # an argument was a future that failed
        final = {
            "state": "cancelled",
            "result": None,
            "error": str(exc),
            "reason": Reason.UPSTREAM_FAILED,
        }
    return Future(ctx.new_id(), None, name, final=final)


def source_root(own: Path | None, passed: set[Path], what: str) -> Path | None:
    """The source tree to ship: the function's own, or that of the functions passed to it."""
    roots = {r for r in (own, *passed) if r is not None}
    if len(roots) > 1:
        raise TypeError(
            f"{what} needs code from several source trees ({', '.join(sorted(map(str, roots)))}); "
            "put the functions you pass along in one project directory"
        )
    return roots.pop() if roots else None


@overload
def job(fn: Callable[P, R], /) -> JobFunction[P, R]: ...
@overload
def job(**options: Any) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...


def job(fn: Any = None, /, **options: Any) -> Any:
    """Make a function submittable as a job: ``@pw.job`` or ``@pw.job(cores=4, gpus=1, max_attempts=3)``.

    Calling the function still runs it here; ``.submit(...)`` runs it on a pilot, ``.map(xs)``
    runs one job per item.  Arguments and return values must be JSON-serializable.

    Options (``pilotwave.protocol.JobOptions``): ``cores``, ``memory_mb``, ``gpus``,
    ``gpu_model`` (globs such as ``"A100|H100"``), ``gpu_memory_mb``, ``walltime_s``, ``max_attempts``,
    ``queue``, ``labels``, ``priority``, ``isolate`` (a fresh process); and ``name``.
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
    ctx = driver.current()
    if isinstance(ctx, driver.LocalContext):
        cwd = str(sandbox) if sandbox is not None else None
        name = res.name or " ".join(argv)[:200]
        return _local_future(ctx, name, lambda: ctx.shell(argv, dict(env or {}), cwd))
    if isinstance(ctx, driver.DriverContext):
        client = ctx.client
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
    if isinstance(ctx, driver.DriverContext):
        spec.pop("key")
        out = ctx.submit(f"pw.shell({spec['name'][:60]})", [_material(spec)], {"jobs": [spec]})
        return Future(out["ids"][0], client, spec["name"], driver=ctx)
    (job_id,) = client.submit([spec])
    return Future(job_id, client, spec["name"])
