"""The OpenAPI schema is a contract: schemathesis fuzzes the real app in process, on SQLite and
PostgreSQL, with a user's, a pilot's and an admin's token, and every answer must be what the
schema says (no 5xx, documented statuses, content types and bodies).  Plus the regressions it
found, one targeted test each, and a real flow whose every answer is checked against the schema.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from harness import FLOW, SHELL, Api, claim_driver, claim_one, in_process_api
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

# Deterministic runs (fixed seed, derandomized), sized for about a minute on two cores.  The
# coverage phase (boundary values: ids of 2**63 - 1, NUL, empty and longest strings, wrong
# types...) runs with the admin token, whose requests pass the role checks and reach the
# database deepest, on SQLite with valid and invalid values.  Values in range that a column
# cannot hold are what differs on PostgreSQL: those are sent to both databases by
# ``test_values_no_database_can_hold_are_4xx_on_both_databases``; invalid values stop at
# validation, the same code on both.  Every token runs the examples, fuzzing and stateful
# phases (links: submit -> get, register -> claim...) on both databases.
SEED = 20240613
MAX_EXAMPLES = 2
PHASES = ("examples", "fuzzing", "stateful")

# Every check of `schemathesis run --checks all` runs, except these two, which are wrong
# for this API by design:
EXCLUDED = {
    # "Schema-valid request rejected": the server enforces rules across fields that the
    # schema does not encode (a shell job needs a non-empty argv, a python job a function;
    # a function is a module or a path; a blob's body must hash to its name; dict keys that
    # are ids must be integers).  A schema-valid request can be a correct 422.
    "positive_data_acceptance": (
        "cross-field rules the schema cannot express make some schema-valid requests a 422"
    ),
    # "Schema-violating request accepted": pydantic validates in lax mode, which takes
    # `false` for 0 and `"3"` for 3 in integer and number fields, by design; every value
    # out of a documented range, of a wrong shape or too long is still refused (the
    # coverage phase sends those, and any 5xx or undocumented answer fails the run).
    "negative_data_rejection": "pydantic's lax mode coerces booleans and numeric strings",
}

# A request with a long wait would hold the run for its whole timeout: waits in range are
# cut to a fraction of a second (values outside the documented range are left alone).
WAITS = {"wait": 60, "wait_s": 300, "timeout_s": 600}
SHORT = 0.001


def _shorten(values: Any) -> None:
    if not isinstance(values, dict):
        return
    for key, limit in WAITS.items():
        v = values.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            continue
        try:
            seconds = float(v)  # a query value may be sent as text
        except ValueError:
            continue
        if SHORT < seconds <= limit:
            values[key] = SHORT


def _config(token: str, coverage: bool) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "checks": {
                "enabled": True,
                **{name: {"enabled": False} for name in EXCLUDED},
            },
            "phases": {
                **{p: {"enabled": True} for p in PHASES},
                "coverage": {"enabled": coverage, "generation": {"mode": "all"}},
            },
            "max-failures": 10_000,
        }
    )


def fuzz(api: Api, token: str, coverage: bool) -> tuple[int, list[str]]:
    """Run schemathesis against the app; returns how many cases ran and every failure."""
    config = _config(token, coverage)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.c.app, config=config)

    def before_call(context: Any, case: Any, kwargs: Any) -> None:
        for values in (case.query, case.body, kwargs.get("params"), kwargs.get("json")):
            _shorten(values)

    schemathesis.hook(before_call)  # a global hook only: unregistered after the run
    try:
        return _run(schema)
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)


def _run(schema: Any) -> tuple[int, list[str]]:
    cases, failures = 0, []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"[{check.name}] {event.recorder.label}: {failure.title}\n"
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            failures.append(f"[error] {event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            failures.append(f"[fatal] {event.exception!r}")
    return cases, failures


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """The real app on each database, with short long-polls."""
    db = None if request.param == "sqlite" else request.getfixturevalue("postgres").new_database()
    with in_process_api(tmp_path, db_url=db, claim_wait_max_s=SHORT) as api:
        yield api


@pytest.mark.parametrize("role", ["user", "pilot", "admin"])
def test_the_app_keeps_its_openapi_contract_under_fuzzing(
    backend: Api, role: str, caplog: pytest.LogCaptureFixture
) -> None:
    if role == "admin":
        token = backend.admin
    else:  # a pilot token serves queues: every queue here
        token = backend.token(f"fuzz-{role}", role=role, queues=["*"] if role == "pilot" else None)
    with caplog.at_level(logging.CRITICAL, logger="pilotwave"):  # refusals are logged
        coverage = role == "admin" and backend.c.app.state.core.db.dialect == "sqlite"
        cases, failures = fuzz(backend, token, coverage)
    assert cases > 50, f"only {cases} cases ran"
    assert not failures, f"{len(failures)} failures in {cases} cases:\n\n" + "\n\n".join(
        failures[:20]
    )


# -- what the fuzzer found, one test each ------------------------------------------------------


def test_a_method_a_path_does_not_take_is_405_listing_every_method_it_takes(api: Api) -> None:
    r = api.c.request("DELETE", "/api/v1/jobs", headers=api.h(api.admin))
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"  # not one route's only
    assert r.json()["error"] == "ApiError" and r.json()["field"] is None
    # A static path beside /jobs/{id}: GET is not a job id of "cancel" (was a 422).
    r = api.c.get("/api/v1/jobs/cancel", headers=api.h(api.admin))
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_a_body_that_is_not_utf8_is_a_422_naming_the_body(api: Api) -> None:
    headers = {**api.h(api.admin), "content-type": "application/json"}
    r = api.c.post("/api/v1/jobs/cancel", content=b"\xff\xfe{", headers=headers)
    assert r.status_code == 422, r.text  # was FastAPI's bare 400
    assert r.json()["field"] == "body" and r.json()["errors"][0]["field"] == "body"


def test_every_refusal_has_the_documented_shape(api: Api) -> None:
    """``detail``, ``field`` and ``error`` always; ``errors`` too on a 422, whoever raised it."""
    sha = "0" * 64
    answers = [
        api.c.put(f"/api/v1/blobs/{sha}", content=b"x", headers=api.h(api.admin)),  # raised 422
        api.post("/api/v1/jobs", {"jobs": [{"kind": "shell"}]}),  # validation 422
        api.get("/api/v1/nowhere"),  # routing 404
        api.get("/api/v1/jobs", token=None),  # 401
        api.post("/api/v1/jobs", {"jobs": [{**SHELL, "name": "x" * 70_000}]}),  # 413 (limit)
    ]
    assert [r.status_code for r in answers] == [422, 422, 404, 401, 413]
    for r in answers:
        body = r.json()
        assert {"detail", "field", "error"} <= set(body), r.text
        if r.status_code == 422:
            assert body["errors"] and body["errors"][0]["field"] == body["field"], r.text
    assert answers[0].json()["field"] == "sha256"


def test_the_schema_documents_security_models_and_refusals(api: Api) -> None:
    doc = api.c.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            answers = op["responses"]
            ok = next(s for s in answers if s.startswith("2"))
            for media in answers[ok].get("content", {}).values():
                assert media["schema"] != {"type": "string"} or path == "/metrics", where
            if "422" in answers:
                assert answers["422"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Invalid"
                }, where
            if path in ("/api/v1/health", "/metrics"):
                assert "security" not in op, where
                continue
            assert op["security"] == [{"bearer": []}], where
            assert "401" in answers, where


# -- answers of a real flow, each checked against the schema -----------------------------------


def test_answers_of_a_real_flow_match_the_schema(api: Api) -> None:
    schema = schemathesis.openapi.from_dict(api.c.app.openapi())
    checked: list[str] = []

    def check(method: str, template: str, r: Any, status: int = 200) -> Any:
        assert r.status_code == status, (method, template, r.text)
        schema[template][method].validate_response(r)
        checked.append(f"{method} {template}")
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r

    user = api.token("flow-user")
    ptok = api.token("flow-ops", role="pilot", queues=["default"])
    sub = {"jobs": [SHELL, {**SHELL, "gpus": 0, "labels": ["a"], "name": "two"}]}
    ids = check("POST", "/api/v1/jobs", api.post("/api/v1/jobs", sub, token=user), 201)["ids"]
    pid = api.pilot(ptok, gpus=[{"index": 0, "model": "T4", "memory_mb": 100}])
    check("GET", "/api/v1/pilots", api.get("/api/v1/pilots"))
    job = claim_one(api, ptok, pid)
    blob = b"artifact"
    sha = hashlib.sha256(blob).hexdigest()
    r = api.c.put(f"/api/v1/blobs/{sha}", content=blob, headers=api.h(ptok))
    check("PUT", "/api/v1/blobs/{sha256}", r, 201)
    chunk = {"job_id": job["id"], "attempt": job["attempt"], "pos": 0, "data": "hi\n", "nbytes": 3}
    r = api.post(f"/api/v1/pilots/{pid}/logs", {"chunks": [chunk]}, token=ptok)
    check("POST", "/api/v1/pilots/{pilot_id}/logs", r)
    beat = {"known": [{"job_id": job["id"], "attempt": job["attempt"]}]}
    r = api.post(f"/api/v1/pilots/{pid}/heartbeat", beat, token=ptok)
    check("POST", "/api/v1/pilots/{pilot_id}/heartbeat", r)
    report = {
        "job_id": job["id"],
        "attempt": job["attempt"],
        "outcome": "succeeded",
        "result": '{"x": [1, 2]}',
        "cpu_s": 0.5,
        "exit_code": 0,
        "artifacts": [{"name": "out/a.txt", "sha256": sha, "size": len(blob)}],
    }
    r = api.post(f"/api/v1/pilots/{pid}/reports", {"reports": [report]}, token=ptok)
    check("POST", "/api/v1/pilots/{pilot_id}/reports", r)
    r = api.post(f"/api/v1/pilots/{pid}/claim", {"max_jobs": 2, "wait_s": 0}, token=ptok)
    check("POST", "/api/v1/pilots/{pilot_id}/claim", r)
    done = ids[0]
    for template, path in [
        ("/api/v1/jobs", "/api/v1/jobs"),
        ("/api/v1/jobs/summary", "/api/v1/jobs/summary"),
        ("/api/v1/jobs/{job_id}", f"/api/v1/jobs/{done}"),
        ("/api/v1/jobs/{job_id}/logs", f"/api/v1/jobs/{done}/logs"),
        ("/api/v1/jobs/{job_id}/events", f"/api/v1/jobs/{done}/events"),
        ("/api/v1/jobs/{job_id}/reports", f"/api/v1/jobs/{done}/reports"),
        ("/api/v1/jobs/{job_id}/artifacts", f"/api/v1/jobs/{done}/artifacts"),
        ("/api/v1/jobs/{job_id}/artifacts/{name}", f"/api/v1/jobs/{done}/artifacts/out/a.txt"),
        ("/api/v1/whoami", "/api/v1/whoami"),
        ("/api/v1/admin/tokens", "/api/v1/admin/tokens"),
        ("/api/v1/blobs/{sha256}", f"/api/v1/blobs/{sha}"),
    ]:
        admin_only = "blobs" in path or "admin" in path
        check("GET", template, api.get(path, token=api.admin if admin_only else user))
    assert api.get(f"/api/v1/jobs/{done}", token=user).json()["result"] == {"x": [1, 2]}
    r = api.post("/api/v1/jobs/cancel", {"ids": ids}, token=user)
    check("POST", "/api/v1/jobs/cancel", r)
    r = api.post("/api/v1/jobs/watch", {"ranges": [[ids[0], ids[-1]]], "timeout_s": 0}, token=user)
    check("POST", "/api/v1/jobs/watch", r)

    # A workflow: its driver records a submit, reports progress; the user reads it all.
    wf = check("POST", "/api/v1/workflows", api.post("/api/v1/workflows", FLOW, token=user), 201)
    _, driver = claim_driver(api, ptok)
    dtok, wid = driver["token"], wf["id"]
    cmd = {
        "seq": 0,
        "kind": "submit",
        "call": "job",
        "fingerprint": "0" * 16,
        "jobs": [SHELL],
    }
    r = api.post(f"/api/v1/workflows/{wid}/commands", {"commands": [cmd]}, token=dtok)
    check("POST", "/api/v1/workflows/{wid}/commands", r)
    r = api.c.put(
        f"/api/v1/workflows/{wid}/progress", json={"progress": {"n": 1}}, headers=api.h(dtok)
    )
    check("PUT", "/api/v1/workflows/{wid}/progress", r)
    for template, path in [
        ("/api/v1/workflows", "/api/v1/workflows"),
        ("/api/v1/workflows/{wid}", f"/api/v1/workflows/{wid}"),
        ("/api/v1/workflows/{wid}/events", f"/api/v1/workflows/{wid}/events"),
        ("/api/v1/workflows/{wid}/commands", f"/api/v1/workflows/{wid}/commands"),
    ]:
        check("GET", template, api.get(path, token=user))
    r = api.post(f"/api/v1/workflows/{wid}/suspend", token=user)
    check("POST", "/api/v1/workflows/{wid}/suspend", r)
    r = api.post(f"/api/v1/workflows/{wid}/resume", token=user)
    check("POST", "/api/v1/workflows/{wid}/resume", r)
    r = api.post(f"/api/v1/workflows/{wid}/cancel", token=user)
    check("POST", "/api/v1/workflows/{wid}/cancel", r)
    r = api.post(f"/api/v1/workflows/{wid}/retry", token=user)
    check("POST", "/api/v1/workflows/{wid}/retry", r)
    r = api.post(f"/api/v1/pilots/{pid}/exit", token=ptok)
    check("POST", "/api/v1/pilots/{pilot_id}/exit", r)
    check("GET", "/api/v1/health", api.c.get("/api/v1/health"))
    assert len(checked) == 33


# -- cases reported before, on both databases --------------------------------------------------

BIG = 2**63


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    db = None if request.param == "sqlite" else request.getfixturevalue("postgres").new_database()
    with in_process_api(tmp_path, db_url=db) as api:
        yield api


def test_values_no_database_can_hold_are_4xx_on_both_databases(any_db: Api) -> None:
    api = any_db
    ptok = api.token("ops", role="pilot", queues=["default"])
    pilot = {
        "name": "p",
        "hostname": "h",
        "queues": ["default"],
        "cores": 4,
        "memory_mb": 1,
        "slots": 1,
    }
    refused: list[tuple[str, str, Any, str]] = [
        ("GET", f"/api/v1/jobs/{BIG}", None, "admin"),
        ("GET", f"/api/v1/jobs/{BIG}/logs", None, "admin"),
        ("POST", f"/api/v1/workflows/{BIG}/cancel", None, "admin"),
        ("GET", f"/api/v1/workflows/{BIG}/commands", None, "admin"),
        ("GET", f"/api/v1/jobs?ids={BIG}", None, "admin"),
        ("GET", f"/api/v1/jobs?before={BIG}", None, "admin"),
        ("POST", "/api/v1/jobs/cancel", {"ids": [BIG]}, "admin"),
        ("POST", "/api/v1/jobs/watch", {"ranges": [[BIG, BIG]]}, "admin"),
        ("POST", "/api/v1/jobs", {"jobs": [{**SHELL, "gpu_memory_mb": 2**31}]}, "admin"),
        ("POST", "/api/v1/jobs", {"jobs": [{**SHELL, "name": "a\x00"}]}, "admin"),
        ("POST", "/api/v1/jobs", {"jobs": [{**SHELL, "argv": [""]}]}, "admin"),
        ("POST", "/api/v1/pilots", {**pilot, "cores": 2**31}, ptok),
        ("POST", "/api/v1/pilots", {**pilot, "memory_mb": 2**31}, ptok),
        ("POST", "/api/v1/pilots", {**pilot, "name": "p\x00"}, ptok),
        ("POST", "/api/v1/pilots", {**pilot, "gpus": [{"index": 2**64}]}, ptok),
        ("POST", "/api/v1/pilots", {**pilot, "gpus": [{"index": 0, "memory_mb": 2**64}]}, ptok),
    ]
    for method, path, body, token in refused:
        who = api.admin if token == "admin" else token
        r = api.c.request(method, path, json=body, headers=api.h(who))
        assert r.status_code == 422, (method, path, r.status_code, r.text)
        assert r.json()["field"], r.text
    assert api.get("/api/v1/pilots").status_code == 200


@pytest.mark.parametrize(
    "name", ["Attempt", "JobRow", "Job", "WorkflowJob", "Event", "LogPiece", "Artifact", "Pilot"]
)
def test_the_sdks_records_are_the_answers_the_schema_documents(name: str) -> None:
    """The SDK types what it returns (TypedDicts) and the schema documents what the server
    sends (pydantic models): the same records, field for field, so neither drifts."""
    import typing

    from pilotwave.sdk import records
    from pilotwave.server import answers

    sdk = set(typing.get_type_hints(getattr(records, name)))
    documented = set(getattr(answers, name).model_fields)
    assert sdk == documented, (
        f"only in the SDK: {sdk - documented}; only documented: {documented - sdk}"
    )
