"""How a pilot keeps the jobs it runs apart: from itself, and each owner's from every other's.

- ``none``: jobs run as the pilot's own user.  Only for a pilot whose token is one user's
  (the server refuses it for a token meant for every user's jobs).
- ``user``: the pilot runs as root; each owner's jobs run as an unprivileged user of their
  own (``uid_base + owner id``, or one ``run_as`` account for all), every job in PID and
  mount namespaces of its own (``jail``), in a scratch folder only that user may enter, with
  the sandbox readable by that user's group only and writable by nobody.  The pilot's
  folder is 0711: a job can reach its own folder inside, not list or read anything else.

- ``container``: as ``user`` (the same uid per owner, folders and sandbox modes), and every
  job runs in a container of its own (podman): a read-only root file system (the host's
  ``/usr`` and ``/etc``, or ``--container-image``), the pilot's Python mounted read-only,
  and of the pilot's files only that owner's folder and the job's sandbox.  Its PID 1 is
  ``jail.init``, which ends the container when the pilot's end of a pipe closes.

A job under ``user`` isolation cannot read the pilot's token (a root-only file), its command
line or environment (another PID namespace), other jobs' environments or files (other users,
other namespaces), or change a sandbox the next job runs; under ``container`` it does not
even see that those files exist.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pilotwave.errors import ConfigError
from pilotwave.pilot import jail
from pilotwave.pilot.environment import passed
from pilotwave.protocol import Isolation

log = logging.getLogger(__name__)

DEFAULT_UID_BASE = 1_000_000_000
"""Far above the accounts of any usual system (and below 2**31, which some tools assume)."""

Argv = Callable[[list[int]], list[str]]
"""A payload's command line, given the numbers its inherited descriptors have where it runs."""


@dataclass
class Launch:
    """How to start one payload process: ``subprocess.Popen(argv, env=env, cwd=cwd,
    pass_fds=pass_fds)``.  ``lifeline`` is the pilot's end of a pipe the payload's container
    watches: ``cut`` closes it, and the container ends (a no-op without a container)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    pass_fds: tuple[int, ...]
    lifeline: int | None = None
    child_ends: tuple[int, ...] = ()
    """Descriptors only the payload keeps: the pilot closes its copies once it started."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def cut(self) -> None:
        with self._lock:  # a kill and the end of a wait may cut at once: close only once
            fd, self.lifeline = self.lifeline, None
        if fd is not None:
            os.close(fd)

    def started(self) -> None:
        """After ``Popen``: the pilot keeps only its own end of the lifeline."""
        for fd in self.child_ends:
            os.close(fd)
        self.child_ends = ()


class Launcher:
    """Starts an owner's payloads behind a command-line prefix (none, or ``jail``)."""

    def __init__(self, prefix: list[str]) -> None:
        self.prefix = prefix

    def launch(self, argv: Argv, fds: Sequence[int], env: dict[str, str], cwd: Path) -> Launch:
        return Launch([*self.prefix, *argv(list(fds))], env, str(cwd), tuple(fds))


class Isolator:
    """``none``: nothing is changed."""

    mode = Isolation.NONE

    def prefix(self, owner: int) -> list[str]:
        """What a job's command line starts with."""
        return []

    def launcher(self, owner: int, binds: Sequence[Path] = ()) -> Launcher:
        """How ``owner``'s payloads start; ``binds`` are the folders a payload reads beyond
        its owner's (its sandbox: only a container needs to be told)."""
        return Launcher(self.prefix(owner))

    def jobdir(self, workdir: Path, name: str, owner: int) -> Path:
        """Where a job's own folder is made."""
        return workdir / "jobs" / name

    def prepare(self, jobdir: Path, owner: int) -> dict[str, str]:
        """Make ``jobdir`` the job's own; returns environment variables to set for it."""
        return {}

    def share(self, sandbox: Path, owner: int) -> None:
        """Let ``owner``'s jobs read an unpacked (read-only) sandbox."""

    def scratch(self, workdir: Path, owner: int) -> Path:
        """A temporary folder for ``owner``'s warm workers, which outlive each job's folder."""
        path = workdir / "tmp"
        path.mkdir(exist_ok=True)
        return path

    def probe(self) -> None:
        """Check at start that jobs can run this way; ``ConfigError`` saying why not."""


