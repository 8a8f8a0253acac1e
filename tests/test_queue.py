"""The job queue's transactions against a real database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa
from harness import POLICY, Q, failed, ok, rep

from pilotwave.errors import NotFound
from pilotwave.protocol import Ack, AttemptState, Gpu, JobState, Kill, KillReason, Known, PilotState
from pilotwave.store.schema import attempts, jobs
from pilotwave.wms import jobs as wj
from pilotwave.wms import pilots
from pilotwave.wms.events import story


def test_submit_returns_ids_in_order_and_a_repeated_key_is_the_same_job(q: Q) -> None:
    ids = q.submit(3)
    assert ids == sorted(ids) and len(set(ids)) == 3
    first = q.submit(1, key="k-1")
    again = q.submit(1, key="k-1")
    assert first == again
    assert q.submit(1, key="k-1", owner=q.bob) != first  # keys are per owner


def test_claim_respects_slots_and_frees_them_on_completion(q: Q) -> None:
    ids = q.submit(5)
    pid = q.pilot(slots=2, cores=8)
    got = q.claim(pid)
    assert [c.id for c in got] == ids[:2] and all(c.attempt == 1 for c in got)
    assert q.claim(pid) == []  # full: the server counts what the pilot runs
    assert q.report(pid, ok(ids[0])) == [Ack.ACCEPTED]
    assert [c.id for c in q.claim(pid)] == [ids[2]]
    job = q.job(ids[0])
    assert job["state"] == JobState.SUCCEEDED and job["result"] == "42"


def test_repeated_report_is_acknowledged_once(q: Q) -> None:
    (jid,) = q.submit(1)
    pid = q.pilot()
    q.claim(pid)
    assert q.report(pid, ok(jid), ok(jid)) == [Ack.ACCEPTED, Ack.DUPLICATE]
    assert q.report(pid, ok(jid)) == [Ack.DUPLICATE]
    with q.db.read() as conn:
        n = conn.scalar(
            sa.select(sa.func.count()).select_from(attempts).where(attempts.c.job_id == jid)
        )
    assert n == 1


def test_report_for_a_stale_attempt_is_refused(q: Q) -> None:
    (jid,) = q.submit(1)
    p1, p2 = q.pilot(), q.pilot()
    q.claim(p1)
    q.tx(lambda c, w: pilots.reap(c, q.now + 100, 30, POLICY, w))  # p1 goes silent: attempt 1 lost
    q.now += 200  # past the back-off
    got = q.claim(p2)
    assert [(c.id, c.attempt) for c in got] == [(jid, 2)]
    assert q.report(p1, ok(jid, attempt=1)) == [Ack.STALE]  # the zombie cannot overwrite
    assert q.report(p2, ok(jid, attempt=2, result='"second"')) == [Ack.ACCEPTED]
    assert q.job(jid)["result"] == '"second"'


def test_report_from_another_pilot_or_for_unknown_attempt_is_unknown(q: Q) -> None:
    (jid,) = q.submit(1)
    p1, p2 = q.pilot(), q.pilot()
    q.claim(p1)
    assert q.report(p2, ok(jid)) == [Ack.UNKNOWN]
    assert q.report(p1, ok(jid, attempt=7)) == [Ack.UNKNOWN]


def test_failure_is_retried_after_backoff_then_fails_when_attempts_run_out(q: Q) -> None:
    (jid,) = q.submit(1, max_attempts=2)
    pid = q.pilot()
    q.claim(pid)
    q.report(pid, failed(jid))
    job = q.job(jid)
    assert job["state"] == JobState.QUEUED and job["not_before"] == q.now + 5
    assert q.claim(pid) == []  # backing off
    q.now += 5
    assert [c.attempt for c in q.claim(pid)] == [2]
    q.report(pid, failed(jid, attempt=2))
    job = q.job(jid)
    assert job["state"] == JobState.FAILED and "ValueError: boom" in job["error"]
    assert [a["state"] for a in job["attempt_history"]] == ["failed", "failed"]


def test_not_retryable_failure_fails_at_once(q: Q) -> None:
    (jid,) = q.submit(1, max_attempts=5)
    pid = q.pilot()
    q.claim(pid)
    q.report(pid, failed(jid, retryable=False))
    assert q.job(jid)["state"] == JobState.FAILED


def test_silent_pilot_is_lost_and_its_jobs_retried(q: Q) -> None:
    ids = q.submit(2)
    pid = q.pilot()
    q.claim(pid)
    lost, wake = q.tx(lambda c, w: pilots.reap(c, q.now + 31, 30, POLICY, w))
    assert lost == [pid]
    for jid in ids:
        job = q.job(jid)
        assert job["state"] == JobState.QUEUED
        assert job["attempt_history"][0]["state"] == AttemptState.LOST
        assert "no heartbeat" in job["attempt_history"][0]["error"]
    assert any(t.startswith("queue:") for _, t in wake.later)
    with q.db.read() as conn:
        assert [e["to_state"] for e in story(conn, pilot_id=pid)] == [
            PilotState.ACTIVE,
            PilotState.LOST,
        ]


def test_reaper_leaves_pilots_that_heartbeat(q: Q) -> None:
    pid = q.pilot()
    q.now += 20
    q.tx(lambda c, w: pilots.heartbeat(c, pid, [], 0, False, q.now, POLICY, w))
    lost, _ = q.tx(lambda c, w: pilots.reap(c, q.now + 15, 30, POLICY, w))
    assert lost == []


def test_heartbeat_marks_attempts_the_pilot_forgot_as_lost(q: Q) -> None:
    a, b = q.submit(2)
    pid = q.pilot()
    got = q.claim(pid)
    seq = got[0].claim_seq
    # The pilot saw the claim but only knows about job a (job b's start was lost).
    cmds, _ = q.tx(
        lambda c, w: pilots.heartbeat(
            c, pid, [Known(job_id=a, attempt=1)], seq, False, q.now, POLICY, w
        )
    )
    assert not cmds
    assert q.job(b)["attempt_history"][0]["state"] == AttemptState.LOST
    assert q.job(a)["state"] == JobState.RUNNING


def test_heartbeat_does_not_lose_a_claim_the_pilot_has_not_seen_yet(q: Q) -> None:
    (a,) = q.submit(1)
    pid = q.pilot()
    q.claim(pid)
    q.tx(lambda c, w: pilots.heartbeat(c, pid, [], 0, False, q.now + 1, POLICY, w, grace_s=30))
    assert q.job(a)["state"] == JobState.RUNNING
    q.tx(lambda c, w: pilots.heartbeat(c, pid, [], 0, False, q.now + 31, POLICY, w, grace_s=30))
    assert q.job(a)["attempt_history"][0]["state"] == AttemptState.LOST


def test_cancel_running_job_sends_a_kill_command(q: Q) -> None:
    a, b, done = q.submit(3)
    pid = q.pilot(slots=3, cores=3)
    q.claim(pid)
    q.report(pid, ok(done))
    cancelled, wake = q.tx(lambda c, w: wj.cancel(c, [a, b, done], None, q.now, w))
    assert sorted(cancelled) == [a, b]
    assert f"cmd:{pid}" in wake.now
    known = [Known(job_id=a, attempt=1), Known(job_id=b, attempt=1, killing=True)]
    cmds, _ = q.tx(lambda c, w: pilots.heartbeat(c, pid, known, 1, False, q.now, POLICY, w))
    assert cmds.kill == [Kill(job_id=a, attempt=1, reason=KillReason.CANCELLED)]
    # The killed attempt's report keeps the job cancelled.
    assert q.report(pid, rep(a, 1, AttemptState.KILLED, error="killed")) == [Ack.ACCEPTED]
    job = q.job(a)
    assert (
        job["state"] == JobState.CANCELLED
        and job["attempt_history"][0]["state"] == AttemptState.KILLED
    )


def test_cancel_of_someone_elses_job_is_not_found(q: Q) -> None:
    (jid,) = q.submit(1)
    with pytest.raises(NotFound):
        q.tx(lambda c, w: wj.cancel(c, [jid], q.bob, q.now, w))
    assert q.job(jid)["state"] == JobState.QUEUED


def test_draining_pilot_claims_nothing(q: Q) -> None:
    q.submit(2)
    pid = q.pilot()
    q.tx(lambda c, w: pilots.set_draining(c, pid, q.now, w, "test"))
    assert q.claim(pid) is None
    cmds, _ = q.tx(lambda c, w: pilots.heartbeat(c, pid, [], 0, False, q.now, POLICY, w))
    assert cmds.drain


def test_gpus_are_assigned_without_overlap(q: Q) -> None:
    ids = q.submit(3, gpus=1, queue="gpu")
    gpus = tuple(Gpu(index=i, model="A100", memory_mb=40000) for i in range(2))
    pid = q.pilot(slots=4, cores=4, gpus=gpus, queues=("gpu",))
    got = q.claim(pid)
    assert sorted(c.gpus for c in got) == [(0,), (1,)]
    q.report(pid, ok(got[0].id))
    assert [c.gpus for c in q.claim(pid)] == [got[0].gpus]
    assert ids


def test_every_transition_is_in_the_job_story(q: Q) -> None:
    (jid,) = q.submit(1)
    pid = q.pilot()
    q.claim(pid)
    q.report(pid, failed(jid))
    q.now += 10
    q.claim(pid)
    q.report(pid, ok(jid, attempt=2))
    with q.db.read() as conn:
        steps = [(e["from_state"], e["to_state"], e["attempt"]) for e in story(conn, job_id=jid)]
    assert steps == [
        (None, "queued", None),
        ("queued", "running", 1),
        ("running", "queued", 1),
        ("queued", "running", 2),
        ("running", "succeeded", 2),
    ]


def test_racing_claims_take_each_job_exactly_once(q: Q) -> None:
    n = 600
    q.submit(n)
    pids = [q.pilot(slots=1000, cores=1000) for _ in range(6)]
    taken: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(pid: str) -> None:
        try:
            while True:
                got = q.claim(pid, n=7)
                if not got:
                    with q.db.read() as conn:
                        left = conn.scalar(
                            sa.select(sa.func.count())
                            .select_from(jobs)
                            .where(jobs.c.state == "queued")
                        )
                    if not left:
                        return
                    continue
                with lock:
                    taken.extend(c.id for c in got)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in pids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    counts = Counter(taken)
    assert len(counts) == n and set(counts.values()) == {1}
    with q.db.read() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(attempts)) == n


def test_prefetch_holds_cpu_jobs_that_fit_the_whole_pilot(q: Q) -> None:
    small = q.submit(4, cores=1)
    (big,) = q.submit(1, cores=8)
    (gpu,) = q.submit(1, gpus=1)
    pid = q.pilot(slots=1, cores=2, prefetch=2)
    got = q.claim(pid, n=10)
    assert [c.id for c in got] == small[:3]  # one to run now, two ahead
    assert q.claim(pid, n=10) == []  # it holds slots + prefetch
    q.report(pid, ok(small[0]))
    assert [c.id for c in q.claim(pid, n=10)] == [small[3]]
    assert q.job(big)["state"] == q.job(gpu)["state"] == JobState.QUEUED


def test_a_rolled_back_transaction_leaves_no_events(q: Q) -> None:
    from pilotwave.wms.events import event, record

    (jid,) = q.submit(1)

    def fails(conn, wake):  # type: ignore[no-untyped-def]
        record(conn, [event(q.now, "running", job_id=jid, reason="phantom")])
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        q.tx(fails)
    q.submit(3)  # later transactions, likely on the same pooled connection
    with q.db.read() as conn:
        assert "phantom" not in [e["reason"] for e in story(conn, job_id=jid)]
