"""Sharing one server safely: who may call what (the authorization matrix), and inputs that
once reached the database or the event loop and now get a 4xx naming the field."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import FLOW, SHELL, Api, claim_driver, claim_one, in_process_api, wait_for

# -- the authorization matrix ------------------------------------------------------------

ROLES = ("admin", "alice", "bob", "pilot_a", "pilot_b", "job_a", "driver_a")
"""alice and bob are users; pilot_a is a pilot token of alice's serving queue "qa", pilot_b
one of bob's serving every queue; job_a is the attempt token of alice's job J running on
pilot_a; driver_a the attempt token of alice's running workflow W's driver."""


@dataclass
class World:
    api: Api
    tokens: dict[str, str]
    job: int  # alice's job J, running on pilot_a, with sandbox S
    queued: int  # alice's job that stays queued
    workflow: int  # alice's workflow W
    pilot_a: str
    pilot_b: str
    sandbox: str  # S's sha256
    stranger_blob: str  # a blob no job refers to

    def call(self, who: str, method: str, path: str, body: Any = None) -> int:
        path = path.format(
            J=self.job, Q=self.queued, W=self.workflow, PA=self.pilot_a, PB=self.pilot_b,
            S=self.sandbox, X=self.stranger_blob,
        )  # fmt: skip
        headers = self.api.h(self.tokens[who])
        if method == "PUT_BLOB":
            data = b"uploaded by " + who.encode()
            sha = hashlib.sha256(data).hexdigest()
            return int(
                self.api.c.put(f"/api/v1/blobs/{sha}", content=data, headers=headers).status_code
            )
        r = self.api.c.request(method, path, json=body, headers=headers)
        return int(r.status_code)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with in_process_api(tmp_path_factory.mktemp("matrix")) as api:
        alice, bob = api.token("alice"), api.token("bob")
        pilot_a = api.token("alice", role="pilot", queues=["qa"])
        pilot_b = api.token("bob", role="pilot", queues=["*"])
        box = b"alice's sandbox"
        sandbox = hashlib.sha256(box).hexdigest()
        assert (
            api.c.put(f"/api/v1/blobs/{sandbox}", content=box, headers=api.h(alice)).status_code
            == 201
        )
        stray = b"nobody's"
        stranger = hashlib.sha256(stray).hexdigest()
        api.c.put(f"/api/v1/blobs/{stranger}", content=stray, headers=api.h(api.admin))
        wid = api.post("/api/v1/workflows", {**FLOW, "queue": "qa"}, token=alice).json()["id"]
        _, driver = claim_driver(api, pilot_a, ["qa"])
        job = {**SHELL, "queue": "qa", "sandbox": sandbox}
        (jid,) = api.post("/api/v1/jobs", {"jobs": [job]}, token=alice).json()["ids"]
        pa = api.pilot(pilot_a, queues=["qa"])
        claimed = claim_one(api, pilot_a, pa)
        assert claimed["id"] == jid
        (queued,) = api.post(
            "/api/v1/jobs", {"jobs": [{**SHELL, "queue": "nobody"}]}, token=alice
        ).json()["ids"]
        pb = api.pilot(pilot_b, queues=["*"])
        tokens = {
            "admin": api.admin, "alice": alice, "bob": bob, "pilot_a": pilot_a,
            "pilot_b": pilot_b, "job_a": claimed["token"], "driver_a": driver["token"],
        }  # fmt: skip
        yield World(api, tokens, jid, queued, wid, pa, pb, sandbox, stranger)


# Status per role, in ROLES order.  Reads of another user's work are 404 (not 403): nobody
# learns what exists; another token's pilot is a 403.  Writes come after the reads they
# could disturb.
OK, C, NO, NF = 200, 201, 403, 404
MATRIX: list[tuple[str, str, Any, tuple[int, ...]]] = [
    # method, path, body,                     admin alice bob pilot_a pilot_b job_a driver_a
    ("GET", "/api/v1/whoami", None,                (OK, OK, OK, OK, OK, OK, OK)),
    ("GET", "/api/v1/jobs", None,                  (OK, OK, OK, NO, NO, NO, OK)),
    ("GET", "/api/v1/jobs/summary", None,          (OK, OK, OK, NO, NO, NO, OK)),
    ("GET", "/api/v1/jobs/{J}", None,              (OK, OK, NF, NO, NO, NO, OK)),
    ("GET", "/api/v1/jobs/{J}/logs", None,         (OK, OK, NF, NO, NO, NO, OK)),
    ("GET", "/api/v1/jobs/{J}/events", None,       (OK, OK, NF, NO, NO, NO, OK)),
    ("GET", "/api/v1/jobs/{J}/reports", None,      (OK, OK, NF, NO, NO, NO, OK)),
    ("GET", "/api/v1/jobs/{J}/artifacts", None,    (OK, OK, NF, NO, NO, OK, OK)),
    ("GET", "/api/v1/jobs/{J}/artifacts/x", None,  (NF, NF, NF, NO, NO, NF, NF)),
    ("POST", "/api/v1/jobs/watch", {"ranges": [["{J}", "{J}"]], "timeout_s": 0},
                                                   (OK, OK, NF, NO, NO, NO, OK)),
    ("GET", "/api/v1/workflows", None,             (OK, OK, OK, NO, NO, NO, OK)),
    ("GET", "/api/v1/workflows/{W}", None,         (OK, OK, NF, NO, NO, NO, OK)),
    ("GET", "/api/v1/workflows/{W}/events", None,  (OK, OK, NF, NO, NO, NO, OK)),
    ("GET", "/api/v1/workflows/{W}/commands", None, (OK, OK, NF, NO, NO, NO, OK)),
    ("GET", "/api/v1/pilots", None,                (OK, OK, OK, NO, NO, NO, OK)),
    ("GET", "/api/v1/admin/tokens", None,          (OK, NO, NO, NO, NO, NO, NO)),
    ("POST", "/api/v1/admin/users", {"name": "carol"}, (C, NO, NO, NO, NO, NO, NO)),
    ("GET", "/api/v1/blobs/{S}", None,             (OK, NO, NO, OK, NF, NO, NO)),
    ("GET", "/api/v1/blobs/{X}", None,             (OK, NO, NO, NF, NF, NO, NO)),
    # A user (admin too) learns only whether they hold a blob; pilots ship artifacts they hash.
    ("HEAD", "/api/v1/blobs/{S}", None,            (NF, OK, NF, OK, OK, NO, NO)),
    ("HEAD", "/api/v1/blobs/{X}", None,            (OK, NF, NF, OK, OK, NO, NO)),
    ("PUT_BLOB", "", None,                         (C, C, C, C, C, NO, NO)),
    ("POST", "/api/v1/jobs", {"jobs": [SHELL]},    (C, C, C, NO, NO, NO, NO)),
    ("POST", "/api/v1/workflows", FLOW,            (C, C, C, NO, NO, NO, NO)),
    ("POST", "/api/v1/pilots/{PA}/heartbeat", {},
                                                   (OK, NO, NO, OK, NO, NO, NO)),
    ("POST", "/api/v1/pilots/{PB}/heartbeat", {},
                                                   (OK, NO, NO, NO, OK, NO, NO)),
    # A forged result for alice's running job: only its own pilot's report is taken.
    ("POST", "/api/v1/pilots/{PB}/reports",
     {"reports": [{"job_id": "{J}", "attempt": 1, "outcome": "succeeded", "result": "666"}]},
                                                   (OK, NO, NO, NO, OK, NO, NO)),
    ("POST", "/api/v1/jobs/{J}/reports", {"attempt": 1, "step": 0, "value": 1.0},
                                                   (NO, NO, NO, NO, NO, OK, NO)),
    ("POST", "/api/v1/jobs/decisions", {"answers": {"1": True}},
                                                   (NO, NO, NO, NO, NO, NO, OK)),
    ("POST", "/api/v1/workflows/{W}/commands",
     {"commands": [{"seq": 0, "kind": "observe", "call": "wait", "fingerprint": "ab" * 16, "observed": []}]},
                                                   (NO, NO, NO, NO, NO, NO, OK)),
    ("POST", "/api/v1/workflows/{W}/suspend", None, (OK, OK, NF, NO, NO, NO, NO)),
    ("POST", "/api/v1/jobs/{Q}/cancel", None,      (OK, OK, NF, NO, NO, NO, NO)),
    ("POST", "/api/v1/pilots/{PB}/drain", None,    (OK, NO, NO, NO, NO, NO, NO)),
]  # fmt: skip


def _fill(body: Any, world: World) -> Any:
    if isinstance(body, dict):
        return {_fill(k, world): _fill(v, world) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill(v, world) for v in body]
    if body == "{J}":
        return world.job
    return body


def test_the_authorization_matrix_role_by_endpoint(world: World) -> None:
    got: list[str] = []
    for method, path, body, want in MATRIX:
        for role, expected in zip(ROLES, want, strict=True):
            status = world.call(role, method, path, _fill(body, world))
            if status != expected:
                got.append(f"{role:8} {method} {path}: {status}, expected {expected}")
    assert not got, "\n".join(got)
    # The forged report changed nothing: alice's job still runs its only attempt on pilot_a.
    job = world.api.get(f"/api/v1/jobs/{world.job}").json()
    assert job["state"] == "running" and job["result"] is None


def test_token_of_odd_characters_is_a_401_not_a_crash(api: Api) -> None:
    for token in ["pwd_1_1_" + "é" * 40, "pwd_\x7f", "x" * 1000]:
        r = api.c.get(
            "/api/v1/jobs", headers={"authorization": f"Bearer {token}".encode("latin-1")}
        )
        assert r.status_code == 401, (token, r.text)


def test_a_pilot_without_isolation_runs_only_its_token_owners_jobs(api: Api) -> None:
    every = api.token("ops", role="pilot", queues=["default"])
    r = api.post("/api/v1/pilots", {**PILOT, "isolation": "none"}, token=every)
    assert r.status_code == 403 and r.json()["field"] == "isolation", r.text
    assert "--isolation user" in r.json()["detail"]
    r = api.post("/api/v1/pilots", {**PILOT, "isolation": "none"}, token=api.admin)
    assert r.status_code == 403  # an admin token serves everyone too

    alice, bob = api.token("alice"), api.token("bob")
    own = api.token("alice", role="pilot", queues=["default"], all_users=False)
    (bobs,) = api.post("/api/v1/jobs", {"jobs": [SHELL]}, token=bob).json()["ids"]
    (alices,) = api.post("/api/v1/jobs", {"jobs": [SHELL]}, token=alice).json()["ids"]
    pid = api.pilot(own, isolation="none")
    r = api.post(f"/api/v1/pilots/{pid}/claim", {"max_jobs": 5}, token=own)
    assert [j["id"] for j in r.json()["jobs"]] == [alices]  # bob's older job stays queued
    assert api.get(f"/api/v1/jobs/{bobs}").json()["state"] == "queued"
    (listed,) = [p for p in api.get("/api/v1/pilots").json()["pilots"] if p["id"] == pid]
    assert listed["isolation"] == "none" and listed["serves"] == "alice"


PILOT = {
    "name": "p",
    "hostname": "h",
    "queues": ["default"],
    "cores": 4,
    "memory_mb": 1000,
    "slots": 4,
}


# -- bounds: every bad input is a 4xx naming what is wrong ------------------------------------

BIG = 2**63


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/api/v1/jobs/{BIG}", None),
        ("GET", f"/api/v1/jobs/{BIG}/logs", None),
        ("GET", f"/api/v1/jobs/{BIG}/artifacts", None),
        ("POST", f"/api/v1/jobs/{BIG}/cancel", None),
        ("GET", f"/api/v1/workflows/{BIG}", None),
        ("POST", f"/api/v1/workflows/{BIG}/retry", None),
        ("GET", f"/api/v1/jobs?ids={BIG}", None),
        ("GET", f"/api/v1/jobs?before={BIG}", None),
        ("GET", "/api/v1/jobs/1/logs?pos=99999999999999999999", None),
        ("POST", "/api/v1/jobs/cancel", {"ids": [BIG]}),
        ("POST", "/api/v1/jobs/watch", {"ranges": [[1, BIG]]}),
        ("DELETE", f"/api/v1/admin/tokens/{BIG}", None),
        ("POST", "/api/v1/jobs", {"jobs": [{**SHELL, "gpus": 1, "gpu_memory_mb": 2**31}]}),
        ("POST", "/api/v1/jobs", {"jobs": [{**SHELL, "name": "a\x00b"}]}),
        ("POST", "/api/v1/jobs", {"jobs": [{**SHELL, "argv": ["echo", "a\x00"]}]}),
        ("POST", "/api/v1/jobs", {"jobs": [{**SHELL, "env": {"A=B": "1"}}]}),
        ("POST", "/api/v1/jobs", {"jobs": [{**SHELL, "argv": [""]}]}),
        ("POST", "/api/v1/jobs", {"jobs": [{**SHELL, "gpu_model": "(a+)+$"}]}),
        ("POST", "/api/v1/workflows", {**FLOW, "name": "\x00"}),
    ],
)
def test_values_the_database_cannot_hold_are_4xx(
    api: Api, method: str, path: str, body: Any
) -> None:
    r = api.c.request(method, path, json=body, headers=api.h(api.admin))
    assert 400 <= r.status_code < 500 and r.status_code != 404, (path, r.status_code, r.text)
    assert r.json()["detail"], r.text


def test_arguments_nested_deeper_than_the_limit_are_422(api: Api) -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    fn = {"module": "m", "qualname": "f"}
    r = api.post("/api/v1/jobs", {"jobs": [{"kind": "python", "function": fn, "args": [deep]}]})
    assert r.status_code == 422 and r.json()["field"] == "jobs[0]" and "nest" in r.text
    r = api.post("/api/v1/workflows", {**FLOW, "kwargs": {"x": deep}})
    assert r.status_code == 422 and "nest" in r.text


def test_a_bad_pilot_registration_leaves_the_listing_working(api: Api) -> None:
    ptok = api.token("ops", role="pilot", queues=["default"])
    base = {
        "name": "p",
        "hostname": "h",
        "queues": ["default"],
        "cores": 4,
        "memory_mb": 1000,
        "slots": 4,
    }
    for bad in [
        {"gpus": [{"index": 2**64, "model": "T4", "memory_mb": 1}]},
        {"gpus": [{"index": 0, "model": "T4", "memory_mb": 2**64}]},
        {"cores": 2**31},
        {"memory_mb": 2**40},
        {"name": "p\x00"},
    ]:
        r = api.post("/api/v1/pilots", {**base, **bad}, token=ptok)
        assert r.status_code == 422, (bad, r.text)
    assert api.get("/api/v1/pilots").status_code == 200


def test_artifact_names_that_leave_the_outputs_are_refused(api: Api) -> None:
    ptok = api.token("ops", role="pilot", queues=["default"])
    api.post("/api/v1/jobs", {"jobs": [SHELL]})
    pid = api.pilot(ptok)
    job = claim_one(api, ptok, pid)
    sha = hashlib.sha256(b"x").hexdigest()
    for name in ["/etc/passwd", "../up", "a/../../b", "a//b", "./a", "a\\b", "a\x00"]:
        report = {
            "job_id": job["id"], "attempt": 1, "outcome": "succeeded", "result": "1",
            "artifacts": [{"name": name, "sha256": sha, "size": 1}],
        }  # fmt: skip
        r = api.post(f"/api/v1/pilots/{pid}/reports", {"reports": [report]}, token=ptok)
        assert r.status_code == 422 and "artifacts" in r.json()["field"], (name, r.text)


def test_download_never_writes_outside_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pilotwave.errors import ResultError
    from pilotwave.sdk.client import Client

    written: list[str] = []

    class Fake(Client):
        def __init__(self) -> None:
            pass

        def artifacts(self, job_id: int) -> Any:
            return [{"name": "ok.txt"}, {"name": "../escape.txt"}]

        def artifact(self, job_id: int, name: str) -> bytes:
            written.append(name)
            return b"x"

    with pytest.raises(ResultError, match="escape"):
        Fake().download(1, tmp_path / "out")
    assert written == [] and not (tmp_path / "escape.txt").exists()


# -- files on the server's machine ----------------------------------------------------------


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_home_database_tokens_and_key_are_private_and_the_key_is_not_in_the_database(
    tmp_path: Path,
) -> None:
    import sqlalchemy as sa

    from pilotwave.store.schema import secrets

    home = tmp_path / "home"
    with in_process_api(home) as api:
        api.post("/api/v1/jobs", {"jobs": [SHELL]})  # the database and its journal are written
    assert _mode(home) == 0o700
    for name in ["pilotwave.db", "admin-token", "attempt-key"]:
        assert _mode(home / name) == 0o600, name
    for journal in home.glob("pilotwave.db-*"):
        assert _mode(journal) & 0o077 == 0, journal
    key = (home / "attempt-key").read_text().strip()
    engine = sa.create_engine(f"sqlite:///{home / 'pilotwave.db'}")
    with engine.connect() as conn:
        values = [str(v) for v in conn.scalars(sa.select(secrets.c.value))]
    engine.dispose()
    assert values and all(v.startswith("sha256:") and key not in v for v in values)


def test_an_open_home_is_narrowed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "pilotwave.db").touch(mode=0o644)
    (home / "pilotwave.db").chmod(0o644)
    with in_process_api(home):
        pass
    assert _mode(home) == 0o700 and _mode(home / "pilotwave.db") == 0o600


def test_a_key_kept_in_the_database_by_an_older_version_moves_to_a_file(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from pilotwave.errors import ConfigError
    from pilotwave.server import auth
    from pilotwave.store import migrate
    from pilotwave.store.db import Database
    from pilotwave.store.schema import secrets

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(db)
    old = "ab" * 32
    with db.write() as conn:
        conn.execute(secrets.insert().values(name="driver-token-key", value=old))
    with db.write() as conn:
        key = auth.attempt_secret(conn, tmp_path / "k1")
    assert key.hex() == old and (tmp_path / "k1").read_text().strip() == old
    with db.write() as conn:
        assert str(conn.scalar(sa.select(secrets.c.value))).startswith("sha256:")
        assert auth.attempt_secret(conn, tmp_path / "k1") == key  # a restart
    # A second server with a key of its own would reject the first one's tokens: refused.
    with db.write() as conn, pytest.raises(ConfigError, match="same --attempt-key-file"):
        auth.attempt_secret(conn, tmp_path / "k2")
    db.dispose()


# -- what a job can see on its pilot (real server and pilot processes) -----------------------

# Section markers printed as "@1".."@4" but written otherwise: the command's own text (which
# /proc shows as the parent's command line) must not look like them.
SPY = (
    "id -u; echo @$((0+1)); env; echo @$((1+1)); tr '\\0' ' ' < /proc/$PPID/cmdline; echo; "
    "echo PROCS $(ls /proc | grep -c '^[0-9]'); echo @$((2+1)); "
    'for f in {home}/* {home}/tokens/* /proc/*/environ; do cat "$f" 2>/dev/null; done; '
    "echo @$((3+1)); touch planted 2>&1; echo @$((4+1)); test -e {home} && echo SEES-HOME; "
    "ls {pilot_dir}/homes 2>&1; true"
)


def _section(text: str, n: int) -> str:
    return text.split(f"@{n}\n")[1].split(f"@{n + 1}\n")[0]


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["user", "container"])
def test_a_job_reaches_nothing_of_the_pilots_or_of_other_users(
    pw_home: Path, tmp_path: Path, isolation: str
) -> None:
    """A pilot running every user's jobs (as root, ``--isolation user`` or ``container``): a
    user's job reads neither the pilot's token nor its home, command line or other jobs'
    environments, cannot change its sandbox, and owners never share a warm worker."""
    import jobs_basic as jb
    from harness import running_cluster

    import pilotwave as pw
    from pilotwave.sdk.client import Client

    pilot_dir = tmp_path / "pilot"
    pilot_args = ["--workdir", str(pilot_dir)]
    # One pilot keeping two idle workers: without keys per owner, bob would reuse alice's.
    with running_cluster(
        pw_home, pilots=1, slots=2, isolation=isolation, pilot_args=pilot_args
    ) as c:
        admin = c.client()
        tokens = {}
        for user in ("alice", "bob"):
            admin.add_user(user)
            tokens[user] = admin.create_token(user)["token"]
        (pilot,) = admin.pilots()
        assert pilot["isolation"] == isolation and pilot["serves"] is None
        alice = Client(c.url, tokens["alice"])
        box = tmp_path / "box"
        box.mkdir()
        (box / "code.txt").write_text("alice's code\n")
        # bob's job runs meanwhile: its environment (with its token) must stay out of reach.
        bob = Client(c.url, tokens["bob"])
        sleeper = pw.shell("sleep 30", client=bob)
        wait_for(lambda: bob.job(sleeper.id)["state"] == "running", what="bob's job")
        spy = pw.shell(
            SPY.format(home=c.home, pilot_dir=pilot_dir),
            env={"ASKED": "yes", "PILOTWAVE_JOB_TOKEN": "forged"},
            sandbox=box,
            client=alice,
        )
        spy.result(timeout=60)
        seen = spy.logs()
        sleeper.cancel()
        uid = int(seen.split()[0])
        assert uid == 1_000_000_000 + alice.whoami()["user_id"]
        assert "ASKED=yes" in seen and f"PILOTWAVE_JOB_ID={spy.id}" in seen
        assert "PILOTWAVE_JOB_TOKEN=forged" not in seen  # the pilot's own settings win
        for secret in (c.pilot_token, c.admin_token, tokens["bob"], tokens["alice"]):
            assert secret not in seen
        assert f"PILOTWAVE_JOB_ID={sleeper.id}" not in seen  # bob's job's environment
        env = _section(seen, 1)
        assert "PILOTWAVE_HOME" not in env and "PILOTWAVE_TOKEN" not in env
        assert "--token-file" not in _section(seen, 2)  # not the pilot's command line
        files = _section(seen, 3)  # the pilot's files, every environ in its /proc
        key = (c.home / "attempt-key").read_text().strip()
        assert key not in files and '"token"' not in files  # no attempt key, no client.json
        assert f"PILOTWAVE_JOB_ID={spy.id}" in files  # its own environment, and only that
        assert int(_section(seen, 2).split("PROCS ")[-1].split()[0]) <= 5  # its own namespace
        planting = _section(seen, 4)  # the sandbox is read-only
        assert "Permission denied" in planting or "Read-only file system" in planting
        homes = seen.split("@5\n")[1]  # other owners' folders: closed, or not there at all
        if isolation == "user":
            assert "Permission denied" in homes
        else:
            assert "SEES-HOME" not in homes
            assert homes.split() == [str(uid)]  # of the pilot's folder, only alice's own
        assert spy.result()["exit_code"] == 0

        # Warm workers: alice's second job reuses her process, bob's job gets his own.
        ran = {}
        for user, n in [("alice", 1), ("bob", 1), ("alice", 2)]:
            pw.connect(c.url, tokens[user])
            ran[user, n] = jb.whoami.submit().result(timeout=60)
        assert ran["alice", 1]["process"] == ran["alice", 2]["process"]
        assert ran["bob", 1]["process"] != ran["alice", 1]["process"]
        assert ran["bob", 1]["uid"] == 1_000_000_000 + bob.whoami()["user_id"]
        alice.close()
        bob.close()


def test_the_pilot_takes_its_token_from_a_private_file_or_the_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pilotwave.cli.main import app

    monkeypatch.delenv("PILOTWAVE_TOKEN", raising=False)
    run = CliRunner().invoke
    base = ["pilot", "--server", "http://127.0.0.1:9"]
    r = run(app, [*base, "--token", "pwp_secret"])
    assert r.exit_code == 2 and "--token-file" in r.output
    open_file = tmp_path / "token"
    open_file.write_text("pwp_secret\n")
    open_file.chmod(0o644)
    r = run(app, [*base, "--token-file", str(open_file)])
    assert r.exit_code == 2 and "chmod 600" in r.output
    r = run(app, base)
    assert r.exit_code == 2 and "no token" in r.output
    r = run(app, [*base, "--pass-env", "PILOTWAVE_*"], env={"PILOTWAVE_TOKEN": "pwp_x"})
    assert r.exit_code == 2 and "PILOTWAVE_" in r.output


def test_a_jobs_environment_is_an_allowlist() -> None:
    from pilotwave.pilot.environment import check_pass_env, passed

    pilot = {
        "PATH": "/bin", "LC_ALL": "C", "PILOTWAVE_HOME": "/root/.pilotwave",
        "PILOTWAVE_TOKEN": "pwp_x", "AWS_SECRET_ACCESS_KEY": "k", "SITE_SCRATCH": "/s",
    }  # fmt: skip
    assert passed(pilot) == {"PATH": "/bin", "LC_ALL": "C"}
    env = passed(pilot, check_pass_env(["SITE_*"]))
    assert env == {"PATH": "/bin", "LC_ALL": "C", "SITE_SCRATCH": "/s"}
    for bad in ["PILOTWAVE_TOKEN", "PILOT*", "*", ""]:
        with pytest.raises(ValueError):
            check_pass_env([bad])


@pytest.mark.slow
def test_https_end_to_end_and_a_client_that_does_not_trust_the_certificate(
    pw_home: Path, tmp_path: Path
) -> None:
    import subprocess

    import workflows_basic as wb
    from harness import running_cluster

    from pilotwave.errors import ServerUnreachable
    from pilotwave.sdk.client import Client

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with running_cluster(pw_home, pilots=1, slots=2, tls=(cert, key)) as c:
        assert c.url.startswith("https://")
        # Pilot, driver and jobs all talk https (the driver submits its jobs over it).
        assert wb.diamond.submit(x=3).result(timeout=120) == {"d": 28, "seeded": True}
        with pytest.raises(ServerUnreachable, match="PILOTWAVE_CA_BUNDLE"):
            Client(c.url, c.admin_token, retry_for_s=0).whoami()
        with pytest.raises(ServerUnreachable):
            Client(c.url.replace("https", "http"), c.admin_token, retry_for_s=0).whoami()


def test_a_missing_ca_bundle_is_a_clear_error(tmp_path: Path) -> None:
    from pilotwave.errors import ConfigError
    from pilotwave.sdk.client import Client

    with pytest.raises(ConfigError, match="CA bundle"):
        Client("https://127.0.0.1:9", "pwu_x", ca_bundle=str(tmp_path / "missing.pem"))


# -- quotas ------------------------------------------------------------------------------------


def test_quotas_answer_429_saying_which_and_admins_have_none(tmp_path: Path) -> None:
    from pilotwave.server.quotas import Quotas

    quotas = Quotas(jobs_in_flight=6, submit_rate=1.0, submit_burst=5)
    with in_process_api(tmp_path, quotas=quotas) as api:
        alice, bob = api.token("alice"), api.token("bob")
        r = api.post("/api/v1/jobs", {"jobs": [SHELL] * 7}, token=alice)
        assert r.status_code == 429 and "jobs in flight" in r.json()["detail"]
        assert "retry-after" not in r.headers  # waiting alone will not help
        assert api.post("/api/v1/jobs", {"jobs": [SHELL] * 5}, token=alice).status_code == 201
        # Her bucket is empty now: the rate says when to come back.
        r = api.post("/api/v1/workflows", FLOW, token=alice)
        assert r.status_code == 429 and r.json()["error"] == "TooManyRequests"
        assert int(r.headers["retry-after"]) >= 1 and "jobs/s" in r.json()["detail"]
        assert api.post("/api/v1/jobs", {"jobs": [SHELL] * 3}, token=bob).status_code == 201
        assert api.post("/api/v1/jobs", {"jobs": [SHELL] * 10}).status_code == 201  # admin


def test_the_submission_rate_is_a_token_bucket_per_user() -> None:
    from pilotwave.errors import TooManyRequests
    from pilotwave.server.quotas import SubmitRate

    rate = SubmitRate(rate=10.0, burst=5)
    rate.take(1, 5, now=0.0)
    with pytest.raises(TooManyRequests) as info:
        rate.take(1, 3, now=0.1)  # 1 token back of the 3 asked
    assert info.value.retry_after == pytest.approx(0.2)
    rate.take(1, 3, now=0.3)
    rate.take(2, 50, now=0.3)  # over the burst: taken on a full bucket...
    with pytest.raises(TooManyRequests):
        rate.take(2, 1, now=1.0)  # ...and paid back before the next


def test_the_sdk_waits_out_a_rate_quota_and_raises_a_count_quota() -> None:
    import httpx

    from pilotwave.errors import TooManyRequests
    from pilotwave.sdk.http import Http

    answers = [
        httpx.Response(429, headers={"retry-after": "1"}, json={"detail": "rate", "error": "TooManyRequests"}),
        httpx.Response(201, json={"ids": [1]}),
        httpx.Response(429, json={"detail": "in flight", "error": "TooManyRequests"}),
    ]  # fmt: skip
    http = Http("http://pilotwave.invalid", "pwu_x")
    http._client = httpx.Client(
        base_url=http.url, transport=httpx.MockTransport(lambda request: answers.pop(0))
    )
    assert http.post("/api/v1/jobs", {"jobs": []}) == {"ids": [1]}  # after one wait
    with pytest.raises(TooManyRequests, match="in flight"):
        http.post("/api/v1/jobs", {"jobs": []})
    assert answers == []


def test_blobs_nothing_refers_to_are_deleted_once_old(q: Any) -> None:
    import sqlalchemy as sa

    from pilotwave.protocol import JobOptions
    from pilotwave.store.schema import artifacts, blobs
    from pilotwave.wms import blobs as wms_blobs
    from pilotwave.wms import jobs as wj

    def blob(name: str, age_s: float) -> str:
        sha = hashlib.sha256(name.encode()).hexdigest()
        row = {"sha256": sha, "size": 1, "data": b"x", "created_at": q.now - age_s}
        q.tx(lambda c, w: c.execute(blobs.insert().values(**row)))
        return sha

    box, out, fresh = blob("box", 7200), blob("out", 7200), blob("fresh", 10)
    blob("stray", 7200)  # an upload whose submission never came
    q.tx(lambda c, w: wms_blobs.hold(c, q.alice, [box], q.now))  # alice's upload
    spec = wj.JobSpec(kind="shell", spec='{"argv": ["true"]}', options=JobOptions(), sandbox=box)
    (jid,) = q.tx(lambda c, w: wj.submit(c, q.alice, [spec], q.now, w))[0]
    art = {
        "job_id": jid,
        "name": "a.txt",
        "attempt": 1,
        "sha256": out,
        "size": 1,
        "created_at": q.now,
    }
    q.tx(lambda c, w: c.execute(artifacts.insert().values(**art)))
    gone, _ = q.tx(lambda c, w: wms_blobs.collect(c, q.now))
    assert gone == 1
    left, _ = q.tx(lambda c, w: set(c.scalars(sa.select(blobs.c.sha256))))
    assert left == {box, out, fresh}  # referenced, or too new to judge


def test_a_job_runs_only_in_a_sandbox_its_owner_uploaded(api: Api) -> None:
    """Knowing the hash of someone else's sandbox gives nothing: a submission naming it is
    a 404, as is the check whether it is stored."""
    alice, bob = api.token("alice"), api.token("bob")
    box = b"alice's private code"
    sha = hashlib.sha256(box).hexdigest()
    assert api.c.put(f"/api/v1/blobs/{sha}", content=box, headers=api.h(alice)).status_code == 201
    job = {**SHELL, "sandbox": sha}
    r = api.post("/api/v1/jobs", {"jobs": [job]}, token=bob)
    assert r.status_code == 404 and r.json()["field"] == "sandbox", r.text
    assert "upload it" in r.json()["detail"]
    assert api.c.head(f"/api/v1/blobs/{sha}", headers=api.h(bob)).status_code == 404
    assert api.post("/api/v1/jobs", {"jobs": [job]}, token=alice).status_code == 201
    # bob uploads the same content himself: now it is his sandbox too.
    assert api.c.put(f"/api/v1/blobs/{sha}", content=box, headers=api.h(bob)).status_code == 201
    assert api.post("/api/v1/jobs", {"jobs": [job]}, token=bob).status_code == 201


def _containers(label: str) -> list[str]:
    import subprocess

    out = subprocess.run(
        ["podman", "ps", "-a", "-q", "--filter", f"label={label}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()


def _commands_running(text: str, uid: int | None = None) -> list[int]:
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "uids"]):
        if text in " ".join(p.info["cmdline"] or ()) and uid in (None, p.info["uids"].real):
            found.append(p.info["pid"])
    return found


@pytest.mark.slow
def test_a_container_ends_with_its_job_and_with_its_pilot(pw_home: Path) -> None:
    """A container outlives ``podman run`` (its monitor is not the pilot's child): each ends
    by its lifeline when the pilot kills the job, and all of them when the pilot is SIGKILLed."""
    import os
    import signal

    import jobs_basic as jb
    from harness import pilot_process, running_cluster

    import pilotwave as pw

    with running_cluster(pw_home, pilots=1, slots=2, isolation="container") as c:
        (info,) = c.client().pilots()
        pilot = pilot_process(c, info["id"])
        label = f"pilotwave.pilot={pilot.pid}"
        cancelled = pw.shell("sleep 301")
        wait_for(lambda: c.client().job(cancelled.id)["state"] == "running", what="the job")
        wait_for(lambda: _containers(label), what="its container")
        cancelled.cancel()
        wait_for(lambda: not _containers(label), what="the container to go")
        assert not _commands_running("sleep 301")

        shell = pw.shell("sleep 302")
        worker = jb.sleep_then.submit(303)
        for job in (shell, worker):
            wait_for(lambda j=job: c.client().job(j.id)["state"] == "running", what="the jobs")
        wait_for(lambda: _commands_running("sleep 302"), what="the command")
        wait_for(lambda: len(_containers(label)) == 2, what="two containers")
        os.kill(pilot.pid, signal.SIGKILL)
        wait_for(lambda: not _containers(label), what="the containers to go", timeout=30)
        # With them, what the pilot started to run them (podman run, whose command line says
        # "sleep 302" too) and what ran inside.
        wait_for(lambda: not _commands_running("sleep 302"), what="the processes to go")
        uid = 1_000_000_000 + c.client().whoami()["user_id"]
        assert not _commands_running("pilotwave.pilot.worker", uid)  # the owner's worker


def test_container_isolation_says_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from pilotwave.errors import ConfigError
    from pilotwave.pilot import isolation

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="apt-get install podman"):
        isolation.ContainerIsolator(tmp_path)


def test_an_image_that_cannot_run_the_pilots_python_is_refused_at_start(tmp_path: Path) -> None:
    import subprocess
    import tarfile

    from pilotwave.errors import ConfigError
    from pilotwave.pilot import isolation

    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tar:
        info = tarfile.TarInfo("tmp")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    image = "localhost/pilotwave-test-empty"
    subprocess.run(["podman", "import", "-q", str(empty), image], check=True, capture_output=True)
    try:
        with pytest.raises(ConfigError, match="podman cannot start a job here"):
            isolation.ContainerIsolator(tmp_path / "pilot", image=image).probe()
    finally:
        subprocess.run(["podman", "rmi", "-f", image], check=False, capture_output=True)


def test_every_closed_folder_on_the_way_to_what_a_job_needs_is_opened_by_one_name(
    tmp_path: Path,
) -> None:
    from pilotwave.pilot.jail import closed_folders

    deep = tmp_path / "a" / "b" / "c" / "python"
    deep.mkdir(parents=True)
    for folder, mode in [(tmp_path / "a", 0o700), (tmp_path / "a" / "b", 0o755)]:
        folder.chmod(mode)
    (tmp_path / "a" / "b" / "c").chmod(0o750)
    found = closed_folders([str(deep)])
    assert found[str(tmp_path / "a")] == {"b"}
    assert found[str(tmp_path / "a" / "b" / "c")] == {"python"}
    assert str(tmp_path / "a" / "b") not in found  # others may pass through it already
