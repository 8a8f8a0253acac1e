"""Test harness: a throwaway PostgreSQL cluster, fresh databases, and real server + pilot processes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilotwave.store.pgcluster import PostgresCluster

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # test job modules (tests/jobs_*.py) import as top-level modules

from harness import Api, Q, in_process_api, running_cluster  # noqa: E402  (after the path is set)

from pilotwave.protocol import Limits  # noqa: E402


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


@pytest.fixture
def q(db_url: str) -> Q:
    """The queue's and engine's transactions on a fresh database, without HTTP (``harness.Q``)."""
    return Q(db_url)


@pytest.fixture
def cluster(pw_home: Path) -> Iterator[Any]:
    """A real server (SQLite) and two pilots with two slots each, with the SDK connected to it."""
    with running_cluster(pw_home) as c:
        yield c


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The REST API in process, on SQLite, with small limits (``harness.Api``)."""
    limits = Limits(max_request_bytes=64 * 1024, max_blob_bytes=32 * 1024, max_result_bytes=1000)
    with in_process_api(tmp_path, limits) as api:
        yield api
