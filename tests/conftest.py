"""Test harness: a throwaway PostgreSQL cluster, fresh databases, and real server + pilot processes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
