"""The pilot agent: the threads and processes that carry out what ``PilotCore`` decides.

Every decision (what to claim, when to report, what to start, kill, hand back or evict,
when to exit) is the core's; this shell only performs its instructions and feeds back what
happened.  Threads, each blocking on the server or on local events rather than sleeping:

- claimer: sends the core's claims (long-polled, carrying finished-attempt reports);
- reporter: sends reports the core wants out before the next claim;
- heartbeat: long-polls ``heartbeat``, which answers early with commands (kill, drain);
- clock: ticks the core at its deadlines, and ships new log output every half second;
- runners: one per running job (a thread pool), waiting on its process.

Reports stay in the core until the server acknowledges them, so a server restart loses
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
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

import pilotwave
from pilotwave.errors import ApiError, PilotwaveError, SandboxError
from pilotwave.pilot import core, workdirs
from pilotwave.pilot.api import PilotApi
from pilotwave.pilot.core import CoreConfig, PilotCore
from pilotwave.pilot.environment import PER_JOB, passed
from pilotwave.pilot.executors import Outcome, ShellRun, Worker, WorkerPool
from pilotwave.pilot.isolation import DEFAULT_UID_BASE, isolator
from pilotwave.pilot.logtail import LogTail
from pilotwave.pilot.sandboxes import DEFAULT_CACHE_BYTES, SandboxCache
from pilotwave.protocol import (
    FUNCTION,
    Ack,
    ArtifactRef,
    AttemptReport,
    Claimed,
    ClaimRequest,
    Gpu,
    Heartbeat,
    Isolation,
    Known,
    Limits,
    LogChunk,
    ParkRequest,
    PilotInfo,
    UnparkRequest,
    Wait,
)
from pilotwave.protocol.limits import LOG_CHUNK_BYTES
from pilotwave.protocol.wire import DriverNote, check_artifact_name, wait_of
from pilotwave.sdk import config

log = logging.getLogger("pilotwave.pilot")

LOG_PERIOD_S = 0.5


@dataclass(frozen=True, kw_only=True)
class PilotConfig(CoreConfig):
    """The core's configuration, and where the pilot connects and works."""

    server: str
    token: str
    queues: list[str]
    labels: list[str] = field(default_factory=list)
    gpus: list[Gpu] = field(default_factory=list)
    workdir: Path | None = None
    cache: Path | None = None
    name: str = ""
    pass_env: list[str] = field(default_factory=list)
    """Globs of the pilot's own variables that jobs also get (``environment.PASSED`` always)."""
    sandbox_cache_bytes: int = DEFAULT_CACHE_BYTES
    isolation: Isolation = Isolation.NONE
    uid_base: int = DEFAULT_UID_BASE
    run_as: int | None = None
    """``user`` isolation: every job as this uid instead of one per owner."""
    ca_bundle: Path | None = None
    """Certificates the server's must chain to, for the pilot and its jobs (``https``)."""
    container_image: str | None = None
    """``container`` isolation: the image jobs run in (default: the host's own system)."""


