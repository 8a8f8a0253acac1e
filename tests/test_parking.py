"""Drivers park while they wait: driver slots bound running workflow steps, not live workflows."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import workflows_basic as wb
from harness import POLICY, Q, py_spec, rep, run_to_end, running_cluster, submit, wait_for

from pilotwave.engine import drivers, parking
from pilotwave.engine import workflows as engine
from pilotwave.errors import Conflict
from pilotwave.protocol import AttemptState, FunctionRef, Limits, Wait, WorkflowSubmission
from pilotwave.wms import claims, pilots, reports


def _runs(log: Path) -> Counter[str]:
    return Counter(log.read_text().split()) if log.exists() else Counter()


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 25 s alone on 2 cores; far more with other load
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_nested_workflows_wider_and_deeper_than_the_slots_finish_on_one_driver_slot(
    backend: str, pw_home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = None if backend == "sqlite" else request.getfixturevalue("postgres").new_database()
    log = tmp_path / "runs.log"
    width = 20  # 41 workflows three deep on one driver slot, far beyond the 8 warm drivers kept
    with running_cluster(
        pw_home, pilots=1, slots=2, db=db, pilot_args=["--driver-slots", "1"]
    ) as c:
        t0 = time.monotonic()
        run = wb.nested.submit(log=str(log), width=width)
        assert run.result(timeout=600) == sum(i + 1 for i in range(width))
        took = time.monotonic() - t0
        status = c.client().workflow(run.id)
    assert _runs(log) == Counter(f"leaf{i}" for i in range(width))  # every job ran once
    assert len(status["children"]) == width
    assert all(len(child["children"]) == 1 for child in status["children"])
    print(f"{backend}: {1 + 2 * width} workflows on one driver slot in {took:.1f} s")


def _parked(client: Any, run: Any) -> int:
    """Drivers of the workflow tree that are parked now."""

    def walk(status: dict[str, Any]) -> int:
        here = sum(1 for j in status["jobs"] if j["kind"] == "driver" and j["state"] == "parked")
        return here + sum(walk(child) for child in status["children"])

    return walk(client.workflow(run.id))


def _succeeded_leaves(client: Any, run: Any) -> set[str]:
    """The tags of the leaves the server has recorded as succeeded."""
    return {
        client.job(j["id"])["spec"]["args"][1]
        for j in _tree_jobs(client, run)
        if j["kind"] != "driver" and j["state"] == "succeeded"
    }


def _tree_jobs(client: Any, run: Any) -> list[dict[str, Any]]:
    def walk(status: dict[str, Any]) -> list[dict[str, Any]]:
        return [*status["jobs"], *(j for child in status["children"] for j in walk(child))]

    return walk(client.workflow(run.id))


@pytest.mark.slow
@pytest.mark.timeout(600)
# Each kill on one database (the other combinations share every code path that differs).
@pytest.mark.parametrize(("kill", "backend"), [("pilot", "sqlite"), ("server", "postgresql")])
def test_a_kill_while_drivers_are_parked_loses_nothing_and_reruns_no_finished_job(
    kill: str, backend: str, pw_home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = None if backend == "sqlite" else request.getfixturevalue("postgres").new_database()
    log = tmp_path / "runs.log"
    width = 8
    pilot_args = ["--driver-slots", "1", "--warm-drivers", "3"]
    with running_cluster(pw_home, pilots=2, slots=1, db=db, pilot_args=pilot_args) as c:
        client = c.client()
        run = wb.nested.submit(log=str(log), width=width, sleep_s=1.0)
        wait_for(lambda: _parked(client, run) >= 3, timeout=120, what="drivers parked")
        wait_for(lambda: len(_succeeded_leaves(client, run)) >= 2, timeout=120, what="leaves")
        if kill == "pilot":  # SIGKILL: its warm parked drivers and running jobs die with it
            victim = next(p for p in c.pilots if p.poll() is None)
            victim.kill()
            victim.wait()
            done_before = _succeeded_leaves(client, run)
            c.start_pilot()  # a replacement, as a provisioner would start
        else:
            done_before = _succeeded_leaves(client, run)
            c.kill_server()
            time.sleep(1.0)  # drivers and pilots keep retrying meanwhile
            c.start_server()
        assert run.result(timeout=300) == sum(i + 1 for i in range(width))
        jobs = _tree_jobs(c.client(), run)
    runs = _runs(log)
    # Each leaf ran; those the server had recorded as succeeded never ran again (a leaf whose
    # pilot died between its work and its report did not succeed, and runs again: its mark
    # comes after its work).
    assert set(runs) == {f"leaf{i}" for i in range(width)}
    assert done_before and all(runs[tag] == 1 for tag in done_before)
    assert all(j["state"] == "succeeded" for j in jobs)
    leaves = [j for j in jobs if j["kind"] != "driver"]
    assert len(leaves) == width  # no replayed driver submitted its job twice


# -- the rules, on both databases, without HTTP ---------------------------------------------


def _driver_on(q: Q, pid: str, **options: Any) -> tuple[int, int]:
    """A workflow whose driver runs on ``pid``: (workflow id, driver job id)."""
    spec = drivers.workflow_spec(
        WorkflowSubmission(function=FunctionRef(module="m", qualname="f"), **options), Limits()
    )
    (wid, job), _ = q.tx(lambda c, w: engine.create(c, q.alice, spec, q.now, w))
    got = q.claim(pid, 0, drivers=1)
    assert got is not None and [g.id for g in got] == [job]
    return wid, job


def _jobs_of(q: Q, wid: int, n: int) -> list[int]:
    """``n`` jobs submitted by workflow ``wid``'s driver."""
    return submit(q, *(replace(py_spec(i), workflow_id=wid) for i in range(n)))


