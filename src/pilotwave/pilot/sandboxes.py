"""Sandboxes on a pilot: downloaded once, checked, unpacked read-only, and kept by hash.

Each pilot keeps its own cache folder (so one pilot's eviction never pulls a folder from
under another's job), removes the folders of pilots that died, and holds the cache under a
size cap: the least recently used sandbox no job is using goes first.  Before each job, the
unpacked files are checked against what was unpacked (names, sizes, modification times) where
a job could have changed them (its processes run as root): a sandbox a job changed is
unpacked anew rather than handed, changed, to the next job.  Elsewhere the modes stop it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pilotwave.errors import SandboxError
from pilotwave.sdk import sandbox
from pilotwave.sdk.sandbox import UnpackLimits, remove_tree

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 10 * 1024 * 1024 * 1024
Manifest = dict[str, tuple[int, int, int]]  # relative path -> (size, mtime_ns, mode)


def snapshot(root: Path) -> Manifest:
    """Every file and folder under ``root`` with its size, modification time and mode."""
    out: Manifest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (
                0 if stat.S_ISDIR(st.st_mode) else st.st_size,
                0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns,
                st.st_mode,
            )
    return out


def make_read_only(root: Path) -> None:
    """Take away every write permission (execute bits stay), deepest first."""
    for dirpath, _dirs, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & ~0o222)
        os.chmod(dirpath, 0o555)


@dataclass
class _Entry:
    path: Path
    size: int
    manifest: Manifest
    users: int = 0


@dataclass
class SandboxCache:
    root: Path
    fetch: Callable[[str], bytes]
    max_bytes: int = DEFAULT_CACHE_BYTES
    limits: UnpackLimits = field(default_factory=UnpackLimits)
    on_evict: Callable[[Path], None] | None = None
    """Told of each evicted folder (the pilot stops idle workers started in it)."""
    share: Callable[[Path, int], None] | None = None
    """Lets an owner's jobs read a freshly unpacked sandbox (``Isolator.share``)."""
    verify: bool = True
    """Check a sandbox before each job.  Needed only where a job can write it despite its
    read-only modes: jobs running as root (a root pilot without isolation)."""

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _remove_dead_pilots(self.root)
        self.dir = self.root / f"p{os.getpid()}"
        remove_tree(self.dir)
        self.dir.mkdir()
        # By (hash, owner): each owner reads their own copy.  Least recently used first.
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._by_path: dict[Path, _Entry] = {}
        self._retired: dict[Path, _Entry] = {}  # changed by a job; removed when unused
        self._lock = threading.Lock()
        self._unpacking: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._seq = 0

    def acquire(self, sha256: str, owner: int = 0) -> Path:
        """The unpacked sandbox for a job of ``owner``, held until ``release``; raises
        ``SandboxError`` for a corrupt, unsafe or oversize archive."""
        key = (sha256, owner)
        with self._unpacking[sha256]:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    entry.users += 1
            if entry is not None:
                if not self.verify or snapshot(entry.path) == entry.manifest:
                    return entry.path
                log.warning("sandbox %s was changed by a job: unpacking it again", sha256[:12])
                with self._lock:
                    del self._entries[key]  # out of the cache; gone when its jobs end
                    self._retired[entry.path] = entry
                self.release(entry.path)
            return self._unpack(sha256, owner)

    def release(self, path: Path) -> None:
        """A job is done with the sandbox at ``path``."""
        with self._lock:
            entry = self._by_path.get(path)
            if entry is None:
                return
            entry.users = max(0, entry.users - 1)
            gone = self._over_cap()
            if entry.users == 0 and path in self._retired:
                del self._retired[path], self._by_path[path]
                gone.append(path)
        for p in gone:
            self._remove(p)

    def close(self) -> None:
        remove_tree(self.dir)

    def _unpack(self, sha256: str, owner: int) -> Path:
        data = self.fetch(sha256)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SandboxError(f"sandbox {sha256[:12]} arrived corrupted (hash mismatch)")
        with self._lock:
            self._seq += 1
            dest = self.dir / f"{sha256[:16]}-{self._seq}"
        size = sandbox.unpack(data, dest, self.limits)
        make_read_only(dest)
        if self.share is not None:
            self.share(dest, owner)
        entry = _Entry(dest, size, snapshot(dest), users=1)
        with self._lock:
            self._entries[(sha256, owner)] = self._by_path[dest] = entry
            evicted = self._over_cap()
        for path in evicted:
            self._remove(path)
        return dest

    def _remove(self, path: Path) -> None:
        if self.on_evict is not None:
            self.on_evict(path)
        remove_tree(path)

    def _over_cap(self) -> list[Path]:
        total = sum(e.size for e in self._entries.values())
        out = []
        for key, entry in list(self._entries.items()):
            if total <= self.max_bytes:
                break
            if entry.users == 0:
                del self._entries[key], self._by_path[entry.path]
                total -= entry.size
                out.append(entry.path)
        return out


def _remove_dead_pilots(root: Path) -> None:
    """Cache folders of pilots that are gone (killed without cleaning up)."""
    for d in root.glob("p*"):
        try:
            pid = int(d.name[1:])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            remove_tree(d)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
