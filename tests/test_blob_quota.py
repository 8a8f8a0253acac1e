"""Who holds which blob, and the per-user quota on the bytes they hold."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from harness import SHELL, Api, Q, claim_one, in_process_api

from pilotwave.server.quotas import Quotas
from pilotwave.store.schema import blob_holdings


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(api: Api, data: bytes, token: str) -> Any:
    return api.c.put(f"/api/v1/blobs/{sha(data)}", content=data, headers=api.h(api._t(token)))


def head(api: Api, data: bytes, token: str) -> Any:
    return api.c.head(f"/api/v1/blobs/{sha(data)}", headers=api.h(api._t(token)))


def holdings(api: Api) -> set[tuple[str, str]]:
    """(user name, sha256) of every holding."""
    with api.c.app.state.core.db.read() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT users.name, h.sha256 FROM blob_holdings h JOIN users ON users.id = h.user_id"
            )
        )
        return {(r[0], r[1]) for r in rows}


@pytest.fixture
def small(tmp_path: Path) -> Any:
    """The API in process with a blob quota of 100 bytes per user."""
    with in_process_api(tmp_path, quotas=Quotas(blob_bytes=100)) as api:
        yield api


def test_an_upload_over_the_blob_quota_is_refused_saying_what_is_held(small: Api) -> None:
    alice, bob = small.token("alice"), small.token("bob")
    first, second = b"a" * 60, b"b" * 60
    assert put(small, first, alice).status_code == 201
    r = put(small, second, alice)
    assert r.status_code == 429 and r.json()["error"] == "TooManyRequests"
    detail = r.json()["detail"]
    assert "you hold 60 bytes" in detail and "upload of 60 bytes" in detail
    assert "quota of 100 bytes" in detail and "--quota-blob-gb" in detail
    assert "retry-after" not in r.headers  # waiting alone will not help
    assert put(small, first, alice).status_code == 201  # held already: nothing more to pay
    assert put(small, second, bob).status_code == 201  # a quota per user
    assert put(small, b"c" * 1000, "admin").status_code == 201  # admins have none
    assert (("alice", sha(second))) not in holdings(small)  # the refused upload left nothing


def test_uploading_content_someone_stored_makes_the_uploader_hold_it(small: Api) -> None:
    alice, bob = small.token("alice"), small.token("bob")
    data = b"shared sandbox"
    assert put(small, data, alice).status_code == 201
    r = head(small, data, alice)
    assert r.status_code == 200 and r.headers["content-length"] == str(len(data))
    # Bob cannot learn that somebody stored this content: he uploads it, and then holds it.
    assert head(small, data, bob).status_code == 404
    assert put(small, data, bob).status_code == 201
    assert head(small, data, bob).status_code == 200
    assert holdings(small) == {("alice", sha(data)), ("bob", sha(data))}
    # It counts toward each of them: 14 + 87 > 100.
    assert put(small, b"x" * 87, bob).status_code == 429
    assert put(small, b"x" * 86, bob).status_code == 201


def test_artifacts_count_toward_the_job_owner_and_are_never_refused(small: Api) -> None:
    alice = small.token("alice")
    ptok = small.token("ops", role="pilot", queues=["default"])
    (jid,) = small.post("/api/v1/jobs", {"jobs": [SHELL]}, token=alice).json()["ids"]
    pid = small.pilot(ptok)
    job = claim_one(small, ptok, pid)
    assert job["id"] == jid
    output = b"o" * 150  # over alice's quota on its own
    assert put(small, output, ptok).status_code == 201  # a pilot's upload is never refused
    assert holdings(small) == set()  # held by nobody until a report attaches it
    report = {
        "job_id": jid, "attempt": 1, "outcome": "succeeded", "result": "1",
        "artifacts": [{"name": "out.bin", "sha256": sha(output), "size": len(output)}],
    }  # fmt: skip
    r = small.post(f"/api/v1/pilots/{pid}/reports", {"reports": [report]}, token=ptok)
    assert r.status_code == 200, r.text
    assert holdings(small) == {("alice", sha(output))}
    assert head(small, output, alice).status_code == 200
    r = put(small, b"tiny", alice)  # her next upload is refused
    assert r.status_code == 429 and "you hold 150 bytes" in r.json()["detail"]
    got = small.get(f"/api/v1/jobs/{jid}/artifacts/out.bin", token=alice)
    assert got.status_code == 200 and got.content == output


@pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")
def test_the_sdk_uploads_once_per_user(small: Api) -> None:
    from fastapi.testclient import TestClient

    from pilotwave.sdk.client import Client

    tokens = {"alice": small.token("alice"), "bob": small.token("bob")}
    data = b"packed sources"
    sent: list[tuple[str, str]] = []
    for user in ("alice", "alice", "bob", "bob"):
        client = Client("http://testserver", tokens[user], retry_for_s=0)
        client.http._client = TestClient(small.c.app, headers=small.h(tokens[user]))

        def record(
            method: str, path: str, _user: str = user, _send: Any = client.http.request, **kw: Any
        ) -> Any:
            sent.append((_user, method))
            return _send(method, path, **kw)

        client.http.request = record  # type: ignore[method-assign]
        client.upload_blob(sha(data), data)
    assert sent == [
        ("alice", "HEAD"), ("alice", "PUT"), ("alice", "HEAD"),
        ("bob", "HEAD"), ("bob", "PUT"), ("bob", "HEAD"),
    ]  # fmt: skip
    assert holdings(small) == {("alice", sha(data)), ("bob", sha(data))}


def test_collecting_a_blob_removes_its_holdings(q: Q) -> None:
    from pilotwave.store.schema import blobs
    from pilotwave.wms import blobs as wms_blobs

    def blob(name: str, age_s: float, held_s: float, *users: int) -> str:
        digest = sha(name.encode())
        row = {"sha256": digest, "size": 1, "data": b"x", "created_at": q.now - age_s}
        q.tx(lambda c, w: c.execute(blobs.insert().values(**row)))
        for user in users:
            q.tx(lambda c, w, user=user: wms_blobs.hold(c, user, [digest], q.now - held_s))
        return digest

    old = blob("old", 7200, 7200, q.alice, q.bob)
    # Stored long ago, but uploaded again just now: a submission may be on its way.
    again = blob("again", 7200, 7200, q.alice)
    q.tx(lambda c, w: wms_blobs.hold(c, q.bob, [again], q.now - 10))
    assert q.tx(lambda c, w: wms_blobs.held_bytes(c, q.alice))[0] == 2
    gone, _ = q.tx(lambda c, w: wms_blobs.collect(c, q.now))
    assert gone == 1
    left, _ = q.tx(lambda c, w: {(r.user_id, r.sha256) for r in c.execute(blob_holdings.select())})
    assert left == {(q.alice, again), (q.bob, again)}
    assert old not in {s for _, s in left}
    assert q.tx(lambda c, w: wms_blobs.held_bytes(c, q.alice))[0] == 1


def test_the_migration_gives_existing_blobs_to_the_owners_of_the_jobs_using_them(
    db_url: str,
) -> None:
    from alembic import command

    from pilotwave.store import migrate
    from pilotwave.store.db import Database

    db = Database(db_url)
    cfg = migrate._config()
    box, out, stray = sha(b"box"), sha(b"out"), sha(b"stray")
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
        conn.execute(sa.text("INSERT INTO users (name, created_at) VALUES ('ann', 0), ('ben', 0)"))
        for digest in (box, out, stray):
            conn.execute(
                sa.text("INSERT INTO blobs (sha256, size, data, created_at) VALUES (:s, 3, :d, 5)"),
                {"s": digest, "d": b"abc"},
            )
        for owner in (1, 2):  # both use the sandbox; ann's job has an artifact
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (owner_id, name, kind, spec, sandbox, queue, labels, cores,"
                    " memory_mb, gpus, priority, max_attempts, isolate, state, created_at) VALUES"
                    " (:o, 'j', 'shell', '{}', :box, 'default', '[]', 1, 0, 0, 0, 3, false,"
                    " 'succeeded', 0)"
                ),
                {"o": owner, "box": box},
            )
        conn.execute(
            sa.text(
                "INSERT INTO artifacts (job_id, name, attempt, sha256, size, created_at)"
                " VALUES (1, 'o.txt', 1, :s, 3, 6)"
            ),
            {"s": out},
        )
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.head_revision()
    with db.read() as conn:
        rows = conn.execute(sa.text("SELECT user_id, sha256, held_at FROM blob_holdings"))
        assert {tuple(r) for r in rows} == {(1, box, 5.0), (2, box, 5.0), (1, out, 5.0)}
    db.dispose()
