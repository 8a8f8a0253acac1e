"""Intermediate values: a job reports them, its workflow's driver watches them and may stop it.

In a job (a trial of an HPO study, say)::

    for epoch in range(100):
        loss = train_one_epoch()
        if pw.report(epoch, loss):      # True: the driver decided this job should stop
            raise pw.Pruned(epoch)      # or call pw.check_prune() after pw.report()

In the driver, ``pw.events(futures)`` returns the futures that finished and the reports
that arrived, as one recorded step (a replay sees the same events in the same order);
``report.decide(stop)`` answers a report.  A job submitted with ``decisions=True`` waits
in ``pw.report`` for that answer; other jobs' reports return at once.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pilotwave.errors import ApiError, Pruned, ServerUnreachable
from pilotwave.sdk.client import Client
from pilotwave.sdk.context import JobContext, current
from pilotwave.sdk.futures import FIRST_COMPLETED, Future, wait

ANSWER_WAIT_S = (
    120.0  # how long pw.report waits for the driver (a restarting server, a driver re-run)
)


class _Reporter:
    """The reporting channel of the job running in this process (one job at a time)."""

    def __init__(self) -> None:
        self.key: tuple[int, int] | None = None
        self.client: Any = None
        self.stop_step: int | None = None
        self.warned = False

    def for_job(self, ctx: JobContext) -> _Reporter:
        key = (ctx.job_id, ctx.attempt)
        if key != self.key:  # a new job in this (warm) worker: forget the last one
            if self.client is not None:
                self.client.close()
            self.key, self.stop_step, self.warned = key, None, False
            self.client = Client(ctx.server, ctx.token, retry_for_s=30.0)
        return self

    def send(self, ctx: JobContext, step: int, value: float) -> bool:
        wait_s = ANSWER_WAIT_S if ctx.decisions else 0.0
        try:
            body = {"attempt": ctx.attempt, "step": step, "value": value, "wait_s": wait_s}
            path = f"/api/v1/jobs/{ctx.job_id}/reports"  # with the attempt's own token
            out = self.client.http.post(path, body, wait_s=wait_s)
        except (ServerUnreachable, ApiError) as exc:
            if not self.warned:  # reporting is advisory: the job goes on without it
                print(f"pilotwave: could not report step {step}: {exc}", file=sys.stderr)
                self.warned = True
            return self.stop_step is not None
        if out["stop"] and self.stop_step is None:
            self.stop_step = step
        return bool(out["stop"])


_reporter = _Reporter()


def report(step: int, value: float) -> bool:
    """Report an intermediate value of this job; ``True`` when its workflow says it should stop.

    Outside a job on a pilot (a plain call, a local workflow run) nothing decides: it returns
    ``False``.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"pw.report: step must be an integer >= 0, not {step!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"pw.report: value must be a number, not {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"pw.report: value {value} at step {step} is not a finite number")
    ctx = current()
    if ctx is None or not ctx.server or not ctx.token:
        return False
    return _reporter.for_job(ctx).send(ctx, step, value)


def check_prune() -> None:
    """Raise ``Pruned`` if the workflow answered one of this job's reports with stop."""
    ctx = current()
    if ctx is None or not ctx.server or not ctx.token:
        return
    rep = _reporter.for_job(ctx)
    if rep.stop_step is not None:
        raise Pruned(rep.stop_step)


# -- in a driver -----------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """An intermediate value a job reported, as its workflow's driver sees it."""

    id: int
    future: Future
    attempt: int
    step: int
    value: float

    @property
    def job_id(self) -> int:
        return self.future.id

    def decide(self, stop: bool) -> None:
        """Answer the report: ``stop=True`` tells the job to stop (``pw.report`` returns ``True``)."""
        drv = self.future._driver
        if drv is not None:
            drv.answer(self.id, self.future.id, stop)


def events(
    futures: Iterable[Future], timeout: float | None = None
) -> tuple[list[Future], list[Report]]:
    """In a workflow: wait until some of ``futures`` finish or report; ``(finished, reports)``.

    One recorded step: a replayed driver gets the same finished futures and reports in the
    same order.  ``TimeoutError`` when nothing happens within ``timeout`` seconds.
    """
    futures = list(dict.fromkeys(futures))
    drivers = {f._driver for f in futures if f._driver is not None}
    if not drivers:
        return _local_events(futures, timeout)
    drv = drivers.pop()
    done = [f for f in futures if f._final is not None]
    pending = {f.id: f for f in futures if f._final is None}
    if done or not pending:
        return done, []
    ids, rows = drv.observe_events(f"events({len(pending)} jobs)", list(pending), timeout)
    if not ids and not rows:
        raise TimeoutError(f"no event from {len(pending)} jobs within {timeout} s")
    finished = []
    for i in ids:
        fut = pending[i]
        fut._final = drv.final_of(i)
        finished.append(fut)
    reports = [Report(r[0], pending[r[1]], r[2], r[3], r[4]) for r in rows if r[1] in pending]
    return finished, reports


def _local_events(
    futures: list[Future], timeout: float | None
) -> tuple[list[Future], list[Report]]:
    """Outside a driver there are no reports to watch: wait for the first job to finish."""
    if not futures:
        return [], []
    t0 = time.monotonic()
    done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED, progress=False)
    if not done:
        raise TimeoutError(
            f"no event from {len(futures)} jobs within {time.monotonic() - t0:.0f} s"
        )
    return done, []
