"""The REST API's contract: auth, ownership, validation, limits, fencing, idempotency (in-process server)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from harness import FLOW, SHELL, Api, claim_driver, claim_one

from pilotwave.protocol import Limits
from pilotwave.server.app import create_app
from pilotwave.server.settings import Settings


def test_missing_or_unknown_token_is_401(api: Api) -> None:
    assert api.get("/api/v1/jobs", token=None).status_code == 401
    r = api.get("/api/v1/jobs", token="pwu_not-a-token")
    assert r.status_code == 401 and "unknown" in r.json()["detail"]


def test_pilot_token_cannot_submit(api: Api) -> None:
    tok = api.token("ops", role="pilot", queues=["default"])
    r = api.post("/api/v1/jobs", {"jobs": [SHELL]}, token=tok)
    assert r.status_code == 403 and "pilot" in r.json()["detail"]


def test_user_token_cannot_register_pilots_or_manage_tokens(api: Api) -> None:
    tok = api.token("alice")
    assert (
        api.post(
            "/api/v1/pilots",
            {
                "name": "p",
                "hostname": "h",
                "queues": ["default"],
                "cores": 1,
                "memory_mb": 1,
                "slots": 1,
            },
            token=tok,
        ).status_code
        == 403
    )
    assert api.post("/api/v1/admin/users", {"name": "eve"}, token=tok).status_code == 403


def test_pilot_token_is_scoped_to_its_queues(api: Api) -> None:
    tok = api.token("ops", role="pilot", queues=["cpu"])
    body = {"name": "p", "hostname": "h", "queues": ["gpu"], "cores": 1, "memory_mb": 1, "slots": 1}
    r = api.post("/api/v1/pilots", body, token=tok)
    assert r.status_code == 403 and r.json()["field"] == "queues"


def test_pilots_can_be_listed_by_state(api: Api) -> None:
    tok = api.token("ops", role="pilot", queues=["default"])
    pid = api.pilot(tok)
    assert [
        p["id"] for p in api.get("/api/v1/pilots", params={"state": "active"}).json()["pilots"]
    ] == [pid]
    assert api.get("/api/v1/pilots", params={"state": "lost"}).json()["pilots"] == []
    assert api.get("/api/v1/pilots", params={"state": "asleep"}).status_code == 422


def test_a_pilot_can_only_act_for_itself(api: Api) -> None:
    tok1 = api.token("ops", role="pilot", queues=["default"])
    tok2 = api.token("ops", role="pilot", queues=["default"])
    pid = api.pilot(tok1)
    assert api.post(f"/api/v1/pilots/{pid}/claim", {"max_jobs": 1}, token=tok2).status_code == 403


def test_users_see_only_their_own_jobs(api: Api) -> None:
    alice, bob = api.token("alice"), api.token("bob")
    (jid,) = api.post("/api/v1/jobs", {"jobs": [SHELL]}, token=alice).json()["ids"]
    for path in (
        f"/api/v1/jobs/{jid}",
        f"/api/v1/jobs/{jid}/logs",
        f"/api/v1/jobs/{jid}/events",
        f"/api/v1/jobs/{jid}/artifacts",
    ):
        r = api.get(path, token=bob)
        assert r.status_code == 404, path
        assert api.get(path, token=alice).status_code == 200, path
    assert api.post(f"/api/v1/jobs/{jid}/cancel", token=bob).status_code == 404
    assert api.get("/api/v1/jobs", token=bob).json()["jobs"] == []
    assert (
        api.post(
            "/api/v1/jobs/watch", {"ranges": [[jid, jid]], "timeout_s": 0}, token=bob
        ).status_code
        == 404
    )
    assert api.get(f"/api/v1/jobs/{jid}").status_code == 200  # the admin sees everything


def test_unknown_ids_are_404(api: Api) -> None:
    assert api.get("/api/v1/jobs/999999").status_code == 404
    assert api.post("/api/v1/pilots/nope/claim", {"max_jobs": 1}).status_code == 404
    assert api.get("/api/v1/jobs/1/artifacts/missing.txt").status_code == 404


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"kind": "shell", "argv": ["true"], "cores": 0}, "jobs[0].cores"),
        ({"kind": "shell", "argv": ["true"], "queue": "no spaces"}, "jobs[0].queue"),
        ({"kind": "shell", "argv": ["true"], "gpu_model": "(unclosed"}, "jobs[0].gpu_model"),
        ({"kind": "shell", "argv": ["true"], "max_attempts": 0}, "jobs[0].max_attempts"),
        ({"kind": "shell", "argv": ["true"], "bogus": 1}, "jobs[0].bogus"),
        ({"kind": "rocket", "argv": ["true"]}, "jobs[0].kind"),
        ({"kind": "python", "args": [1]}, "jobs[0]"),
        ({"kind": "shell", "argv": []}, "jobs[0]"),
        ({"kind": "python", "function": {"qualname": "f"}}, "jobs[0].function"),
    ],
)
def test_malformed_job_is_422_naming_the_field(api: Api, job: dict[str, Any], field: str) -> None:
    r = api.post("/api/v1/jobs", {"jobs": [job]})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()


def test_body_that_is_not_json_is_422(api: Api) -> None:
    r = api.c.post(
        "/api/v1/jobs",
        content=b"{nope",
        headers={**api.h(api.admin), "content-type": "application/json"},
    )
    assert r.status_code == 422


def test_oversize_request_is_413(api: Api) -> None:
    big = {"kind": "python", "function": {"module": "m", "qualname": "f"}, "args": ["x" * 70_000]}
    r = api.post("/api/v1/jobs", {"jobs": [big]})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_oversize_chunked_request_is_413(api: Api) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"jobs": [{"kind": "shell", "argv": ["'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"]}]}'

    r = api.c.post(
        "/api/v1/jobs",
        content=body(),
        headers={**api.h(api.admin), "content-type": "application/json"},
    )
    assert r.status_code == 413


def test_oversize_arguments_are_413_naming_args(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path, limits=Limits(max_spec_bytes=100)))
    with TestClient(app) as c:
        big = {"kind": "python", "function": {"module": "m", "qualname": "f"}, "args": ["x" * 200]}
        r = c.post(
            "/api/v1/jobs",
            json={"jobs": [big]},
            headers={"authorization": f"Bearer {app.state.admin_token}"},
        )
    assert r.status_code == 413 and r.json()["field"] == "jobs[0].args"


def test_blob_upload_is_content_addressed_idempotent_and_limited(api: Api) -> None:
    data = b"sandbox bytes"
    sha = hashlib.sha256(data).hexdigest()
    url = f"/api/v1/blobs/{sha}"
    h = api.h(api.admin)
    assert api.c.head(url, headers=h).status_code == 404
    assert api.c.put(url, content=data, headers=h).status_code == 201
    assert api.c.put(url, content=data, headers=h).status_code == 201  # again: harmless
    assert api.c.head(url, headers=h).status_code == 200
    assert api.c.get(url, headers=h).content == data
    bad = api.c.put(f"/api/v1/blobs/{'0' * 64}", content=data, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] == "sha256"
    big = b"x" * 40_000
    r = api.c.put(f"/api/v1/blobs/{hashlib.sha256(big).hexdigest()}", content=big, headers=h)
    assert r.status_code == 413


def test_users_cannot_download_raw_blobs(api: Api) -> None:
    alice = api.token("alice")
    data = b"secret"
    sha = hashlib.sha256(data).hexdigest()
    api.c.put(f"/api/v1/blobs/{sha}", content=data, headers=api.h(alice))
    assert api.get(f"/api/v1/blobs/{sha}", token=alice).status_code == 403


def test_stale_attempt_report_is_refused_with_409(api: Api) -> None:
    ptok = api.token("ops", role="pilot", queues=["default"])
    api.post("/api/v1/jobs", {"jobs": [{**SHELL, "max_attempts": 3}]})
    p1, p2 = api.pilot(ptok), api.pilot(ptok)
    job = claim_one(api, ptok, p1)
    # p1 hands the job back (drain); p2 takes attempt 2.
    report = {"job_id": job["id"], "attempt": 1, "outcome": "killed", "error": "drain"}
    assert (
        api.post(f"/api/v1/pilots/{p1}/attempts/{job['id']}/1", report, token=ptok).status_code
        == 200
    )
    job2 = claim_one(api, ptok, p2)
    assert job2["attempt"] == 2
    late = {"job_id": job["id"], "attempt": 1, "outcome": "succeeded", "result": "1"}
    r = api.post(f"/api/v1/pilots/{p1}/attempts/{job['id']}/1", late, token=ptok)
    assert r.status_code == 409 and "no longer current" in r.json()["detail"]


def test_repeated_completion_report_is_idempotent(api: Api) -> None:
    ptok = api.token("ops", role="pilot", queues=["default"])
    api.post("/api/v1/jobs", {"jobs": [SHELL]})
    pid = api.pilot(ptok)
    job = claim_one(api, ptok, pid)
    rep = {"job_id": job["id"], "attempt": 1, "outcome": "succeeded", "result": '{"v": 1}'}
    url = f"/api/v1/pilots/{pid}/attempts/{job['id']}/1"
    assert api.post(url, rep, token=ptok).json() == {"ack": "accepted"}
    assert api.post(url, rep, token=ptok).json() == {"ack": "duplicate"}
    assert api.get(f"/api/v1/jobs/{job['id']}").json()["result"] == {"v": 1}


def test_an_oversize_result_fails_its_job_for_good_on_either_report_route(api: Api) -> None:
    ptok = api.token("ops", role="pilot", queues=["default"])
    ids = api.post("/api/v1/jobs", {"jobs": [SHELL, SHELL]}).json()["ids"]
    pid = api.pilot(ptok)
    jobs = api.post(f"/api/v1/pilots/{pid}/claim", {"max_jobs": 2}, token=ptok).json()["jobs"]
    big = '"' + "x" * 2000 + '"'
    one = {"job_id": jobs[0]["id"], "attempt": 1, "outcome": "succeeded", "result": big}
    r = api.post(f"/api/v1/pilots/{pid}/attempts/{jobs[0]['id']}/1", one, token=ptok)
    assert r.json() == {"ack": "accepted"}  # the pilot must not resend it forever
    batch = {
        "reports": [{"job_id": jobs[1]["id"], "attempt": 1, "outcome": "succeeded", "result": big}]
    }
    assert api.post(f"/api/v1/pilots/{pid}/reports", batch, token=ptok).json()["acks"] == [
        "accepted"
    ]
    for job in jobs:  # one rule, one message: not retried, the limit named
        failed = api.get(f"/api/v1/jobs/{job['id']}").json()
        assert failed["state"] == "failed" and failed["attempts"] == 1
        assert "ResultError: the result is 2002 bytes, over the limit of 1000" in failed["error"]
    assert ids


def watch(
    api: Api, ranges: list[list[int]], timeout_s: float, token: str | None = "admin"
) -> list[dict[str, Any]]:
    r = api.post("/api/v1/jobs/watch", {"ranges": ranges, "timeout_s": timeout_s}, token=token)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def test_watch_streams_jobs_as_they_finish(api: Api) -> None:
    ptok = api.token("ops", role="pilot", queues=["default"])
    ids = api.post("/api/v1/jobs", {"jobs": [SHELL, SHELL]}).json()["ids"]
    assert watch(api, [[ids[0], ids[1]]], 0) == [{"end": True, "pending": 2}]
    pid = api.pilot(ptok)
    jobs = api.post(f"/api/v1/pilots/{pid}/claim", {"max_jobs": 2}, token=ptok).json()["jobs"]
    rep = {"job_id": jobs[0]["id"], "attempt": 1, "outcome": "succeeded", "result": "[1, 2]"}
    api.post(f"/api/v1/pilots/{pid}/reports", {"reports": [rep]}, token=ptok)
    lines = watch(api, [[ids[0], ids[1]]], 0.2)
    assert lines == [
        {
            "done": {
                str(jobs[0]["id"]): {
                    "state": "succeeded",
                    "result": [1, 2],
                    "error": None,
                    "reason": None,
                }
            }
        },
        {"end": True, "pending": 1},
    ]


def test_watch_refuses_bad_ranges_and_foreign_ids(api: Api) -> None:
    (jid,) = api.post("/api/v1/jobs", {"jobs": [SHELL]}).json()["ids"]
    r = api.post("/api/v1/jobs/watch", {"ranges": [[5, 1]]})
    assert r.status_code == 422 and "inverted" in r.json()["detail"]
    r = api.post("/api/v1/jobs/watch", {"ranges": [[1, 10_000_000]]})
    assert r.status_code == 422 and "limit" in r.json()["detail"]
    bob = api.token("bob")
    assert (
        api.post(
            "/api/v1/jobs/watch", {"ranges": [[jid, jid]], "timeout_s": 0}, token=bob
        ).status_code
        == 404
    )


def test_logs_are_stored_in_order_and_resends_ignored(api: Api) -> None:
    ptok = api.token("ops", role="pilot", queues=["default"])
    (jid,) = api.post("/api/v1/jobs", {"jobs": [SHELL]}).json()["ids"]
    pid = api.pilot(ptok)
    claim_one(api, ptok, pid)
    chunks = [
        {"job_id": jid, "attempt": 1, "pos": 0, "data": "hello ", "nbytes": 6},
        {"job_id": jid, "attempt": 1, "pos": 6, "data": "world\n", "nbytes": 6},
    ]
    api.post(f"/api/v1/pilots/{pid}/logs", {"chunks": chunks}, token=ptok)
    api.post(f"/api/v1/pilots/{pid}/logs", {"chunks": chunks[1:]}, token=ptok)  # a resend
    page = api.get(f"/api/v1/jobs/{jid}/logs").json()
    assert "".join(c["data"] for c in page["chunks"]) == "hello world\n"
    after = api.get(f"/api/v1/jobs/{jid}/logs", params=page["cursor"]).json()
    assert after["chunks"] == []


def test_health_metrics_and_openapi_are_published(api: Api) -> None:
    assert api.c.get("/api/v1/health").json()["status"] == "ok"
    api.post("/api/v1/jobs", {"jobs": [SHELL]})
    metrics = api.c.get("/metrics").text
    assert 'pilotwave_jobs{queue="default",state="queued"} 1.0' in metrics
    assert "pilotwave_jobs_submitted_total" in metrics
    pid = api.pilot(api.token("ops", role="pilot", queues=["default"]))
    api.post(f"/api/v1/pilots/{pid}/claim", {"max_jobs": 1})
    metrics = api.c.get("/metrics").text
    assert "pilotwave_queue_wait_seconds_count 1.0" in metrics
    assert "pilotwave_jobs_claimed_total 1.0" in metrics
    paths = api.c.get("/openapi.json").json()["paths"]
    assert "/api/v1/pilots/{pilot_id}/claim" in paths


def test_revoked_token_stops_working(api: Api) -> None:
    r = api.post("/api/v1/admin/users", {"name": "carol"})
    tok = api.post("/api/v1/admin/tokens", {"user": "carol"}).json()
    assert api.get("/api/v1/jobs", token=tok["token"]).status_code == 200
    assert (
        api.c.delete(f"/api/v1/admin/tokens/{tok['id']}", headers=api.h(api.admin)).status_code
        == 200
    )
    assert api.get("/api/v1/jobs", token=tok["token"]).status_code == 401
    assert r.status_code == 201


def test_bad_user_names_and_duplicate_users_are_refused(api: Api) -> None:
    assert api.post("/api/v1/admin/users", {"name": "no spaces"}).status_code == 422
    assert api.post("/api/v1/admin/users", {"name": "dave"}).status_code == 201
    assert api.post("/api/v1/admin/users", {"name": "dave"}).status_code == 409
    assert api.post("/api/v1/admin/tokens", {"user": "nobody"}).status_code == 404
    assert (
        api.post("/api/v1/admin/tokens", {"user": "dave", "role": "pilot"}).json()["field"]
        == "queues"
    )


def test_workflows_are_validated_owned_and_404_when_unknown(api: Api) -> None:
    alice, bob = api.token("alice"), api.token("bob")
    r = api.post("/api/v1/workflows", {"function": {"qualname": "f"}}, token=alice)
    assert r.status_code == 422 and "module" in r.json()["detail"]
    r = api.post("/api/v1/workflows", {**FLOW, "queue": "no spaces"}, token=alice)
    assert r.status_code == 422 and r.json()["field"] == "queue"
    r = api.post("/api/v1/workflows", {**FLOW, "kwargs": {"x": "y" * 2_000_000}}, token=alice)
    assert r.status_code == 413
    wid = api.post("/api/v1/workflows", FLOW, token=alice).json()["id"]
    assert api.get(f"/api/v1/workflows/{wid}", token=alice).json()["state"] == "running"
    for path in ("", "/events", "/commands"):
        assert api.get(f"/api/v1/workflows/{wid}{path}", token=bob).status_code == 404
    for op in ("cancel", "suspend", "resume", "retry"):
        assert api.post(f"/api/v1/workflows/{wid}/{op}", token=bob).status_code == 404
    assert api.get("/api/v1/workflows/424242", token=alice).status_code == 404
    assert [w["id"] for w in api.get("/api/v1/workflows", token=bob).json()["workflows"]] == []
    ptok = api.token("ops", role="pilot", queues=["default"])
    assert api.post("/api/v1/workflows", FLOW, token=ptok).status_code == 403


def test_only_the_current_driver_attempt_records_commands(api: Api) -> None:
    alice = api.token("alice")
    wid = api.post("/api/v1/workflows", FLOW, token=alice).json()["id"]
    cmd = {"seq": 0, "kind": "observe", "call": "wait", "fingerprint": "ab" * 16, "observed": []}
    assert (
        api.post(f"/api/v1/workflows/{wid}/commands", {"commands": [cmd]}, token=alice).status_code
        == 403
    )
    ptok = api.token("ops", role="pilot", queues=["default"])
    pid, job = claim_driver(api, ptok)
    driver = job["token"]
    assert job["kind"] == "driver" and driver.startswith("pwd_")
    ok = api.post(f"/api/v1/workflows/{wid}/commands", {"commands": [cmd]}, token=driver)
    assert ok.status_code == 200 and ok.json()["outcomes"] == [{"ids": []}]
    bad = {**cmd, "kind": "submit"}  # a submit without jobs
    r = api.post(f"/api/v1/workflows/{wid}/commands", {"commands": [bad]}, token=driver)
    assert r.status_code == 422
    forged = driver[:-1] + ("1" if driver[-1] == "0" else "0")
    assert (
        api.post(f"/api/v1/workflows/{wid}/commands", {"commands": [cmd]}, token=forged).status_code
        == 401
    )
    # The attempt ends (its pilot hands it back): its token is fenced out.
    report = {"job_id": job["id"], "attempt": job["attempt"], "outcome": "killed", "error": "drain"}
    api.post(f"/api/v1/pilots/{pid}/attempts/{job['id']}/{job['attempt']}", report, token=ptok)
    late = {**cmd, "seq": 1}
    r = api.post(f"/api/v1/workflows/{wid}/commands", {"commands": [late]}, token=driver)
    assert r.status_code in (401, 409)
    log = api.get(f"/api/v1/workflows/{wid}/commands", token=alice).json()
    assert [c["seq"] for c in log["commands"]] == [0]


def test_job_reports_take_the_attempts_own_token_and_a_drivers_answer(api: Api) -> None:
    alice, bob = api.token("alice"), api.token("bob")
    ptok = api.token("ops", role="pilot", queues=["default"])
    wid = api.post("/api/v1/workflows", FLOW, token=alice).json()["id"]
    _, driver_job = claim_driver(api, ptok)
    driver = driver_job["token"]
    ids = api.post("/api/v1/jobs", {"jobs": [SHELL, SHELL]}, token=alice).json()["ids"]
    pid = api.pilot(ptok)
    job = claim_one(api, ptok, pid)
    other = claim_one(api, ptok, pid)
    assert {job["id"], other["id"]} == set(ids)
    token, path = job["token"], f"/api/v1/jobs/{job['id']}/reports"
    step0 = {"attempt": job["attempt"], "step": 0, "value": 0.5}

    r = api.post(path, step0, token=token)
    assert r.status_code == 200 and r.json()["stop"] is False and r.json()["answered"] is False
    assert api.post(path, step0, token=token).json()["id"] == r.json()["id"]  # a resend
    report_id = r.json()["id"]
    for body, status in [
        ({**step0, "step": -1}, 422),
        ({**step0, "value": "fast"}, 422),
        ({**step0, "attempt": 2}, 403),  # another attempt than the token's
    ]:
        assert api.post(path, body, token=token).status_code == status, body
    nan = b'{"attempt": 1, "step": 0, "value": NaN}'
    r = api.c.post(path, content=nan, headers={**api.h(token), "content-type": "application/json"})
    assert r.status_code == 422 and "not a finite number" in r.text
    assert api.post(path, step0, token=alice).status_code == 403  # users do not report
    assert api.post(path, step0, token=other["token"]).status_code == 403  # nor other jobs
    assert api.post("/api/v1/jobs", {"jobs": [SHELL]}, token=token).status_code == 403

    # The owner sees the reports; another user does not.
    assert api.get(path, token=alice).json()["reports"] == [
        {"attempt": 1, "step": 0, "value": 0.5, "stop": None}
    ]
    assert api.get(path, token=bob).status_code == 404
    # A driver watching the job gets the report in its stream.
    watch = {"ranges": [[job["id"], job["id"]]], "timeout_s": 0, "reports_after": {job["id"]: 0}}
    lines = [
        json.loads(x) for x in api.post("/api/v1/jobs/watch", watch, token=driver).iter_lines()
    ]
    assert lines[0]["reports"] == [[report_id, job["id"], 1, 0, 0.5]]

    # Only a driver answers, the first answer stands, and "stop" sticks to the attempt.
    decide = "/api/v1/jobs/decisions"
    assert api.post(decide, {"answers": {report_id: True}}, token=alice).status_code == 403
    assert api.post(decide, {"answers": {report_id: True}}, token=token).status_code == 403
    assert api.post(decide, {"answers": {report_id: True}}, token=driver).json() == {"answered": 1}
    assert api.post(decide, {"answers": {report_id: False}}, token=driver).json() == {"answered": 0}
    r = api.post(path, {**step0, "step": 1, "value": 0.4}, token=token)
    assert r.json()["stop"] is True and r.json()["answered"] is False
    assert api.post(decide, {"answers": {}}, token=driver).status_code == 422
    assert wid  # the driver's workflow

    # The attempt ends: its token stops working.
    done = {"job_id": job["id"], "attempt": 1, "outcome": "succeeded", "result": "1"}
    api.post(f"/api/v1/pilots/{pid}/attempts/{job['id']}/1", done, token=ptok)
    late = api.post(path, {**step0, "step": 2}, token=token)
    assert late.status_code in (401, 409)


def test_a_driver_publishes_progress_shown_with_the_workflow(api: Api) -> None:
    alice = api.token("alice")
    wid = api.post("/api/v1/workflows", FLOW, token=alice).json()["id"]
    ptok = api.token("ops", role="pilot", queues=["default"])
    _, job = claim_driver(api, ptok)
    put = api.c.put
    url = f"/api/v1/workflows/{wid}/progress"
    r = put(url, json={"progress": {"done": 3}}, headers=api.h(job["token"]))
    assert r.status_code == 200
    assert api.get(f"/api/v1/workflows/{wid}", token=alice).json()["progress"] == {"done": 3}
    assert put(url, json={"progress": {"x": 1}}, headers=api.h(alice)).status_code == 403
    assert put(url, json={"progress": [1]}, headers=api.h(job["token"])).status_code == 422
    big = {"progress": {"blob": "x" * 70_000}}
    assert put(url, json=big, headers=api.h(job["token"])).status_code == 413
