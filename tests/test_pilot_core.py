"""The pilot's rules, driven without any process or network: events in, instructions out."""

from __future__ import annotations

from typing import Any

from pilotwave.pilot import core
from pilotwave.pilot.core import (
    PARKED_AFTER_S,
    Claim,
    ClaimAnswered,
    ClaimFailed,
    CoreConfig,
    DrainRequested,
    DriverAsks,
    DriverRequestFailed,
    DriverWaits,
    Exit,
    HeartbeatAnswered,
    Kill,
    LetGo,
    Park,
    ParkAnswered,
    PilotCore,
    ReportsAnswered,
    SendReports,
    Start,
    StopNow,
    TaskEnded,
    TaskState,
    TellParkable,
    Tick,
    Unpark,
    UnparkAnswered,
)
from pilotwave.protocol import Ack, AttemptReport, Claimed, KillReason, PilotCommands, Wait
from pilotwave.protocol import Kill as KillCommand

_seq = 0


def job(
    job_id: int,
    *,
    attempt: int = 1,
    kind: str = "python",
    cores: int = 1,
    memory_mb: int = 0,
    walltime_s: float | None = None,
) -> Claimed:
    global _seq
    _seq += 1
    return Claimed(
        id=job_id,
        attempt=attempt,
        claim_seq=_seq,
        name=f"j{job_id}",
        kind=kind,
        spec="{}",
        sandbox=None,
        cores=cores,
        memory_mb=memory_mb,
        gpus=(),
        walltime_s=walltime_s,
        isolate=False,
        waited_s=0.0,
    )


def done(job_id: int, attempt: int = 1, outcome: str = "succeeded") -> AttemptReport:
    return AttemptReport(
        job_id=job_id,
        attempt=attempt,
        outcome=outcome,  # type: ignore[arg-type]
        result="1" if outcome == "succeeded" else None,
        error=None if outcome == "succeeded" else "boom",
    )


class Driver:
    """A pilot core and its clock; records what it was told to do."""

    def __init__(self, **cfg: Any) -> None:
        settings = {"slots": 2, "cores": 2, "memory_mb": 1000, **cfg}
        self.t = 100.0
        self.core = PilotCore(CoreConfig(**settings), now=self.t)

    def __call__(self, event_type: Any, *args: Any, **kw: Any) -> list[core.Instruction]:
        return self.core.handle(event_type(self.t, *args, **kw))

    def tick(self, dt: float) -> list[core.Instruction]:
        self.t += dt
        return self(Tick)

    def claim(
        self, *jobs: Claimed, parked: bool = False, drivers_queued: int = 0
    ) -> list[core.Instruction]:
        """Answer the claim in flight with ``jobs`` (its reports accepted)."""
        assert self.core.claim_out is not None, "no claim in flight"
        acks = [Ack.ACCEPTED] * len(self.core.claim_out.reports)
        return self(ClaimAnswered, list(jobs), acks, parked, drivers_queued)


def of(kind: type, instructions: list[core.Instruction]) -> list[Any]:
    return [i for i in instructions if isinstance(i, kind)]


def test_a_new_pilot_claims_its_free_slots_and_waits_on_the_server() -> None:
    d = Driver(slots=3, cores=3, driver_slots=2)
    (claim,) = of(Claim, d(Tick))
    assert claim.request.max_jobs == 3 and claim.request.max_drivers == 2
    assert claim.request.wait_s > 0 and claim.request.reports == []
    assert of(Claim, d(Tick)) == []  # one claim in flight at a time


def test_claimed_jobs_start_in_order_while_cores_allow_and_drivers_start_at_once() -> None:
    d = Driver(slots=2, cores=2, driver_slots=1, prefetch=0)
    d(Tick)
    out = d.claim(job(1, cores=2), job(2), job(3, kind="driver"))
    assert sorted(s.job.id for s in of(Start, out)) == [1, 3]  # job 2 waits for job 1's cores
    out = d(TaskEnded, (1, 1), done(1))
    assert [s.job.id for s in of(Start, out)] == [2]


def test_a_finished_jobs_report_rides_the_next_claim() -> None:
    d = Driver(slots=1, cores=1, prefetch=0)
    d(Tick)
    d.claim(job(1))
    out = d(TaskEnded, (1, 1), done(1))
    (claim,) = of(Claim, out)
    assert [r.job_id for r in claim.request.reports] == [1]
    assert of(SendReports, out) == []
    d.claim()
    assert d.core.tasks == {}  # the server has the report: the task is forgotten


