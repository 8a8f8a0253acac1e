"""Test harness: a throwaway PostgreSQL cluster, fresh databases, and real server + pilot processes."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pilotwave.provision.local import LocalCluster
from pilotwave.store.pgcluster import PostgresCluster

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # test job modules (tests/jobs_*.py) import as top-level modules


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend: the storage suite runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pw.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def pw_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PILOTWAVE_HOME", str(home))
    monkeypatch.delenv("PILOTWAVE_URL", raising=False)
    monkeypatch.delenv("PILOTWAVE_TOKEN", raising=False)
    return home


# Fast liveness for tests: heartbeats every 0.3 s, a pilot lost after 1.5 s, retries after 0.1 s.
FAST_SERVER = [
    "--heartbeat-interval",
    "0.3",
    "--heartbeat-timeout",
    "1.5",
    "--retry-backoff",
    "0.1",
]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Test-only: wait for an external process to reach a state we cannot subscribe to."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def kill_a_work_pilot(client: Any, run: Any, started: Callable[[], bool]) -> None:
    """SIGKILL a pilot running one of ``run``'s jobs, not its driver, once ``started()`` holds."""
    driver = wait_for(lambda: client.job(run.future.id)["pilot_id"], what="the driver")

    def victim() -> int | None:
        jobs = client.workflow(run.id)["jobs"]
        busy = [j["pilot_id"] for j in jobs if j["state"] == "running" and j["kind"] != "driver"]
        return next((p for p in busy if p and p != driver), None)

    wait_for(started, what="a few evaluations")
    pilot = wait_for(victim, what="a job on another pilot than the driver's")  # busy right now
    name = next(p["name"] for p in client.pilots() if p["id"] == pilot)
    os.kill(int(name.rsplit(":", 1)[1]), signal.SIGKILL)  # pilots are named host:pid


@contextmanager
def running_cluster(
    home: Path,
    pilots: int = 2,
    slots: int = 2,
    db: str | None = None,
    pilot_args: list[str] | None = None,
) -> Iterator[LocalCluster]:
    """A started server and pilots, registered, with the SDK connected to them; stopped after."""
    import pilotwave as pw

    c = LocalCluster(
        home,
        pilots=pilots,
        slots=slots,
        db=db,
        server_args=FAST_SERVER,
        pilot_args=pilot_args or [],
    )
    c.start()
    try:
        c.wait_for_pilots()
        pw.connect(c.url, c.admin_token)
        yield c
    finally:
        c.stop(timeout_s=10)


@pytest.fixture
def cluster(pw_home: Path) -> Iterator[LocalCluster]:
    """A real server (SQLite) and two pilots with two slots each, with the SDK connected to it."""
    with running_cluster(pw_home) as c:
        yield c
