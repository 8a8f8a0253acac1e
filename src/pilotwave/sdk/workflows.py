"""``@pw.workflow``: a plain Python function whose jobs, branches and loops run durably on the cluster."""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pilotwave.protocol import Placement
from pilotwave.protocol.wire import PLACEMENT_FIELDS, options_json
from pilotwave.sdk import driver
from pilotwave.sdk.args import encode, local_args
from pilotwave.sdk.client import Client, default_client
from pilotwave.sdk.futures import Future, Run
from pilotwave.sdk.jobs import _local_future, _material, check_json, source_root
from pilotwave.sdk.refs import FunctionRef, reference

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class WorkflowOptions(Placement):
    """Where the driver runs and how its jobs rank (``protocol.Placement``), and the workflow's own."""

    name: str | None = None
    max_attempts: int = 10  # driver re-runs after lost pilots or server trouble
    seed: int | None = None  # default: a random seed chosen at submission
    sandbox: str | None = None  # a directory to ship (the driver runs in it), not the code's tree


class WorkflowFunction(Generic[P, R]):
    """A workflow: ``flow.submit(**kwargs)`` runs it durably on the cluster, ``flow(**kwargs)`` here."""

    pw_kind = "workflow"  # how it travels as an argument (``args.encode``)

    def __init__(
        self,
        fn: Callable[P, R],
        options: WorkflowOptions,
        checker: Callable[..., None] | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.opts = options
        self.checker = checker
        self._ref: FunctionRef | None = None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the workflow in this process (its jobs too): no server needed."""
        self._check(args, kwargs)
        return driver.run_locally(self.fn, args, kwargs)

    def check(self, checker: Callable[..., None]) -> Callable[..., None]:
        """Register a function that validates the arguments before the workflow is submitted.

        It is called with every argument of the workflow by name, defaults filled in from
        the workflow's own signature, and raises (``ValueError``, ``TypeError``) on bad ones,
        so a bad call fails here, at once, instead of in the driver on a pilot.
        """
        self.checker = checker
        return checker

    def _check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.checker is None:
            return
        sig = inspect.signature(self.fn)
        bound = sig.bind(*args, **kwargs)  # a TypeError naming an unknown or missing argument
        bound.apply_defaults()
        named: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = sig.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                named[name] = value
        self.checker(**named)

    def __repr__(self) -> str:
        return f"<pw.workflow {self.fn.__module__}.{self.fn.__qualname__}>"

    @property
    def name(self) -> str:
        return self.opts.name or self.fn.__qualname__

    @property
    def ref(self) -> FunctionRef:
        if self._ref is None:
            self._ref = reference(self.fn)
        return self._ref

    def options(self, **overrides: Any) -> WorkflowFunction[P, R]:
        """A copy with other options, e.g. ``flow.options(queue="long", priority=5).submit(...)``."""
        if "labels" in overrides:
            overrides["labels"] = tuple(overrides["labels"])
        return WorkflowFunction(self.fn, replace(self.opts, **overrides), self.checker)

    def options_json(self) -> dict[str, Any]:
        out = asdict(self.opts)
        out["labels"] = list(self.opts.labels)
        out.pop("sandbox")  # a path on this machine: the function travels with its own code
        return out

    def body(self, kwargs: dict[str, Any], client: Client) -> dict[str, Any]:
        """The REST body that starts this workflow with ``kwargs``."""
        enc = encode(kwargs)
        for k, v in enc.value.items():
            check_json(v, f"argument {k!r} of workflow {self.ref}")
        body: dict[str, Any] = {
            "name": self.name,
            "key": uuid.uuid4().hex,
            "function": self.ref.as_json(),
            "kwargs": enc.value,
            "max_attempts": self.opts.max_attempts,
            **options_json(self.opts, PLACEMENT_FIELDS),
        }
        if self.opts.seed is not None:
            body["seed"] = self.opts.seed
        own = Path(self.opts.sandbox) if self.opts.sandbox else self.ref.root
        root = source_root(own, enc.roots, f"workflow {self.ref}")
        if root is not None:
            body["sandbox"] = client.sandbox_for(root)
        return body

    def submit(self, *args: Any, **kwargs: Any) -> Run:
        """Start the workflow on the cluster; returns a ``Run`` at once.

        Inside another workflow it becomes a nested workflow whose run is also a future.
        """
        if args:
            raise TypeError(f"pass the arguments of workflow {self.name} by name: submit(x=1)")
        self._check((), kwargs)
        ctx = driver.current()
        if isinstance(ctx, driver.LocalContext):
            fut = _local_future(ctx, self.name, lambda: ctx.call(self.fn, *local_args((), kwargs)))
            return Run(fut.id, None, self.name, fut)
        if isinstance(ctx, driver.DriverContext):
            body = self.body(kwargs, ctx.client)
            body.pop("key")
            material = {"workflow": _material(body)}
            out = ctx.submit(f"{self.name}.submit", material, {"workflow": body})
            (job_id,) = out["ids"]
            fut = Future(job_id, ctx.client, self.name, driver=ctx)
            return Run(int(out["workflow_id"]), ctx.client, self.name, fut)
        client = default_client()
        resp = client.submit_workflow(self.body(kwargs, client))
        fut = Future(int(resp["driver_job_id"]), client, self.name)
        return Run(int(resp["id"]), client, self.name, fut)


@overload
def workflow(fn: Callable[P, R], /) -> WorkflowFunction[P, R]: ...
@overload
def workflow(**options: Any) -> Callable[[Callable[P, R]], WorkflowFunction[P, R]]: ...


def workflow(fn: Any = None, /, **options: Any) -> Any:
    """Make a function a workflow: ``@pw.workflow`` or ``@pw.workflow(queue="long", priority=5)``.

    Options: ``name``, ``queue``, ``labels``, ``priority`` (where its driver runs and how its
    jobs rank), ``max_attempts`` (driver re-runs after lost pilots, default 10), ``seed``
    (default: drawn at submission) and ``sandbox`` (a directory to ship instead of the code's).

    Inside it, ``job.submit``/``map`` return futures and ``result``/``pw.wait``/
    ``pw.as_completed`` wait on them; ``if``, ``while`` and comprehensions do the rest.
    The function must be deterministic given its arguments and results (use ``pw.seed()``).
    """
    if "labels" in options:
        options["labels"] = tuple(options["labels"])
    opts = WorkflowOptions(**options)
    if fn is not None:
        return WorkflowFunction(fn, opts)
    return lambda f: WorkflowFunction(f, opts)
