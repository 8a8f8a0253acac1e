"""The pilot agent: claim jobs that fit, run them, stream their logs, report, heartbeat, drain.

Threads, each blocking on the server or on local events rather than sleeping:

- claimer: long-polls ``claim`` while slots are free, carrying finished-attempt reports;
- reporter: sends reports at once while a claim is held open on the server;
- heartbeat: long-polls ``heartbeat``, which answers early with commands (kill, drain);
- monitor: ships new log output and enforces walltimes every half second;
- runners: one per running job (a thread pool), waiting on its process.

Reports stay in memory until the server acknowledges them, so a server restart loses
nothing: every request is retried and every report is idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

import pilotwave
from pilotwave.pilot.api import PilotApi
from pilotwave.pilot.executors import Outcome, ShellRun, Worker, WorkerPool
from pilotwave.pilot.logtail import MAX_CHUNK, LogTail
from pilotwave.pilot.resources import GpuInfo
from pilotwave.pilot.sandboxes import SandboxCache
from pilotwave.sdk.errors import ApiError, PilotwaveError, SandboxError

log = logging.getLogger("pilotwave.pilot")

MAX_RESULT_BYTES = 1024 * 1024
CLAIM_WAIT_S = 20.0
MONITOR_PERIOD_S = 0.5
PARKED_AFTER_S = 0.02  # a claim out this long is waiting on the server for work
DRIVER_ASK_S = 0.1  # a busy pilot asks for workflow drivers this often


@dataclass
class PilotConfig:
    server: str
    token: str
    queues: list[str]
    cores: int
    memory_mb: int
    slots: int
    labels: list[str] = field(default_factory=list)
    gpus: list[GpuInfo] = field(default_factory=list)
    prefetch: int = 16
    driver_slots: int = 4
    prefetch_below_s: float = 0.5
    hold_s: float = 2.0
    idle_exit_s: float | None = None
    drain_timeout_s: float = 60.0
    workdir: Path | None = None
    cache: Path | None = None
    name: str = ""


@dataclass
class Task:
    job: dict[str, Any]
    dir: Path
    state: str = "waiting"  # waiting -> running -> killing -> done
    kill_reason: str | None = None
    execution: Worker | ShellRun | None = None
    log: LogTail | None = None
    deadline: float | None = None
    claimed: float = field(default_factory=time.monotonic)
    started: float | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.job["id"], self.job["attempt"])

    @property
    def driver(self) -> bool:
        return bool(self.job["kind"] == "driver")


class _Exit(threading.Event):
    """An event that also wakes a ``select()`` on its pipe (so signals and threads both can)."""

    def __init__(self) -> None:
        super().__init__()
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self.pipe = (r, w)

    def set(self) -> None:
        super().set()
        try:
            os.write(self.pipe[1], b"\0")
        except BlockingIOError:
            pass  # a wake-up is already pending


class Pilot:
    def __init__(self, cfg: PilotConfig) -> None:
        if cfg.slots > cfg.cores:
            # Jobs take at least a core each: more slots would only claim jobs that wait here
            # for a core while another pilot could run them.
            log.warning(
                "%d slots but %d cores: at most %d jobs run at once, so slots is %d "
                "(pass --cores to offer more cores)",
                cfg.slots,
                cfg.cores,
                cfg.cores,
                cfg.cores,
            )
            cfg = replace(cfg, slots=cfg.cores)
        self.cfg = cfg
        self.api = PilotApi(cfg.server, cfg.token)
        self.workdir = cfg.workdir or Path(tempfile.mkdtemp(prefix="pilotwave-pilot-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        cache = (
            cfg.cache
            or Path(os.environ.get("PILOTWAVE_HOME", "~/.pilotwave")).expanduser()
            / "cache"
            / "sandboxes"
        )
        self.sandboxes = SandboxCache(cache, self.api.blob)
        self.pool = WorkerPool(self.workdir, max_idle=cfg.slots)
        self.runners = ThreadPoolExecutor(
            max_workers=cfg.slots + cfg.driver_slots, thread_name_prefix="runner"
        )
        self.waiting: deque[Task] = deque()  # claimed, waiting for local resources (prefetch)

        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.tasks: dict[tuple[int, int], Task] = {}
        self.reports: list[dict[str, Any]] = []
        self.claim_in_flight = False
        self.claim_parks = False  # the claim in flight cannot return before a report frees a slot
        self.queue_dry = False  # the last claim found nothing waiting and had to park
        self.drivers_asked = 0.0  # when a claim last asked for drivers
        self.claim_sent = 0.0
        self.claiming = True
        self.last_claim_seq = 0
        self.last_busy = time.monotonic()
        self.draining = False
        self.drain_deadline = 0.0
        self.stopped = threading.Event()  # background threads end
        self.exit = _Exit()  # the main thread should wind down
        self._wake_r, self._wake_w = self.exit.pipe
        self.heartbeat_interval = 10.0
        self.failure: str | None = None  # why the pilot gave up, if it did
        self.job_seconds: float | None = None  # moving average of recent jobs' run time
        self.nothing_ahead = False  # the last claim for jobs to hold found none

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> int:
        info = {
            "name": self.cfg.name or f"{socket.gethostname()}:{os.getpid()}",
            "hostname": socket.gethostname(),
            "queues": self.cfg.queues,
            "labels": self.cfg.labels,
            "cores": self.cfg.cores,
            "memory_mb": self.cfg.memory_mb,
            "gpus": [g.as_json() for g in self.cfg.gpus],
            "slots": self.cfg.slots,
            "prefetch": self.cfg.prefetch,
            "driver_slots": self.cfg.driver_slots,
            "version": pilotwave.__version__,
        }
        reg = self.api.register(info)
        self.heartbeat_interval = float(reg["heartbeat_interval_s"])
        log.info(
            "registered pilot=%s queues=%s slots=%d",
            self.api.pilot_id,
            ",".join(self.cfg.queues),
            self.cfg.slots,
        )
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            # A signal may land on any thread; Python runs handlers on the main thread, which
            # sleeps in select() on this pipe, so the C-level handler's write wakes it.
            signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        threads = [
            threading.Thread(target=self._guard(self._claim_loop), name="claimer", daemon=True),
            threading.Thread(target=self._guard(self._report_loop), name="reporter", daemon=True),
            threading.Thread(
                target=self._guard(self._heartbeat_loop), name="heartbeat", daemon=True
            ),
            threading.Thread(target=self._guard(self._monitor_loop), name="monitor", daemon=True),
        ]
        for t in threads:
            t.start()
        while not self.exit.is_set():
            select.select([self._wake_r], [], [])
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        self._shutdown()
        return 0 if self.failure is None else 2

    def _guard(self, fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception(
                    "pilot thread %s crashed; shutting down", threading.current_thread().name
                )
                self.exit.set()

        return run

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.draining:  # second signal: hand everything back now
            self.drain_deadline = 0.0
        else:
            log.info(
                "signal %s: draining (up to %gs)",
                signal.Signals(signum).name,
                self.cfg.drain_timeout_s,
            )
            self.request_drain(self.cfg.drain_timeout_s)
        with self.changed:
            self.changed.notify_all()

    def request_drain(self, timeout_s: float) -> None:
        self.draining = True
        self.drain_deadline = time.monotonic() + timeout_s
        self.exit.set()

    def _shutdown(self) -> None:
        with self.changed:
            self.claiming = False
            self.changed.notify_all()
        with self.lock:
            never_started = [t.key for t in self.waiting]
        for job_id, attempt in never_started:
            self.kill(job_id, attempt, "drain")
        if self.draining:
            try:
                self._beat_once(wait_s=0)  # the server stops handing us work at once
            except PilotwaveError as exc:
                log.warning("could not tell the server we are draining: %s", exc)
            with self.changed:
                while self._running() and time.monotonic() < self.drain_deadline:
                    self.changed.wait(max(0.0, min(1.0, self.drain_deadline - time.monotonic())))
                leftovers = [t for t in self.tasks.values() if t.state == "running"]
            for t in leftovers:
                self.kill(t.job["id"], t.job["attempt"], "drain")
        else:
            for t in list(self.tasks.values()):
                self.kill(t.job["id"], t.job["attempt"], "drain")
        self.runners.shutdown(wait=True)
        deadline = time.monotonic() + 30
        with self.changed:
            self.changed.notify_all()
            while self.tasks and time.monotonic() < deadline:
                self.changed.wait(0.5)
        self.stopped.set()
        with self.changed:
            self.changed.notify_all()
        try:
            self.api.exit()
        except PilotwaveError as exc:
            log.warning("could not deregister: %s", exc)
        self.pool.shutdown()
        self.api.close()
        if self.cfg.workdir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("pilot %s exited", self.api.pilot_id)

    def _running(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state != "done")

    def _running_drivers(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state != "done" and t.driver)

    # -- claiming --------------------------------------------------------------------

    def _claim_loop(self) -> None:
        backoff = 0.2
        while True:
            with self.changed:
                while True:
                    if self.stopped.is_set() or not self.claiming:
                        return  # the reporter sends what is left
                    drivers = self._running_drivers()
                    idle_slots = self.cfg.slots - (self._running() - drivers)
                    idle_drivers = self.cfg.driver_slots - drivers
                    free = idle_slots + self._ahead()
                    # Wait on the server only for a slot that is idle; jobs to hold ahead are
                    # taken only if there are some now (a parked claim could wake much later,
                    # when holding a job no longer pays).
                    hold_ahead = free > 0 and not self.nothing_ahead
                    # With every job slot busy, wait on the server for drivers only once a job
                    # runs long: while jobs are short, the next claim comes within moments and
                    # asks for drivers too (a parked claim would cost each job a separate report).
                    park_for_drivers = idle_drivers > 0 and self._running_long()
                    if self.reports or idle_slots > 0 or park_for_drivers or hold_ahead:
                        break
                    self.changed.wait()
                reports, self.reports = self.reports, []
                if self._running():
                    self.last_busy = time.monotonic()
                idle_for = time.monotonic() - self.last_busy
                prefetch = True
                if idle_slots > 0:
                    wait = CLAIM_WAIT_S
                elif hold_ahead or not park_for_drivers:
                    wait = 0.0
                else:
                    # Parked for drivers only: compute jobs only for slots the server sees free
                    # when it wakes this claim (a finished job's report frees one).
                    wait, free, prefetch = CLAIM_WAIT_S, self.cfg.slots, False
                self.claim_parks = wait > 0 and idle_slots <= 0
                self.claim_in_flight = wait > 0  # it may be parked on the server
                self.claim_sent = time.monotonic()
            if self.cfg.idle_exit_s is not None and wait > 0:
                left = self.cfg.idle_exit_s - idle_for
                if left <= 0 and not reports:
                    with self.changed:
                        self.claim_in_flight = self.claim_parks = False
                        idle = not self._running()
                    if idle:
                        log.info("idle for %gs: exiting", self.cfg.idle_exit_s)
                        self.exit.set()
                        return
                wait = max(0.0, min(wait, left))
            try:
                # Asking for drivers costs the server a query: a claim that will wait asks
                # always, a busy pilot's quick claims at most every DRIVER_ASK_S.
                ask = max(0, idle_drivers)
                if wait <= 0 and time.monotonic() - self.drivers_asked < DRIVER_ASK_S:
                    ask = 0
                elif ask:
                    self.drivers_asked = time.monotonic()
                resp = self.api.claim(free, wait, reports, ask, prefetch)
            except PilotwaveError as exc:
                with self.changed:
                    self.reports = reports + self.reports
                    self.claim_in_flight = self.claim_parks = False
                log.warning("claim failed (%s); retrying in %.1fs", exc, backoff)
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self._acked(reports, resp["acks"])
            with self.changed:
                self.claim_in_flight = self.claim_parks = False
                self.nothing_ahead = not resp["jobs"] and idle_slots <= 0
                # Work arrives one job at a time (a chain, a driver's loop): the next claim
                # will wait on the server, so reports must not wait for it.
                self.queue_dry = bool(resp.get("parked")) or (wait > 0 and not resp["jobs"])
                drivers_now = []
                for job in resp["jobs"]:
                    task = Task(job, self.workdir / "jobs" / f"{job['id']}-{job['attempt']}")
                    self.tasks[task.key] = task
                    if task.driver:  # drivers have their own slots: they start at once
                        task.state, task.started = "running", time.monotonic()
                        drivers_now.append(task)
                    else:
                        self.waiting.append(task)
                    self.last_claim_seq = max(self.last_claim_seq, int(job["claim_seq"]))
                if resp["jobs"]:
                    self.last_busy = time.monotonic()
            for task in drivers_now:
                self.runners.submit(self._run_task, task)
            if not self.claiming:
                for job in resp["jobs"]:
                    self.kill(job["id"], job["attempt"], "drain")
            self._dispatch()

    def _ahead(self) -> int:
        """How many jobs to hold beyond free slots now (call with the lock held).

        Prefetch pays off only for short jobs, where a claim round trip is a large part of
        a job's life; with long ones a held job would wait while another pilot idles.  So
        hold jobs only while recent jobs were short and nothing running has become long.
        """
        limit = self.cfg.prefetch_below_s
        if not self.cfg.prefetch or self.job_seconds is None or self.job_seconds > limit:
            return 0
        now = time.monotonic()
        if any(
            t.started is not None and now - t.started > limit
            for t in self.tasks.values()
            if t.state == "running" and not t.driver
        ):
            return 0
        return self.cfg.prefetch

    def _running_long(self) -> bool:
        """Whether a job in a job slot has run longer than a short job (call with the lock held)."""
        now = time.monotonic()
        return any(
            t.started is not None and now - t.started > self.cfg.prefetch_below_s
            for t in self.tasks.values()
            if t.state == "running" and not t.driver
        )

    def _dispatch(self) -> None:
        """Start waiting tasks, in claim order, while this machine has room for them."""
        with self.lock:
            running = [
                t for t in self.tasks.values() if t.state in ("running", "killing") and not t.driver
            ]
            cores = self.cfg.cores - sum(t.job["cores"] for t in running)
            memory = self.cfg.memory_mb - sum(t.job["memory_mb"] for t in running)
            slots = self.cfg.slots - len(running)
            start = []
            while self.waiting and slots > 0:
                task = self.waiting[0]
                too_big = task.job["cores"] > cores or task.job["memory_mb"] > memory
                if too_big and running:
                    break  # it gets the machine when what runs now is done
                self.waiting.popleft()
                task.state = "running"
                task.started = time.monotonic()
                if task.job.get("walltime_s"):
                    task.deadline = time.monotonic() + float(task.job["walltime_s"])
                running.append(task)
                slots -= 1
                cores -= task.job["cores"]
                memory -= task.job["memory_mb"]
                start.append(task)
        for task in start:
            self.runners.submit(self._run_task, task)

    def _acked(self, reports: list[dict[str, Any]], acks: list[str]) -> None:
        for rep, ack in zip(reports, acks, strict=False):
            if ack in ("stale", "unknown"):
                log.warning(
                    "server refused report job=%s attempt=%s ack=%s",
                    rep["job_id"],
                    rep["attempt"],
                    ack,
                )
        with self.changed:
            for rep in reports:
                self.tasks.pop((rep["job_id"], rep["attempt"]), None)
            self.changed.notify_all()

    def _report_loop(self) -> None:
        """Send reports while the claimer is parked in a long-poll (or has stopped).

        A claim that finds work returns within milliseconds and the next one carries the
        reports, so the reporter only steps in once a claim has been out for a while.
        """
        backoff = 0.2
        while True:
            with self.changed:
                while True:
                    if self.stopped.is_set() and not self.reports:
                        return
                    if self.reports and (not self.claiming or self.claim_parks or self.queue_dry):
                        break  # no claim will carry them soon
                    if self.reports and self.claim_in_flight:
                        parked_in = self.claim_sent + PARKED_AFTER_S - time.monotonic()
                        if parked_in <= 0:
                            break
                        self.changed.wait(parked_in)
                        continue
                    self.changed.wait()
                reports, self.reports = self.reports, []
            try:
                acks = self.api.report(reports)
            except PilotwaveError as exc:
                with self.changed:
                    self.reports = reports + self.reports
                log.warning("report failed (%s); retrying in %.1fs", exc, backoff)
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self._acked(reports, acks)

    # -- heartbeats and commands -----------------------------------------------------

    def _beat_once(self, wait_s: float) -> None:
        with self.lock:
            known = [
                {
                    "job_id": t.job["id"],
                    "attempt": t.job["attempt"],
                    "killing": t.state not in ("waiting", "running"),
                }
                for t in self.tasks.values()
            ]
            seq = self.last_claim_seq
        resp = self.api.heartbeat(known, seq, self.draining, wait_s)
        for k in resp["kill"]:
            log.info("kill job=%s attempt=%s reason=%s", k["job_id"], k["attempt"], k["reason"])
            self.kill(k["job_id"], k["attempt"], k["reason"])
        if resp["drain"] and not self.draining:
            log.info("the server asked this pilot to drain")
            self.request_drain(self.cfg.drain_timeout_s)

    def _heartbeat_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                self._beat_once(self.heartbeat_interval)
            except ApiError as exc:
                if exc.status in (401, 403, 404):
                    why = {
                        401: "its token was revoked",
                        403: "its token may no longer act for it",
                        404: "the server no longer knows this pilot",
                    }[exc.status]
                    log.error("giving up: %s (%s)", why, exc.detail)
                    self.failure = why
                    self.exit.set()
                    return
                log.warning("heartbeat refused: %s", exc)
                self.stopped.wait(1.0)
            except PilotwaveError as exc:
                log.warning("heartbeat failed: %s", exc)
                self.stopped.wait(1.0)

    def kill(self, job_id: int, attempt: int, reason: str) -> None:
        with self.changed:
            task = self.tasks.get((job_id, attempt))
            if task is None or task.state not in ("waiting", "running"):
                return
            if task.state == "waiting":  # never started: hand it back at once
                self.waiting.remove(task)
                task.state = "done"
                task.kill_reason = reason
                self.reports.append(
                    {
                        "job_id": job_id,
                        "attempt": attempt,
                        "outcome": "killed",
                        "error": f"killed: {reason}",
                    }
                )
                self.changed.notify_all()
                return
            task.state = "killing"
            task.kill_reason = reason
            execution = task.execution
        if execution is not None:
            execution.kill()

    # -- monitoring: live logs and walltimes -------------------------------------------

    def _monitor_loop(self) -> None:
        while not self.stopped.wait(MONITOR_PERIOD_S):
            now = time.monotonic()
            with self.changed:
                running = [t for t in self.tasks.values() if t.state == "running"]
                if running:
                    self.changed.notify_all()  # a job may have become long: claim drivers
            for t in running:
                if t.deadline is not None and now > t.deadline:
                    log.info("walltime exceeded job=%s", t.job["id"])
                    self.kill(t.job["id"], t.job["attempt"], "walltime")
            with self.lock:
                held_too_long = [t.key for t in self.waiting if now - t.claimed > self.cfg.hold_s]
            for job_id, attempt in held_too_long:  # another pilot may be idle: give it back
                log.info("handing back job=%s: held for %gs", job_id, self.cfg.hold_s)
                self.kill(job_id, attempt, "held too long on a busy pilot")
            self._ship_logs([t for t in running if t.log is not None])

    def _ship_logs(self, tasks: list[Task]) -> None:
        locked, chunks = [], []
        try:
            for t in tasks:
                assert t.log is not None
                if not t.log.lock.acquire(blocking=False):
                    continue  # the runner is reading its final chunk
                locked.append(t.log)
                chunk = t.log.read()
                if chunk:
                    chunks.append(chunk)
            if chunks:
                try:
                    self.api.logs(chunks)
                except PilotwaveError as exc:
                    log.warning("could not ship logs (will resend): %s", exc)
                    by_key = {(lt.job_id, lt.attempt): lt for lt in locked}
                    for c in chunks:
                        by_key[(c["job_id"], c["attempt"])].rewind(c)
        finally:
            for lt in locked:
                lt.lock.release()

    # -- running one job ---------------------------------------------------------------

    def _run_task(self, task: Task) -> None:
        job = task.job
        try:
            task.dir.mkdir(parents=True, exist_ok=True)
            outcome = self._execute(task)
        except SandboxError as exc:
            outcome = Outcome(False, error=str(exc), retryable=False)
        except Exception:
            outcome = Outcome(
                False, error="pilot error while running the job:\n" + traceback.format_exc()
            )
        report = self._report_for(task, outcome)
        with self.changed:
            task.state = "done"
            self.nothing_ahead = False
            self.reports.append(report)
            if task.started is not None and task.kill_reason is None and not task.driver:
                took = time.monotonic() - task.started
                self.job_seconds = (
                    took if self.job_seconds is None else 0.8 * self.job_seconds + 0.2 * took
                )
            self.changed.notify_all()
        self._dispatch()
        shutil.rmtree(task.dir, ignore_errors=True)
        log.debug("job=%s attempt=%s outcome=%s", job["id"], job["attempt"], report["outcome"])

    def _execute(self, task: Task) -> Outcome:
        job = task.job
        spec = orjson.loads(job["spec"])
        box = self.sandboxes.get(job["sandbox"]) if job.get("sandbox") else None
        outputs = task.dir / "outputs"
        outputs.mkdir()
        env = dict(os.environ)
        env.update(
            CUDA_VISIBLE_DEVICES=",".join(str(g) for g in job["gpus"]),
            PILOTWAVE_JOB_ID=str(job["id"]),
            PILOTWAVE_ATTEMPT=str(job["attempt"]),
            PILOTWAVE_OUTPUTS=str(outputs),
            PILOTWAVE_CORES=str(job["cores"]),
            PILOTWAVE_SERVER=self.cfg.server,
            PILOTWAVE_JOB_TOKEN=job.get("token") or "",
            PILOTWAVE_DECISIONS="1" if spec.get("decisions") else "0",
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", str(job["cores"])),
        )
        if job["kind"] == "shell":
            env.update(spec.get("env") or {})
            env["PYTHONUNBUFFERED"] = "1"
            run = ShellRun(spec["argv"], box or task.dir, env, task.dir / "output.log")
            with self.lock:
                task.execution = run
                task.log = LogTail(job["id"], job["attempt"], run.log_path, 0)
                if task.kill_reason:
                    run.kill()
            return run.wait()
        if box is not None:
            env["PILOTWAVE_SANDBOX_SHA"] = job["sandbox"]
        key = (job["kind"], str(box), tuple(job["gpus"]))
        # A driver gets a fresh process: module state left by another run must not make a
        # replay take a different path.
        fresh = bool(job["isolate"]) or task.driver
        worker = self.pool.acquire(key, box, env, fresh=fresh)
        with self.lock:
            task.execution = worker
            task.log = LogTail(job["id"], job["attempt"], worker.log_path, worker.log_size())
            killed_early = task.kill_reason is not None
        if killed_early:
            self.pool.release(worker, reusable=not fresh)
            return Outcome(False, error="killed before it started", killed=True)
        msg = {
            "job_id": job["id"],
            "attempt": job["attempt"],
            "function": spec["function"],
            "args": spec["args"],
            "kwargs": spec["kwargs"],
            "outputs": str(outputs),
            "max_result_bytes": MAX_RESULT_BYTES,
            "decode": "$pw_function" in job["spec"],
            "server": self.cfg.server,
            "token": job.get("token"),
            "decisions": bool(spec.get("decisions")),
        }
        if job["kind"] == "driver":
            msg["driver"] = {
                "workflow_id": spec["workflow_id"],
                "seed": spec["seed"],
                "server": self.cfg.server,
                "token": job["token"],
            }
        outcome = worker.run(msg)
        self.pool.release(
            worker, reusable=not fresh and task.kill_reason is None and not outcome.killed
        )
        return outcome

    def _report_for(self, task: Task, outcome: Outcome) -> dict[str, Any]:
        job = task.job
        report: dict[str, Any] = {
            "job_id": job["id"],
            "attempt": job["attempt"],
            "exit_code": outcome.exit_code,
            "cpu_s": outcome.cpu_s,
            "max_rss_mb": outcome.max_rss_mb,
        }
        tail = self._final_log(task, report)
        reason = task.kill_reason
        if reason == "walltime":
            report.update(
                outcome="failed",
                retryable=True,
                error=f"WalltimeExceeded: the job ran past its walltime of {job['walltime_s']:g}s and was killed",
            )
        elif reason is not None:
            report.update(outcome="killed", error=f"killed: {reason}")
        elif outcome.ok:
            result = outcome.result
            if job["kind"] == "shell":
                result = orjson.dumps(
                    {"exit_code": outcome.exit_code, "stdout_tail": tail}
                ).decode()
            report.update(outcome="succeeded", result=result)
        else:
            report.update(outcome="failed", error=outcome.error, retryable=outcome.retryable)
        if reason not in ("stale", "drain"):
            report["artifacts"] = self._upload_outputs(task)
        return report

    def _final_log(self, task: Task, report: dict[str, Any]) -> str:
        """Attach the rest of the job's output to its report (earlier output was shipped live)."""
        if task.log is None:
            return ""
        with task.log.lock:
            rest = task.log.read(final=True, limit=None)
            if rest is not None:
                data, pos = rest["data"], rest["pos"]
                while len(data) > MAX_CHUNK:  # a burst too big for one report: ship it ahead
                    piece, data = data[:MAX_CHUNK], data[MAX_CHUNK:]
                    nbytes = len(piece.encode())
                    try:
                        self.api.logs([{**rest, "pos": pos, "data": piece, "nbytes": nbytes}])
                    except PilotwaveError as exc:
                        log.warning("could not ship logs: %s", exc)
                    pos += nbytes
                report["log"] = {**rest, "pos": pos, "data": data, "nbytes": len(data.encode())}
            return task.log.tail

    def _upload_outputs(self, task: Task) -> list[dict[str, Any]]:
        outputs = task.dir / "outputs"
        found: list[dict[str, Any]] = []
        if not outputs.is_dir():
            return found
        for path in sorted(p for p in outputs.rglob("*") if p.is_file() and not p.is_symlink()):
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            try:
                self.api.upload(sha, data)
            except ApiError as exc:
                log.warning("artifact %s not uploaded: %s", path.name, exc)
                continue
            found.append(
                {"name": path.relative_to(outputs).as_posix(), "sha256": sha, "size": len(data)}
            )
        return found
