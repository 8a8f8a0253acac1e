"""What several test modules share: the queue harness without HTTP, real clusters, and helpers.

Test modules import from here (and the job modules), never from each other.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pilotwave.engine.workflows import settle
from pilotwave.protocol import (
    Ack,
    AttemptReport,
    AttemptState,
    Claimed,
    Gpu,
    Isolation,
    JobOptions,
    Limits,
    PilotInfo,
)
from pilotwave.provision.local import LocalCluster
from pilotwave.server import auth
from pilotwave.store import migrate
from pilotwave.store.db import Database
from pilotwave.wms import attempts as wa
from pilotwave.wms import claims, pilots
from pilotwave.wms import jobs as wj
from pilotwave.wms.events import story
from pilotwave.wms.retry import RetryPolicy
from pilotwave.wms.wakeups import Wakeups

POLICY = RetryPolicy(backoff_base_s=5, backoff_max_s=60)

# Fast liveness for tests: heartbeats every 0.3 s, a pilot lost after 1.5 s, retries after 0.1 s.
FAST_SERVER = [
    "--heartbeat-interval",
    "0.3",
    "--heartbeat-timeout",
    "1.5",
    "--retry-backoff",
    "0.1",
]
# For tests that lose no pilot on purpose but load the machine hard: a pilot starved for a
# second or two is not lost (a lost pilot's running jobs run again elsewhere, by design).
PATIENT_SERVER = [
    "--heartbeat-interval",
    "0.5",
    "--heartbeat-timeout",
    "10",
    "--retry-backoff",
    "0.1",
]


# -- the queue and the engine, one transaction at a time, as the server runs them ---------


class Q:
    """A database with two users and helpers that run one transaction each, like the server does
    (``engine.settle`` included)."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        migrate.upgrade(self.db)
        self.now = 1000.0
        with self.db.write() as conn:
            self.alice = auth.create_user(conn, "alice", self.now)["id"]
            self.bob = auth.create_user(conn, "bob", self.now)["id"]
            # Pilots of a token for every user's jobs (the fair-share tests need two owners).
            self.token_id, _ = auth.create_token(
                conn, "alice", auth.Role.PILOT, self.now, ["default", "gpu"], all_users=True
            )

    def tx(self, fn: Callable[[Any, Wakeups], Any]) -> tuple[Any, Wakeups]:
        wake = Wakeups()

        def run(conn: Any) -> Any:
            nonlocal wake
            wake = Wakeups()
            result = fn(conn, wake)
            settle(conn, wake, self.now)
            return result

        return self.db.transact(run), wake

    def submit(
        self, n: int = 1, owner: int | None = None, key: str | None = None, **kw: Any
    ) -> list[int]:
        specs = [
            wj.JobSpec(kind="shell", spec='{"argv": ["true"]}', options=JobOptions(**kw), key=key)
            for _ in range(n)
        ]
        ids, _ = self.tx(lambda c, w: wj.submit(c, owner or self.alice, specs, self.now, w))
        return ids  # type: ignore[no-any-return]

    def pilot(
        self,
        slots: int = 2,
        cores: int = 2,
        gpus: tuple[Gpu, ...] = (),
        queues: tuple[str, ...] = ("default",),
        prefetch: int = 0,
        driver_slots: int = 0,
        serves: int | None = None,
    ) -> str:
        """A registered pilot (isolating users); ``serves``: the one owner whose jobs it runs."""
        info = PilotInfo(
            name="p",
            hostname="host",
            queues=tuple(queues),
            cores=cores,
            memory_mb=4000,
            gpus=tuple(gpus),
            slots=slots,
            prefetch=prefetch,
            driver_slots=driver_slots,
            isolation=Isolation.USER,
        )
        pid, _ = self.tx(lambda c, w: pilots.register(c, self.token_id, info, self.now, serves))
        return pid  # type: ignore[no-any-return]

    def claim(self, pid: str, n: int = 10, drivers: int = 0) -> list[Claimed] | None:
        got, _ = self.tx(
            lambda c, w: claims.claim(
                c, pid, n, self.now, skip_locked=self.db.is_postgres, max_drivers=drivers, wake=w
            )
        )
        return got  # type: ignore[no-any-return]

    def report(self, pid: str, *reports: AttemptReport) -> list[Ack]:
        acks, _ = self.tx(lambda c, w: wa.complete(c, pid, list(reports), self.now, POLICY, w))
        return acks  # type: ignore[no-any-return]

    def job(self, job_id: int) -> dict[str, Any]:
        with self.db.read() as conn:
            return wj.get(conn, job_id, None)

    def events(self, job_id: int) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return story(conn, job_id=job_id)


