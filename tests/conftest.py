"""Test harness: a throwaway PostgreSQL cluster, fresh databases, and real server + pilot processes."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # test job modules (tests/jobs_*.py) import as top-level modules


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """initdb + postgres on a free port on 127.0.0.1, run as the ``postgres`` user when we are root."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError(
                "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin: run `make postgres`"
            )
        self.bindir = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="pilotwave-pg-"))
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._names = itertools.count()

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        data = self.dir / "data"
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        try:
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"
            )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def new_database(self) -> str:
        import psycopg

        name = f"pw_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


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


def make_cluster(
    home: Path,
    pilots: int = 2,
    slots: int = 2,
    db: str | None = None,
    pilot_args: list[str] | None = None,
):  # type: ignore[no-untyped-def]
    from pilotwave.provision.local import LocalCluster

    return LocalCluster(
        home,
        pilots=pilots,
        slots=slots,
        db=db,
        server_args=FAST_SERVER,
        pilot_args=pilot_args or [],
    )


@pytest.fixture
def cluster(pw_home: Path) -> Iterator[object]:
    """A real server (SQLite) and two pilots with two slots each, with the SDK connected to it."""
    import pilotwave as pw

    c = make_cluster(pw_home)
    c.start()
    try:
        c.wait_for_pilots()
        pw.connect(c.url, c.admin_token)
        yield c
    finally:
        c.stop(timeout_s=10)
