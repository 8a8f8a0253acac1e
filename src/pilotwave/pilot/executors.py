"""Running payloads: Python jobs in warm worker processes, shell jobs as subprocesses.

Every payload runs in its own session (process group) so a kill takes its children too,
and writes stdout+stderr to a log file that the pilot tails for live logs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pilotwave.pilot.isolation import Launch, Launcher

NO_ISOLATION = Launcher([])

log = logging.getLogger(__name__)
WORKER_LOG_ROTATE_BYTES = 64 * 1024 * 1024


@dataclass
class Outcome:
    ok: bool
    result: str | None = None
    error: str | None = None
    retryable: bool = True
    exit_code: int | None = None
    cpu_s: float | None = None
    max_rss_mb: float | None = None
    killed: bool = False
    reason: str | None = None  # protocol.Reason of a succeeded job (``pruned``)


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _start(launch: Launch, log_path: Path) -> subprocess.Popen[bytes]:
    """Start a payload in a session of its own, its output appended to ``log_path``."""
    try:
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=launch.pass_fds,
                cwd=launch.cwd,
                env=launch.env,
                start_new_session=True,
            )
    finally:
        launch.started()


def _signal_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Worker:
    """One warm Python process bound to a sandbox and a GPU set."""

    _seq = 0

    def __init__(
        self,
        key: tuple[Any, ...],
        workdir: Path,
        sandbox: Path | None,
        env: dict[str, str],
        launcher: Launcher = NO_ISOLATION,
    ) -> None:
        Worker._seq += 1
        self.key = key
        self.sandbox = sandbox
        self.name = f"w{Worker._seq}"
        self.log_path = workdir / f"{self.name}.log"
        parent, child = socket.socketpair()
        env = {**env, "PILOTWAVE_SANDBOX": str(sandbox) if sandbox else "", "PYTHONUNBUFFERED": "1"}
        self.launch = launcher.launch(
            lambda fds: [sys.executable, "-m", "pilotwave.pilot.worker", str(fds[0])],
            (child.fileno(),),
            env,
            sandbox or workdir,
        )
        try:
            self.proc = _start(self.launch, self.log_path)
        finally:
            child.close()
        self.conn = Connection(os.dup(parent.fileno()))
        self._send_lock = threading.Lock()
        parent.close()

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(
        self, msg: dict[str, Any], on_note: Callable[[dict[str, Any]], None] | None = None
    ) -> Outcome:
        """Send a job and wait for its reply; a dead worker gives a failed outcome.

        A workflow driver sends notes before its reply (``protocol.DriverNote``): each is
        passed to ``on_note`` as it arrives; ``send`` answers them.
        """
        try:
            self.send(msg)
            while True:
                reply = self.conn.recv()
                if "note" not in reply:
                    break
                if on_note is not None:
                    on_note(reply)
        except (EOFError, OSError, BrokenPipeError):
            code = self.proc.wait()
            return Outcome(
                False,
                error=f"the worker process died ({_signal_text(code)}) while running the job",
                exit_code=code,
                killed=code == -signal.SIGKILL,
            )
        return Outcome(
            ok=reply["ok"],
            result=reply.get("result"),
            error=reply.get("error"),
            retryable=reply.get("retryable", True),
            reason=reply.get("reason"),
            cpu_s=reply.get("cpu_s"),
            max_rss_mb=reply.get("max_rss_mb"),
        )

    def send(self, msg: dict[str, Any]) -> None:
        """Send a message to the worker (from any thread; a dead worker ignores it)."""
        with self._send_lock:
            try:
                self.conn.send(msg)
            except OSError:
                pass

    def kill(self) -> None:
        self.launch.cut()
        _killpg(self.proc.pid)

    def stop(self) -> None:
        try:
            self.conn.send({"op": "exit"})
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        self.launch.cut()
        self.conn.close()
        self.log_path.unlink(missing_ok=True)


class WorkerPool:
    """Idle workers by key, reused by later jobs of the same sandbox and GPU set.

    A job that needs a fresh process (a workflow driver, an ``isolate=True`` job) takes a
    *spare*: a worker started for its key when the last fresh one was taken, which has
    imported what every worker imports but run nothing yet.  So the drivers of a workflow's
    children start in milliseconds, not the fraction of a second a Python process takes to
    start.  Spares are kept only for keys that needed a fresh process before.
    """

    def __init__(self, workdir: Path, max_idle: int, max_spares: int = 2) -> None:
        self.workdir = workdir
        self.max_idle = max_idle
        self.max_spares = max_spares
        self._idle: OrderedDict[int, Worker] = OrderedDict()
        self._spares: OrderedDict[tuple[Any, ...], Worker] = OrderedDict()
        self._fresh_keys: set[tuple[Any, ...]] = set()  # keys that took a fresh process
        self._lock = threading.Lock()

    def acquire(
        self,
        key: tuple[Any, ...],
        sandbox: Path | None,
        env: dict[str, str],
        fresh: bool,
        launcher: Launcher = NO_ISOLATION,
    ) -> Worker:
        """An idle worker of ``key``, or a new one (started by ``launcher``: in an isolated
        owner's jail or container); with ``fresh``, one that has run nothing yet."""
        if fresh:
            return self._fresh(key, sandbox, env, launcher)
        with self._lock:
            for wid, w in self._idle.items():
                if w.key == key:
                    del self._idle[wid]
                    if w.alive():
                        return w
                    w.stop()
                    break
        return Worker(key, self.workdir, sandbox, env, launcher)

    def _fresh(
        self,
        key: tuple[Any, ...],
        sandbox: Path | None,
        env: dict[str, str],
        launcher: Launcher,
    ) -> Worker:
        with self._lock:
            spare = self._spares.pop(key, None)
            again = key in self._fresh_keys
            self._fresh_keys.add(key)
        if spare is not None and not spare.alive():
            spare.stop()
            spare = None
        worker = spare or Worker(key, self.workdir, sandbox, env, launcher)
        if not again:
            return worker
        replacement = Worker(key, self.workdir, sandbox, env, launcher)  # starts while this runs
        dropped = []
        with self._lock:
            self._spares[key] = replacement
            while len(self._spares) > self.max_spares:
                dropped.append(self._spares.popitem(last=False)[1])
        for w in dropped:
            w.stop()
        return worker

    def release(self, worker: Worker, reusable: bool) -> None:
        if not reusable or not worker.alive() or worker.log_size() > WORKER_LOG_ROTATE_BYTES:
            worker.kill()
            worker.stop()
            return
        evict = []
        with self._lock:
            self._idle[id(worker)] = worker
            while len(self._idle) > self.max_idle:
                evict.append(self._idle.popitem(last=False)[1])
        for w in evict:
            w.stop()

    def forget(self, sandbox: Path) -> None:
        """Stop the idle and spare workers started in ``sandbox`` (its folder is going away)."""
        with self._lock:
            idle = [k for k, w in self._idle.items() if w.sandbox == sandbox]
            spare = [k for k, w in self._spares.items() if w.sandbox == sandbox]
            workers = [self._idle.pop(k) for k in idle] + [self._spares.pop(k) for k in spare]
        for w in workers:
            w.stop()

    def shutdown(self) -> None:
        with self._lock:
            workers = [*self._idle.values(), *self._spares.values()]
            self._idle.clear()
            self._spares.clear()
        for w in workers:
            w.stop()


class ShellRun:
    """A command as a subprocess, output to ``log_path``."""

    def __init__(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        log_path: Path,
        launcher: Launcher = NO_ISOLATION,
    ) -> None:
        self.log_path = log_path
        self.launch = launcher.launch(lambda fds: argv, (), env, cwd)
        try:
            self.proc: subprocess.Popen[bytes] | None = _start(self.launch, log_path)
            self.start_error: str | None = None
        except OSError as exc:
            self.launch.cut()
            self.proc = None
            self.start_error = f"cannot start {argv[0]!r}: {exc}"

    def wait(self) -> Outcome:
        if self.proc is None:
            return Outcome(False, error=self.start_error, retryable=False)
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.launch.cut()
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code
        cpu = usage.ru_utime + usage.ru_stime
        rss = usage.ru_maxrss / 1024
        if code == 0:
            return Outcome(True, exit_code=0, cpu_s=cpu, max_rss_mb=rss)
        return Outcome(
            False,
            error=f"command failed: {_signal_text(code)}",
            exit_code=code,
            cpu_s=cpu,
            max_rss_mb=rss,
            killed=code == -signal.SIGKILL,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.launch.cut()
            _killpg(self.proc.pid)