def test_reports_go_on_their_own_once_the_claim_waits_on_the_server() -> None:
    d = Driver(slots=2, cores=2, prefetch=0)
    d(Tick)
    (claim,) = of(Claim, d.claim(job(1)))  # one slot left: the next claim waits on the server
    assert claim.request.wait_s > 0
    out = d(TaskEnded, (1, 1), done(1))
    assert of(SendReports, out) == []  # the claim may still return in a moment
    assert d.core.wake_at() == d.t + PARKED_AFTER_S
    (send,) = of(SendReports, d.tick(PARKED_AFTER_S * 2))
    assert [r.job_id for r in send.reports] == [1]
    d(ReportsAnswered, [Ack.ACCEPTED])
    assert (1, 1) not in d.core.tasks


def test_a_lost_claim_answer_keeps_its_reports_for_the_next_claim() -> None:
    d = Driver(slots=1, cores=1, prefetch=0)
    d(Tick)
    d.claim(job(1))
    (claim,) = of(Claim, d(TaskEnded, (1, 1), done(1)))
    seq = d.core.last_claim_seq
    assert of(Claim, d(ClaimFailed)) == []  # back off before retrying
    assert d.core.known() == [(1, 1, True)]  # still held: the server may not have it
    (retry,) = of(Claim, d.tick(1.0))
    assert retry.request.reports == claim.request.reports
    assert d.core.last_claim_seq == seq  # nothing seen of what the lost answer carried


def test_short_jobs_make_the_pilot_hold_jobs_ahead_and_a_held_job_is_handed_back() -> None:
    d = Driver(slots=1, cores=1, prefetch=4, hold_s=2.0)
    d(Tick)
    d.claim(job(1))
    d.t += 0.01
    (claim,) = of(Claim, d(TaskEnded, (1, 1), done(1)))
    assert claim.request.max_jobs == 1 + 4  # recent jobs were short: hold some ahead
    out = d.claim(job(2), job(3))
    assert [s.job.id for s in of(Start, out)] == [2]
    assert d.core.task((3, 1)).state is TaskState.WAITING
    d.tick(1.0)  # job 2 is long now: nothing more is held...
    out = d.tick(1.5)  # ...and job 3, held over 2 s, goes back for another pilot
    assert of(Kill, out) == []  # it never started: no process to stop
    assert d.core.task((3, 1)).kill_reason is KillReason.HELD
    assert [(r.job_id, r.outcome) for r in d.core.outbox + _sent(out)] == [(3, "killed")]


def _sent(out: list[core.Instruction]) -> list[AttemptReport]:
    return [r for s in of(SendReports, out) for r in s.reports] + [
        r for c in of(Claim, out) for r in c.request.reports
    ]


def test_a_long_job_stops_prefetch_and_lets_the_claim_wait_for_drivers() -> None:
    d = Driver(slots=1, cores=1, prefetch=4, prefetch_below_s=0.5, driver_slots=2)
    d.core.job_seconds = 0.01
    d(Tick)
    (quick,) = of(Claim, d.claim(job(1)))  # short so far: a quick claim for jobs to hold
    assert quick.request.wait_s == 0 and quick.request.max_jobs == 4
    d.claim()
    assert of(Claim, d(Tick)) == []  # the last claim found nothing to hold
    assert d.core.wake_at() == 100.5  # when job 1 becomes long
    (parked,) = of(Claim, d.tick(0.6))
    assert parked.request.wait_s > 0 and parked.request.max_drivers == 2
    assert parked.request.prefetch is False


def test_a_job_past_its_walltime_is_killed_and_fails_retryably() -> None:
    d = Driver(slots=1, cores=1)
    d(Tick)
    d.claim(job(1, walltime_s=5.0))
    assert of(Kill, d.tick(4.0)) == []
    assert d.core.wake_at() == 105.0
    (kill,) = of(Kill, d.tick(1.5))
    assert kill == Kill((1, 1), KillReason.WALLTIME)
    out = d(TaskEnded, (1, 1), done(1, outcome="failed"))
    (report,) = _sent(out) or d.core.outbox
    assert report.outcome == "failed" and report.retryable
    assert report.error.startswith("WalltimeExceeded: the job ran past its walltime of 5s")


def test_a_job_that_finished_before_its_kill_keeps_its_success() -> None:
    d = Driver(slots=1, cores=1)
    d(Tick)
    d.claim(job(1))
    d(DrainRequested)
    d.tick(100.0)  # past the drain deadline: it is handed back...
    out = d(TaskEnded, (1, 1), done(1))  # ...but it had just succeeded
    (report,) = _sent(out)
    assert report.outcome == "succeeded" and report.result == "1"


