"""Where a workflow function runs: on a pilot as a durable driver, or here as a local call.

On a pilot, every ``submit``, ``map``, ``result``, ``wait``, ``as_completed`` and
``done`` inside the workflow is a *command* with a sequence number.  Commands recorded
by an earlier run of the driver replay instantly from the server's log; the first
unrecorded one goes live.  Observations (which jobs were seen finished) are sent with
the next submit: until something depends on them, losing them loses nothing.

Called directly (``flow(x=1)``), a workflow runs here: jobs run in this process, one
after another, so the same code is easy to test.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pilotwave.sdk.client import Client
from pilotwave.sdk.errors import (
    ApiError,
    Conflict,
    NonDeterminismError,
    ServerUnreachable,
    Unauthorized,
)

_STREAM_S = 300.0
FLUSH_OBSERVES = 500  # send buffered observations once this many pile up

_stack: list[DriverContext | LocalContext] = []
_stack_lock = threading.Lock()


def current() -> DriverContext | LocalContext | None:
    """The workflow run this code is part of, if any."""
    return _stack[-1] if _stack else None


class _Active:
    def __init__(self, ctx: DriverContext | LocalContext) -> None:
        self.ctx = ctx

    def __enter__(self) -> None:
        with _stack_lock:
            _stack.append(self.ctx)

    def __exit__(self, *exc: object) -> None:
        with _stack_lock:
            _stack.remove(self.ctx)


def seed() -> int:
    """A stable seed for this workflow run: the same on every replay of the driver.

    >>> rng = random.Random(pw.seed())
    """
    ctx = current()
    if ctx is None:
        raise RuntimeError("pw.seed() is only available inside a @pw.workflow function")
    return ctx.seed


def progress(data: dict[str, Any]) -> None:
    """In a workflow: publish a JSON object saying how far it got (``pilotwave status``, ``--wait``).

    Outside a driver on a pilot (a local run) it does nothing.
    """
    ctx = current()
    if isinstance(ctx, DriverContext):
        ctx.progress(data)


def now() -> float:
    """The time (``time.time()``); in a workflow, read as a recorded step, so a replay sees the same.

    Use it for deadlines in workflow code: ``if pw.now() - start > budget_s: ...``.
    """
    ctx = current()
    if isinstance(ctx, DriverContext):
        return ctx.now()
    return time.time()


def fingerprint(material: Any) -> str:
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def resolve_value(value: Any) -> Any:
    """A workflow may return a future or a run: its result is the workflow's result."""
    from pilotwave.sdk.futures import Future
    from pilotwave.sdk.workflows import Run

    if isinstance(value, (Future, Run)):
        return value.result()
    return value


# -- on a pilot ------------------------------------------------------------------------


