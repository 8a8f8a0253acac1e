"""Futures for submitted jobs and runs of workflows, and waiting on many of them at once
(long-polled, never sleep-polled)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections import defaultdict
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from pilotwave.errors import (
    JobCancelled,
    JobFailed,
    ServerUnreachable,
    WorkflowCancelled,
    WorkflowFailed,
)
from pilotwave.protocol import FINAL_JOB_STATES, Reason
from pilotwave.sdk.client import Client

if TYPE_CHECKING:
    from pilotwave.sdk.driver import DriverContext

FIRST_COMPLETED = "FIRST_COMPLETED"
ALL_COMPLETED = "ALL_COMPLETED"
_POLL_S = 30.0  # one long-poll for one job
_STREAM_S = 300.0  # one streamed watch of many jobs


class Future:
    """A submitted job.  ``result()`` waits for it; ``done()`` asks without waiting."""

    def __init__(
        self,
        job_id: int,
        client: Client | None,
        name: str = "",
        *,
        driver: DriverContext | None = None,
        final: dict[str, Any] | None = None,
    ) -> None:
        self.id = job_id
        self.client: Client = client  # type: ignore[assignment]  # None only for local futures
        self.name = name
        self._driver = driver
        self._final: dict[str, Any] | None = final
        self.local = client is None

    def _observe(self, kind: str, timeout: float | None, zero_wait: bool = False) -> None:
        """In a driver: wait for this job as a recorded command (replayed on re-runs)."""
        assert self._driver is not None
        drv = self._driver

        def live() -> list[int]:
            # Read the stream to its end (it ends once the job is final) so that the
            # connection is reused for the driver's next request.
            seen: list[int] = []
            for batch in drv.watch([self.id], 0.0 if zero_wait else timeout):
                seen += batch
            return seen

        if self.id in drv.observe(f"{kind}({self.name})", [self.id], kind, live):
            final = drv.final_of(self.id)
            assert final is not None, f"job {self.id} was observed final but has no result"
            self._final = final

    def __repr__(self) -> str:
        state = self._final["state"] if self._final else "pending"
        return f"<Future job={self.id} {self.name} {state}>"

    def _settle(self, final: dict[str, Any]) -> None:
        if final.get("state") in FINAL_JOB_STATES:
            self._final = final

    def _refresh(self, wait_s: float = 0.0) -> dict[str, Any] | None:
        if self._final is None:
            job = self.client.job(self.id, wait_s=wait_s)
            self._settle(dict(job))
        return self._final

    def done(self) -> bool:
        if self._final is None and self._driver is not None:
            self._observe("done", 0.0, zero_wait=True)
            return self._final is not None
        return self._refresh() is not None

    def state(self) -> str:
        if self._final:
            return str(self._final["state"])
        if self._driver is not None:  # recorded, so a replay sees the same answer
            return str(self._final["state"]) if self.done() and self._final else "unfinished"
        return str(self.client.job(self.id)["state"])

    def result(self, timeout: float | None = None) -> Any:
        """The job's return value; raises ``JobFailed``/``JobCancelled``, or ``TimeoutError`` after ``timeout`` s."""
        if self._final is None and self._driver is not None:
            self._observe("result", timeout)
            if self._final is None:
                raise TimeoutError(f"job {self.id} is not finished after {timeout} s")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._final is None:
            remaining = _POLL_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {self.id} is not finished after {timeout} s")
            self._refresh(wait_s=min(remaining, _POLL_S))
        return _outcome(self.id, self._final, self.name)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except (JobFailed, JobCancelled) as exc:
            return exc
        return None

    def cancel(self) -> bool:
        if self.local:
            return False
        return bool(self.client.cancel([self.id]))

    def logs(self) -> str:
        if self.local:
            return ""
        return "".join(c["data"] for c in self.client.logs(self.id))


def _outcome(job_id: int, final: dict[str, Any], name: str) -> Any:
    state = final["state"]
    error = final.get("error")
    if state == "succeeded":
        return final.get("result")
    if state == "cancelled" and final.get("reason") != Reason.UPSTREAM_FAILED:
        raise JobCancelled(job_id, error)
    raise JobFailed(job_id, error, name)  # failed, or never ran because a job it needed failed


class Run:
    """A submitted workflow: ``id``, ``status()``, ``wait()``, ``result()``, ``cancel()`` and more.

    Its ``future`` is the driver job: pass the run (or the future) to a job to have it wait
    for the workflow's result.
    """

    def __init__(self, workflow_id: int, client: Client | None, name: str, future: Future) -> None:
        self.id = workflow_id
        self.client = client
        self.name = name
        self.future = future

    def __repr__(self) -> str:
        return f"<Run workflow={self.id} {self.name}>"

    def _client(self) -> Client:
        if self.client is None:
            raise RuntimeError("this workflow ran locally; there is nothing to ask a server")
        return self.client

    def status(self) -> dict[str, Any]:
        """State, job counts over the whole tree, the jobs, and nested workflows."""
        if self.client is None:
            fin = self.future._final or {}
            return {"id": self.id, "name": self.name, "state": fin.get("state"), "counts": {}}
        return dict(self._client().workflow(self.id))

    def wait(self, timeout: float | None = None) -> str:
        """Wait until the workflow is final (or ``timeout`` s pass); returns its state."""
        try:
            self.future.exception(timeout)
        except TimeoutError:
            pass
        fin = self.future._final
        if fin is not None and fin.get("state") in FINAL_JOB_STATES:
            return str(fin["state"])
        return str(self.status()["state"])

    def result(self, timeout: float | None = None) -> Any:
        """The workflow's return value; raises ``WorkflowFailed``/``WorkflowCancelled``."""
        try:
            return self.future.result(timeout)
        except JobCancelled as exc:
            raise WorkflowCancelled(self.id, self.future.id, exc.why) from None
        except JobFailed as exc:
            raise WorkflowFailed(self.id, self.future.id, exc.error, self.name) from None

    def done(self) -> bool:
        return self.future.done()

    def cancel(self) -> int:
        return int(self._client().workflow_op(self.id, "cancel")["cancelled"])

    def suspend(self) -> dict[str, Any]:
        return self._client().workflow_op(self.id, "suspend")

    def resume(self) -> dict[str, Any]:
        return self._client().workflow_op(self.id, "resume")

    def retry(self) -> dict[str, Any]:
        """Re-run a failed or cancelled workflow from where it stopped."""
        out = self._client().workflow_op(self.id, "retry")
        self.future._final = None
        return out


