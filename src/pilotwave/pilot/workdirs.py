"""A pilot's scratch folder, and the folders of pilots that died without removing theirs.

A pilot without ``--workdir`` works in a fresh folder under the system's temporary folder
and removes it when it exits.  A pilot killed with SIGKILL (a batch system's walltime
does that) cannot: the next pilot to start there removes it.  Each folder holds a lock
file its pilot keeps locked while it lives (``flock``: the kernel lets go when the pilot
dies, and a reused pid cannot fool it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "pilotwave-pilot-"
LOCK = ".pilot.lock"


def make(parent: Path | None = None) -> tuple[Path, int]:
    """A new folder for this pilot, locked (keep the returned descriptor open), after
    removing those of dead pilots."""
    parent = parent or Path(tempfile.gettempdir())
    sweep(parent)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    # Locked before it has its name: a sweeper never sees an unlocked lock of a live pilot.
    fd = os.open(path / f"{LOCK}.new", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(path / f"{LOCK}.new", path / LOCK)
    return path, fd


def sweep(parent: Path) -> list[Path]:
    """Remove the folders under ``parent`` of pilots that are gone; returns them."""
    removed = []
    for folder in parent.glob(PREFIX + "*"):
        try:
            fd = os.open(folder / LOCK, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # no lock (yet, or a pilot of an older version): not ours to judge
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its pilot lives
        finally:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed %s, left by a pilot that died", folder)
        removed.append(folder)
    return removed