class DriverContext:
    """The durable run of a workflow's driver: commands recorded by the server, replayed on re-runs."""

    def __init__(self, client: Client, workflow_id: int, seed: int) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.seed = seed
        data = client.command_log(workflow_id)
        self.log: dict[int, dict[str, Any]] = {c["seq"]: c for c in data["commands"]}
        self.results: dict[int, dict[str, Any]] = {int(k): v for k, v in data["results"].items()}
        self.seq = 0
        self.buffer: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self.cursors: dict[int, int] = {}  # job id -> the last report id seen of it
        self.answers: dict[int, bool] = {}  # report id -> stop, not sent yet
        self.progress_due: dict[str, Any] | None = None
        self.progress_sent = 0.0

    def _recorded(self, seq: int, kind: str, call: str, fp: str) -> dict[str, Any] | None:
        rec = self.log.get(seq)
        if rec is None or rec["stale"]:
            return None
        if rec["fingerprint"] != fp or rec["kind"] != kind:
            raise NonDeterminismError(
                f"workflow {self.workflow_id} is not deterministic: step {seq} was "
                f"{rec['call']} (fingerprint {rec['fingerprint'][:12]}) when it first ran, and is "
                f"{call} (fingerprint {fp[:12]}) on replay. A workflow must make the same calls "
                "given the same results: draw random numbers from pw.seed(), and do not branch "
                "on the clock, the environment or files that change"
            )
        return dict(rec["outcome"])

    def submit(self, call: str, material: Any, payload: dict[str, Any]) -> dict[str, Any]:
        """Run a submit command (``payload`` holds ``jobs`` or ``workflow``); returns its outcome."""
        with self.lock:
            seq, self.seq = self.seq, self.seq + 1
            fp = fingerprint(material)
            rec = self._recorded(seq, "submit", call, fp)
            if rec is not None:
                return rec
            cmd = {"seq": seq, "kind": "submit", "call": call, "fingerprint": fp, **payload}
            outcomes = self.client.record_commands(self.workflow_id, [*self.buffer, cmd])
            self.buffer = []
            return outcomes[-1]

    def observe(
        self, call: str, ids: Sequence[int], mode: str, live: Callable[[], list[int]]
    ) -> list[int]:
        """Which of ``ids`` are seen final at this step: recorded, or found out by ``live()``."""
        with self.lock:
            seq, self.seq = self.seq, self.seq + 1
            fp = fingerprint({"observe": mode, "ids": sorted(ids)})
            rec = self._recorded(seq, "observe", call, fp)
            if rec is not None:
                return [int(i) for i in rec["ids"]]
            seen = live()
            self.buffer.append(
                {"seq": seq, "kind": "observe", "call": call, "fingerprint": fp, "observed": seen}
            )
            if len(self.buffer) >= FLUSH_OBSERVES:
                self.client.record_commands(self.workflow_id, self.buffer)
                self.buffer = []
            return seen

    def now(self) -> float:
        """The clock, read as a recorded step: a replay reads the same time."""
        with self.lock:
            seq, self.seq = self.seq, self.seq + 1
            fp = fingerprint({"observe": "now"})
            rec = self._recorded(seq, "observe", "pw.now()", fp)
            if rec is not None:
                return float(rec["at"])
            t = time.time()
            cmd = {"seq": seq, "kind": "observe", "call": "pw.now()", "fingerprint": fp, "at": t}
            self.buffer.append({**cmd, "observed": []})
            return t

    def observe_events(
        self, call: str, ids: Sequence[int], timeout: float | None
    ) -> tuple[list[int], list[list[Any]]]:
        """Jobs seen final and reports seen at this step (``pw.events``): recorded, or live."""
        with self.lock:
            seq, self.seq = self.seq, self.seq + 1
            fp = fingerprint({"observe": "events", "ids": sorted(ids)})
            rec = self._recorded(seq, "observe", call, fp)
            if rec is not None:
                seen, rows = [int(i) for i in rec["ids"]], rec.get("reports", [])
            else:
                seen, rows = self._next_events(ids, timeout)
                self.buffer.append(
                    {
                        "seq": seq,
                        "kind": "observe",
                        "call": call,
                        "fingerprint": fp,
                        "observed": seen,
                        "reports": rows,
                    }
                )
                if len(self.buffer) >= FLUSH_OBSERVES:
                    self.client.record_commands(self.workflow_id, self.buffer)
                    self.buffer = []
            for r in rows:
                self.cursors[r[1]] = max(self.cursors.get(r[1], 0), r[0])
            return seen, rows

    def _next_events(
        self, ids: Sequence[int], timeout: float | None
    ) -> tuple[list[int], list[list[Any]]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        after = {i: self.cursors.get(i, 0) for i in ids}
        retry, asked = 0.1, False
        while True:
            self.flush()
            remaining = _STREAM_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0 and asked:
                return [], []
            asked = True
            try:
                stream = self.client.watch_events(ids, max(0.0, min(remaining, _STREAM_S)), after)
                for done, rows in stream:
                    self.results.update(done)
                    stream.close()  # one batch is one step
                    return sorted(done), rows
            except ServerUnreachable:
                time.sleep(retry)  # the server is restarting
                retry = min(retry * 2, 5.0)

    def answer(self, report_id: int, job_id: int, stop: bool) -> None:
        """Answer a job's report; sent before the driver next waits (a replay answers again)."""
        if job_id not in self.results:  # a finished job needs no answer
            self.answers[report_id] = stop

    def progress(self, data: dict[str, Any]) -> None:
        """Publish progress for watchers, at most a few times a second (the last one always)."""
        self.progress_due = data
        if time.monotonic() - self.progress_sent > 0.25:
            self.flush()

    def flush(self) -> None:
        """Send what waits to go out before the driver blocks: answers and progress."""
        if self.answers:
            answers, self.answers = self.answers, {}
            self.client.decide(answers)
        if self.progress_due is not None:
            data, self.progress_due = self.progress_due, None
            self.client.set_progress(self.workflow_id, data)
            self.progress_sent = time.monotonic()

    def final_of(self, job_id: int) -> dict[str, Any] | None:
        return self.results.get(job_id)

    def watch(
        self, ids: Sequence[int], timeout: float | None
    ) -> Iterator[dict[int, dict[str, Any]]]:
        """Batches of jobs as they become final, until all are or ``timeout`` passes; survives restarts."""
        pending = set(ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        retry, asked = 0.1, False
        self.flush()
        while pending:
            remaining = _STREAM_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0 and asked:
                return
            asked = True  # a zero timeout still asks once for what is final already
            try:
                for batch in self.client.watch(
                    sorted(pending), max(0.0, min(remaining, _STREAM_S))
                ):
                    batch = {i: v for i, v in batch.items() if i in pending}
                    if batch:
                        self.results.update(batch)
                        pending.difference_update(batch)
                        yield batch
                    retry = 0.1
            except ServerUnreachable:
                time.sleep(retry)  # the server is restarting
                retry = min(retry * 2, 5.0)


def driver_may_retry(exc: BaseException) -> bool:
    """A driver that failed because of the infrastructure is re-run; one whose code raised is not."""
    if isinstance(exc, (ServerUnreachable, Unauthorized, Conflict)):
        return True
    if isinstance(exc, ApiError):
        return exc.status >= 500
    return False


def run_driver(fn: Callable[..., Any], kwargs: dict[str, Any], info: dict[str, Any]) -> Any:
    """Run a workflow function as the driver of workflow ``info["workflow_id"]`` (on a pilot)."""
    client = Client(info["server"], info["token"], retry_for_s=600.0)
    try:
        ctx = DriverContext(client, int(info["workflow_id"]), int(info["seed"]))
        with _Active(ctx):
            value = resolve_value(fn(**kwargs))
        ctx.flush()  # the last progress
        return value
    finally:
        client.close()


# -- here ------------------------------------------------------------------------------


class LocalContext:
    """A workflow called as a plain function: its jobs run in this process, in order."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.next_id = 0

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def call(
        self, fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Run ``fn`` now; its outcome as the server would report it (a JSON round trip included)."""
        from pilotwave.sdk.errors import JobCancelled, JobFailed

        try:
            value = resolve_value(fn(*args, **kwargs))
            return {"state": "succeeded", "result": json.loads(json.dumps(value)), "error": None}
        except (JobFailed, JobCancelled) as exc:
            return {"state": "failed", "result": None, "error": str(exc)}
        except Exception:
            return {"state": "failed", "result": None, "error": traceback.format_exc()}

    def shell(self, argv: Sequence[str], env: dict[str, str], cwd: str | None) -> dict[str, Any]:
        import os

        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        tail = proc.stdout[-4096:]
        if proc.returncode != 0:
            return {
                "state": "failed",
                "result": None,
                "error": f"exit code {proc.returncode}\n{tail}",
            }
        return {
            "state": "succeeded",
            "result": {"exit_code": 0, "stdout_tail": tail},
            "error": None,
        }


def run_locally(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Call a workflow function here, in a local context unless one is active already."""
    ctx = current()
    if ctx is not None:  # nested: part of the run already going on
        return resolve_value(fn(*args, **kwargs))
    with _Active(LocalContext()):
        return resolve_value(fn(*args, **kwargs))