def as_completed(
    futures: Iterable[Future], timeout: float | None = None
) -> Generator[Future, None, None]:
    """Yield futures as their jobs finish (in finishing order); ``TimeoutError`` after ``timeout`` s.

    One streaming request per client watches every pending job; the server pushes each
    job the moment it is final.
    """
    futures = list(dict.fromkeys(futures))
    drivers = {f._driver for f in futures if f._driver is not None}
    if drivers:
        yield from _driver_as_completed(futures, drivers.pop(), timeout)
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    pending: dict[Client, dict[int, Future]] = defaultdict(dict)
    for f in futures:
        if f._final is not None:
            yield f
        else:
            pending[f.client][f.id] = f
    for client, by_id in pending.items():  # futures of several servers: one after the other
        retry = 0.1
        while by_id:
            remaining = _STREAM_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                left = sum(len(v) for v in pending.values())
                raise TimeoutError(f"{left} of {len(futures)} jobs not finished after {timeout} s")
            try:
                for batch in client.watch(list(by_id), min(remaining, _STREAM_S)):
                    for job_id, final in sorted(batch.items()):
                        fut = by_id.pop(job_id, None)
                        if fut is not None:
                            fut._settle(final)
                            yield fut
                    retry = 0.1
            except ServerUnreachable:
                if deadline is not None and time.monotonic() + retry > deadline:
                    raise
                time.sleep(retry)  # the server is restarting: watch again what is left
                retry = min(retry * 2, 5.0)


def _driver_as_completed(
    futures: list[Future], drv: DriverContext, timeout: float | None
) -> Generator[Future, None, None]:
    """``as_completed`` inside a driver: each batch of finished jobs is one recorded step."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pending: dict[int, Future] = {}
    for f in futures:
        if f._final is not None:
            yield f
        else:
            pending[f.id] = f
    stream: Iterator[dict[int, dict[str, Any]]] | None = None

    def live() -> list[int]:
        nonlocal stream
        if stream is None:  # one watch for the whole loop, opened at the first live step
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            stream = drv.watch(list(pending), left, mode="any")
        for batch in stream:
            return sorted(i for i in batch if i in pending)
        return []

    while pending:
        seen = drv.observe(
            f"as_completed({len(pending)} jobs)", list(pending), "as_completed", live
        )
        if not seen:
            raise TimeoutError(
                f"{len(pending)} of {len(futures)} jobs not finished after {timeout} s"
            )
        for i in seen:
            fut = pending.pop(i)
            fut._final = drv.final_of(i)
            yield fut


def _driver_wait(
    futures: list[Future], drv: DriverContext, timeout: float | None, return_when: str
) -> tuple[list[Future], list[Future]]:
    done = [f for f in futures if f._final is not None]
    pending = {f.id: f for f in futures if f._final is None}
    if pending and not (return_when == FIRST_COMPLETED and done):

        def live() -> list[int]:
            seen: list[int] = []
            mode: Literal["any", "all"] = "any" if return_when == FIRST_COMPLETED else "all"
            for batch in drv.watch(list(pending), timeout, mode):
                seen += sorted(batch)
                if return_when == FIRST_COMPLETED:
                    break
            return seen

        for i in drv.observe(
            f"wait({len(pending)} jobs)", list(pending), f"wait:{return_when}", live
        ):
            fut = pending.pop(i)
            fut._final = drv.final_of(i)
            done.append(fut)
    return done, list(pending.values())


def wait(
    futures: Iterable[Future],
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
    progress: bool | None = None,
) -> tuple[list[Future], list[Future]]:
    """Wait for jobs like ``concurrent.futures.wait``: returns ``(done, not_done)``.

    ``progress`` shows a progress bar (default: on a terminal, for 10 jobs or more).
    """
    futures = list(dict.fromkeys(futures))
    drivers = {f._driver for f in futures if f._driver is not None}
    if drivers:
        return _driver_wait(futures, drivers.pop(), timeout, return_when)
    if progress is None:
        progress = sys.stderr.isatty() and len(futures) >= 10
    done: list[Future] = []
    bar = _Progress(len(futures)) if progress else None
    try:
        with contextlib.closing(as_completed(futures, timeout)) as it:
            for f in it:
                done.append(f)
                if bar:
                    bar.advance(f)
                if return_when == FIRST_COMPLETED:
                    break
    except TimeoutError:
        pass
    finally:
        if bar:
            bar.close()
    finished = {id(f) for f in done}
    return done, [f for f in futures if id(f) not in finished]


class _Progress:
    def __init__(self, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.failed = 0
        self.progress = Progress(
            TextColumn("[bold]jobs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self.task = self.progress.add_task("jobs", total=total, failed="")
        self.progress.start()

    def advance(self, f: Future) -> None:
        if f._final and f._final["state"] != "succeeded":
            self.failed += 1
        self.progress.update(
            self.task, advance=1, failed=f"[red]{self.failed} failed" if self.failed else ""
        )

    def close(self) -> None:
        self.progress.stop()
