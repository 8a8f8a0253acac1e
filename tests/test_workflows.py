"""Workflows end to end: real server, real pilots running drivers and jobs, replay after failures."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import workflows_basic as wb
from harness import running_cluster, wait_for

import pilotwave as pw

pytestmark = pytest.mark.slow


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def compute_jobs(client: Any, run: pw.Run) -> list[dict[str, Any]]:
    return [j for j in client.workflow(run.id)["jobs"] if j["kind"] != "driver"]


def test_a_workflow_called_directly_runs_here() -> None:
    assert wb.diamond(x=3) == {"d": 28, "seeded": False}
    assert wb.loop(target=20) == {"value": 32, "rounds": 5}
    assert wb.polymorphic(x=2) == {"python": 4, "shell": "shell says 2", "nested": 3, "both": 7}
    with pytest.raises(pw.JobFailed, match="boom"):
        wb.fails(message="boom")


def test_diamond_passes_data_through_server_side_dependencies(cluster: Any) -> None:
    run = wb.diamond.submit(x=3)
    assert run.result(timeout=60) == {"d": 28, "seeded": True}
    status = run.status()
    assert status["state"] == "succeeded" and status["counts"] == {"succeeded": 5}
    assert run.wait() == "succeeded"


def test_branch_and_loop_follow_results(cluster: Any) -> None:
    big, small, loop = wb.branch.submit(x=6), wb.branch.submit(x=2), wb.loop.submit(target=20)
    assert big.result(timeout=60) == "big"
    assert small.result(timeout=60) == "small"
    assert loop.result(timeout=60) == {"value": 32, "rounds": 5}


def test_dynamic_fan_out_and_fan_in(cluster: Any) -> None:
    run = wb.fan_out.submit(n=20)
    assert run.result(timeout=60) == {"total": 380, "seen": [2 * i for i in range(20)]}


def test_polymorphic_work_python_shell_and_nested_workflow(cluster: Any) -> None:
    run = wb.polymorphic.submit(x=5)
    assert run.result(timeout=60) == {
        "python": 10,
        "shell": "shell says 5",
        "nested": 6,
        "both": 16,
    }
    status = run.status()
    assert [c["name"] for c in status["children"]] == ["child"]
    assert status["children"][0]["state"] == "succeeded"
    assert status["counts"]["succeeded"] == 6  # double, shell, add, child's add, two drivers


def test_jobs_left_running_when_the_workflow_ends_are_cancelled(cluster: Any) -> None:
    client = cluster.client()
    run = wb.returns_early.submit(seconds=60)
    assert run.result(timeout=60) == 4
    (sleeper,) = [j for j in compute_jobs(client, run) if j["name"] == "sleep_for"]
    job = client.job(sleeper["id"])
    assert job["state"] == "cancelled" and job["error"] == f"workflow {run.id} succeeded"


def test_done_and_state_answer_without_waiting_in_a_driver(cluster: Any) -> None:
    assert wb.peek.submit(seconds=1.0).result(timeout=60) == [
        False,
        "unfinished",
        True,
        "succeeded",
    ]


def test_a_nested_workflow_waits_on_the_server_for_a_future_argument(cluster: Any) -> None:
    assert wb.feeds_child(x=3) == 7
    assert wb.feeds_child.submit(x=3).result(timeout=60) == 7


def test_a_rolling_window_of_jobs_replays_its_interleaving_after_a_crash(
    cluster: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "crashed"
    run = wb.rolling.submit(n=24, parallel=4, marker=str(marker))
    results = run.result(timeout=90)
    assert marker.exists() and sorted(results) == list(range(24))
    assert len(compute_jobs(cluster.client(), run)) == 24  # nothing submitted twice
    driver = cluster.client().job(run.future.id)
    assert [a["state"] for a in driver["attempt_history"]] == ["failed", "succeeded"]


def test_job_and_workflow_functions_travel_as_arguments(cluster: Any) -> None:
    run = wb.takes_functions.submit(fn=wb.double, flow=wb.child, x=4)
    assert run.result(timeout=60) == [8, 5]


def test_a_failed_job_fails_the_workflow_and_cancels_its_dependents(cluster: Any) -> None:
    run = wb.fails.submit(message="kaboom")
    with pytest.raises(pw.WorkflowFailed, match="kaboom"):
        run.result(timeout=60)
    assert run.wait() == "failed"
    jobs = {j["name"]: j for j in compute_jobs(cluster.client(), run)}
    assert jobs["explode"]["state"] == "failed"
    assert jobs["add"]["state"] == "cancelled"
    add = cluster.client().job(jobs["add"]["id"])
    assert add["reason"] == "upstream_failed" and "kaboom" in add["error"]


def test_retry_after_the_cause_is_fixed_does_not_rerun_what_succeeded(
    cluster: Any, tmp_path: Path
) -> None:
    log, data = tmp_path / "runs.log", tmp_path / "input.txt"
    run = wb.fixable.submit(log=str(log), path=str(data))
    with pytest.raises(pw.WorkflowFailed, match="is missing"):
        run.result(timeout=60)
    # A failed workflow leaves its unfinished jobs be (a retry reuses them): "a" runs once.
    wait_for(lambda: lines(log) == ["a"], what="job a")
    data.write_text("41")
    out = run.retry()
    assert out["reset"] >= 2  # the failed job, its cancelled dependent, the driver
    assert run.result(timeout=60) == 42
    assert sorted(lines(log)) == ["a", "d"]  # "a" ran once
    assert len(compute_jobs(cluster.client(), run)) == 4


def test_a_crashed_driver_replays_its_record_and_continues(cluster: Any, tmp_path: Path) -> None:
    log, marker = tmp_path / "runs.log", tmp_path / "crashed"
    run = wb.crashes_once.submit(log=str(log), marker=str(marker))
    assert run.result(timeout=60) == 3
    assert marker.exists()
    assert lines(log) == ["a", "b", "c"]  # nothing ran twice
    driver = cluster.client().job(run.future.id)
    assert [a["state"] for a in driver["attempt_history"]] == ["failed", "succeeded"]


def test_a_nondeterministic_driver_fails_with_a_clear_error(cluster: Any, tmp_path: Path) -> None:
    run = wb.nondeterministic.submit(marker=str(tmp_path / "ran"))
    with pytest.raises(pw.WorkflowFailed) as err:
        run.result(timeout=60)
    text = str(err.value)
    assert "NonDeterminismError" in text
    assert "double.submit" in text and "add.submit" in text and "fingerprint" in text


def test_cancel_kills_running_jobs_and_cancels_the_rest(cluster: Any) -> None:
    client = cluster.client()
    run = wb.sleepers.submit(n=6, seconds=60)
    wait_for(
        lambda: client.workflow(run.id)["counts"].get("running", 0) >= 3,
        what="sleepers to start",
    )
    assert run.cancel() >= 6
    assert run.wait(timeout=30) == "cancelled"
    jobs = compute_jobs(client, run)
    assert {j["state"] for j in jobs} == {"cancelled"}
    # The killed attempts were reported by the pilots: their processes are gone.
    wait_for(
        lambda: all(
            client.job(j["id"])["attempt_history"][-1]["state"] == "killed"
            for j in jobs
            if client.job(j["id"])["attempt_history"]
        ),
        what="pilots to report the kills",
    )


def test_suspend_holds_dispatch_until_resume(cluster: Any, tmp_path: Path) -> None:
    client = cluster.client()
    log = tmp_path / "runs.log"
    run = wb.chain.submit(log=str(log), steps=4, sleep_s=0.3)
    wait_for(lambda: lines(log), what="the first step")
    run.suspend()
    assert client.workflow(run.id)["state"] == "suspended"
    done_at_suspend = len(lines(log))
    with pytest.raises(TimeoutError):
        run.future.result(timeout=1.5)
    assert len(lines(log)) <= done_at_suspend + 1  # at most the step already running
    run.resume()
    assert run.result(timeout=60) == 4
    assert lines(log) == ["step0", "step1", "step2", "step3"]


def test_sigkill_of_the_drivers_pilot_resumes_it_elsewhere(cluster: Any, tmp_path: Path) -> None:
    client = cluster.client()
    log = tmp_path / "runs.log"
    run = wb.chain.submit(log=str(log), steps=8, sleep_s=0.2)
    wait_for(lambda: len(lines(log)) >= 3, what="three steps")
    driver = client.job(run.future.id)
    victim = next(p for p in client.pilots() if p["id"] == driver["pilot_id"])
    os.kill(int(victim["name"].rsplit(":", 1)[1]), signal.SIGKILL)
    assert run.result(timeout=90) == 8
    history = client.job(run.future.id)["attempt_history"]
    assert [a["state"] for a in history][:1] == ["lost"] and history[-1]["state"] == "succeeded"
    jobs = compute_jobs(client, run)
    assert len(jobs) == 8  # the replay submitted nothing twice
    for j in jobs:
        attempts = client.job(j["id"])["attempt_history"]
        assert sum(a["state"] == "succeeded" for a in attempts) == 1


def test_workflow_operations_on_unknown_or_final_workflows(cluster: Any) -> None:
    client = cluster.client()
    with pytest.raises(pw.NotFound):
        client.workflow(999_999)
    run = wb.diamond.submit(x=1)
    run.result(timeout=60)
    with pytest.raises(pw.ApiError) as err:
        run.retry()
    assert err.value.status == 409
    with pytest.raises(pw.ApiError) as err:
        run.suspend()
    assert err.value.status == 409


def test_drivers_run_in_their_own_slots_beside_busy_job_slots(pw_home: Path) -> None:
    with running_cluster(pw_home, pilots=1, slots=1) as c:
        client = c.client()
        long_job = wb.sleep_for.submit(4.0)
        wait_for(lambda: client.job(long_job.id)["state"] == "running", what="the long job")
        run = wb.diamond.submit(x=1)
        # The driver starts while the only job slot is busy; its jobs wait for that slot.
        driver = wait_for(
            lambda: (j := client.job(run.future.id))["state"] == "running" and j,
            what="the driver to start",
        )
        assert client.job(long_job.id)["state"] == "running"
        assert run.result(timeout=60) == {"d": 16, "seeded": True}
        finished = client.job(long_job.id)["finished_at"]
        assert driver["attempt_history"][0]["started_at"] < finished


def test_a_checker_sees_every_argument_with_the_workflows_own_defaults() -> None:
    seen: list[dict[str, Any]] = []

    @pw.workflow
    def flow(a: int, b: int = 2, **extra: Any) -> int:
        return a + b

    @flow.check
    def _check(**kwargs: Any) -> None:
        seen.append(kwargs)
        if kwargs["a"] < 0:
            raise ValueError(f"a: {kwargs['a']} is negative")

    assert flow(1) == 3  # a local call is checked too
    with pytest.raises(ValueError, match="a: -1 is negative"):
        flow.submit(a=-1, c=5)  # refused before any server is asked
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        flow.submit(b=1)
    assert seen == [{"a": 1, "b": 2}, {"a": -1, "b": 2, "c": 5}]