def test_drain_hands_back_what_did_not_start_lets_jobs_finish_then_exits() -> None:
    d = Driver(slots=1, cores=1, prefetch=4, drain_timeout_s=10.0, driver_slots=1)
    d.core.job_seconds = 0.01
    d(Tick)
    d.claim(job(1), job(2), job(3, kind="driver"))
    d(DriverWaits, (3, 1), waits_for(9))
    if d.core.claim_out is not None:
        d.claim()
    out = d(DrainRequested)
    assert of(Kill, out) == [Kill((3, 1), KillReason.DRAIN)]  # the waiting driver goes now
    assert [(r.job_id, r.outcome) for r in _sent(out)] == [(2, "killed")]  # never started
    d(ReportsAnswered, [Ack.ACCEPTED])
    assert of(Claim, d(Tick)) == []  # a draining pilot claims nothing
    out = d(TaskEnded, (3, 1), done(3, outcome="failed"))
    out += d(TaskEnded, (1, 1), done(1))  # job 1 finishes within the drain timeout
    assert of(Exit, out) == []  # not before its report is taken
    sent = _sent(out)
    assert [(r.job_id, r.outcome) for r in sent] == [(3, "killed")]
    out = d(ReportsAnswered, [Ack.ACCEPTED])
    assert [(r.job_id, r.outcome) for r in _sent(out)] == [(1, "succeeded")]
    assert of(Exit, d(ReportsAnswered, [Ack.ACCEPTED])) == [Exit()]


def test_drain_deadline_hands_back_jobs_still_running() -> None:
    d = Driver(slots=1, cores=1, drain_timeout_s=2.0)
    d(Tick)
    d.claim(job(1))
    d(DrainRequested)
    assert of(Kill, d.tick(1.0)) == []
    assert of(Kill, d.tick(1.5)) == [Kill((1, 1), KillReason.DRAIN)]


def test_an_idle_pilot_exits_after_idle_exit_s() -> None:
    d = Driver(slots=1, cores=1, idle_exit_s=5.0)
    (claim,) = of(Claim, d(Tick))
    assert claim.request.wait_s == 5.0  # waits no longer than it may stay idle
    d.t += 5.0
    assert of(Exit, d.claim()) == [Exit()]


def waits_for(*ids: int, mode: str = "all") -> Wait:
    return Wait(ids=[(i, i) for i in ids], mode=mode)  # type: ignore[arg-type]


def test_a_waiting_driver_keeps_its_slot_while_no_one_needs_it() -> None:
    d = Driver(slots=1, cores=1, driver_slots=1)
    d(Tick)
    d.claim(job(1, kind="driver"))
    # The claim out (for the idle job slot) may take a queued driver: the server hears that
    # one driver here only waits, so it can say if a driver is queued.
    assert d(DriverWaits, (1, 1), waits_for(7)) == [TellParkable(1)]
    assert d(DriverAsks, (1, 1)) == [LetGo((1, 1))]  # its jobs ended: it goes on at once
    assert d.core.task((1, 1)).state is TaskState.RUNNING


def test_a_queued_driver_makes_the_pilot_park_its_longest_waiting_driver() -> None:
    d = Driver(slots=1, cores=1, driver_slots=1)
    d(Tick)
    d.claim(job(1, kind="driver"))
    d(DriverWaits, (1, 1), waits_for(7, 8))
    out = d.claim(drivers_queued=1)  # the server: a driver is queued for this pilot
    assert of(Park, out) == [Park((1, 1), waits_for(7, 8))]
    assert d.core.task((1, 1)).state is TaskState.PARKING
    (claim,) = of(Claim, out)  # parking frees the slot: this claim takes the queued driver
    assert claim.request.max_drivers == 1
    d(ParkAnswered, (1, 1), True)
    assert d.core.task((1, 1)).state is TaskState.PARKED
    out = d.claim(job(2, kind="driver"))
    assert [s.job.id for s in of(Start, out)] == [2]


def test_a_parked_driver_goes_on_once_the_server_gives_it_a_slot_back() -> None:
    d = Driver(slots=1, cores=1, driver_slots=1)
    d(Tick)
    d.claim(job(1, kind="driver"))
    d(DriverWaits, (1, 1), waits_for(7))
    d.claim(drivers_queued=1)
    d(ParkAnswered, (1, 1), True)
    d.claim(job(2, kind="driver"))
    d(DriverWaits, (2, 1), waits_for(8))  # the child waits too, holding the slot
    out = d(DriverAsks, (1, 1))  # the parent's jobs ended: it wants its slot back...
    assert Unpark((1, 1)) in out
    assert Park((2, 1), waits_for(8)) in out  # ...so the waiting child is parked for it
    assert d(UnparkAnswered, (1, 1), "ready") == [Unpark((1, 1))]  # no slot yet: ask again
    d(ParkAnswered, (2, 1), True)
    assert d(UnparkAnswered, (1, 1), "running") == [LetGo((1, 1))]


