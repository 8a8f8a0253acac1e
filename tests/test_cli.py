"""The `pilotwave` command line against a real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jobs_basic as jb
import pytest

pytestmark = pytest.mark.slow


def cli(
    *args: str,
    home: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PILOTWAVE_HOME": str(home), "COLUMNS": "200"}
    for name in ("PILOTWAVE_URL", "PILOTWAVE_TOKEN"):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pilotwave.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )


def test_run_streams_output_and_returns_the_exit_code(cluster: Any, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('loss 0.25')\n")
    r = cli("run", "--", "python", "train.py", home=cluster.home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "loss 0.25" in r.stdout
    bad = cli("run", "--", "sh", "-c", "echo failing; exit 4", home=cluster.home, cwd=tmp_path)
    assert bad.returncode == 1 and "failing" in bad.stdout and "failed" in bad.stderr


def test_jobs_job_and_logs_read_commands(cluster: Any) -> None:
    fut = jb.chatty.submit(2, 0.0)
    fut.result(timeout=30)
    rows = json.loads(cli("jobs", "--json", home=cluster.home).stdout)
    assert any(r["id"] == fut.id and r["state"] == "succeeded" for r in rows)
    table = cli("jobs", home=cluster.home).stdout
    assert str(fut.id) in table and "succeeded" in table
    job = json.loads(cli("job", str(fut.id), "--json", "--events", home=cluster.home).stdout)
    assert job["result"] == 2 and [e["to_state"] for e in job["events"]][-1] == "succeeded"
    logs = cli("logs", str(fut.id), home=cluster.home).stdout
    assert "line 1" in logs and "err 1" in logs
    chunks = json.loads(cli("logs", str(fut.id), "--json", home=cluster.home).stdout)
    assert "".join(c["data"] for c in chunks) == logs
    pilots = json.loads(cli("pilots", "--json", home=cluster.home).stdout)
    assert len([p for p in pilots if p["state"] == "active"]) == 2


def test_cancel_command(cluster: Any, tmp_path: Path) -> None:
    fut = jb.sleep_forever.submit(str(tmp_path / "pid"))
    r = cli("cancel", "--jobs", str(fut.id), home=cluster.home)
    assert r.returncode == 0 and "cancelled 1" in r.stdout
    assert cli("cancel", "--jobs", str(fut.id), home=cluster.home).stdout.startswith("cancelled 0")


def test_admin_creates_users_whose_tokens_see_only_their_jobs(cluster: Any) -> None:
    assert cli("admin", "user", "add", "alice", home=cluster.home).returncode == 0
    token = cli("admin", "token", "create", "--user", "alice", home=cluster.home).stdout.strip()
    as_alice = {"PILOTWAVE_URL": cluster.url, "PILOTWAVE_TOKEN": token}
    me = json.loads(cli("whoami", "--json", home=cluster.home, env=as_alice).stdout)
    assert me["user"] == "alice" and me["role"] == "user"
    jb.add.submit(1, 1).result(timeout=30)  # the admin's job
    assert json.loads(cli("jobs", "--json", home=cluster.home, env=as_alice).stdout) == []
    denied = cli("admin", "user", "add", "mallory", home=cluster.home, env=as_alice)
    assert denied.returncode == 2 and "cannot do this" in denied.stderr
    tokens = json.loads(cli("admin", "token", "list", "--json", home=cluster.home).stdout)
    assert {"admin", "alice"} <= {t["user"] for t in tokens}
    pilot_token = cli("admin", "token", "create", "--pilot", home=cluster.home)
    assert pilot_token.returncode != 0 and "--queue" in pilot_token.stderr


def test_unknown_job_is_a_clear_error(cluster: Any) -> None:
    r = cli("job", "999999", home=cluster.home)
    assert r.returncode == 2 and "no job 999999" in r.stderr and "Traceback" not in r.stderr


def test_no_configuration_is_a_clear_error(tmp_path: Path) -> None:
    r = cli("jobs", home=tmp_path / "empty")
    assert r.returncode == 2
    assert "pilotwave up" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    env = {"PILOTWAVE_URL": "http://127.0.0.1:9", "PILOTWAVE_TOKEN": "x"}
    r = cli("jobs", home=tmp_path, env=env, timeout=120)
    assert r.returncode == 2 and "cannot reach" in r.stderr


def test_up_detach_and_down(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = cli("up", "--detach", "--pilots", "1", "--port", "0", home=home, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "pilotwave is up" in r.stdout
    out = cli("run", "--no-sandbox", "--", "echo", "from up", home=home)
    assert out.returncode == 0 and "from up" in out.stdout
    assert cli("down", home=home).returncode == 0
    assert cli("down", home=home).returncode == 1


TESTS = Path(__file__).parent


def test_submit_a_workflow_and_wait_for_it(cluster: Any) -> None:
    r = cli(
        "submit",
        "workflows_basic:diamond",
        "--arg",
        "x=3",
        "--wait",
        "--json",
        home=cluster.home,
        cwd=TESTS,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["state"] == "succeeded" and info["result"] == {"d": 28, "seeded": True}
    assert info["counts"] == {"succeeded": 5}
    plain = cli(
        "submit",
        "workflows_basic.py:loop",
        "-a",
        "target=5",
        "--wait",
        home=cluster.home,
        cwd=TESTS,
    )
    assert plain.returncode == 0 and '"value": 8' in plain.stdout
    listed = json.loads(cli("workflows", "--json", home=cluster.home).stdout)
    assert [w["name"] for w in listed][:2] == ["loop", "diamond"]
    status = json.loads(
        cli("status", str(info["id"]), "--json", "--events", home=cluster.home).stdout
    )
    assert {"id", "name", "state", "counts", "jobs", "children", "events"} <= set(status)
    assert any(e["to_state"] == "succeeded" for e in status["events"])
    tree = cli("status", str(info["id"]), home=cluster.home).stdout
    assert "workflow" in tree and "double" in tree and "succeeded" in tree
    wide = cli(
        "submit",
        "workflows_basic:fan_out",
        "-a",
        "n=40",
        "--wait",
        "--json",
        home=cluster.home,
        cwd=TESTS,
    )
    wide_id = json.loads(wide.stdout)["id"]
    grouped = cli("status", str(wide_id), home=cluster.home).stdout
    assert "double × 40: 40 succeeded" in grouped  # a wide fan-out is summarized by name


def test_workflow_operations_from_the_command_line(cluster: Any, tmp_path: Path) -> None:
    log, data = tmp_path / "runs.log", tmp_path / "input.txt"
    r = cli(
        "submit",
        "workflows_basic:fixable",
        "--arg",
        f"log={log}",
        "--arg",
        f"path={data}",
        "--wait",
        home=cluster.home,
        cwd=TESTS,
    )
    assert r.returncode == 1 and "is missing" in r.stderr
    wid = json.loads(cli("workflows", "--json", home=cluster.home).stdout)[0]["id"]
    data.write_text("1")
    assert "reset" in cli("retry", str(wid), home=cluster.home).stdout
    slow = cli(
        "submit",
        "workflows_basic:sleepers",
        "-a",
        "n=2",
        "-a",
        "seconds=60",
        "--json",
        home=cluster.home,
        cwd=TESTS,
    )
    sid = json.loads(slow.stdout)["id"]
    assert "suspended" in cli("suspend", str(sid), home=cluster.home).stdout
    assert "running" in cli("resume", str(sid), home=cluster.home).stdout
    assert "cancelled" in cli("cancel", str(sid), home=cluster.home).stdout
    gone = cli("status", "99999", home=cluster.home)
    assert gone.returncode == 2 and "no workflow 99999" in gone.stderr


def test_submit_refuses_what_is_not_a_workflow(cluster: Any) -> None:
    for target, message in [
        ("workflows_basic", "MODULE:WORKFLOW"),
        ("workflows_basic:double", "not a @pw.workflow"),
        ("no_such_module:flow", "cannot import"),
        ("workflows_basic:diamond --arg", "NAME=VALUE"),
    ]:
        argv = target.split()
        if argv[-1] == "--arg":
            argv.append("oops")
        r = cli("submit", *argv, home=cluster.home, cwd=TESTS)
        assert r.returncode == 2 and message in r.stderr, (target, r.stderr)
