"""The pilot's decisions as a state machine without I/O: stimuli in, instructions out.

``PilotCore.handle(event)`` takes what happened (a claim answered, a job ended, a driver
parked, a heartbeat's commands, a signal, the clock) and returns what the pilot must do
(start a job, kill one, claim with this demand, send these reports, exit).  The shell in
``agent.py`` only performs instructions: HTTP requests on its threads, processes in its
executors.  Every rule of the pilot lives here and is tested by feeding events.

The rules, in short:

- **Claims carry reports.**  A finished job's report waits for the next claim, which is
  cheap while work flows; it is sent on its own once a claim has waited on the server for
  ``parked_after_s`` (no work arrives soon) or when the queue ran dry.
- **Prefetch.**  While recent jobs were short, a pilot holds up to ``prefetch`` jobs beyond
  its free slots, so the next starts without a round trip.  A job held longer than
  ``hold_s`` is handed back: another pilot may be idle.
- **Driver slots.**  Workflow drivers run in slots of their own.  A driver waiting for the
  jobs it observes *parks*: it holds no slot, so any depth of nested workflows fits one
  slot.  At most ``warm_drivers`` parked drivers stay in memory; the longest parked beyond
  that is evicted (its workflow resumes by replay, anywhere).
- **Walltime, drain, idle exit.**  A job past its walltime is killed and fails.  A
  draining pilot claims nothing, hands back what it has not started (and its parked
  drivers), lets running jobs finish until the drain deadline, then hands them back too.
  A pilot with nothing to run for ``idle_exit_s`` drains and exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from pilotwave.protocol import (
    Ack,
    AttemptReport,
    Claimed,
    ClaimRequest,
    KillReason,
    PilotCommands,
    Wait,
)

CLAIM_WAIT_S = 20.0
PARKED_AFTER_S = 0.02  # a claim out this long is waiting on the server for work
DRIVER_ASK_S = 0.1  # a busy pilot asks for workflow drivers this often
REPORT_WAIT_S = 30.0  # a stopping pilot waits this long for its reports to be taken


@dataclass(frozen=True, kw_only=True)
class CoreConfig:
    """What the pilot's decisions depend on: its resources and its policies."""

    slots: int
    cores: int
    memory_mb: int
    driver_slots: int = 4
    warm_drivers: int = 8
    prefetch: int = 16
    prefetch_below_s: float = 0.5
    hold_s: float = 2.0
    idle_exit_s: float | None = None
    drain_timeout_s: float = 60.0


class TaskState(StrEnum):
    WAITING = "waiting"
    """Claimed, waiting for room on this machine (held ahead of a free slot)."""
    RUNNING = "running"
    """Its payload runs."""
    AWAITING = "awaiting"
    """A workflow driver blocked on the jobs it observes, still holding its driver slot."""
    PARKING = "parking"
    """An awaiting driver the pilot is parking on the server (its slot is being given up)."""
    PARKED = "parked"
    """A driver parked on the server: its process lives, it holds no slot."""
    UNPARKING = "unparking"
    """A parked driver whose wait is over, waiting for the server to give it a slot again."""
    KILLING = "killing"
    """Being stopped; its report follows when the process is gone."""
    DONE = "done"
    """Ended; its report is on its way (the task is forgotten once the server has it)."""


@dataclass
class Task:
    job: Claimed
    state: TaskState
    claimed_at: float
    started_at: float | None = None
    deadline: float | None = None
    parked_at: float | None = None
    kill_reason: KillReason | None = None
    wait: Wait | None = None  # what an awaiting or parked driver waits for
    awaiting_since: float | None = None
    wants_go: bool = False  # it asked to go on while being parked
    retry_at: float | None = None  # when to ask the server again (park or unpark failed)

    @property
    def key(self) -> tuple[int, int]:
        return self.job.key

    @property
    def driver(self) -> bool:
        return self.job.is_driver