def _brief(obj: Any) -> str:
    """An event or instruction for the debug log, without bulky payloads."""
    text = repr(obj)
    return text if len(text) < 300 else text[:300] + "..."


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
        self.api = PilotApi(cfg.server, cfg.token, str(cfg.ca_bundle) if cfg.ca_bundle else None)
        if cfg.workdir is None:
            self.workdir, self._workdir_lock = workdirs.make()
        else:
            self.workdir = cfg.workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.isolator = isolator(
            cfg.isolation, self.workdir, cfg.uid_base, cfg.run_as, cfg.container_image
        )
        self.ca_bundle = None  # a copy every job may read
        if cfg.ca_bundle is not None:
            self.ca_bundle = self.workdir / "ca-bundle.pem"
            shutil.copyfile(cfg.ca_bundle, self.ca_bundle)
            self.ca_bundle.chmod(0o644)
        if cfg.isolation is not Isolation.NONE:
            cache = self.workdir / "sandboxes"  # jobs of other users reach it; the home not
        else:
            cache = cfg.cache or config.home() / "cache" / "sandboxes"
        self.pool = WorkerPool(self.workdir, max_idle=cfg.slots)
        self.sandboxes = SandboxCache(
            cache,
            self.api.blob,
            max_bytes=cfg.sandbox_cache_bytes,
            on_evict=self.pool.forget,
            share=self.isolator.share,
            # Read-only modes hold unless jobs run as root: then check before each job.
            verify=cfg.isolation is Isolation.NONE and os.geteuid() == 0,
        )
        # Of the pilot's environment, what jobs may see (``environment``), worked out once.
        self.job_env = passed(os.environ, cfg.pass_env)
        if cfg.isolation is not Isolation.NONE:
            self.sandboxes.dir.chmod(0o711)
            cache.chmod(0o711)
        self.runners = ThreadPoolExecutor(
            max_workers=cfg.slots + cfg.driver_slots + cfg.warm_drivers + 4,
            thread_name_prefix="runner",
        )
        # Parking and unparking drivers on the server (an unpark may wait for a free slot).
        self.driver_ops = ThreadPoolExecutor(
            max_workers=cfg.driver_slots + cfg.warm_drivers + 2, thread_name_prefix="drivers"
        )
        self.core = PilotCore(
            cfg,
            now=time.monotonic(),
        )
        self.lock = threading.Lock()
        self.claim_ready = threading.Condition(self.lock)  # the claimer's box was filled
        self.report_ready = threading.Condition(self.lock)  # the reporter's box was filled
        self.clock = threading.Condition(self.lock)  # an earlier deadline for the clock
        self.clock_at = 0.0  # when the clock thread wakes next
        self.claim_box: ClaimRequest | None = None  # the claimer's next request
        self.report_box: list[AttemptReport] | None = None  # the reporter's next batch
        self.executions: dict[tuple[int, int], Worker | ShellRun] = {}
        self.tails: dict[tuple[int, int], LogTail] = {}
        self.stopped = threading.Event()  # background threads end
        self.exit = _Exit()  # the main thread should wind down
        self._wake_r, self._wake_w = self.exit.pipe
        self.heartbeat_interval = 10.0
        self.limits = Limits()
        self.failure: str | None = None  # why the pilot gave up, if it did

    # -- the core --------------------------------------------------------------------

    def feed(self, event: core.Event) -> None:
        """Hand ``event`` to the core and carry out what it decides."""
        kills: list[core.Kill] = []
        go: list[tuple[int, int]] = []
        with self.lock:
            was_draining = self.core.draining
            instructions = self.core.handle(event)
            if log.isEnabledFor(logging.DEBUG) and not isinstance(event, core.Tick):
                log.debug("event %s -> %s", _brief(event), [_brief(i) for i in instructions])
            for ins in instructions:
                if isinstance(ins, core.Claim):
                    self.claim_box = ins.request
                    self.claim_ready.notify()
                elif isinstance(ins, core.SendReports):
                    self.report_box = ins.reports
                    self.report_ready.notify()
                elif isinstance(ins, core.Start):
                    self.runners.submit(self._run, ins.job)
                elif isinstance(ins, core.Kill):
                    kills.append(ins)
                elif isinstance(ins, core.Park):
                    self.driver_ops.submit(self._park, ins.key, ins.wait)
                elif isinstance(ins, core.Unpark):
                    self.driver_ops.submit(self._unpark, ins.key)
                elif isinstance(ins, core.LetGo):
                    go.append(ins.key)
                elif isinstance(ins, core.TellParkable):
                    self.driver_ops.submit(self._tell_parkable, ins.parkable)
                elif isinstance(ins, core.Exit):
                    self.failure = ins.failure
                    self.exit.set()
            if self.clock_at > 0:  # the clock sleeps: wake it if something is due earlier
                wake = self.core.wake_at()
                if wake is not None and wake < self.clock_at:
                    self.clock.notify()
            tell = self.core.draining and not was_draining
        if tell:  # the server stops handing us work at once, and our claim in flight returns
            threading.Thread(target=self._tell_draining, name="drain", daemon=True).start()
        for key in go:
            execution = self.executions.get(key)
            if isinstance(execution, Worker):
                execution.send({"go": True})
        for k in kills:
            log.info("stopping job=%s attempt=%s: %s", k.key[0], k.key[1], k.reason)
            execution = self.executions.get(k.key)
            if execution is not None:  # not started yet: the runner sees the kill reason
                execution.kill()

    def now(self) -> float:
        return time.monotonic()

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> int:
        self.isolator.probe()
        info = PilotInfo(
            name=self.cfg.name or f"{socket.gethostname()}:{os.getpid()}",
            hostname=socket.gethostname(),
            queues=tuple(self.cfg.queues),
            labels=tuple(self.cfg.labels),
            cores=self.cfg.cores,
            memory_mb=self.cfg.memory_mb,
            gpus=tuple(self.cfg.gpus),
            slots=self.cfg.slots,
            prefetch=self.cfg.prefetch,
            driver_slots=self.cfg.driver_slots,
            version=pilotwave.__version__,
            isolation=self.cfg.isolation,
        )
        reg = self.api.register(info)
        self.heartbeat_interval = reg.heartbeat_interval_s
        self.limits = reg.limits
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
            threading.Thread(target=self._guard(self._clock_loop), name="clock", daemon=True),
        ]
        self.feed(core.Tick(self.now()))  # the first claim
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
                self.feed(core.StopNow(self.now(), "a pilot thread crashed"))

        return run

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.core.draining:  # second signal: hand everything back now
            log.info("signal %s again: handing everything back", signal.Signals(signum).name)
            self.feed(core.StopNow(self.now()))
        else:
            log.info(
                "signal %s: draining (up to %gs)",
                signal.Signals(signum).name,
                self.cfg.drain_timeout_s,
            )
            self.feed(core.DrainRequested(self.now()))

    def _shutdown(self) -> None:
        self.stopped.set()
        with self.lock:
            self.claim_ready.notify_all()
            self.report_ready.notify_all()
            self.clock.notify_all()
        self.runners.shutdown(wait=True)
        self.driver_ops.shutdown(wait=False, cancel_futures=True)
        try:
            self.api.exit()
        except PilotwaveError as exc:
            log.warning("could not deregister: %s", exc)
        self.pool.shutdown()
        self.sandboxes.close()
        self.api.close()
        if self.cfg.workdir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("pilot %s exited", self.api.pilot_id)

    # -- claims and reports ----------------------------------------------------------

    def _claim_loop(self) -> None:
        while True:
            with self.lock:
                while self.claim_box is None:
                    if self.stopped.is_set():
                        return
                    self.claim_ready.wait()
                request, self.claim_box = self.claim_box, None
            try:
                answer = self.api.claim(request)
            except PilotwaveError as exc:
                log.warning("claim failed (%s); retrying", exc)
                self.feed(core.ClaimFailed(self.now()))
                continue
            self._log_refused(request.reports, answer.acks)
            self.feed(
                core.ClaimAnswered(
                    self.now(), answer.jobs, answer.acks, answer.parked, answer.drivers_queued
                )
            )

    def _report_loop(self) -> None:
        while True:
            with self.lock:
                while self.report_box is None:
                    if self.stopped.is_set():
                        return
                    self.report_ready.wait()
                reports, self.report_box = self.report_box, None
            try:
                acks = self.api.report(reports)
            except PilotwaveError as exc:
                log.warning("report failed (%s); retrying", exc)
                self.feed(core.ReportsFailed(self.now()))
                continue
            self._log_refused(reports, acks)
            self.feed(core.ReportsAnswered(self.now(), acks))

    @staticmethod
    def _log_refused(reports: list[AttemptReport], acks: list[Ack]) -> None:
        for rep, ack in zip(reports, acks, strict=False):
            if ack in (Ack.STALE, Ack.UNKNOWN):
                log.warning(
                    "server refused report job=%s attempt=%s ack=%s", rep.job_id, rep.attempt, ack
                )

    # -- heartbeats and the clock ----------------------------------------------------

    def _beat_once(self, wait_s: float) -> None:
        with self.lock:
            known = [
                Known(job_id=j, attempt=a, killing=killing) for j, a, killing in self.core.known()
            ]
            seq, draining = self.core.last_claim_seq, self.core.draining
        beat = Heartbeat(known=known, last_claim_seq=seq, draining=draining, wait_s=wait_s)
        commands = self.api.heartbeat(beat)
        if commands.drain and not draining:
            log.info("the server asked this pilot to drain")
        self.feed(core.HeartbeatAnswered(self.now(), commands))

    def _tell_draining(self) -> None:
        try:
            self._beat_once(0.0)
        except PilotwaveError as exc:
            log.warning("could not tell the server we are draining: %s", exc)

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
                    self.feed(core.StopNow(self.now(), why))
                    return
                log.warning("heartbeat refused: %s", exc)
                self.stopped.wait(1.0)
            except PilotwaveError as exc:
                log.warning("heartbeat failed: %s", exc)
                self.stopped.wait(1.0)

    def _clock_loop(self) -> None:
        """Tick the core at its deadlines; ship live logs every ``LOG_PERIOD_S``."""
        next_logs = self.now() + LOG_PERIOD_S
        while not self.stopped.is_set():
            with self.lock:
                wake = self.core.wake_at()
                self.clock_at = min(next_logs, wake) if wake is not None else next_logs
                if self.clock_at > self.now():
                    self.clock.wait(self.clock_at - self.now())
                self.clock_at = 0.0
            self.feed(core.Tick(self.now()))
            if self.now() >= next_logs:
                next_logs = self.now() + LOG_PERIOD_S
                self._ship_logs()

    def _ship_logs(self) -> None:
        with self.lock:
            tails = [
                self.tails[t.key]
                for t in self.core.tasks.values()
                if t.state is core.TaskState.RUNNING and t.key in self.tails
            ]
        locked, chunks = [], []
        try:
            for tail in tails:
                if not tail.lock.acquire(blocking=False):
                    continue  # the runner is reading its final chunk
                locked.append(tail)
                chunk = tail.read()
                if chunk:
                    chunks.append(chunk)
            if chunks:
                try:
                    self.api.logs(chunks)
                except PilotwaveError as exc:
                    log.warning("could not ship logs (will resend): %s", exc)
                    by_key = {(t.job_id, t.attempt): t for t in locked}
                    for c in chunks:
                        by_key[(c.job_id, c.attempt)].rewind(c)
        finally:
            for tail in locked:
                tail.lock.release()

    # -- running one job ---------------------------------------------------------------

    def _run(self, job: Claimed) -> None:
        jobdir = self.isolator.jobdir(self.workdir, f"{job.id}-{job.attempt}", job.owner)
        try:
            jobdir.mkdir(parents=True, exist_ok=True)
            outcome = self._execute(job, jobdir)
        except SandboxError as exc:
            outcome = Outcome(False, error=str(exc), retryable=False)
        except Exception:
            outcome = Outcome(
                False, error="pilot error while running the job:\n" + traceback.format_exc()
            )
        report = self._report_for(job, jobdir, outcome)
        with self.lock:
            self.executions.pop(job.key, None)
            self.tails.pop(job.key, None)
        self.feed(core.TaskEnded(self.now(), job.key, report))
        shutil.rmtree(jobdir, ignore_errors=True)
        log.debug("job=%s attempt=%s outcome=%s", job.id, job.attempt, report.outcome)

    def _killed(self, key: tuple[int, int]) -> bool:
        task = self.core.task(key)
        return task is not None and task.kill_reason is not None

    def _execute(self, job: Claimed, jobdir: Path) -> Outcome:
        box = self.sandboxes.acquire(job.sandbox, job.owner) if job.sandbox else None
        try:
            return self._execute_in(job, jobdir, box)
        finally:
            if box is not None:
                self.sandboxes.release(box)

    def _execute_in(self, job: Claimed, jobdir: Path, box: Path | None) -> Outcome:
        spec = orjson.loads(job.spec)
        outputs = jobdir / "outputs"
        outputs.mkdir()
        own = {
            "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in job.gpus),
            "PILOTWAVE_JOB_ID": str(job.id),
            "PILOTWAVE_ATTEMPT": str(job.attempt),
            "PILOTWAVE_OUTPUTS": str(outputs),
            "PILOTWAVE_CORES": str(job.cores),
            "PILOTWAVE_SERVER": self.cfg.server,
            "PILOTWAVE_JOB_TOKEN": job.token,
            "PILOTWAVE_DECISIONS": "1" if spec.get("decisions") else "0",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(job.cores)),
            # Nothing is written into the shared sandbox: a .pyc left there would change
            # what the next job runs (and the sandbox check would unpack it anew each time).
            "PYTHONDONTWRITEBYTECODE": "1",
            "TMPDIR": str(jobdir),  # its own scratch folder (only outputs/ is uploaded)
        }
        if self.ca_bundle is not None:
            own["PILOTWAVE_CA_BUNDLE"] = str(self.ca_bundle)
        own.update(self.isolator.prepare(jobdir, job.owner))
        shared = [p for p in (box, self.ca_bundle) if p is not None]
        jail = self.isolator.launcher(job.owner, shared)
        if job.kind == "shell":
            own["PYTHONUNBUFFERED"] = "1"
            env = {**self.job_env, **(spec.get("env") or {}), **own}
            run = ShellRun(spec["argv"], box or jobdir, env, jobdir / "output.log", jail)
            with self.lock:
                self.executions[job.key] = run
                self.tails[job.key] = LogTail(job.id, job.attempt, run.log_path, 0)
                killed_early = self._killed(job.key)
            if killed_early:
                run.kill()
            return run.wait()
        if box is not None:
            own["PILOTWAVE_SANDBOX_SHA"] = job.sandbox or ""
        # The worker sets the per-job variables itself, for each job it runs; it outlives
        # this job's folder, so its temporary files go to a folder of the owner's.
        own = {k: v for k, v in own.items() if k not in PER_JOB}
        own["TMPDIR"] = str(self.isolator.scratch(self.workdir, job.owner))
        env = {**self.job_env, **own}
        # One owner's warm process never runs another owner's job: module state, files it
        # opened and anything it left in memory stay with the user who made them.
        key = (job.owner, job.kind, str(box), tuple(job.gpus))
        # A driver gets a fresh process: module state left by another run must not make a
        # replay take a different path.
        fresh = job.isolate or job.is_driver
        worker = self.pool.acquire(key, box, env, fresh=fresh, launcher=jail)
        with self.lock:
            self.executions[job.key] = worker
            self.tails[job.key] = LogTail(job.id, job.attempt, worker.log_path, worker.log_size())
            killed_early = self._killed(job.key)
        if killed_early:
            self.pool.release(worker, reusable=not fresh)
            return Outcome(False, error="killed before it started", killed=True)
        msg = {
            "job_id": job.id,
            "attempt": job.attempt,
            "function": spec["function"],
            "args": spec["args"],
            "kwargs": spec["kwargs"],
            "outputs": str(outputs),
            "max_result_bytes": self.limits.max_result_bytes,
            "decode": FUNCTION in job.spec,
            "server": self.cfg.server,
            "token": job.token,
            "decisions": bool(spec.get("decisions")),
        }
        if job.is_driver:
            msg["driver"] = {
                "workflow_id": spec["workflow_id"],
                "seed": spec["seed"],
                "server": self.cfg.server,
                "token": job.token,
            }
        outcome = worker.run(msg, on_note=lambda note: self._note(job.key, note))
        with self.lock:
            reusable = not fresh and not self._killed(job.key) and not outcome.killed
        self.pool.release(worker, reusable=reusable)
        return outcome

    def _note(self, key: tuple[int, int], msg: dict[str, Any]) -> None:
        """A driver's process says it waits for its jobs, or asks to go on."""
        if msg["note"] == DriverNote.WAITS:
            self.feed(core.DriverWaits(self.now(), key, wait_of(msg["wait"])))
        elif msg["note"] == DriverNote.ASKS:
            self.feed(core.DriverAsks(self.now(), key))

    def _tell_parkable(self, parkable: int) -> None:
        try:
            self.api.parkable(parkable)
        except PilotwaveError as exc:  # the next claim carries it anyway
            log.warning("could not tell the server about waiting drivers: %s", exc)

    def _park(self, key: tuple[int, int], wait: Wait) -> None:
        try:
            parked = self.api.park(ParkRequest(job_id=key[0], attempt=key[1], wait=wait))
        except PilotwaveError as exc:
            log.warning("could not park driver job=%s: %s", key[0], exc)
            self.feed(core.DriverRequestFailed(self.now(), key))
            return
        self.feed(core.ParkAnswered(self.now(), key, parked))

    def _unpark(self, key: tuple[int, int]) -> None:
        try:
            state = self.api.unpark(UnparkRequest(job_id=key[0], attempt=key[1]))
        except PilotwaveError as exc:
            log.warning("could not unpark driver job=%s: %s", key[0], exc)
            self.feed(core.DriverRequestFailed(self.now(), key))
            return
        self.feed(core.UnparkAnswered(self.now(), key, state))

    def _report_for(self, job: Claimed, jobdir: Path, outcome: Outcome) -> AttemptReport:
        """The attempt's report as the payload ended; the core applies why it was stopped."""
        tail, last = self._final_log(job)
        result = outcome.result
        if outcome.ok and job.kind == "shell":
            result = orjson.dumps({"exit_code": outcome.exit_code, "stdout_tail": tail}).decode()
        with self.lock:
            task = self.core.task(job.key)
            wanted = task is not None and PilotCore.wants_artifacts(task)
        return AttemptReport(
            job_id=job.id,
            attempt=job.attempt,
            outcome="succeeded" if outcome.ok else "failed",
            result=result if outcome.ok else None,
            error=None if outcome.ok else outcome.error,
            exit_code=outcome.exit_code,
            retryable=outcome.retryable,
            reason=outcome.reason if outcome.ok else None,  # type: ignore[arg-type]
            cpu_s=outcome.cpu_s,
            max_rss_mb=outcome.max_rss_mb,
            log=last,
            artifacts=tuple(self._upload_outputs(jobdir)) if wanted else (),
        )

    def _final_log(self, job: Claimed) -> tuple[str, LogChunk | None]:
        """The rest of the job's output for its report (earlier output was shipped live)."""
        with self.lock:
            tail = self.tails.get(job.key)
        if tail is None:
            return "", None
        with tail.lock:
            rest = tail.read(final=True, limit=None)
            if rest is None:
                return tail.tail, None
            data, pos = rest.data, rest.pos
            while len(data) > LOG_CHUNK_BYTES:  # a burst too big for one report: ship it ahead
                piece, data = data[:LOG_CHUNK_BYTES], data[LOG_CHUNK_BYTES:]
                nbytes = len(piece.encode())
                try:
                    self.api.logs([replace(rest, pos=pos, data=piece, nbytes=nbytes)])
                except PilotwaveError as exc:
                    log.warning("could not ship logs: %s", exc)
                pos += nbytes
            return tail.tail, replace(rest, pos=pos, data=data, nbytes=len(data.encode()))

    def _upload_outputs(self, jobdir: Path) -> list[ArtifactRef]:
        outputs = jobdir / "outputs"
        found: list[ArtifactRef] = []
        if not outputs.is_dir():
            return found
        for path in sorted(p for p in outputs.rglob("*") if p.is_file() and not p.is_symlink()):
            name = path.relative_to(outputs).as_posix()
            try:
                check_artifact_name(name)
            except ValueError as exc:  # the server would refuse the whole report
                log.warning("artifact not uploaded: %s", exc)
                continue
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            try:
                self.api.upload(sha, data)
            except ApiError as exc:
                log.warning("artifact %s not uploaded: %s", path.name, exc)
                continue
            found.append(ArtifactRef(name=name, sha256=sha, size=len(data)))
        return found
