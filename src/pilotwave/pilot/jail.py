"""Run one payload as an unprivileged user, in PID and mount namespaces of its own.

A pilot in ``--isolation user`` (running as root) starts every job's process through this::

    python -I -S .../pilotwave/pilot/jail.py UID GID PILOT_PID -- ARGV...

(``--isolation container`` starts every job as ``python -I -S .../jail.py --init FD --
ARGV...`` inside a container instead: see ``init``).  It runs as a script of the standard
library only, without site packages: it starts in milliseconds, not the quarter second and
more that importing the ``pilotwave`` package takes (``bench/isolation.py``).

and what the payload gets is:

- the user ``UID``/``GID`` with no supplementary groups, no capabilities and
  ``no_new_privs`` (a setuid program cannot give root back);
- a PID namespace: its ``/proc`` lists only its own processes, so neither the pilot's
  command line nor another job's environment can be read there;
- death with the pilot: this process gets SIGKILL when the pilot dies, the namespace's
  first process gets SIGKILL when this one dies, and when that first process dies the
  kernel kills everything left in the namespace, however the payload detached itself.

Three processes: this one (root, outside: the pilot waits for it and kills its process
group), the namespace's first process (a reaper: PID 1 must collect orphans and pass
signals on), and the payload.  The exit status is the payload's, a signal included.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
CANNOT_START = 127
COMMAND = [sys.executable, "-I", "-S", os.path.abspath(__file__)]
"""How to run this module (the standard library only: no package import, no site)."""

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _die_with_parent() -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")


def _exit_like(code: int) -> NoReturn:
    """End this process as the payload ended (``code`` as ``waitstatus_to_exitcode`` gives
    it): the same exit code, or killed by the same signal.  Inside the namespace, PID 1
    cannot signal itself: it exits with 128 + the signal, which the outer process turns
    back into the signal, as a shell would."""
    if code < 0 and os.getpid() != 1:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(128 - code if code < 0 else code)


def _forward(to: int) -> None:
    def handler(sig: int, _frame: object) -> None:
        try:
            os.kill(to, sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, handler)


def _payload(uid: int, gid: int, argv: list[str]) -> NoReturn:
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        _die_with_parent()  # after the user change, which clears it
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    except OSError as exc:
        _cannot_start(argv, exc)
    _exec(argv)


def _exec(argv: list[str]) -> NoReturn:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    os.environ["PILOTWAVE_JAIL"] = "1"  # what runs here knows it dies with the pilot
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        _cannot_start(argv, exc)


def _cannot_start(argv: list[str], exc: OSError) -> NoReturn:
    sys.stderr.write(f"pilotwave: cannot start {argv[0]!r}: {exc}\n")
    sys.stderr.flush()
    os._exit(CANNOT_START)


def _expose(folder: str, names: list[str]) -> None:
    """Cover ``folder`` (one others may not enter, such as root's home) with an empty one they
    may pass through, holding only ``names`` from the original: the payload reaches what it
    needs there (the Python installation) and nothing else of it."""
    kept = [(name, os.open(os.path.join(folder, name), os.O_PATH)) for name in names]
    _check(
        _libc.mount(b"tmpfs", folder.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0711"),
        f"covering {folder}",
    )
    for name, fd in kept:
        target = os.path.join(folder, name)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
        source = f"/proc/self/fd/{fd}".encode()
        _check(_libc.mount(source, target.encode(), None, MS_BIND | MS_REC, None), target)
        os.close(fd)


def _first_process(
    uid: int, gid: int, exposed: list[tuple[str, list[str]]], argv: list[str]
) -> NoReturn:
    """PID 1 of the namespace: mount its /proc, start the payload, reap, pass signals on."""
    _die_with_parent()
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    _check(
        _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
        "mounting /proc",
    )
    for folder, names in exposed:
        _expose(folder, names)
    payload = os.fork()
    if payload == 0:
        _payload(uid, gid, argv)
    _forward(payload)
    _reap(payload)


def _reap(payload: int) -> NoReturn:
    """As a PID 1: collect every orphan, and end as ``payload`` ends."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == payload:
            _exit_like(os.waitstatus_to_exitcode(status))


def init(lifeline: int, argv: list[str]) -> NoReturn:
    """PID 1 of a job's container (the container runtime already made the user, the
    namespaces and ``no_new_privs``): start the payload, reap, pass signals on, and end when
    the pilot's end of ``lifeline`` (a pipe) closes, because the pilot killed the job or
    died.  When PID 1 ends, the kernel kills everything else in the container."""
    payload = os.fork()
    if payload == 0:
        os.close(lifeline)
        _exec(argv)

    def watch() -> None:
        while os.read(lifeline, 1):
            pass
        os._exit(128 + signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()
    _forward(payload)
    _reap(payload)


def main(args: list[str]) -> NoReturn:
    if args[:1] == ["--init"]:
        init(int(args[1]), args[3:] if args[2:3] == ["--"] else args[2:])
    uid, gid, pilot = int(args[0]), int(args[1]), int(args[2])
    rest = args[3:]
    exposed = []
    while rest[:1] == ["--expose"]:
        folder, _, names = rest[1].partition("=")
        exposed.append((folder, names.split("/")))
        rest = rest[2:]
    argv = rest[1:] if rest[:1] == ["--"] else rest
    _die_with_parent()
    if os.getppid() != pilot:  # the pilot died before we could ask to die with it
        os._exit(1)
    _check(_libc.unshare(CLONE_NEWPID | CLONE_NEWNS), "unshare")
    first = os.fork()  # the first child of an unshare(CLONE_NEWPID) is the namespace's PID 1
    if first == 0:
        _first_process(uid, gid, exposed, argv)
    _forward(first)
    while True:
        try:
            _, status = os.waitpid(first, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    _exit_like(128 - code if 128 < code < 128 + signal.NSIG else code)


def prefix(uid: int, gid: int, needed: Iterable[str] = ()) -> list[str]:
    """The command line that runs what follows it in a jail of ``uid``/``gid`` for this pilot;
    the ``needed`` paths are reached even where a folder above them is closed to others."""
    cmd = [*COMMAND, str(uid), str(gid), str(os.getpid())]
    for folder, names in sorted(closed_folders(needed).items()):
        cmd += ["--expose", f"{folder}={'/'.join(sorted(names))}"]
    return [*cmd, "--"]


def closed_folders(paths: Iterable[str]) -> dict[str, set[str]]:
    """For each path, every folder above it that others may not enter, with the name under
    it on the way to the path: ``{"/root": {".pyenv"}}`` for a Python in root's home.  A
    parent comes before its children in sorted order, so it is covered first."""
    out: dict[str, set[str]] = {}
    for path in paths:
        parts = os.path.realpath(path).strip("/").split("/")
        for i in range(len(parts)):
            folder = "/" + "/".join(parts[:i])
            try:
                closed = not os.stat(folder).st_mode & 0o001
            except OSError:
                break
            if closed:
                out.setdefault(folder, set()).add(parts[i])
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
