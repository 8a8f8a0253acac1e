"""A warm Python worker: imports job functions from one sandbox and runs them one at a time.

Started by the pilot as ``python -m pilotwave.pilot.worker FD`` with stdout and stderr
going to a log file the pilot tails; job messages and replies travel over the socket FD.
Kept imports here are minimal so a fresh worker starts fast.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
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


def resolve(ref: dict[str, Any]) -> Any:
    """Import the function a job names: ``module:qualname``, or a script path for ``__main__``."""
    obj = resolve_object(ref)
    return getattr(obj, "fn", obj)  # a @pw.job or @pw.workflow wrapper: call the plain function


def resolve_object(ref: dict[str, Any]) -> Any:
    """The object a reference names, as defined (a decorated function stays decorated)."""
    if ref.get("module"):
        obj: Any = importlib.import_module(ref["module"])
    else:
        path = Path(ref["path"]).resolve()
        name = "__pw_main__" + str(abs(hash(str(path))))
        obj = sys.modules.get(name)
        if obj is None:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            obj = importlib.util.module_from_spec(spec)
            obj.__pw_ref_path__ = ref["path"]  # so its functions can be referenced again
            sys.modules[name] = obj
            spec.loader.exec_module(obj)
    for part in ref["qualname"].split("."):
        obj = getattr(obj, part)
    return obj


def run_job(msg: dict[str, Any]) -> dict[str, Any]:
    from pilotwave.sdk.context import JobContext, set_current

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
                from pilotwave.sdk.args import decode

                args, kwargs = decode(args), decode(kwargs)
            if driver is not None:
                from pilotwave.sdk.driver import run_driver

                value = run_driver(fn, kwargs, driver)
            else:
                value = fn(*args, **kwargs)
        except (
            BaseException
        ) as exc:  # SystemExit and KeyboardInterrupt in user code fail the job, not the worker
            if type(exc).__name__ == "Pruned" and type(exc).__module__ == "pilotwave.sdk.reports":
                # Stopped early on its driver's answer: it ends, it did not fail.
                sys.stderr.write(f"pruned: {exc}\n")
                return {
                    "ok": True,
                    "result": json.dumps({"$pw_pruned": getattr(exc, "step", None)}),
                }
            tb = traceback.format_exc()
            sys.stderr.write(tb)
            retryable = True
            if driver is not None:
                from pilotwave.sdk.driver import driver_may_retry

                retryable = driver_may_retry(exc)
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
        if len(text) > msg["max_result_bytes"]:
            err = (
                f"ResultError: the result is {len(text)} bytes, over the limit of {msg['max_result_bytes']}; "
                "write large outputs to pw.outputs() and return their names"
            )
            sys.stderr.write(err + "\n")
            return {"ok": False, "error": err, "retryable": False}
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
        reply = run_job(msg)
        reply["cpu_s"] = msg.get("_cpu_s")
        reply["max_rss_mb"] = msg.get("_rss_mb")
        reply["wall_s"] = time.perf_counter() - t0
        conn.send(reply)


if __name__ == "__main__":
    main(int(sys.argv[1]))