def test_a_driver_that_asks_to_go_on_while_being_parked_is_unparked_at_once() -> None:
    d = Driver(slots=1, cores=1, driver_slots=1)
    d(Tick)
    d.claim(job(1, kind="driver"))
    d(DriverWaits, (1, 1), waits_for(7))
    d.claim(drivers_queued=1)
    assert d(DriverAsks, (1, 1)) == []  # the park request is out: wait for its answer
    assert d(ParkAnswered, (1, 1), True) == [Unpark((1, 1))]
    assert d(UnparkAnswered, (1, 1), "running") == [LetGo((1, 1))]


def test_a_failed_park_request_is_sent_again_a_moment_later() -> None:
    d = Driver(slots=1, cores=1, driver_slots=1)
    d(Tick)
    d.claim(job(1, kind="driver"))
    d(DriverWaits, (1, 1), waits_for(7))
    d.claim(drivers_queued=1)
    assert of(Park, d(DriverRequestFailed, (1, 1))) == []
    assert of(Park, d.tick(1.5)) == [Park((1, 1), waits_for(7))]


def test_parked_drivers_beyond_warm_drivers_are_evicted_longest_parked_first() -> None:
    d = Driver(slots=1, cores=1, driver_slots=2, warm_drivers=1)
    d(Tick)
    d.claim(job(1, kind="driver"), job(2, kind="driver"))
    d(DriverWaits, (1, 1), waits_for(7))
    d.t += 1.0
    d(DriverWaits, (2, 1), waits_for(8))
    out = d.claim(drivers_queued=2)
    assert of(Park, out) == [Park((1, 1), waits_for(7)), Park((2, 1), waits_for(8))]
    assert d(ParkAnswered, (1, 1), True) == []
    d.t += 1.0
    out = d(ParkAnswered, (2, 1), True)  # two parked, one kept warm: the longest parked goes
    assert of(Kill, out) == [Kill((1, 1), KillReason.EVICTED)]
    out = d(TaskEnded, (1, 1), done(1, outcome="failed"))
    (evicted,) = [r for r in _sent(out) + d.core.outbox if r.job_id == 1]
    assert evicted.outcome == "killed" and evicted.error == "killed: evicted"
    assert not PilotCore.wants_artifacts(d.core.task((1, 1)) or d.core.tasks.get((1, 1)) or _gone())


def _gone() -> Any:
    return type("T", (), {"kill_reason": KillReason.EVICTED})()


def test_draining_hands_back_drivers_that_only_wait() -> None:
    d = Driver(slots=1, cores=1, driver_slots=2)
    d(Tick)
    d.claim(job(1, kind="driver"), job(2, kind="driver"))
    d(DriverWaits, (1, 1), waits_for(7))
    out = d(DrainRequested)
    assert of(Kill, out) == [Kill((1, 1), KillReason.DRAIN)]  # waiting: it goes at once
    out = d(DriverWaits, (2, 1), waits_for(8))  # the other finishes its step, then waits
    assert of(Kill, out) == [Kill((2, 1), KillReason.DRAIN)]


def test_the_servers_kill_commands_stop_running_and_hand_back_held_jobs() -> None:
    d = Driver(slots=1, cores=1, prefetch=2)
    d.core.job_seconds = 0.01
    d(Tick)
    d.claim(job(1), job(2))
    commands = PilotCommands(
        kill=[
            KillCommand(job_id=1, attempt=1, reason=KillReason.CANCELLED),
            KillCommand(job_id=2, attempt=1, reason=KillReason.STALE),
        ]
    )
    out = d(HeartbeatAnswered, commands)
    assert of(Kill, out) == [Kill((1, 1), KillReason.CANCELLED)]
    assert d.core.task((2, 1)).state is TaskState.DONE
    assert (1, 1, True) in d.core.known() and (2, 1, True) in d.core.known()
    d(TaskEnded, (1, 1), done(1, outcome="failed"))
    assert not core.PilotCore.wants_artifacts(d.core.task((2, 1)))


def test_giving_up_hands_everything_back_and_exits_with_the_reason() -> None:
    d = Driver(slots=1, cores=1)
    d(Tick)
    d.claim(job(1))
    out = d(StopNow, "its token was revoked")
    assert of(Kill, out) == [Kill((1, 1), KillReason.DRAIN)]
    out = d(TaskEnded, (1, 1), done(1, outcome="failed"))
    d(ReportsAnswered, [Ack.ACCEPTED] * len(_sent(out)))
    assert d.core.phase is core.Phase.EXITED and d.core.failure == "its token was revoked"