def _park(q: Q, pid: str, job: int, wait: Wait, attempt: int = 1) -> bool:
    parked, _ = q.tx(lambda c, w: parking.park(c, pid, job, attempt, wait, q.now, w))
    return bool(parked)


def test_a_parked_driver_frees_its_slot_and_gets_it_back_when_one_is_free(q: Q) -> None:
    pid = q.pilot(driver_slots=1)
    _, first = _driver_on(q, pid)
    (leaf,) = submit(q, py_spec(1, cores=1))
    spec = drivers.workflow_spec(
        WorkflowSubmission(function=FunctionRef(module="m", qualname="g")), Limits()
    )
    (_, second), _ = q.tx(lambda c, w: engine.create(c, q.alice, spec, q.now, w))
    assert q.claim(pid, 0, drivers=1) == []  # its one driver slot is taken
    assert _park(q, pid, first, Wait(ids=[(leaf, leaf)]))
    assert q.job(first)["state"] == "parked" and q.job(first)["pilot_id"] == pid
    got = q.claim(pid, 0, drivers=1)
    assert got is not None and [g.id for g in got] == [second]  # the slot went to it
    state, _ = q.tx(lambda c, w: parking.unpark(c, pid, first, 1, q.now, w))
    assert state == "ready"  # no slot free: it waits for one
    q.report(pid, rep(second, 1, AttemptState.SUCCEEDED, result="1"))  # the slot frees...
    assert q.job(first)["state"] == "running"  # ...and goes to the ready driver at once
    events = [e["to_state"] for e in q.events(first)]
    assert events[-2:] == ["parked", "running"]


def test_parking_is_for_the_drivers_current_attempt_on_its_own_pilot(q: Q) -> None:
    pid, other = q.pilot(driver_slots=1), q.pilot(driver_slots=1)
    _, job = _driver_on(q, pid)
    wait = Wait(ids=[(99, 99)])
    with pytest.raises(Conflict):
        _park(q, other, job, wait)
    with pytest.raises(Conflict):
        _park(q, pid, job, wait, attempt=2)
    assert _park(q, pid, job, wait) and _park(q, pid, job, wait)  # again: no change


