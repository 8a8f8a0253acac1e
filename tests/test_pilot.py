"""End to end through a real server and real pilot processes: running, failing, killing, draining."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jobs_basic as jb
import pytest
from harness import evil, pilot_process, running_cluster, running_on, wait_for

import pilotwave as pw

pytestmark = pytest.mark.slow


def test_calling_a_job_function_runs_it_locally() -> None:
    assert jb.add(2, 3) == 5


def test_python_jobs_run_on_pilots(cluster: Any) -> None:
    assert jb.add.submit(2, 3).result(timeout=30) == 5
    futures = jb.square.map(range(30))
    assert [f.result(timeout=30) for f in futures] == [x * x for x in range(30)]
    done, not_done = pw.wait(futures, timeout=5)
    assert len(done) == 30 and not not_done


def test_as_completed_yields_in_finishing_order(cluster: Any) -> None:
    slow = jb.sleep_then.submit(1.5, 1)
    fast = jb.sleep_then.submit(0.0, 2)
    order = [f.result() for f in pw.as_completed([slow, fast], timeout=30)]
    assert order == [2, 1]


def test_shell_job_returns_exit_code_and_output(cluster: Any, tmp_path: Path) -> None:
    (tmp_path / "hello.sh").write_text("echo hello from $PILOTWAVE_JOB_ID\necho oops >&2\n")
    fut = pw.shell(["sh", "hello.sh"], sandbox=tmp_path)
    result = fut.result(timeout=30)
    assert result["exit_code"] == 0 and f"hello from {fut.id}" in result["stdout_tail"]
    assert "oops" in fut.logs()
    failing = pw.shell("exit 3", max_attempts=1)
    with pytest.raises(pw.JobFailed, match="exit code 3"):
        failing.result(timeout=30)


def test_failing_job_has_its_traceback_in_error_and_logs_and_the_pilot_keeps_working(
    cluster: Any,
) -> None:
    fut = jb.explode.submit("kaboom")
    with pytest.raises(pw.JobFailed) as info:
        fut.result(timeout=30)
    assert "ValueError: kaboom" in str(info.value) and "Traceback" in str(info.value)
    logs = fut.logs()
    assert "about to fail" in logs and "ValueError: kaboom" in logs
    assert jb.add.submit(1, 1).result(timeout=30) == 2


def test_failed_attempts_are_retried(cluster: Any, tmp_path: Path) -> None:
    fut = jb.flaky.options(max_attempts=3).submit(str(tmp_path / "count"), 2)
    assert fut.result(timeout=30) == 3
    history = cluster.client().job(fut.id)["attempt_history"]
    assert [a["state"] for a in history] == ["failed", "failed", "succeeded"]


def test_unimportable_function_fails_with_a_clear_error(cluster: Any) -> None:
    client = cluster.client()
    (jid,) = client.submit(
        [
            {
                "kind": "python",
                "function": {"module": "no_such_module", "qualname": "f"},
                "max_attempts": 1,
            }
        ]
    )
    with pytest.raises(pw.JobFailed, match="cannot import the job function") as info:
        pw.Future(jid, client).result(timeout=30)
    assert "No module named 'no_such_module'" in str(info.value)
    assert jb.add.submit(2, 2).result(timeout=30) == 4


def test_result_that_is_not_json_fails_without_retries(cluster: Any) -> None:
    fut = jb.not_json.options(max_attempts=3).submit()
    with pytest.raises(pw.JobFailed, match="not JSON-serializable"):
        fut.result(timeout=30)
    assert cluster.client().job(fut.id)["attempts"] == 1


def test_oversize_result_fails_with_a_clear_error(cluster: Any) -> None:
    with pytest.raises(pw.JobFailed, match="over the limit"):
        jb.huge_result.submit().result(timeout=30)


def test_arguments_that_are_not_json_are_refused_at_submit(cluster: Any) -> None:
    with pytest.raises(TypeError, match=r"argument 0 of .*not JSON-serializable"):
        jb.square.submit(object())
    with pytest.raises(TypeError, match="argument 'b'"):
        jb.add.submit(1, b=float("nan"))


def test_worker_that_dies_fails_the_job_and_is_replaced(cluster: Any) -> None:
    with pytest.raises(pw.JobFailed, match="worker process died"):
        jb.hard_exit.submit().result(timeout=30)
    assert jb.add.submit(3, 4).result(timeout=30) == 7


def test_warm_workers_are_reused_and_isolate_gets_a_fresh_process(cluster: Any) -> None:
    pids = []
    for _ in range(6):
        pids.append(jb.whoami.submit().result(timeout=30)["pid"])
    assert len(set(pids)) < len(pids)  # sequential jobs land on warm workers
    isolated = [
        jb.whoami.options(isolate=True).submit().result(timeout=30)["pid"] for _ in range(2)
    ]
    assert not set(isolated) & set(pids) and isolated[0] != isolated[1]


def test_pilot_killed_with_sigkill_mid_job_is_retried_on_another_pilot(cluster: Any) -> None:
    fut = jb.sleep_then.submit(2.0, 42)
    first = running_on(cluster, fut.id)
    pilot_process(cluster, first).kill()
    assert fut.result(timeout=60) == 42
    history = cluster.client().job(fut.id)["attempt_history"]
    assert [a["state"] for a in history] == ["lost", "succeeded"]
    assert history[0]["pilot_id"] == first and history[1]["pilot_id"] != first
    states = {p["id"]: p["state"] for p in cluster.client().pilots()}
    assert states[first] == "lost"


def test_walltime_is_enforced(cluster: Any) -> None:
    fut = jb.sleep_then.options(walltime_s=1.0, max_attempts=1).submit(60.0)
    t0 = time.monotonic()
    with pytest.raises(pw.JobFailed, match="WalltimeExceeded"):
        fut.result(timeout=30)
    assert time.monotonic() - t0 < 20


def test_cancel_kills_the_running_process(cluster: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    fut = jb.sleep_forever.submit(str(marker))
    pid = int(wait_for(lambda: marker.exists() and marker.read_text(), what="job to start"))
    assert fut.cancel()
    with pytest.raises(pw.JobCancelled):
        fut.result(timeout=10)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=20, what="the job's process to be killed")
    history = wait_for(
        lambda: (
            (h := cluster.client().job(fut.id)["attempt_history"])[0]["state"] != "running" and h
        ),
        what="the kill to be reported",
    )
    assert history[0]["state"] == "killed"


def test_logs_stream_while_the_job_runs(cluster: Any) -> None:
    fut = jb.chatty.submit(30, 0.1)
    client = cluster.client()
    seen = ""
    state_at_first_output = None
    for chunk in client.logs(fut.id, follow=True):
        if state_at_first_output is None:
            state_at_first_output = client.job(fut.id)["state"]
        seen += chunk["data"]
    assert state_at_first_output == "running"
    assert "line 0" in seen and "err 29" in seen and seen.count("line ") == 30
    assert fut.result(timeout=10) == 30


def test_outputs_are_uploaded_as_artifacts(cluster: Any, tmp_path: Path) -> None:
    fut = jb.write_outputs.submit("hello artifacts")
    assert fut.result(timeout=30) == "ok"
    client = cluster.client()
    names = sorted(a["name"] for a in client.artifacts(fut.id))
    assert names == ["result.txt", "sub/data.bin"]
    assert client.artifact(fut.id, "result.txt") == b"hello artifacts"
    written = client.download(fut.id, tmp_path / "dl")
    assert (tmp_path / "dl" / "sub" / "data.bin").read_bytes() == bytes(range(256)) and len(
        written
    ) == 2


def test_unsafe_sandbox_fails_the_job_and_writes_nothing(cluster: Any) -> None:
    client = cluster.client()
    data = evil("dotdot")
    sha = hashlib.sha256(data).hexdigest()
    client.upload_blob(sha, data)
    spec = {
        "kind": "python",
        "function": {"module": "m", "qualname": "f"},
        "sandbox": sha,
        "max_attempts": 3,
    }
    (jid,) = client.submit([spec])
    with pytest.raises(pw.JobFailed, match="escapes the sandbox"):
        pw.Future(jid, client).result(timeout=30)
    assert client.job(jid)["attempts"] == 1  # not retryable
    assert not (cluster.home / "cache" / "escaped.txt").exists()


def test_sigterm_drains_running_jobs_before_exit(cluster: Any) -> None:
    fut = jb.sleep_then.submit(1.5, 7)
    proc = pilot_process(cluster, pilot_id := running_on(cluster, fut.id))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert fut.result(timeout=10) == 7
    assert [a["state"] for a in cluster.client().job(fut.id)["attempt_history"]] == ["succeeded"]
    assert {p["id"]: p["state"] for p in cluster.client().pilots()}[pilot_id] == "exited"


def test_drain_timeout_hands_jobs_back_without_counting_a_failure(pw_home: Path) -> None:
    with running_cluster(pw_home, pilots=2, pilot_args=["--drain-timeout", "0.5"]) as c:
        fut = jb.sleep_then.options(max_attempts=1).submit(3.0, 9)
        proc = pilot_process(c, running_on(c, fut.id))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert fut.result(timeout=60) == 9
        job = c.client().job(fut.id)
        assert [a["state"] for a in job["attempt_history"]] == ["killed", "succeeded"]
        assert job["failures"] == 0


def test_pilot_exits_when_idle(cluster: Any) -> None:
    proc = cluster.start_pilot("--idle-exit", "1")
    assert proc.wait(timeout=30) == 0


def test_gpus_are_assigned_through_cuda_visible_devices(pw_home: Path) -> None:
    with running_cluster(
        pw_home, pilots=1, pilot_args=["--gpu", "A100:40960", "--gpu", "T4:16384"]
    ):
        assert jb.whoami.options(gpus=1, gpu_model="T4").submit().result(timeout=30)["cuda"] == "1"
        assert jb.whoami.options(gpus=2).submit().result(timeout=30)["cuda"] == "0,1"
        assert jb.whoami.submit().result(timeout=30)["cuda"] == ""
        never = jb.whoami.options(gpus=1, gpu_memory_mb=100_000).submit()
        with pytest.raises(TimeoutError):
            never.result(timeout=1.5)  # no pilot has such a GPU: it waits, it does not fail
        never.cancel()


def test_labels_route_jobs_to_pilots_that_carry_them(pw_home: Path) -> None:
    with running_cluster(pw_home, pilots=1, pilot_args=["--labels", "ssd,avx512"]):
        assert jb.add.options(labels=["ssd"]).submit(1, 2).result(timeout=30) == 3
        missing = jb.add.options(labels=["tpu"]).submit(1, 2)
        with pytest.raises(TimeoutError):
            missing.result(timeout=1.0)


def test_server_killed_mid_run_loses_nothing(pw_home: Path, tmp_path: Path) -> None:
    with running_cluster(pw_home, pilots=2) as c:
        runs = tmp_path / "runs"
        futures = [jb.count_runs.submit(str(runs), f"t{i}") for i in range(30)]
        slow = [jb.sleep_then.submit(1.0, i) for i in range(4)]
        wait_for(lambda: runs.exists() and len(list(runs.iterdir())) >= 5, what="some jobs to run")
        c.kill_server()
        time.sleep(1.0)  # pilots keep running and retrying while the server is down
        c.start_server()  # same address and database; clients and pilots reconnect on their own
        assert sorted(f.result(timeout=60) for f in futures) == sorted(f"t{i}" for i in range(30))
        assert [f.result(timeout=60) for f in slow] == [0, 1, 2, 3]
        tags = [p.name.split(".")[0] for p in runs.iterdir()]
        assert sorted(tags) == sorted(f"t{i}" for i in range(30))  # each ran exactly once
        for f in futures + slow:
            # A claim whose answer died with the server: its pilot's next claim handed it back
            # (it never ran, and counts as no failure).
            *lost, last = [
                (a["state"], a["error"]) for a in c.client().job(f.id)["attempt_history"]
            ]
            assert last == ("succeeded", None)
            assert all(a == ("killed", "its claim's answer never reached the pilot") for a in lost)
            assert c.client().job(f.id)["failures"] == 0


def test_prefetched_jobs_wait_their_turn_and_are_handed_back_on_drain(pw_home: Path) -> None:
    with running_cluster(pw_home, pilots=1, slots=1, pilot_args=["--prefetch", "2"]) as c:
        pw.wait(jb.noop.map(range(5)))  # short jobs: the pilot starts holding jobs ahead
        first, second, third = jb.sleep_then.map([1.0] * 3, range(3))
        wait_for(
            lambda: all(c.client().job(f.id)["state"] == "running" for f in (first, second, third)),
            what="the pilot to hold all three",
        )
        third.cancel()  # still waiting on the pilot: dropped there at once
        with pytest.raises(pw.JobCancelled):
            third.result(timeout=10)
        c.pilots[0].send_signal(signal.SIGTERM)
        assert c.pilots[0].wait(timeout=30) == 0
        assert first.result(timeout=10) == 0  # it was running: the drain let it finish
        job = c.client().job(second.id)
        assert job["state"] == "queued" and job["failures"] == 0
        assert [a["state"] for a in job["attempt_history"]] == ["killed"]
        c.start_pilot()
        assert second.result(timeout=30) == 1
        third_attempts = c.client().job(third.id)["attempt_history"]
        assert [a["state"] for a in third_attempts] == ["killed"]


def test_pilot_whose_token_is_revoked_exits_with_an_error(cluster: Any) -> None:
    client = cluster.client()
    made = client.create_token("admin", role="pilot", queues=["*"])
    proc = cluster.start_pilot(token=made["token"])
    wait_for(
        lambda: len([p for p in client.pilots() if p["state"] == "active"]) == 3, what="the pilot"
    )
    client.revoke_token(made["id"])
    assert proc.wait(timeout=30) == 2
    log = (cluster.log_dir / f"pilot-{len(cluster.pilots) - 1}.log").read_text()
    assert "giving up: its token was revoked" in log


def test_held_jobs_go_back_to_the_queue_when_the_running_job_is_long(pw_home: Path) -> None:
    with running_cluster(pw_home, pilots=1, slots=1) as c:
        pw.wait(jb.noop.map(range(5)))  # short jobs: the pilot starts holding jobs ahead
        long, short = jb.sleep_then.map([4.0, 0.0], [1, 2])
        busy = running_on(c, long.id)
        wait_for(
            lambda: c.client().job(short.id)["state"] == "running", what="the short job to be held"
        )
        c.start_pilot()  # idle: it should get the short job once the busy pilot gives it back
        assert short.result(timeout=30) == 2
        history = c.client().job(short.id)["attempt_history"]
        assert [a["state"] for a in history] == ["killed", "succeeded"]
        assert history[0]["pilot_id"] == busy and history[1]["pilot_id"] != busy
        assert long.state() == "running"  # the short one did not wait for it
        assert long.result(timeout=30) == 1
        assert c.client().job(short.id)["failures"] == 0


def test_a_pilot_offers_no_more_slots_than_cores(tmp_path: Path) -> None:
    from pilotwave.pilot.agent import Pilot, PilotConfig

    cfg = PilotConfig(
        server="http://127.0.0.1:9", token="t", queues=["default"], cores=2, memory_mb=100, slots=4
    )
    pilot = Pilot(replace(cfg, workdir=tmp_path / "w", cache=tmp_path / "c"))
    assert pilot.cfg.slots == 2  # a third job would only wait here for a core


def test_a_killed_pilots_workers_end_with_it(cluster: Any) -> None:
    import psutil

    fut = jb.sleep_then.submit(30.0, 1)
    pilot = pilot_process(cluster, running_on(cluster, fut.id))
    workers = wait_for(  # the job runs in a worker of that pilot (started in a moment)
        lambda: psutil.Process(pilot.pid).children(recursive=True), what="the job's worker"
    )
    pilot.kill()
    _, alive = psutil.wait_procs(workers, timeout=5)  # long before the job would end
    assert not alive, [p.cmdline() for p in alive]  # no job left burning a core
    fut.cancel()


def test_a_pilot_removes_the_folders_of_pilots_that_died_and_no_other(tmp_path: Path) -> None:
    import os

    from pilotwave.pilot import workdirs

    live, lock = workdirs.make(tmp_path)
    dead = tmp_path / f"{workdirs.PREFIX}dead"
    (dead / "jobs").mkdir(parents=True)
    (dead / workdirs.LOCK).touch()  # its pilot is gone: nobody holds the lock
    unknown = tmp_path / f"{workdirs.PREFIX}old"
    unknown.mkdir()  # no lock file: a pilot of an older version, or one being made
    other = tmp_path / "pilotwave-server-x"
    other.mkdir()
    fresh, lock2 = workdirs.make(tmp_path)
    assert not dead.exists()
    assert live.is_dir() and unknown.is_dir() and other.is_dir() and fresh.is_dir()
    os.close(lock)  # as when the pilot dies
    assert workdirs.sweep(tmp_path) == [live]
    os.close(lock2)
