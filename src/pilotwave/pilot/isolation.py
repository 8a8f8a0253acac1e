"""How a pilot keeps the jobs it runs apart: from itself, and each owner's from every other's.

- ``none``: jobs run as the pilot's own user.  Only for a pilot whose token is one user's
  (the server refuses it for a token meant for every user's jobs).
- ``user``: the pilot runs as root; each owner's jobs run as an unprivileged user of their
  own (``uid_base + owner id``, or one ``run_as`` account for all), every job in PID and
  mount namespaces of its own (``jail``), in a scratch folder only that user may enter, with
  the sandbox readable by that user's group only and writable by nobody.  The pilot's
  folder is 0711: a job can reach its own folder inside, not list or read anything else.

A job under ``user`` isolation cannot read the pilot's token (a root-only file), its command
line or environment (another PID namespace), other jobs' environments or files (other users,
other namespaces), or change a sandbox the next job runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pilotwave.errors import ConfigError
from pilotwave.pilot import jail
from pilotwave.pilot.environment import passed
from pilotwave.protocol import Isolation

DEFAULT_UID_BASE = 1_000_000_000
"""Far above the accounts of any usual system (and below 2**31, which some tools assume)."""


class Isolator:
    """``none``: nothing is changed."""

    mode = Isolation.NONE

    def prefix(self, owner: int) -> list[str]:
        """What a job's command line starts with."""
        return []

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

    def prepare(self, jobdir: Path, owner: int) -> dict[str, str]:
        uid, gid = self.ids(owner)
        home = self.homes / str(uid)
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, uid, gid)
        for dirpath, dirnames, filenames in os.walk(jobdir):
            for name in (*dirnames, *filenames):
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
        os.chown(jobdir, uid, gid)
        jobdir.chmod(0o700)
        return {"HOME": str(home), "USER": f"pw{uid}", "LOGNAME": f"pw{uid}"}

    def scratch(self, workdir: Path, owner: int) -> Path:
        uid, gid = self.ids(owner)
        path = self.homes / str(uid) / "tmp"
        if not path.is_dir():
            path.mkdir(mode=0o700, parents=True)
            os.chown(path.parent, uid, gid)
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


def isolator(mode: Isolation, workdir: Path, uid_base: int, run_as: int | None) -> Isolator:
    if mode is Isolation.USER:
        return UserIsolator(workdir, uid_base, run_as)
    if mode is Isolation.CONTAINER:
        raise ConfigError(
            "--isolation container is not available yet: use --isolation user (as root)"
        )
    return Isolator()
