"""Sandboxes on a pilot: downloaded once, checked, unpacked, and cached by hash for every later job."""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from pilotwave.errors import SandboxError
from pilotwave.sdk import sandbox


class SandboxCache:
    def __init__(self, root: Path, fetch: Callable[[str], bytes]) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.fetch = fetch
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def get(self, sha256: str) -> Path:
        """The unpacked sandbox directory; raises ``SandboxError`` for a corrupt or unsafe archive."""
        dest = self.root / sha256
        if dest.is_dir():
            return dest
        with self._locks[sha256]:
            if dest.is_dir():
                return dest
            data = self.fetch(sha256)
            if hashlib.sha256(data).hexdigest() != sha256:
                raise SandboxError(f"sandbox {sha256[:12]} arrived corrupted (hash mismatch)")
            sandbox.unpack(data, dest)
        return dest