# -- stimuli ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """The clock: deadlines (walltime, holding, drain, idle exit) may have passed."""

    now: float


@dataclass(frozen=True)
class ClaimAnswered:
    now: float
    jobs: list[Claimed]
    acks: list[Ack]
    parked: bool = False
    """The server found nothing claimable when the claim came."""
    drivers_queued: int = 0
    """Queued drivers this pilot could take if it parked waiting ones."""


@dataclass(frozen=True)
class ClaimFailed:
    now: float


@dataclass(frozen=True)
class ReportsAnswered:
    now: float
    acks: list[Ack]


@dataclass(frozen=True)
class ReportsFailed:
    now: float


@dataclass(frozen=True)
class TaskEnded:
    """A payload ended (or never started); ``report`` is how it ended, before any kill rule."""

    now: float
    key: tuple[int, int]
    report: AttemptReport


@dataclass(frozen=True)
class DriverWaits:
    """A driver's process blocks until what it observes happens (``wait``)."""

    now: float
    key: tuple[int, int]
    wait: Wait


@dataclass(frozen=True)
class DriverAsks:
    """A driver's wait is over: it asks to go on (answered with ``LetGo``)."""

    now: float
    key: tuple[int, int]


@dataclass(frozen=True)
class ParkAnswered:
    """The server parked the driver (``parked``), or it no longer runs there."""

    now: float
    key: tuple[int, int]
    parked: bool


@dataclass(frozen=True)
class UnparkAnswered:
    """The server's answer for a driver that wants to go on: ``running``, ``ready``, ``gone``."""

    now: float
    key: tuple[int, int]
    state: str


@dataclass(frozen=True)
class DriverRequestFailed:
    """A park or unpark request did not reach the server: try again shortly."""

    now: float
    key: tuple[int, int]


@dataclass(frozen=True)
class HeartbeatAnswered:
    now: float
    commands: PilotCommands


@dataclass(frozen=True)
class DrainRequested:
    """SIGTERM, the server's drain command, or an idle pilot: finish what runs, then exit."""

    now: float
    timeout_s: float | None = None  # default: the configured drain timeout


@dataclass(frozen=True)
class StopNow:
    """A second signal, or a pilot that must give up: hand everything back at once."""

    now: float
    failure: str | None = None


Event = (
    Tick
    | ClaimAnswered
    | ClaimFailed
    | ReportsAnswered
    | ReportsFailed
    | TaskEnded
    | DriverWaits
    | DriverAsks
    | ParkAnswered
    | UnparkAnswered
    | DriverRequestFailed
    | HeartbeatAnswered
    | DrainRequested
    | StopNow
)


# -- instructions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Run this job's payload (in a driver slot if it is a driver)."""

    job: Claimed


@dataclass(frozen=True)
class Kill:
    """Stop this attempt's process; a ``TaskEnded`` follows."""

    key: tuple[int, int]
    reason: KillReason


@dataclass(frozen=True)
class Claim:
    """Send this claim (it carries the reports in it); answer with ``ClaimAnswered``/``ClaimFailed``."""

    request: ClaimRequest


@dataclass(frozen=True)
class SendReports:
    reports: list[AttemptReport]


@dataclass(frozen=True)
class Park:
    """Ask the server to park this waiting driver; answer with ``ParkAnswered``."""

    key: tuple[int, int]
    wait: Wait


@dataclass(frozen=True)
class Unpark:
    """Ask the server to let this parked driver go on; answer with ``UnparkAnswered``."""

    key: tuple[int, int]


@dataclass(frozen=True)
class TellParkable:
    """Tell the server how many drivers here only wait, for the claim it holds."""

    parkable: int


@dataclass(frozen=True)
class LetGo:
    """Tell this driver's process it may go on (it holds a driver slot)."""

    key: tuple[int, int]


@dataclass(frozen=True)
class Exit:
    """Everything is handed back and reported: deregister and stop."""

    failure: str | None = None