class UserIsolator(Isolator):
    mode = Isolation.USER

    def __init__(self, workdir: Path, uid_base: int = DEFAULT_UID_BASE, run_as: int | None = None):
        if os.geteuid() != 0:
            raise ConfigError(
                "--isolation user runs each owner's jobs as a user of their own: start the "
                "pilot as root (or use --isolation none with a pilot token of your own)"
            )
        if run_as is None and not 65536 <= uid_base <= 2**31 - 2**24:
            raise ConfigError(f"--uid-base {uid_base}: choose one in 65536..{2**31 - 2**24}")
        if run_as == 0:
            raise ConfigError("--run-as root would not isolate anything")
        self.workdir = workdir
        self.uid_base = uid_base
        self.run_as = run_as
        # Where the pilot's Python and packages live: a job must reach them even when they
        # sit in a folder closed to other users (a Python installed in root's home).
        self.needed = sorted(
            {sys.executable, sys.base_prefix, sys.prefix, str(workdir)}
            | {p for p in sys.path if p and os.path.isabs(p) and os.path.exists(p)}
        )
        self.homes = workdir / "homes"
        self.homes.mkdir(parents=True, exist_ok=True)
        for d in (workdir, self.homes):
            d.chmod(0o711)  # jobs pass through to their own folders; list or read nothing

    def ids(self, owner: int) -> tuple[int, int]:
        uid = self.run_as if self.run_as is not None else self.uid_base + owner
        return uid, uid

    def prefix(self, owner: int) -> list[str]:
        return jail.prefix(*self.ids(owner), self.needed)

    def home(self, owner: int) -> Path:
        """The owner's own folder: its jobs' ``HOME`` and scratch space."""
        uid, gid = self.ids(owner)
        home = self.homes / str(uid)
        if not home.is_dir():
            home.mkdir(mode=0o700, exist_ok=True)
            os.chown(home, uid, gid)
        return home

    def prepare(self, jobdir: Path, owner: int) -> dict[str, str]:
        uid, gid = self.ids(owner)
        home = self.home(owner)
        for dirpath, dirnames, filenames in os.walk(jobdir):
            for name in (*dirnames, *filenames):
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
        os.chown(jobdir, uid, gid)
        jobdir.chmod(0o700)
        return {"HOME": str(home), "USER": f"pw{uid}", "LOGNAME": f"pw{uid}"}

    def scratch(self, workdir: Path, owner: int) -> Path:
        uid, gid = self.ids(owner)
        path = self.home(owner) / "tmp"
        if not path.is_dir():
            path.mkdir(mode=0o700)
            os.chown(path, uid, gid)
        return path

    def share(self, sandbox: Path, owner: int) -> None:
        _, gid = self.ids(owner)
        for dirpath, _dirs, filenames in os.walk(sandbox):
            os.chown(dirpath, 0, gid)
            os.chmod(dirpath, 0o550)
            for name in filenames:
                path = os.path.join(dirpath, name)
                mode = os.lstat(path).st_mode
                os.chown(path, 0, gid, follow_symlinks=False)
                os.chmod(path, 0o550 if mode & 0o100 else 0o440)

    def probe(self) -> None:
        """Jobs run with the pilot's Python: an unprivileged user must be able to start it."""
        uid, _ = self.ids(1)
        check = [sys.executable, "-c", "import pilotwave.pilot.worker"]
        proc = subprocess.run(
            self.prefix(1) + check,
            cwd=self.workdir,
            env=passed(os.environ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise ConfigError(
                f"--isolation user: a job running as uid {uid} cannot start this pilot's Python "
                f"({sys.executable}): {proc.stderr.strip()[-500:] or proc.returncode}. Install "
                "pilotwave where every user can read it (not under a 0700 home)."
            )


class ContainerIsolator(UserIsolator):
    """``container``: ``user``'s uids and folders, each payload in a podman container."""

    mode = Isolation.CONTAINER
    HOST_DIRS = ("usr", "etc", "opt", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
    """What a container of the host's own system (no ``--container-image``) mounts read-only."""

    def __init__(
        self,
        workdir: Path,
        uid_base: int = DEFAULT_UID_BASE,
        run_as: int | None = None,
        image: str | None = None,
    ):
        podman = shutil.which("podman")
        if podman is None:
            raise ConfigError(
                "--isolation container runs jobs with podman, which is not installed "
                "(Debian: apt-get install podman runc), or use --isolation user"
            )
        super().__init__(workdir, uid_base, run_as)
        self.podman = [podman]
        self.image = image
        self._names = itertools.count(1)  # next() is atomic: runners start jobs at once
        self.host_dirs: list[str] = []
        self.rootfs = None if image else self._host_rootfs(workdir / "rootfs")
        # The pilot's Python and its packages, read-only at the same paths (under the host's
        # /usr they are there anyway); not the folder the pilot was started in.
        host = tuple(f"/{d}" for d in self.HOST_DIRS) if image is None else ()
        python = {sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path[1:]}
        self.python = _outermost(p for p in python if os.path.isdir(p) and not _under(p, host))

    def _host_rootfs(self, root: Path) -> Path:
        """An empty root holding the host's top-level links (``/bin -> usr/bin``): the
        folders of ``HOST_DIRS`` are mounted into it read-only, nothing else of the host."""
        root.mkdir(exist_ok=True)
        root.chmod(0o755)
        for name in sorted(os.listdir("/")):
            path, mine = os.path.join("/", name), root / name
            if os.path.islink(path) and not os.path.lexists(mine):
                os.symlink(os.readlink(path), mine)
            elif name in self.HOST_DIRS and os.path.isdir(path) and not os.path.islink(path):
                mine.mkdir(exist_ok=True)
                self.host_dirs.append(path)
        for name in ("proc", "sys", "dev", "tmp", "run", "var"):
            (root / name).mkdir(exist_ok=True)
        return root

    def jobdir(self, workdir: Path, name: str, owner: int) -> Path:
        # In its owner's folder, which is all of the pilot's that the owner's containers
        # mount: a warm worker writes the outputs of each of its owner's jobs there.
        return self.home(owner) / "jobs" / name

    def launcher(self, owner: int, binds: Sequence[Path] = ()) -> Launcher:
        return PodmanLauncher(self, owner, [str(b) for b in binds])

    def run_options(self, owner: int, binds: Sequence[str]) -> list[str]:
        uid, gid = self.ids(owner)
        home = str(self.home(owner))
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        nproc = [min(n, PODMAN_NPROC) for n in resource.getrlimit(resource.RLIMIT_NPROC)]
        opts = [
            "run", "--rm", "--name", f"pilotwave-{os.getpid()}-{next(self._names)}",
            "--label", f"pilotwave.pilot={os.getpid()}",
            # Output goes straight to the pilot's log file (live logs, no copy by podman).
            "--log-driver", "passthrough",
            # The job talks to the server like any client; files, processes and users are
            # what the container keeps apart.
            "--network", "host",
            "--cap-drop", "all", "--security-opt", "no-new-privileges",
            "--read-only", "--user", f"{uid}:{gid}",
            # Limits a container may have where raising them is not allowed (podman starts
            # its monitor with at most PODMAN_NPROC processes).
            "--ulimit", f"nofile={nofile[0]}:{nofile[1]}",
            "--ulimit", f"nproc={nproc[0]}:{nproc[1]}",
            "-v", f"{home}:{home}",
        ]  # fmt: skip
        for path in [*(self.host_dirs if self.rootfs else []), *self.python, *binds]:
            opts += ["-v", f"{path}:{path}:ro"]
        # NVIDIA GPUs: the device files (the driver's libraries are under the host's /usr);
        # CUDA_VISIBLE_DEVICES picks a job's GPUs, as it does outside containers.
        for dev in sorted(glob.glob("/dev/nvidia*")):
            if not os.path.isdir(dev):
                opts += ["--device", dev]
        return opts

    def probe(self) -> None:
        """Start one container: fails early, saying why, where podman cannot run here.  Where
        podman's default runtime cannot (crun on a host with cgroups v1 and v2 mixed), runc
        is tried: the runtime that worked is kept."""
        check = [sys.executable, "-c", "import pilotwave.pilot.worker"]
        errors = []
        runtimes = [None, *(["runc"] if shutil.which("runc") else [])]
        for runtime in runtimes:
            self.podman = [self.podman[0], *(["--runtime", runtime] if runtime else [])]
            launch = self.launcher(1).launch(lambda fds: check, (), passed(os.environ), self.homes)
            try:
                proc = subprocess.run(
                    launch.argv,
                    env=launch.env,
                    cwd=launch.cwd,
                    pass_fds=launch.pass_fds,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            finally:
                launch.started()
                launch.cut()
            if proc.returncode == 0:
                log.info("jobs run in podman containers (runtime %s)", runtime or "default")
                return
            errors.append(f"{runtime or 'default runtime'}: {proc.stderr.strip()[-400:]}")
        raise ConfigError(
            "--isolation container: podman cannot start a job here: " + "; ".join(errors)
        )


PODMAN_NPROC = 32768

_RENUMBER = """
import fcntl, os, sys
args = sys.argv[1:]
fds, argv = [int(a) for a in args[: args.index("--")]], args[args.index("--") + 1 :]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(fds) + 1) for fd in fds]
for fd in fds:
    os.close(fd)
for n, fd in enumerate(high):
    os.dup2(fd, 3 + n)
    os.close(fd)
os.execv(argv[0], argv)
"""
"""podman passes on descriptors 3, 4, ... only: this moves the payload's there, by way of
numbers above all of them (so none is overwritten before it moves), and starts podman."""


class PodmanLauncher(Launcher):
    """Each payload in a container of its own, ended by its lifeline: the container's
    PID 1 (``jail.init``) exits when the pilot closes its end or dies."""

    def __init__(self, isolator: ContainerIsolator, owner: int, binds: list[str]) -> None:
        super().__init__([])
        self.iso, self.owner, self.binds = isolator, owner, binds

    def launch(self, argv: Argv, fds: Sequence[int], env: dict[str, str], cwd: Path) -> Launch:
        iso = self.iso
        home = str(iso.home(self.owner))
        inside_cwd = str(cwd) if _under(str(cwd), [home, *self.binds]) else home
        watch, lifeline = os.pipe()
        outer = [*fds, watch]
        inside = list(range(3, 3 + len(outer)))
        podman = [
            *iso.podman,
            *iso.run_options(self.owner, self.binds),
            "--preserve-fds", str(len(outer)),
            "--workdir", inside_cwd,
            *(a for name in sorted(env) for a in ("--env", name)),  # values: from podman's
            *(["--rootfs", str(iso.rootfs)] if iso.rootfs else [iso.image or ""]),
            *jail.COMMAND, "--init", str(inside[-1]), "--",
            *argv(inside[:-1]),
        ]  # fmt: skip
        return Launch(
            [sys.executable, "-I", "-S", "-c", _RENUMBER, *map(str, outer), "--", *podman],
            env,
            str(cwd) if os.path.isdir(cwd) else home,
            tuple(outer),
            lifeline,
            child_ends=(watch,),
        )


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths not inside another of them."""
    out: list[str] = []
    for p in sorted({os.path.normpath(p) for p in paths}):
        if not _under(p, out):
            out.append(p)
    return out


def isolator(
    mode: Isolation, workdir: Path, uid_base: int, run_as: int | None, image: str | None = None
) -> Isolator:
    if mode is Isolation.USER:
        return UserIsolator(workdir, uid_base, run_as)
    if mode is Isolation.CONTAINER:
        return ContainerIsolator(workdir, uid_base, run_as, image)
    return Isolator()
