"""Futures for submitted jobs, and waiting on many of them at once (long-polled, never sleep-polled)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections import defaultdict
from collections.abc import Generator, Iterable
from typing import Any

from pilotwave.sdk.client import Client
from pilotwave.sdk.errors import JobCancelled, JobFailed, ServerUnreachable

FINAL = ("succeeded", "failed", "cancelled")
FIRST_COMPLETED = "FIRST_COMPLETED"
ALL_COMPLETED = "ALL_COMPLETED"
_POLL_S = 30.0  # one long-poll for one job
_STREAM_S = 300.0  # one streamed watch of many jobs


class Future:
    """A submitted job.  ``result()`` waits for it; ``done()`` asks without waiting."""

    def __init__(self, job_id: int, client: Client, name: str = "") -> None:
        self.id = job_id
        self.client = client
        self.name = name
        self._final: dict[str, Any] | None = None

    def __repr__(self) -> str:
        state = self._final["state"] if self._final else "pending"
        return f"<Future job={self.id} {self.name} {state}>"

    def _settle(self, final: dict[str, Any]) -> None:
        if final.get("state") in FINAL:
            self._final = final

    def _refresh(self, wait_s: float = 0.0) -> dict[str, Any] | None:
        if self._final is None:
            job = self.client.job(self.id, wait_s=wait_s)
            self._settle(job)
        return self._final

    def done(self) -> bool:
        return self._refresh() is not None

    def state(self) -> str:
        if self._final:
            return str(self._final["state"])
        return str(self.client.job(self.id)["state"])

    def result(self, timeout: float | None = None) -> Any:
        """The job's return value; raises ``JobFailed``/``JobCancelled``, or ``TimeoutError`` after ``timeout`` s."""
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
        return bool(self.client.cancel([self.id]))

    def logs(self) -> str:
        return "".join(c["data"] for c in self.client.logs(self.id))


def _outcome(job_id: int, final: dict[str, Any], name: str) -> Any:
    state = final["state"]
    if state == "succeeded":
        return final.get("result")
    if state == "cancelled":
        raise JobCancelled(job_id, final.get("error"))
    raise JobFailed(job_id, final.get("error"), name)


def as_completed(
    futures: Iterable[Future], timeout: float | None = None
) -> Generator[Future, None, None]:
    """Yield futures as their jobs finish (in finishing order); ``TimeoutError`` after ``timeout`` s.

    One streaming request per client watches every pending job; the server pushes each
    job the moment it is final.
    """
    futures = list(dict.fromkeys(futures))
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
