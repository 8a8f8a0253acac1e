"""End to end on PostgreSQL: real servers and pilots on a throwaway cluster."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jobs_basic as jb
import pytest
from harness import (
    PATIENT_SERVER,
    pilot_process,
    running_cluster,
    running_on,
    second_server,
    wait_for,
)

import pilotwave as pw

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def pg_cluster(pw_home: Path, postgres: Any) -> Any:
    with running_cluster(pw_home, db=postgres.new_database()) as c:
        yield c


def test_jobs_and_failures_on_postgres(pg_cluster: Any, tmp_path: Path) -> None:
    assert [f.result(timeout=30) for f in jb.square.map(range(20))] == [x * x for x in range(20)]
    with pytest.raises(pw.JobFailed, match="kaboom"):
        jb.explode.submit("kaboom").result(timeout=30)
    fut = jb.sleep_then.submit(2.0, 5)
    first = running_on(pg_cluster, fut.id)
    pilot_process(pg_cluster, first).kill()
    assert fut.result(timeout=60) == 5
    assert [a["state"] for a in pg_cluster.client().job(fut.id)["attempt_history"]] == [
        "lost",
        "succeeded",
    ]


def test_server_killed_and_restarted_on_postgres_loses_nothing(
    pg_cluster: Any, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    futures = [jb.count_runs.submit(str(runs), f"t{i}") for i in range(30)]
    wait_for(lambda: runs.exists() and len(list(runs.iterdir())) >= 5, what="some jobs to run")
    pg_cluster.kill_server()
    time.sleep(1.0)
    pg_cluster.start_server()
    assert sorted(f.result(timeout=60) for f in futures) == sorted(f"t{i}" for i in range(30))
    assert sorted(p.name.split(".")[0] for p in runs.iterdir()) == sorted(
        f"t{i}" for i in range(30)
    )


@pytest.fixture
def two_servers(pw_home: Path, postgres: Any, tmp_path: Path) -> Any:
    """A cluster without pilots, and the URL of a second server on the same database."""
    db = postgres.new_database()
    with running_cluster(pw_home, pilots=0, db=db, server_args=PATIENT_SERVER) as c:
        other, url = second_server(tmp_path / "home-b", db, PATIENT_SERVER, key_from=pw_home)
        try:
            yield c, url
        finally:
            c.stop(timeout_s=10)  # pilots first: some are connected to the second server
            other.send_signal(signal.SIGTERM)
            other.wait(timeout=30)


def test_1000_jobs_claimed_by_racing_pilots_on_two_servers_run_exactly_once(
    two_servers: Any, tmp_path: Path
) -> None:
    c, other_url = two_servers
    runs = tmp_path / "runs"
    futures = jb.count_runs.map([str(runs)] * 1000, [f"t{i}" for i in range(1000)])
    for url in (c.url, c.url, other_url, other_url):
        c.start_pilot("--prefetch", "2", slots=3, url=url)
    _, not_done = pw.wait(futures, timeout=240)
    assert not not_done
    tags = Counter(p.name.split(".")[0] for p in runs.iterdir())
    assert len(tags) == 1000 and set(tags.values()) == {1}
    assert len(c.client().pilots()) == 4
    attempts = [a for f in futures[:50] for a in c.client().job(f.id)["attempt_history"]]
    assert {a["state"] for a in attempts} == {"succeeded"}


def test_servers_on_one_database_wake_each_others_pilots_and_waiters(two_servers: Any) -> None:
    c, other_url = two_servers
    c.start_pilot(url=other_url)  # idle, long-polling the second server
    c.wait_for_pilots(1)
    # Submitted through the first server, run through the second, awaited on the first:
    # each hop is a notification, not a poll (an idle claim waits 20 s before asking again).
    assert jb.add.submit(20, 22).result(timeout=10) == 42