Instruction = Start | Kill | Claim | SendReports | Park | Unpark | LetGo | TellParkable | Exit


_WAITING_DRIVER = (
    TaskState.AWAITING,
    TaskState.PARKING,
    TaskState.PARKED,
    TaskState.UNPARKING,
)
_HOLDS_DRIVER_SLOT = (
    TaskState.RUNNING,
    TaskState.AWAITING,
    TaskState.PARKING,
    TaskState.KILLING,
)


class Phase(StrEnum):
    ACTIVE = "active"
    """Claiming and running."""
    DRAINING = "draining"
    """Claims nothing; running jobs finish until the drain deadline."""
    STOPPING = "stopping"
    """Everything was handed back; waiting for the last reports to be taken."""
    EXITED = "exited"


@dataclass
class PilotCore:
    """The pilot's state and rules.  Not thread-safe: the shell serializes ``handle`` calls."""

    cfg: CoreConfig
    now: float = 0.0
    tasks: dict[tuple[int, int], Task] = field(default_factory=dict)
    waiting: list[tuple[int, int]] = field(default_factory=list)  # held, in claim order
    outbox: list[AttemptReport] = field(default_factory=list)  # reports not yet sent
    phase: Phase = Phase.ACTIVE
    claim_out: ClaimRequest | None = None  # the claim in flight
    claim_sent_at: float = 0.0
    claim_parks: bool = False  # it cannot return before a report frees a slot
    claim_idle_slots: int = 0  # idle job slots when it was sent
    claim_retry_at: float = 0.0
    claim_backoff: float = 0.2
    reports_out: list[AttemptReport] | None = None  # reports in flight on their own
    report_retry_at: float = 0.0
    report_backoff: float = 0.2
    queue_dry: bool = False  # the last claim found nothing waiting and had to park
    nothing_ahead: bool = False  # the last claim for jobs to hold found none
    drivers_asked_at: float = -1e9
    drivers_queued: int = 0  # queued drivers the last claim said this pilot could take
    parkable_told: int = 0  # what the server knows of this pilot's waiting drivers
    last_claim_seq: int = 0
    last_busy: float = 0.0
    job_seconds: float | None = None  # moving average of recent jobs' run time
    drain_deadline: float | None = None
    stop_deadline: float | None = None
    failure: str | None = None

    def __post_init__(self) -> None:
        self.last_busy = self.now

    # -- the one entry point ---------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        """Apply ``event``; return what the shell must do now, in order."""
        self.now = max(self.now, event.now)
        out: list[Instruction] = []
        match event:
            case ClaimAnswered():
                self._claim_answered(event, out)
            case ClaimFailed():
                self._claim_failed()
            case ReportsAnswered():
                self._reports_taken(event.acks)
            case ReportsFailed():
                assert self.reports_out is not None
                self.outbox[:0], self.reports_out = self.reports_out, None
                self.report_retry_at = self.now + self.report_backoff
                self.report_backoff = min(self.report_backoff * 2, 5.0)
            case TaskEnded():
                self._task_ended(event)
            case DriverWaits():
                self._driver_waits(event.key, event.wait, out)
            case DriverAsks():
                self._driver_asks(event.key, out)
            case ParkAnswered():
                self._park_answered(event.key, event.parked, out)
            case UnparkAnswered():
                self._unpark_answered(event.key, event.state, out)
            case DriverRequestFailed():
                task = self.tasks.get(event.key)
                if task is not None and task.state in (TaskState.PARKING, TaskState.UNPARKING):
                    task.retry_at = self.now + 1.0
            case HeartbeatAnswered():
                for k in event.commands.kill:
                    self._kill((k.job_id, k.attempt), k.reason, out)
                if event.commands.drain:
                    self._drain(None)
            case DrainRequested():
                self._drain(event.timeout_s)
            case StopNow():
                self.failure = self.failure or event.failure
                self._drain(0.0)
            case Tick():
                pass
        self._advance(out)
        return out

    # -- what the shell asks ---------------------------------------------------------

    def wake_at(self) -> float | None:
        """The next time the core wants a ``Tick`` (``None``: only when something happens).

        Whatever is due now was done by the last ``handle``; only future deadlines count.
        """
        limit = self.cfg.prefetch_below_s
        times = []
        for t in self.tasks.values():
            if t.state is TaskState.RUNNING:
                if t.deadline is not None:
                    times.append(t.deadline)  # walltime
                if not t.driver and t.started_at is not None:
                    times.append(t.started_at + limit)  # it becomes "long": claims change
        times += [self.tasks[k].claimed_at + self.cfg.hold_s for k in self.waiting]
        times += [t.retry_at for t in self.tasks.values() if t.retry_at is not None]
        if self.outbox and self.claim_out is not None and self.claim_out.wait_s > 0:
            times.append(self.claim_sent_at + PARKED_AFTER_S)
        if self.claim_out is None and self.phase is Phase.ACTIVE:
            times.append(self.claim_retry_at)
            if self.cfg.idle_exit_s is not None and not self._busy():
                times.append(self.last_busy + self.cfg.idle_exit_s)
        if self.outbox and self.reports_out is None:
            times.append(self.report_retry_at)
        if self.phase is Phase.DRAINING and self.drain_deadline is not None:
            times.append(self.drain_deadline)
        if self.phase is Phase.STOPPING and self.stop_deadline is not None:
            times.append(self.stop_deadline)
        future = [t for t in times if t > self.now]
        return min(future) if future else None

    def known(self) -> list[tuple[int, int, bool]]:
        """The attempts this pilot holds, for a heartbeat: ``(job, attempt, being stopped)``."""
        stopping = (TaskState.KILLING, TaskState.DONE)
        return [(*t.key, t.state in stopping) for t in self.tasks.values()]

    def task(self, key: tuple[int, int]) -> Task | None:
        return self.tasks.get(key)

    @property
    def draining(self) -> bool:
        return self.phase is not Phase.ACTIVE

    # -- claims ----------------------------------------------------------------------

    def _count(self) -> tuple[int, int]:
        """Compute tasks holding a slot (held ones included), and drivers holding a driver slot."""
        compute = drivers = 0
        for t in self.tasks.values():
            if t.state is TaskState.DONE:
                continue
            if t.driver:
                drivers += t.state in _HOLDS_DRIVER_SLOT
            else:
                compute += 1
        return compute, drivers

    def _running_long(self) -> bool:
        """Whether a job in a job slot has run longer than a short job."""
        limit = self.cfg.prefetch_below_s
        return any(
            t.started_at is not None and self.now - t.started_at > limit
            for t in self.tasks.values()
            if t.state is TaskState.RUNNING and not t.driver
        )

    def _ahead(self) -> int:
        """How many jobs to hold beyond free slots now.

        Prefetch pays off only for short jobs, where a claim round trip is a large part of
        a job's life; with long ones a held job would wait while another pilot idles.  So
        hold jobs only while recent jobs were short and nothing running has become long.
        """
        limit = self.cfg.prefetch_below_s
        if not self.cfg.prefetch or self.job_seconds is None or self.job_seconds > limit:
            return 0
        if self._running_long():
            return 0
        return self.cfg.prefetch

    def _busy(self) -> bool:
        """Something runs here, or waits to (a driver waiting for its jobs keeps no pilot busy)."""
        return any(
            t.state
            in (TaskState.WAITING, TaskState.RUNNING, TaskState.KILLING, TaskState.UNPARKING)
            for t in self.tasks.values()
        )

    def _maybe_claim(self, out: list[Instruction]) -> None:
        if self.claim_out is not None or self.phase is not Phase.ACTIVE:
            return
        if self.now < self.claim_retry_at:
            return
        compute, drivers = self._count()
        idle_slots = self.cfg.slots - compute
        idle_drivers = self.cfg.driver_slots - drivers
        free = idle_slots + self._ahead()
        # Wait on the server only for a slot that is idle; jobs to hold ahead are taken only
        # if there are some now (a parked claim could wake much later, when holding a job no
        # longer pays).
        hold_ahead = free > 0 and not self.nothing_ahead
        # With every job slot busy, wait on the server for drivers only once a job runs
        # long: while jobs are short, the next claim comes within moments and asks for
        # drivers too (a parked claim would cost each job a separate report).
        park_for_drivers = idle_drivers > 0 and self._running_long()
        if not (self.outbox or idle_slots > 0 or park_for_drivers or hold_ahead):
            return
        if self._busy():
            self.last_busy = self.now
        prefetch = True
        if idle_slots > 0:
            wait = CLAIM_WAIT_S
        elif hold_ahead or not park_for_drivers:
            wait = 0.0
        else:
            # Parked for drivers only: compute jobs only for slots the server sees free
            # when it wakes this claim (a finished job's report frees one).
            wait, free, prefetch = CLAIM_WAIT_S, self.cfg.slots, False
        if self.cfg.idle_exit_s is not None and wait > 0:
            left = self.cfg.idle_exit_s - (self.now - self.last_busy)
            if left <= 0 and not self.outbox and not self._busy():
                self._drain(None)  # idle for long enough: hand back parked drivers and go
                return
            wait = max(0.0, min(wait, left))
        # Asking for drivers costs the server a query: a claim that will wait asks always (a
        # driver slot may come free while it waits: a driver parks or ends), a busy pilot's
        # quick claims only with a slot idle, at most every DRIVER_ASK_S.  It asks for all
        # its driver slots: the server counts which are free (it parks drivers).
        ask = 0
        if wait > 0 or (idle_drivers > 0 and self.now - self.drivers_asked_at >= DRIVER_ASK_S):
            ask = self.cfg.driver_slots
            self.drivers_asked_at = self.now
        reports, self.outbox = self.outbox, []
        self.claim_parks = wait > 0 and idle_slots <= 0
        self.claim_idle_slots = idle_slots
        self.claim_out = ClaimRequest(
            max_jobs=max(0, free),
            max_drivers=ask,
            prefetch=prefetch,
            wait_s=wait,
            reports=reports,
            last_claim_seq=self.last_claim_seq,
            parkable=self._parkable(),
        )
        self.parkable_told = self.claim_out.parkable
        self.claim_sent_at = self.now
        out.append(Claim(self.claim_out))

    def _claim_answered(self, event: ClaimAnswered, out: list[Instruction]) -> None:
        req = self.claim_out
        assert req is not None, "a claim answer with no claim in flight"
        self.claim_out = None
        self.claim_backoff = 0.2
        self._acked(req.reports, event.acks)
        self.nothing_ahead = not event.jobs and self.claim_idle_slots <= 0
        self.drivers_queued = event.drivers_queued
        # Work arrives one job at a time (a chain, a driver's loop): the next claim will
        # wait on the server, so reports must not wait for it.
        self.queue_dry = event.parked or (req.wait_s > 0 and not event.jobs)
        for job in event.jobs:
            self.last_claim_seq = max(self.last_claim_seq, job.claim_seq)
            task = Task(job, TaskState.WAITING, claimed_at=self.now)
            self.tasks[job.key] = task
            if self.phase is not Phase.ACTIVE:  # claimed while stopping: hand it back
                self._kill(job.key, KillReason.DRAIN, out)
            elif job.is_driver:  # drivers have their own slots: they start at once
                self._start(task, out)
            else:
                self.waiting.append(job.key)
        if event.jobs:
            self.last_busy = self.now

    def _claim_failed(self) -> None:
        req = self.claim_out
        assert req is not None, "a claim failure with no claim in flight"
        self.claim_out = None
        self.outbox[:0] = req.reports  # nothing was recorded: they go with the next request
        self.claim_retry_at = self.now + self.claim_backoff
        self.claim_backoff = min(self.claim_backoff * 2, 5.0)

    # -- reports ---------------------------------------------------------------------

    def _maybe_report(self, out: list[Instruction]) -> None:
        """Send reports on their own when no claim will carry them soon.

        A claim that finds work returns within milliseconds and the next one carries the
        reports, so reports go on their own only when no claim is coming (stopping), when
        the claim out cannot return before a report frees a slot, when the queue ran dry,
        or once a claim has waited on the server for ``PARKED_AFTER_S``.
        """
        if not self.outbox or self.reports_out is not None or self.now < self.report_retry_at:
            return
        claim = self.claim_out
        waiting_claim = claim is not None and claim.wait_s > 0
        send = (
            self.phase is not Phase.ACTIVE
            or (waiting_claim and self.claim_parks)
            or self.queue_dry
            or (waiting_claim and self.now >= self.claim_sent_at + PARKED_AFTER_S)
        )
        if send:
            self.reports_out, self.outbox = self.outbox, []
            out.append(SendReports(self.reports_out))

    def _reports_taken(self, acks: list[Ack]) -> None:
        assert self.reports_out is not None
        sent, self.reports_out = self.reports_out, None
        self.report_backoff = 0.2
        self._acked(sent, acks)

    def _acked(self, reports: list[AttemptReport], acks: list[Ack]) -> None:
        """The server has these reports (accepted, or refused for good): forget their tasks."""
        del acks  # stale or unknown: the server will never want them; logged by the shell
        for rep in reports:
            self.tasks.pop((rep.job_id, rep.attempt), None)

    # -- tasks -----------------------------------------------------------------------

    def _start(self, task: Task, out: list[Instruction]) -> None:
        task.state, task.started_at = TaskState.RUNNING, self.now
        if task.job.walltime_s:
            task.deadline = self.now + task.job.walltime_s
        out.append(Start(task.job))

    def _dispatch(self, out: list[Instruction]) -> None:
        """Start held tasks, in claim order, while this machine has room for them."""
        running = [
            t
            for t in self.tasks.values()
            if t.state in (TaskState.RUNNING, TaskState.KILLING) and not t.driver
        ]
        cores = self.cfg.cores - sum(t.job.cores for t in running)
        memory = self.cfg.memory_mb - sum(t.job.memory_mb for t in running)
        slots = self.cfg.slots - len(running)
        while self.waiting and slots > 0:
            task = self.tasks[self.waiting[0]]
            too_big = task.job.cores > cores or task.job.memory_mb > memory
            if too_big and running:
                break  # it gets the machine when what runs now is done
            self.waiting.pop(0)
            self._start(task, out)
            running.append(task)
            slots -= 1
            cores -= task.job.cores
            memory -= task.job.memory_mb

    def _kill(self, key: tuple[int, int], reason: KillReason, out: list[Instruction]) -> None:
        task = self.tasks.get(key)
        if task is None or task.state in (TaskState.KILLING, TaskState.DONE):
            return
        task.kill_reason = reason
        if task.state is TaskState.WAITING:  # never started: hand it back at once
            self.waiting.remove(key)
            task.state = TaskState.DONE
            self.outbox.append(
                AttemptReport(
                    job_id=key[0], attempt=key[1], outcome="killed", error=f"killed: {reason}"
                )
            )
            return
        task.state = TaskState.KILLING
        task.wants_go = False
        out.append(Kill(key, reason))

    def _task_ended(self, event: TaskEnded) -> None:
        task = self.tasks.get(event.key)
        if task is None or task.state is TaskState.DONE:
            return
        if task.started_at is not None and task.kill_reason is None and not task.driver:
            took = self.now - task.started_at
            self.job_seconds = (
                took if self.job_seconds is None else 0.8 * self.job_seconds + 0.2 * took
            )
        task.state = TaskState.DONE
        self.nothing_ahead = False
        self.outbox.append(self.final_report(task, event.report))

    def final_report(self, task: Task, report: AttemptReport) -> AttemptReport:
        """How the attempt ended for the server, given why it was stopped (if it was).

        A payload that finished before the kill took effect keeps its success: its work is
        done, and the server decides whether the attempt still counts.
        """
        reason = task.kill_reason
        if reason is None or report.outcome == "succeeded":
            return report
        if reason is KillReason.WALLTIME:
            return replace(
                report,
                outcome="failed",
                result=None,
                reason=None,
                retryable=True,
                error=f"WalltimeExceeded: the job ran past its walltime of "
                f"{task.job.walltime_s:g}s and was killed",
            )
        return replace(
            report, outcome="killed", result=None, reason=None, error=f"killed: {reason}"
        )

    @staticmethod
    def wants_artifacts(task: Task) -> bool:
        """Whether a task's outputs are worth uploading (not when its attempt was dropped)."""
        return task.kill_reason not in (KillReason.STALE, KillReason.DRAIN, KillReason.EVICTED)

    # -- driver slots ----------------------------------------------------------------

    def _driver_waits(self, key: tuple[int, int], wait: Wait, out: list[Instruction]) -> None:
        task = self.tasks.get(key)
        if task is None or task.state is not TaskState.RUNNING or not task.driver:
            return
        task.state, task.wait, task.awaiting_since = TaskState.AWAITING, wait, self.now
        if self.phase is not Phase.ACTIVE:  # it only waits: hand it back now
            self._kill(key, KillReason.DRAIN, out)

    def _driver_asks(self, key: tuple[int, int], out: list[Instruction]) -> None:
        task = self.tasks.get(key)
        if task is None:
            return
        if task.state is TaskState.AWAITING:  # never parked: it still holds its slot
            self._let_go(task, out)
        elif task.state is TaskState.PARKED:
            task.state, task.retry_at = TaskState.UNPARKING, None
            out.append(Unpark(key))
        elif task.state in (TaskState.PARKING, TaskState.UNPARKING):
            task.wants_go = True  # answered once the server gives its slot back

    def _let_go(self, task: Task, out: list[Instruction]) -> None:
        task.state, task.wait, task.wants_go, task.parked_at = TaskState.RUNNING, None, False, None
        out.append(LetGo(task.key))

    def _park_answered(self, key: tuple[int, int], parked: bool, out: list[Instruction]) -> None:
        task = self.tasks.get(key)
        if task is None or task.state is not TaskState.PARKING:
            return
        task.retry_at = None
        if not parked:  # it no longer runs (cancelled): the server will have it stopped
            task.state = TaskState.AWAITING
            if task.wants_go:
                self._let_go(task, out)
        elif task.wants_go:
            task.state = TaskState.UNPARKING
            out.append(Unpark(key))
        else:
            task.state, task.parked_at = TaskState.PARKED, self.now
            self._evict(out)

    def _unpark_answered(self, key: tuple[int, int], state: str, out: list[Instruction]) -> None:
        task = self.tasks.get(key)
        if task is None or task.state is not TaskState.UNPARKING:
            return
        task.retry_at = None
        if state == "running":
            self._let_go(task, out)
        elif state == "ready":  # no slot free yet on the server: keep asking
            out.append(Unpark(key))
        # "gone": cancelled while parked; the server has the pilot stop it

    def _evict(self, out: list[Instruction]) -> None:
        """Keep at most ``warm_drivers`` parked processes: the longest parked go (they replay)."""
        parked = sorted(
            (t for t in self.tasks.values() if t.state is TaskState.PARKED),
            key=lambda t: t.parked_at or 0.0,
        )
        for t in parked[: max(0, len(parked) - self.cfg.warm_drivers)]:
            self._kill(t.key, KillReason.EVICTED, out)

    def _balance(self, out: list[Instruction]) -> None:
        """Park waiting drivers when drivers that want to run outnumber the free driver slots.

        Wanting to run: parked drivers whose wait is over, and drivers queued on the server
        (as the last claim said).  Those waiting longest are parked first.
        """
        _, holding = self._count()
        unparking = sum(1 for t in self.tasks.values() if t.state is TaskState.UNPARKING)
        short = unparking + self.drivers_queued - (self.cfg.driver_slots - holding)
        self.drivers_queued = 0
        if short <= 0:
            return
        waiting = sorted(
            (t for t in self.tasks.values() if t.state is TaskState.AWAITING),
            key=lambda t: t.awaiting_since or 0.0,
        )
        for t in waiting[:short]:
            assert t.wait is not None
            t.state = TaskState.PARKING
            out.append(Park(t.key, t.wait))

    def _parkable(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state is TaskState.AWAITING)

    def _tell_parkable(self, out: list[Instruction]) -> None:
        """A claim waiting on the server may take a queued driver only if the server knows it
        can park one here for it: tell it when more drivers wait and no driver slot is free."""
        claim = self.claim_out
        if claim is None or claim.wait_s <= 0 or not claim.max_drivers:
            return
        _, holding = self._count()
        parkable = self._parkable()
        if holding >= self.cfg.driver_slots and parkable > self.parkable_told:
            self.parkable_told = parkable
            out.append(TellParkable(parkable))

    def _retry_driver_requests(self, out: list[Instruction]) -> None:
        for t in self.tasks.values():
            if t.retry_at is not None and self.now >= t.retry_at:
                t.retry_at = None
                if t.state is TaskState.PARKING:
                    assert t.wait is not None
                    out.append(Park(t.key, t.wait))
                elif t.state is TaskState.UNPARKING:
                    out.append(Unpark(t.key))

    # -- stopping --------------------------------------------------------------------

    def _drain(self, timeout_s: float | None) -> None:
        timeout = self.cfg.drain_timeout_s if timeout_s is None else timeout_s
        deadline = self.now + timeout
        if self.phase is Phase.ACTIVE:
            self.phase = Phase.DRAINING
            self.drain_deadline = deadline
        elif self.phase is Phase.DRAINING and self.drain_deadline is not None:
            self.drain_deadline = min(self.drain_deadline, deadline)

    def _advance(self, out: list[Instruction]) -> None:
        """Apply the clock and the phase: deadlines, dispatch, claims, reports, exit."""
        now = self.now
        for t in list(self.tasks.values()):
            if t.state is TaskState.RUNNING and t.deadline is not None and now > t.deadline:
                self._kill(t.key, KillReason.WALLTIME, out)
        for key in list(self.waiting):  # another pilot may be idle: give it back
            if now - self.tasks[key].claimed_at > self.cfg.hold_s:
                self._kill(key, KillReason.HELD, out)
        if self.phase is Phase.ACTIVE:
            self._dispatch(out)
            self._maybe_claim(out)  # an idle pilot may start draining here
        if self.phase is not Phase.ACTIVE:
            for key in list(self.waiting):
                self._kill(key, KillReason.DRAIN, out)
            for t in list(self.tasks.values()):  # drivers that only wait go back at once
                if t.state in _WAITING_DRIVER:
                    self._kill(t.key, KillReason.DRAIN, out)
        else:
            self._retry_driver_requests(out)
            self._balance(out)
            self._tell_parkable(out)
        if self.phase is Phase.DRAINING:
            running = [t for t in self.tasks.values() if t.state is TaskState.RUNNING]
            if not running or (self.drain_deadline is not None and now >= self.drain_deadline):
                for t in running:
                    self._kill(t.key, KillReason.DRAIN, out)
                self.phase = Phase.STOPPING
                self.stop_deadline = now + REPORT_WAIT_S
        self._maybe_report(out)
        if self.phase is Phase.STOPPING:
            settled = not self.tasks and not self.outbox and self.reports_out is None
            late = self.stop_deadline is not None and now >= self.stop_deadline
            if settled or late:
                self.phase = Phase.EXITED
                out.append(Exit(self.failure))
