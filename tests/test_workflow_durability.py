"""Workflows survive the server: SIGKILL and restart on SQLite and PostgreSQL, two servers on one database."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import workflows_basic as wb
from harness import running_cluster, second_server, wait_for

import pilotwave as pw

pytestmark = pytest.mark.slow


def tags(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_server_killed_mid_workflow_loses_nothing(
    backend: str, pw_home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue("postgres").new_database() if backend == "postgresql" else None
    with running_cluster(pw_home, pilots=2, db=db) as c:
        logs = [tmp_path / f"chain{i}.log" for i in range(3)]
        chains = [wb.chain.submit(log=str(p), steps=6, sleep_s=0.2) for p in logs]
        fan = wb.fan_out.submit(n=30)
        wait_for(lambda: all(len(tags(p)) >= 2 for p in logs), what="chains under way")
        c.kill_server()
        time.sleep(1.0)  # drivers, pilots and jobs keep going and retrying meanwhile
        c.start_server()
        assert [r.result(timeout=120) for r in chains] == [6, 6, 6]
        assert fan.result(timeout=120)["total"] == 2 * sum(range(30))
        client = c.client()
        for log, run in zip(logs, chains, strict=True):
            assert tags(log) == Counter(f"step{i}" for i in range(6))  # each step ran once
            jobs = [j for j in client.workflow(run.id)["jobs"] if j["kind"] != "driver"]
            assert len(jobs) == 6  # no replayed command submitted twice
        assert client.workflow(fan.id)["counts"] == {"succeeded": 1 + 1 + 30 + 1}


@pytest.mark.postgres
def test_two_servers_on_one_postgres_serve_pilots_and_drivers(
    pw_home: Path, postgres: Any, tmp_path: Path
) -> None:
    db = postgres.new_database()
    with running_cluster(pw_home, pilots=0, db=db) as c:
        other, other_url = second_server(tmp_path / "home-b", db, key_from=pw_home)
        try:
            # Drivers and jobs spread over pilots of both servers; every hop between them is
            # a notification relayed through the database.
            c.start_pilot("--driver-slots", "2", slots=1, url=c.url)
            c.start_pilot("--driver-slots", "2", slots=1, url=other_url)
            c.wait_for_pilots(2)
            runs = [wb.diamond.submit(x=i) for i in range(4)]
            nested = wb.polymorphic.submit(x=3)
            assert [r.result(timeout=120)["d"] for r in runs] == [
                2 * 2 * i + (2 * i + 10) for i in range(4)
            ]
            assert nested.result(timeout=120)["both"] == 10
            client = c.client()
            job_ids = [j["id"] for r in [*runs, nested] for j in client.workflow(r.id)["jobs"]]
            pilots_used = {a["pilot_id"] for i in job_ids for a in client.job(i)["attempt_history"]}
            assert len(pilots_used) == 2
        finally:
            c.stop(timeout_s=10)
            other.send_signal(signal.SIGTERM)
            other.wait(timeout=30)


def test_a_workflow_can_be_awaited_through_a_server_restart(pw_home: Path) -> None:
    with running_cluster(pw_home, pilots=1) as c:
        run = wb.sleepers.submit(n=2, seconds=1.5)
        wait_for(lambda: c.client().workflow(run.id)["counts"].get("running", 0) >= 2, what="start")
        c.kill_server()
        c.start_server()
        assert run.result(timeout=60) == [1.5, 1.5]
        assert pw.Run(run.id, c.client(), run.name, run.future).wait() == "succeeded"