def test_a_parked_driver_without_a_process_is_queued_when_all_it_waits_for_ended(q: Q) -> None:
    pid = q.pilot(slots=2, cores=2, driver_slots=1)
    wid, job = _driver_on(q, pid)
    a, b = _jobs_of(q, wid, 2)
    assert _park(q, pid, job, Wait(ids=[(a, b)], mode="all"))
    q.report(pid, rep(job, 1, AttemptState.KILLED, error="killed: evicted"))  # its pilot evicts it
    driver = q.job(job)
    assert driver["state"] == "parked" and driver["pilot_id"] is None  # waits on, cold
    assert driver["attempt_history"][-1]["state"] == "killed" and driver["failures"] == 0
    run_to_end(q, pid, a, AttemptState.SUCCEEDED, 1)
    assert q.job(job)["state"] == "parked"  # one of two: it still waits
    run_to_end(q, pid, b, AttemptState.FAILED)
    assert q.job(job)["state"] == "queued"  # all ended (a failure ends a wait too)
    got = q.claim(pid, 0, drivers=1)
    assert got is not None and [(g.id, g.attempt) for g in got] == [(job, 2)]  # it replays


def test_a_cold_driver_waiting_for_any_goes_on_at_the_first_end_or_report(q: Q) -> None:
    pid = q.pilot(slots=2, cores=2, driver_slots=2)
    wid1, one = _driver_on(q, pid)
    wid2, two = _driver_on(q, pid)
    (a,) = _jobs_of(q, wid1, 1)
    (b,) = _jobs_of(q, wid2, 1)
    assert _park(q, pid, one, Wait(ids=[(a, a)], mode="any"))
    assert _park(q, pid, two, Wait(ids=[(b, b)], mode="any", reports={b: 0}))
    for job in (one, two):
        q.report(pid, rep(job, 1, AttemptState.KILLED, error="killed: evicted"))
    got = q.claim(pid, 2) or []
    assert sorted(g.id for g in got) == [a, b]
    q.tx(lambda c, w: reports.add(c, b, 1, 0, 0.5, q.now, w))
    assert q.job(two)["state"] == "queued" and q.job(one)["state"] == "parked"
    q.report(pid, rep(a, 1, AttemptState.SUCCEEDED, result="1"))
    assert q.job(one)["state"] == "queued"


def test_a_cold_drivers_wait_times_out_and_a_cancel_reaches_a_parked_driver(q: Q) -> None:
    pid = q.pilot(slots=1, cores=1, driver_slots=2)
    _, timed = _driver_on(q, pid)
    wid, cancelled = _driver_on(q, pid)
    (a,) = submit(q, py_spec(1))
    assert _park(q, pid, timed, Wait(ids=[(a, a)], timeout_s=30.0))
    assert _park(q, pid, cancelled, Wait(ids=[(a, a)]))
    _, wake = q.tx(lambda c, w: pilots.exit_(c, pid, q.now, POLICY, w))  # its pilot leaves
    assert "deadline" in {topic for _, topic in wake.later}  # the server times the timeout
    nxt, _ = q.tx(lambda c, w: parking.expire(c, q.now + 10, w))
    assert nxt == q.now + 30 and q.job(timed)["state"] == "parked"
    q.tx(lambda c, w: parking.expire(c, q.now + 31, w))
    assert q.job(timed)["state"] == "queued"
    q.tx(lambda c, w: engine.cancel(c, wid, q.alice, q.now, w))
    assert q.job(cancelled)["state"] == "cancelled"


def test_the_claim_hint_counts_queued_drivers_for_a_pilot_with_parkable_ones(q: Q) -> None:
    pid = q.pilot(driver_slots=1)
    _driver_on(q, pid)
    spec = drivers.workflow_spec(
        WorkflowSubmission(function=FunctionRef(module="m", qualname="g")), Limits()
    )
    for _ in range(3):
        q.tx(lambda c, w: engine.create(c, q.alice, spec, q.now, w))
    hint = lambda: q.db.transact(lambda c: claims.drivers_queued(c, pid, q.now))  # noqa: E731
    assert hint() == 0  # nothing here it could park
    q.tx(lambda c, w: claims.set_parkable(c, pid, 2, w))
    assert hint() == 2