def rep(job_id: int, attempt: int, outcome: AttemptState | str, **kw: Any) -> AttemptReport:
    """An attempt report as a pilot sends it."""
    return AttemptReport(job_id=job_id, attempt=attempt, outcome=str(outcome), **kw)  # type: ignore[arg-type]


def ok(job_id: int, attempt: int = 1, result: str = "42") -> AttemptReport:
    return rep(job_id, attempt, AttemptState.SUCCEEDED, result=result)


def failed(job_id: int, attempt: int = 1, retryable: bool = True) -> AttemptReport:
    return rep(
        job_id,
        attempt,
        AttemptState.FAILED,
        error="Traceback ...\nValueError: boom",
        retryable=retryable,
    )


def py_spec(*args: Any, **kw: Any) -> wj.JobSpec:
    """A python job's spec (function ``m:f``) with ``args``; ``kw`` are job options."""
    payload = json.dumps(
        {"function": {"module": "m", "qualname": "f"}, "args": list(args), "kwargs": {}},
        separators=(",", ":"),
    )
    return wj.JobSpec(kind="python", spec=payload, options=JobOptions(**kw))


def future(job_id: int) -> dict[str, int]:
    return {"$pw_future": job_id}


def submit(q: Q, *specs: wj.JobSpec, owner: int | None = None) -> list[int]:
    ids, _ = q.tx(lambda c, w: wj.submit(c, owner or q.alice, list(specs), q.now, w))
    return ids  # type: ignore[no-any-return]


def run_to_end(q: Q, pid: str, job_id: int, outcome: AttemptState, result: Any = None) -> None:
    """Claim ``job_id`` on ``pid`` and report its end (handing back anything else claimed)."""
    got = q.claim(pid, 50) or []
    mine = [c for c in got if c.id == job_id]
    assert mine, f"job {job_id} was not claimable"
    text = json.dumps(result) if outcome is AttemptState.SUCCEEDED else None
    q.report(
        pid,
        rep(job_id, mine[0].attempt, outcome, result=text, error="bad luck", retryable=False),
    )
    for c in got:
        if c.id != job_id:
            q.report(pid, rep(c.id, c.attempt, AttemptState.KILLED, error="not now"))


# -- real processes ------------------------------------------------------------------------


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
    server_args: list[str] | None = None,
    isolation: str = "none",
    tls: tuple[Path, Path] | None = None,
) -> Iterator[LocalCluster]:
    """A started server and pilots, registered, with the SDK connected to them; stopped after."""
    import pilotwave as pw

    c = LocalCluster(
        home,
        pilots=pilots,
        slots=slots,
        db=db,
        server_args=server_args or FAST_SERVER,
        pilot_args=pilot_args or [],
        isolation=isolation,
        tls=tls,
    )
    try:
        c.start()  # inside: a start that fails half-way leaves no server behind
        c.wait_for_pilots()
        pw.connect(c.url, c.admin_token, ca_bundle=c.ca_bundle)
        yield c
    finally:
        c.stop(timeout_s=10)


def pilot_process(cluster: Any, pilot_id: str) -> Any:
    """The local process of a registered pilot (names default to host:pid)."""
    info = next(p for p in cluster.client().pilots() if p["id"] == pilot_id)
    pid = int(info["name"].rsplit(":", 1)[1])
    return next(p for p in cluster.pilots if p.pid == pid)


def running_on(cluster: Any, job_id: int) -> str:
    job = wait_for(
        lambda: (j := cluster.client().job(job_id))["state"] == "running" and j, what="job to start"
    )
    return str(job["pilot_id"])


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


