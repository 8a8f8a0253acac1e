"""Futures for submitted jobs, and waiting on many of them at once (long-polled, never sleep-polled)."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pilotwave.sdk.client import Client
from pilotwave.sdk.errors import JobCancelled, JobFailed

FINAL = ("succeeded", "failed", "cancelled")
FIRST_COMPLETED = "FIRST_COMPLETED"
ALL_COMPLETED = "ALL_COMPLETED"
_POLL_S = 30.0


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


def _pending_by_client(futures: Iterable[Future]) -> dict[Client, list[Future]]:
    groups: dict[Client, list[Future]] = defaultdict(list)
    for f in futures:
        if f._final is None:
            groups[f.client].append(f)
    return groups


def _wait_round(pending: Sequence[Future], timeout_s: float) -> list[Future]:
    """One long-poll per client; returns the futures that became final."""
    newly: list[Future] = []
    for client, group in _pending_by_client(pending).items():
        by_id = {f.id: f for f in group}
        done = client.wait_any(list(by_id), timeout_s)
        for job_id, final in done.items():
            fut = by_id.get(job_id)
            if fut is not None:
                fut._settle(final)
                newly.append(fut)
        if newly:
            timeout_s = 0.0  # others: just collect what is already done
    return newly


def as_completed(futures: Iterable[Future], timeout: float | None = None) -> Iterator[Future]:
    """Yield futures as their jobs finish (in finishing order); ``TimeoutError`` after ``timeout`` s."""
    futures = list(dict.fromkeys(futures))
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = []
    for f in futures:
        if f._final is not None:
            yield f
        else:
            pending.append(f)
    while pending:
        remaining = _POLL_S if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"{len(pending)} of {len(futures)} jobs not finished after {timeout} s"
            )
        newly = _wait_round(pending, min(remaining, _POLL_S))
        finished = {id(f) for f in newly}
        pending = [f for f in pending if id(f) not in finished]
        yield from newly


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
        it = as_completed(futures, timeout)
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
