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

import functools
import json
import os
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, Literal, TypeVar

from pilotwave.errors import (
    ApiError,
    Conflict,
    JobCancelled,
    JobFailed,
    NonDeterminismError,
    NotInWorkflow,
    ServerUnreachable,
    Unauthorized,
)
from pilotwave.protocol import Recorded, Step, Wait, decide, fingerprint
from pilotwave.protocol.wire import DriverNote, id_ranges, wait_json
from pilotwave.sdk.client import Client
from pilotwave.sdk.futures import Future, Run

_STREAM_S = 300.0
T = TypeVar("T")
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
        raise NotInWorkflow("pw.seed() is only available inside a @pw.workflow function")
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


def resolve_value(value: Any) -> Any:
    """A workflow may return a future or a run: its result is the workflow's result."""
    if isinstance(value, (Future, Run)):
        return value.result()
    return value


# -- on a pilot ------------------------------------------------------------------------


class PilotLink:
    """The pipe to the pilot that runs this driver.  Before the driver blocks on the jobs it
    observes it says so (the pilot may then park it, giving its driver slot to another
    workflow); before it goes on it asks, and the pilot answers once it holds a slot again."""

    def __init__(self, send: Callable[[dict[str, Any]], None], recv: Callable[[], Any]) -> None:
        self.send, self.recv = send, recv

    def waits(self, wait: Wait) -> None:
        self.send({"note": DriverNote.WAITS, "wait": wait_json(wait)})

    def go(self) -> None:
        self.send({"note": DriverNote.ASKS})
        reply = self.recv()
        if not (isinstance(reply, dict) and reply.get("go")):
            raise RuntimeError(f"the pilot answered {reply!r} to a driver asking to go on")


