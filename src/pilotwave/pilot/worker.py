"""A warm Python worker: imports job functions from one sandbox and runs them one at a time.

Started by the pilot as ``python -m pilotwave.pilot.worker FD`` with stdout and stderr
going to a log file the pilot tails; job messages and replies travel over the socket FD.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pilotwave.errors import Pruned
from pilotwave.protocol import FUNCTION, Limits, Reason
from pilotwave.sdk.context import JobContext, set_current
from pilotwave.sdk.driver import PilotLink, driver_may_retry, run_driver
from pilotwave.sdk.jobs import JobFunction, Resources
from pilotwave.sdk.refs import resolve, resolve_object
from pilotwave.sdk.workflows import WorkflowFunction, WorkflowOptions

_libc: Any = None


def _flush() -> None:
    """Flush Python's and C's stdio buffers so the log holds everything the job printed."""
    global _libc
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None)
        _libc.fflush(None)
    except (OSError, AttributeError):
        pass


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays are common results in ML code: send them as plain numbers/lists.
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def decode(value: Any) -> Any:
    """Turn function references in arguments back into decorated functions, options and all."""
    if isinstance(value, dict):
        if len(value) == 1 and FUNCTION in value:
            return _function(value[FUNCTION])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _function(ref: dict[str, Any]) -> Any:
    obj = resolve_object(ref["ref"])
    fn = getattr(obj, "fn", obj)
    options = dict(ref.get("options") or {})
    if "labels" in options:
        options["labels"] = tuple(options["labels"])
    if ref["kind"] == "workflow":
        return WorkflowFunction(fn, WorkflowOptions(**options))
    return JobFunction(fn, Resources(**options))


def run_job(msg: dict[str, Any], link: PilotLink | None = None) -> dict[str, Any]:
    ctx = JobContext(
        msg["job_id"],
        msg["attempt"],
        Path(msg["outputs"]),
        msg.get("server"),
        msg.get("token"),
        bool(msg.get("decisions")),
    )
    set_current(ctx)
    # The same for processes the job starts (a training script calling pw.report()).
    os.environ.update(
        PILOTWAVE_JOB_ID=str(ctx.job_id),
        PILOTWAVE_ATTEMPT=str(ctx.attempt),
        PILOTWAVE_OUTPUTS=msg["outputs"],
        PILOTWAVE_SERVER=ctx.server or "",
        PILOTWAVE_JOB_TOKEN=ctx.token or "",
        PILOTWAVE_DECISIONS="1" if ctx.decisions else "0",
    )
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        try:
            fn = resolve(msg["function"])
        except Exception:
            tb = traceback.format_exc()
            sys.stderr.write(tb)
            return {
                "ok": False,
                "error": f"cannot import the job function {msg['function']}:\n{tb}",
                "retryable": True,
            }
        driver = msg.get("driver")
        try:
            args, kwargs = msg["args"], msg["kwargs"]
            if msg.get("decode"):
                args, kwargs = decode(args), decode(kwargs)
            value = (
                run_driver(fn, kwargs, driver, link) if driver is not None else fn(*args, **kwargs)
            )
        except Pruned as exc:  # stopped early on its driver's answer: it ends, it did not fail
            sys.stderr.write(f"pruned: {exc}\n")
            return {"ok": True, "result": json.dumps({"pruned": exc.step}), "reason": Reason.PRUNED}
        except BaseException as exc:  # SystemExit, KeyboardInterrupt in user code: fail the job
            tb = traceback.format_exc()
            sys.stderr.write(tb)
            retryable = driver_may_retry(exc) if driver is not None else True
            return {"ok": False, "error": tb, "retryable": retryable}
        try:
            text = json.dumps(value, default=_json_default)
        except (TypeError, ValueError) as exc:
            err = (
                f"ResultError: the value returned by {msg['function']['qualname']} is not JSON-serializable "
                f"({exc}); return numbers, strings, lists and dicts, and write other outputs to pw.outputs()"
            )
            sys.stderr.write(err + "\n")
            return {"ok": False, "error": err, "retryable": False}
        too_large = Limits(max_result_bytes=msg["max_result_bytes"]).result_too_large(len(text))
        if too_large is not None:
            sys.stderr.write(too_large + "\n")
            return {"ok": False, "error": too_large, "retryable": False}
        return {"ok": True, "result": text}
    finally:
        _flush()
        set_current(None)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        msg["_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        msg["_rss_mb"] = ru1.ru_maxrss / 1024


def _die_with_pilot() -> None:
    """End this worker (and what its job started) when the pilot that started it dies.

    A pilot killed with SIGKILL cannot stop its workers, which run in sessions of their
    own; the server retries their jobs elsewhere, so a job left running here would only
    burn the machine (and a workflow driver would retry a server that may be gone).  The
    wait is on a pidfd of the pilot: the kernel wakes it when the pilot exits.
    """
    if os.environ.get("PILOTWAVE_JAIL"):
        return  # in a jail: it dies with the pilot already (``jail``), and its parent is PID 1
    pilot = os.getppid()
    if pilot == 1:  # the pilot died before this worker got here
        os.killpg(os.getpgid(0), signal.SIGKILL)
    try:
        fd = os.pidfd_open(pilot)
    except (AttributeError, OSError):  # no pidfds (not Linux >= 5.3): check once a second
        while os.getppid() == pilot:
            time.sleep(1.0)
    else:
        select.select([fd], [], [])
    os.killpg(os.getpgid(0), signal.SIGKILL)


def main(fd: int) -> None:
    threading.Thread(target=_die_with_pilot, name="pilot-watch", daemon=True).start()
    sock = socket.socket(fileno=fd)
    conn = Connection(os.dup(sock.fileno()))
    sock.close()
    sandbox = os.environ.get("PILOTWAVE_SANDBOX")
    if sandbox:
        sys.path.insert(0, sandbox)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg.get("op") == "exit":
            return
        t0 = time.perf_counter()
        reply = run_job(msg, PilotLink(conn.send, conn.recv))
        reply["cpu_s"] = msg.get("_cpu_s")
        reply["max_rss_mb"] = msg.get("_rss_mb")
        reply["wall_s"] = time.perf_counter() - t0
        conn.send(reply)


if __name__ == "__main__":
    main(int(sys.argv[1]))