def second_server(
    home: Path, db: str, server_args: list[str] | None = None, *, key_from: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Another server process on the same database, sharing the attempt key of the server
    whose home is ``key_from``; returns it and its URL."""
    home.mkdir(parents=True)
    env = {**os.environ, "PILOTWAVE_HOME": str(home)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pilotwave.cli.main",
            "server",
            "--port",
            "0",
            "--db",
            db,
            *(server_args or FAST_SERVER),
            "--attempt-key-file",
            str(key_from / "attempt-key"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    info = wait_for(
        lambda: (home / "server.json").exists() and json.loads((home / "server.json").read_text()),
        what="the second server",
    )
    return proc, info["url"]


def evil(kind: str) -> bytes:
    """A sandbox archive that must not be unpacked: ``kind`` says how it tries to escape."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("ok.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"ok"))
        if kind == "dotdot":
            info = tarfile.TarInfo("../escaped.txt")
            info.size = 1
            t.addfile(info, io.BytesIO(b"x"))
        elif kind == "absolute":
            info = tarfile.TarInfo("/tmp/pilotwave-absolute-escape.txt")
            info.size = 1
            t.addfile(info, io.BytesIO(b"x"))
        elif kind == "symlink":
            info = tarfile.TarInfo("link")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            t.addfile(info)
        elif kind == "hardlink":
            info = tarfile.TarInfo("hard")
            info.type = tarfile.LNKTYPE
            info.linkname = "ok.txt"
            t.addfile(info)
        elif kind == "device":
            info = tarfile.TarInfo("dev")
            info.type = tarfile.CHRTYPE
            t.addfile(info)
    return buf.getvalue()


# -- the REST API in process ------------------------------------------------------------

SHELL = {"kind": "shell", "argv": ["true"]}


class Api:
    """A client of an in-process server (``create_app`` + ``TestClient``) with helpers for tokens."""

    def __init__(self, client: Any, admin: str) -> None:
        self.c = client
        self.admin = admin
        self._users: set[str] = set()

    def h(self, token: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"} if token else {}

    def post(self, path: str, body: Any = None, token: str | None = "admin", **kw: Any) -> Any:
        return self.c.post(
            path, json=body if body is not None else {}, headers=self.h(self._t(token)), **kw
        )

    def get(self, path: str, token: str | None = "admin", **kw: Any) -> Any:
        return self.c.get(path, headers=self.h(self._t(token)), **kw)

    def _t(self, token: str | None) -> str | None:
        return self.admin if token == "admin" else token

    def token(
        self,
        user: str,
        role: str = "user",
        queues: list[str] | None = None,
        all_users: bool | None = None,
    ) -> str:
        """A new token; a pilot token runs every user's jobs unless ``all_users=False``."""
        if role != "pilot" or user not in self._users:
            r = self.post("/api/v1/admin/users", {"name": user})
            assert r.status_code in (201, 409)
            self._users.add(user)
        every = role == "pilot" if all_users is None else all_users
        body = {"user": user, "role": role, "queues": queues, "all_users": every}
        r = self.post("/api/v1/admin/tokens", body)
        assert r.status_code == 201, r.text
        return r.json()["token"]  # type: ignore[no-any-return]

    def pilot(self, token: str, queues: list[str] | None = None, **kw: Any) -> str:
        body = {
            "name": "p",
            "hostname": "h",
            "queues": queues or ["default"],
            "cores": 4,
            "memory_mb": 1000,
            "slots": 4,
            "isolation": "user",
            **kw,
        }
        r = self.post("/api/v1/pilots", body, token=token)
        assert r.status_code == 201, r.text
        return r.json()["id"]  # type: ignore[no-any-return]


def claim_one(api: Api, pilot_tok: str, pid: str) -> dict[str, Any]:
    r = api.post(f"/api/v1/pilots/{pid}/claim", {"max_jobs": 1}, token=pilot_tok)
    assert r.status_code == 200, r.text
    (job,) = r.json()["jobs"]
    return job  # type: ignore[no-any-return]


FLOW = {"function": {"module": "flows", "qualname": "flow"}, "kwargs": {"n": 1}}


def claim_driver(
    api: Api, ptok: str, queues: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    pid = api.pilot(ptok, queues, driver_slots=1)
    r = api.post(f"/api/v1/pilots/{pid}/claim", {"max_jobs": 0, "max_drivers": 1}, token=ptok)
    (job,) = r.json()["jobs"]
    return pid, job


@contextmanager
def in_process_api(home: Path, limits: Limits | None = None, **settings: Any) -> Iterator[Api]:
    """A server app in this process on SQLite under ``home``."""
    from fastapi.testclient import TestClient

    from pilotwave.server.app import create_app
    from pilotwave.server.settings import Settings

    app = create_app(Settings(home=home, limits=limits or Limits(), **settings))
    with TestClient(app) as client:
        yield Api(client, app.state.admin_token)