class DriverApi:
    """The calls only a workflow's driver makes, with its attempt's token (not a user's API)."""

    def __init__(self, client: Client) -> None:
        self.http = client.http

    def command_log(self, workflow_id: int) -> dict[str, Any]:
        """Its record: commands in order, and the final state of each job it observed."""
        return self.http.get(f"/api/v1/workflows/{workflow_id}/commands")

    def record(self, workflow_id: int, cmds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run and record commands in order (recorded ones replay); their outcomes."""
        body = {"commands": cmds}
        return self.http.post(f"/api/v1/workflows/{workflow_id}/commands", body)["outcomes"]

    def progress(self, workflow_id: int, progress: dict[str, Any]) -> None:
        """Publish progress, shown by ``pilotwave status`` and ``--wait``."""
        self.http.request(
            "PUT", f"/api/v1/workflows/{workflow_id}/progress", json_body={"progress": progress}
        )

    def decide(self, answers: dict[int, bool]) -> int:
        """Answer reports of its jobs: ``{report id: stop}``."""
        body = {"answers": {str(k): v for k, v in answers.items()}}
        return int(self.http.post("/api/v1/jobs/decisions", body)["answered"])

    def watch_events(
        self, ids: Sequence[int], timeout_s: float, reports_after: dict[int, int]
    ) -> Generator[tuple[dict[int, dict[str, Any]], list[list[Any]]], None, None]:
        """Like ``Client.watch``, also yielding the jobs' new intermediate reports (after each
        job's cursor)."""
        body = {
            "ranges": id_ranges(ids),
            "timeout_s": timeout_s,
            "reports_after": {str(k): v for k, v in reports_after.items()},
        }
        for line in self.http.stream_lines("POST", "/api/v1/jobs/watch", body, wait_s=timeout_s):
            if "done" in line or "reports" in line:
                done = {int(k): v for k, v in line.get("done", {}).items()}
                yield done, line.get("reports", [])


class DriverContext:
    """The durable run of a workflow's driver: commands recorded by the server, replayed on re-runs."""

    def __init__(
        self,
        client: Client,
        workflow_id: int,
        seed: int,
        link: PilotLink | None = None,
    ) -> None:
        self.client = client
        self.api = DriverApi(client)
        self.link = link
        self.workflow_id = workflow_id
        self.seed = seed
        data = self.api.command_log(workflow_id)
        self.log = {c["seq"]: Recorded.from_json(c) for c in data["commands"]}
        self.results: dict[int, dict[str, Any]] = {int(k): v for k, v in data["results"].items()}
        self.seq = 0
        self.buffer: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self.cursors: dict[int, int] = {}  # job id -> the last report id seen of it
        self.answers: dict[int, bool] = {}  # report id -> stop, not sent yet
        self.progress_due: dict[str, Any] | None = None
        self.progress_sent = 0.0

    def _recorded(self, seq: int, kind: str, call: str, fp: str) -> dict[str, Any] | None:
        """The recorded outcome when this step replays, ``None`` when it goes live."""
        rec = self.log.get(seq)
        if decide(self.workflow_id, seq, kind, call, fp, rec) is Step.REPLAY:
            assert rec is not None
            return dict(rec.outcome)
        return None  # recorded by the server (it adopts or truncates a cut record)

    def submit(self, call: str, material: Any, payload: dict[str, Any]) -> dict[str, Any]:
        """Run a submit command (``payload`` holds ``jobs`` or ``workflow``); returns its outcome."""
        with self.lock:
            seq, self.seq = self.seq, self.seq + 1
            fp = fingerprint(material)
            rec = self._recorded(seq, "submit", call, fp)
            if rec is not None:
                return rec
            cmd = {"seq": seq, "kind": "submit", "call": call, "fingerprint": fp, **payload}
            outcomes = self.api.record(self.workflow_id, [*self.buffer, cmd])
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
                self.api.record(self.workflow_id, self.buffer)
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
                    self.api.record(self.workflow_id, self.buffer)
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
                stream = self.api.watch_events(ids, max(0.0, min(remaining, _STREAM_S)), after)
                try:
                    left = None if deadline is None else deadline - time.monotonic()
                    wait = Wait(ids=id_ranges(ids), mode="any", reports=after, timeout_s=left)
                    got = self.blocking(functools.partial(next, stream, None), wait)
                finally:
                    stream.close()  # one batch is one step
                if got is not None:
                    done, rows = got
                    self.results.update(done)
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
            self.api.decide(answers)
        if self.progress_due is not None:
            data, self.progress_due = self.progress_due, None
            self.api.progress(self.workflow_id, data)
            self.progress_sent = time.monotonic()

    def final_of(self, job_id: int) -> dict[str, Any] | None:
        return self.results.get(job_id)

    def blocking(self, read: Callable[[], T], wait: Wait) -> T:
        """``read()`` (which may block on the server), with the pilot told first: it may park
        this driver while it waits; going on waits for the pilot's go-ahead."""
        if self.link is None:
            return read()
        self.link.waits(wait)
        try:
            return read()
        finally:
            self.link.go()

    def watch(
        self, ids: Sequence[int], timeout: float | None, mode: Literal["any", "all"] = "all"
    ) -> Iterator[dict[int, dict[str, Any]]]:
        """Batches of jobs as they become final, until all are or ``timeout`` passes; survives restarts.

        ``mode`` says what the consumer waits for (one batch, ``any``, or ``all`` of them):
        the pilot may park this driver on that wait.
        """
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
                stream = self.client.watch(sorted(pending), max(0.0, min(remaining, _STREAM_S)))
                try:
                    while pending:
                        if remaining > 0:
                            left = None if deadline is None else deadline - time.monotonic()
                            wait = Wait(ids=id_ranges(pending), mode=mode, timeout_s=left)
                            batch = self.blocking(functools.partial(next, stream, None), wait)
                        else:
                            batch = next(stream, None)
                        if batch is None:
                            break
                        batch = {i: v for i, v in batch.items() if i in pending}
                        if batch:
                            self.results.update(batch)
                            pending.difference_update(batch)
                            yield batch
                        retry = 0.1
                finally:
                    stream.close()
            except ServerUnreachable:
                time.sleep(retry)  # the server is restarting
                retry = min(retry * 2, 5.0)


def driver_may_retry(exc: BaseException) -> bool:
    """A driver that failed because of the infrastructure is re-run; one whose code raised is not."""
    if isinstance(exc, NonDeterminismError):  # its code, found out by the server
        return False
    if isinstance(exc, (ServerUnreachable, Unauthorized, Conflict)):
        return True
    if isinstance(exc, ApiError):
        return exc.status >= 500
    return False


def run_driver(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    info: dict[str, Any],
    link: PilotLink | None = None,
) -> Any:
    """Run a workflow function as the driver of workflow ``info["workflow_id"]`` (on a pilot)."""
    client = Client(info["server"], info["token"], retry_for_s=600.0)
    try:
        ctx = DriverContext(client, int(info["workflow_id"]), int(info["seed"]), link)
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
        try:
            value = resolve_value(fn(*args, **kwargs))
            return {"state": "succeeded", "result": json.loads(json.dumps(value)), "error": None}
        except (JobFailed, JobCancelled) as exc:
            return {"state": "failed", "result": None, "error": str(exc)}
        except Exception:
            return {"state": "failed", "result": None, "error": traceback.format_exc()}

    def shell(self, argv: Sequence[str], env: dict[str, str], cwd: str | None) -> dict[str, Any]:
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
