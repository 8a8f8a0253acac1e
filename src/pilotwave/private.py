"""Files only their owner may read: the home folder, tokens, keys and the SQLite database.

On a shared machine a job of another user (or any local account) must not read the admin
token, ``client.json``, the key that signs attempt tokens, or the database that holds
everybody's work.  Everything here is created owner-only from the start (never written
first and narrowed after), and a home found open to others is narrowed with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; the folder itself is mode 0700.

    A folder that exists and that others may enter is narrowed to 0700 when we own it,
    with a warning; one owned by someone else is left alone (it is theirs to set).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        log.warning(
            "%s was open to other users (mode %o): narrowed to 0700", path, st.st_mode & 0o777
        )
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write ``text`` to ``path`` readable only by its owner (0600 from the first byte).

    With ``exclusive``, fail with ``FileExistsError`` if the file is there (two processes
    creating the same key: one wins, the other reads the winner's).
    """
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        f.write(text)


def private_file(path: Path) -> Path:
    """Create an empty ``path`` as 0600 if missing, or narrow an existing one to 0600.

    SQLite creates its ``-wal`` and ``-shm`` files with the database file's mode, so a
    database created through this is private with its journals.
    """
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            log.warning("%s was readable by other users (mode %o): narrowed to 0600", path, mode)
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path
