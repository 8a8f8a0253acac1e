"""The workflow engine's rules and transactions, on SQLite and on PostgreSQL (no HTTP, no pilots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import Q, future, py_spec, rep, run_to_end, submit

from pilotwave.engine import commands as log
from pilotwave.engine import workflows as wf
from pilotwave.engine.commands import decide
from pilotwave.errors import Conflict, InvalidRequest, NonDeterminismError, NotFound
from pilotwave.protocol import (
    AttemptState,
    CommandKind,
    CommandRecord,
    JobState,
    Recorded,
    Step,
    WorkflowState,
    workflow_state,
)
from pilotwave.protocol.wire import fill_futures, future_ids
from pilotwave.server import auth
from pilotwave.wms import claims
from pilotwave.wms import jobs as wj


def cmd(
    seq: int,
    kind: CommandKind,
    call: str,
    fp: str,
    observed: tuple[int, ...] = (),
    reports: tuple[tuple[int, int, int, int, float], ...] = (),
    at: float | None = None,
) -> CommandRecord:
    """A driver command as sent (a submit's jobs travel with its submitter here)."""
    extra: dict[str, Any] = {"jobs": []} if kind == CommandKind.SUBMIT else {}
    return CommandRecord(
        seq=seq,
        kind=kind,
        call=call,
        fingerprint=fp,
        observed=list(observed),
        reports=list(reports),
        at=at,
        **extra,
    )


# -- pure rules ------------------------------------------------------------------------


def rec(fp: str, stale: bool = False, kind: str = "submit") -> Recorded:
    return Recorded(0, kind, "f.submit", fp, {"ids": [1]}, stale)


def test_replay_rule() -> None:
    submit_ = cmd(0, CommandKind.SUBMIT, "f.submit", "aa")
    assert decide(1, submit_, None) is Step.RECORD
    assert decide(1, submit_, rec("aa")) is Step.REPLAY
    assert decide(1, submit_, rec("aa", stale=True)) is Step.ADOPT
    assert decide(1, submit_, rec("bb", stale=True)) is Step.TRUNCATE
    observe = cmd(0, CommandKind.OBSERVE, "result(f)", "aa")
    assert decide(1, observe, rec("aa", stale=True, kind="observe")) is Step.ADOPT
    assert decide(1, observe, rec("aa", stale=True)) is Step.TRUNCATE
    with pytest.raises(NonDeterminismError, match=r"fingerprint bb.*fingerprint aa"):
        decide(1, submit_, rec("bb"))


def test_placeholders_are_found_and_filled_only_as_json_objects() -> None:
    spec = json.dumps({"args": [future(3), '{"$pw_future":4}', [future(5)]]}, separators=(",", ":"))
    assert future_ids(spec) == [3, 5]  # the string lookalike is escaped, not a match
    filled = json.loads(fill_futures(spec, {3: '{"x":1}', 5: "7"}))
    assert filled["args"] == [{"x": 1}, '{"$pw_future":4}', [7]]


def test_workflow_state_follows_its_driver() -> None:
    assert workflow_state("running", False) is WorkflowState.RUNNING
    assert workflow_state("parked", False) is WorkflowState.RUNNING
    assert workflow_state("queued", True) is WorkflowState.SUSPENDED
    assert workflow_state("failed", True) is WorkflowState.FAILED


# -- dependencies ----------------------------------------------------------------------


def test_a_dependent_is_released_with_the_upstream_result_in_the_same_transaction(q: Q) -> None:
    (up,) = submit(q, py_spec(1))
    (down,) = submit(q, py_spec(future(up), [future(up)]))
    assert q.job(down)["state"] == "pending"
    pid = q.pilot()
    run_to_end(q, pid, up, AttemptState.SUCCEEDED, {"loss": 0.5})
    job = q.job(down)
    assert job["state"] == "queued"
    assert json.loads(job["spec"])["args"] == [{"loss": 0.5}, [{"loss": 0.5}]]


def test_a_dependent_waits_for_all_its_upstreams(q: Q) -> None:
    a, b = submit(q, py_spec(1), py_spec(2))
    (down,) = submit(q, py_spec([future(a), future(b)]))
    pid = q.pilot(slots=1)
    run_to_end(q, pid, a, AttemptState.SUCCEEDED, 1)
    assert q.job(down)["state"] == "pending"
    run_to_end(q, pid, b, AttemptState.SUCCEEDED, 2)
    assert json.loads(q.job(down)["spec"])["args"] == [[1, 2]]


def test_an_upstream_failure_cancels_dependents_down_the_graph(q: Q) -> None:
    (up,) = submit(q, py_spec(1, max_attempts=1))
    (mid,) = submit(q, py_spec(future(up)))
    (low,) = submit(q, py_spec(future(mid)))
    run_to_end(q, q.pilot(), up, AttemptState.FAILED)
    for job_id in (mid, low):
        job = q.job(job_id)
        assert job["state"] == "cancelled"
        assert job["reason"] == "upstream_failed" and f"job {up}" in job["error"]
        assert "bad luck" in job["error"]


def test_futures_of_finished_jobs_resolve_at_submission(q: Q) -> None:
    ok, bad = submit(q, py_spec(1), py_spec(2, max_attempts=1))
    pid = q.pilot(slots=1)
    run_to_end(q, pid, ok, AttemptState.SUCCEEDED, 5)
    run_to_end(q, pid, bad, AttemptState.FAILED)
    late_ok, late_bad = submit(q, py_spec(future(ok)), py_spec(future(bad)))
    assert q.job(late_ok)["state"] == "queued"
    assert json.loads(q.job(late_ok)["spec"])["args"] == [5]
    assert q.job(late_bad)["state"] == "cancelled"


def test_unknown_or_foreign_futures_are_refused(q: Q) -> None:
    (bobs,) = submit(q, py_spec(1), owner=q.bob)
    with pytest.raises(NotFound, match="no job 99999"):
        submit(q, py_spec(future(99999)))
    with pytest.raises(NotFound, match=f"no job {bobs}"):
        submit(q, py_spec(future(bobs)))


def test_cancelling_an_upstream_cancels_its_dependents(q: Q) -> None:
    (up,) = submit(q, py_spec(1))
    (down,) = submit(q, py_spec(future(up)))
    q.tx(lambda c, w: wj.cancel(c, [up], q.alice, q.now, w))
    assert q.job(down)["state"] == "cancelled"


# -- workflows and the command log ------------------------------------------------------


def new_workflow(q: Q, **kw: Any) -> tuple[int, int]:
    spec = wf.WorkflowSpec(
        name="flow", function={"module": "m", "qualname": "flow"}, kwargs="{}", **kw
    )
    out, _ = q.tx(lambda c, w: wf.create(c, q.alice, spec, q.now, w))
    return out  # type: ignore[no-any-return]


def record(q: Q, wid: int, *batch: tuple[CommandRecord, Any]) -> list[dict[str, Any]]:
    out, _ = q.tx(lambda c, w: log.apply(c, wid, q.alice, list(batch), q.now, w))
    return out  # type: ignore[no-any-return]


def submitter(q: Q, wid: int, *specs: wj.JobSpec) -> Any:
    from dataclasses import replace

    def run(conn: Any, cmd: CommandRecord, wake: Any) -> dict[str, Any]:
        mine = [replace(s, workflow_id=wid) for s in specs]
        return {"ids": wj.submit(conn, q.alice, mine, q.now, wake)}

    return run


def test_a_workflow_is_a_driver_job_in_driver_slots_only(q: Q) -> None:
    wid, driver = new_workflow(q, seed=7)
    compute_only = q.pilot()
    assert q.claim(compute_only) == []  # compute claims never take drivers
    got, _ = q.tx(
        lambda c, w: claims.claim(
            c, compute_only, 0, q.now, skip_locked=q.db.is_postgres, max_drivers=1, wake=w
        )
    )
    assert got == []  # this pilot has no driver slots
    pid = q.pilot(slots=1, cores=1, driver_slots=2)
    got, _ = q.tx(
        lambda c, w: claims.claim(
            c, pid, 1, q.now, skip_locked=q.db.is_postgres, max_drivers=2, wake=w
        )
    )
    assert [(g.id, g.kind) for g in got] == [(driver, "driver")]
    assert json.loads(got[0].spec)["seed"] == 7 and json.loads(got[0].spec)["workflow_id"] == wid
    (job,) = submit(q, py_spec(1))
    got, _ = q.tx(lambda c, w: claims.claim(c, pid, 1, q.now, skip_locked=q.db.is_postgres, wake=w))
    assert [g.id for g in got] == [job]  # the running driver took no compute slot


def test_commands_replay_and_refuse_a_different_call(q: Q) -> None:
    wid, _ = new_workflow(q)
    submit_ = cmd(0, CommandKind.SUBMIT, "f.submit", "aa" * 8)
    (first,) = record(q, wid, (submit_, submitter(q, wid, py_spec(1))))
    (again,) = record(q, wid, (submit_, submitter(q, wid, py_spec(1))))
    assert first == again and len(first["ids"]) == 1  # a resent command submits nothing new
    other = cmd(0, CommandKind.SUBMIT, "g.submit", "bb" * 8)
    with pytest.raises(NonDeterminismError, match=r"f\.submit.*g\.submit"):
        record(q, wid, (other, submitter(q, wid, py_spec(2))))


def test_retry_cuts_the_record_at_the_first_failure_seen(q: Q) -> None:
    wid, driver = new_workflow(q)
    good = cmd(0, CommandKind.SUBMIT, "good.submit", "a1" * 8)
    bad = cmd(1, CommandKind.SUBMIT, "bad.submit", "b1" * 8)
    ((g,), (b,)) = [
        o["ids"]
        for o in record(
            q,
            wid,
            (good, submitter(q, wid, py_spec(1))),
            (bad, submitter(q, wid, py_spec(2, max_attempts=1))),
        )
    ]
    pid = q.pilot(slots=1)
    run_to_end(q, pid, g, AttemptState.SUCCEEDED, 1)
    run_to_end(q, pid, b, AttemptState.FAILED)
    record(
        q,
        wid,
        (cmd(2, CommandKind.OBSERVE, "result(good)", "c1" * 8, (g,)), None),
        (cmd(3, CommandKind.OBSERVE, "result(bad)", "d1" * 8, (b,)), None),
    )
    with pytest.raises(Conflict, match="only a failed or cancelled workflow"):
        q.tx(lambda c, w: wf.retry(c, wid, q.alice, q.now, w))
    q.tx(lambda c, w: wj.cancel(c, [driver], q.alice, q.now, w))
    out, _ = q.tx(lambda c, w: wf.retry(c, wid, q.alice, q.now, w))
    assert out["cut"] == {wid: 3} and out["reset"] == 2  # the bad job and the driver
    assert q.job(b)["state"] == "queued" and q.job(b)["failures"] == 0
    assert q.job(g)["state"] == "succeeded"
    with q.db.read() as conn:
        data = wf.replay_data(conn, wid, q.alice)
    assert [c["stale"] for c in data["commands"]] == [False, False, False, True]
    assert set(data["results"]) == {g}  # a re-run driver sees only what still holds


def test_a_stale_tail_is_adopted_when_the_same_and_dropped_when_not(q: Q) -> None:
    wid, _ = new_workflow(q)
    (a,) = record(
        q, wid, (cmd(0, CommandKind.SUBMIT, "a", "a2" * 8), submitter(q, wid, py_spec(1)))
    )[0]["ids"]
    record(q, wid, (cmd(1, CommandKind.OBSERVE, "result(a)", "b2" * 8, (a,)), None))
    (later,) = record(
        q, wid, (cmd(2, CommandKind.SUBMIT, "x", "c2" * 8), submitter(q, wid, py_spec(2)))
    )[0]["ids"]
    (extra,) = record(
        q, wid, (cmd(3, CommandKind.SUBMIT, "y", "e2" * 8), submitter(q, wid, py_spec(3)))
    )[0]["ids"]
    with q.db.write() as conn:
        log.cut(conn, wid, {a})
    # The same observation at step 1 takes its new outcome; step 2 is the same submit: kept.
    (seen,) = record(q, wid, (cmd(1, CommandKind.OBSERVE, "result(a)", "b2" * 8, ()), None))
    assert seen == {"ids": []}
    with q.db.read() as conn:
        assert [r.stale for r in log.read_log(conn, wid)] == [False, False, True, True]
    (same,) = record(
        q, wid, (cmd(2, CommandKind.SUBMIT, "x", "c2" * 8), submitter(q, wid, py_spec(9)))
    )
    assert same["ids"] == [later]
    # Step 3 takes another path: the stale tail is dropped and its unfinished job cancelled.
    (other,) = record(
        q, wid, (cmd(3, CommandKind.SUBMIT, "z", "f2" * 8), submitter(q, wid, py_spec(4)))
    )
    assert other["ids"] != [extra]
    assert q.job(extra)["state"] == "cancelled" and q.job(later)["state"] == "queued"
    with q.db.read() as conn:
        assert [r.stale for r in log.read_log(conn, wid)] == [False] * 4


def test_suspended_jobs_are_not_dispatched_until_resumed(q: Q) -> None:
    wid, _ = new_workflow(q)
    (job,) = record(
        q, wid, (cmd(0, CommandKind.SUBMIT, "a", "a3" * 8), submitter(q, wid, py_spec(1)))
    )[0]["ids"]
    q.tx(lambda c, w: wf.set_suspended(c, wid, q.alice, True, q.now, w))
    pid = q.pilot()
    assert q.claim(pid) == []
    with q.db.read() as conn:
        assert wf.get(conn, wid, q.alice)["state"] == "suspended"
    _, wake = q.tx(lambda c, w: wf.set_suspended(c, wid, q.alice, False, q.now, w))
    assert "queue:default" in wake.now
    assert [c.id for c in q.claim(pid) or []] == [job]


def test_cancelling_a_workflow_cancels_its_tree(q: Q) -> None:
    wid, driver = new_workflow(q)
    (job,) = record(
        q, wid, (cmd(0, CommandKind.SUBMIT, "a", "a4" * 8), submitter(q, wid, py_spec(1)))
    )[0]["ids"]
    child_spec = wf.WorkflowSpec(
        name="child", function={"module": "m", "qualname": "c"}, kwargs="{}"
    )
    (_, child_driver), _ = q.tx(
        lambda c, w: wf.create(c, q.alice, child_spec, q.now, w, parent_id=wid)
    )
    n, _ = q.tx(lambda c, w: wf.cancel(c, wid, q.alice, q.now, w))
    assert n == 3
    for j in (driver, job, child_driver):
        assert q.job(j)["state"] == "cancelled"
    with q.db.read() as conn:
        status = wf.status(conn, wid, q.alice)
        assert status["state"] == "cancelled" and status["children"][0]["state"] == "cancelled"
        assert status["counts"] == {"cancelled": 3}
        with pytest.raises(NotFound):
            wf.get(conn, wid, q.bob)


def test_driver_tokens_are_signed_and_die_with_their_attempt(q: Q, tmp_path: Path) -> None:
    with q.db.write() as conn:
        key = auth.attempt_secret(conn, tmp_path / "key")
        assert auth.attempt_secret(conn, tmp_path / "key") == key  # the same key on a restart
    token = auth.attempt_token(key, 5, 2)
    assert auth.parse_attempt_token(key, token) == (5, 2)
    forged = token[:-1] + ("1" if token[-1] == "0" else "0")
    assert auth.parse_attempt_token(key, forged) is None
    assert auth.parse_attempt_token(key, token.replace("_2_", "_3_")) is None  # another attempt
    _, driver = new_workflow(q)
    pid = q.pilot(slots=1, cores=1, driver_slots=1)
    (got,), _ = q.tx(
        lambda c, w: claims.claim(
            c, pid, 0, q.now, skip_locked=q.db.is_postgres, max_drivers=1, wake=w
        )
    )
    live = auth.attempt_token(key, driver, got.attempt)
    with q.db.read() as conn:
        who = auth.lookup_attempt(conn, key, live)
        assert who is not None and who.user_id == q.alice and who.role is auth.Role.DRIVER
        assert (
            auth.lookup_attempt(conn, key, auth.attempt_token(key, driver, got.attempt + 1)) is None
        )
    q.report(pid, rep(driver, got.attempt, AttemptState.SUCCEEDED, result="1"))
    with q.db.read() as conn:
        assert auth.lookup_attempt(conn, key, live) is None
    assert q.job(driver)["state"] == JobState.SUCCEEDED


def test_a_claim_that_leaves_locked_candidates_wakes_the_claims_that_skipped_them(q: Q) -> None:
    submit(q, py_spec(1), py_spec(2), py_spec(3))
    pid = q.pilot(slots=1)
    got, wake = q.tx(
        lambda c, w: claims.claim(c, pid, 1, q.now, skip_locked=q.db.is_postgres, wake=w)
    )
    assert len(got) == 1
    # Only PostgreSQL locks rows that other claims then skip; SQLite serializes claims.
    assert ("queue:default" in wake.now) == q.db.is_postgres
    other = q.pilot(slots=2)
    _, wake = q.tx(
        lambda c, w: claims.claim(c, other, 5, q.now, skip_locked=q.db.is_postgres, wake=w)
    )
    assert "queue:default" not in wake.now  # it took everything left


def test_reports_are_idempotent_per_step_and_streamed_by_per_job_cursors(q: Q) -> None:
    from pilotwave.wms import reports

    a, b = submit(q, py_spec(1), py_spec(2))
    pid = q.pilot()
    q.claim(pid)
    add = lambda job, step, value: q.tx(  # noqa: E731
        lambda c, w: reports.add(c, job, 1, step, value, q.now, w)
    )
    (r1, wake), (r2, _), (r3, _) = add(a, 0, 0.9), add(b, 0, 0.8), add(a, 1, 0.7)
    assert f"rep:{a}" in wake.now
    assert add(a, 0, 0.1)[0] == r1  # a resent report keeps the first value
    with q.db.read() as conn:
        assert reports.since(conn, {a: 0, b: 0}, q.alice) == [
            (r1, a, 1, 0, 0.9),
            (r2, b, 1, 0, 0.8),
            (r3, a, 1, 1, 0.7),
        ]
        assert [r[0] for r in reports.since(conn, {a: r1, b: r2}, q.alice)] == [r3]
        assert reports.since(conn, {a: 0}, q.bob) == []  # another user's jobs
    with pytest.raises(Conflict):  # attempt 2 is not running
        q.tx(lambda c, w: reports.add(c, a, 2, 2, 0.5, q.now, w))
    with pytest.raises(InvalidRequest):
        add(a, 3, float("nan"))
    # The first answer stands; only the owner's driver may answer.
    n, wake = q.tx(lambda c, w: reports.decide(c, q.bob, {r1: True}, w))
    assert n == 0 and not wake.now
    n, wake = q.tx(lambda c, w: reports.decide(c, q.alice, {r1: True, r2: False}, w))
    assert n == 2 and wake.now == {f"dec:{r1}", f"dec:{r2}"}
    n, _ = q.tx(lambda c, w: reports.decide(c, q.alice, {r1: False}, w))
    assert n == 0
    with q.db.read() as conn:
        assert reports.answer(conn, r1) is True and reports.answer(conn, r3) is None
        assert reports.told_to_stop(conn, a, 1) and not reports.told_to_stop(conn, b, 1)


def test_observations_record_reports_and_clock_readings(q: Q) -> None:
    wid, _ = new_workflow(q)
    seen = cmd(0, CommandKind.OBSERVE, "events", "ab" * 16, (5,), ((9, 5, 1, 0, 0.25),))
    clock = cmd(1, CommandKind.OBSERVE, "pw.now()", "cd" * 16, (), (), 1234.5)
    assert record(q, wid, (seen, None), (clock, None)) == [
        {"ids": [5], "reports": [[9, 5, 1, 0, 0.25]]},
        {"ids": [], "at": 1234.5},
    ]
    later = cmd(1, CommandKind.OBSERVE, "pw.now()", "cd" * 16, (), (), 9999.0)
    assert record(q, wid, (later, None)) == [{"ids": [], "at": 1234.5}]  # a replay reads the first
