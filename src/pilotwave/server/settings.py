"""Server settings, with the defaults a laptop wants and the knobs a cluster needs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pilotwave.protocol import Limits
from pilotwave.server.quotas import Quotas
from pilotwave.wms.blobs import BLOB_GRACE_S
from pilotwave.wms.retry import RetryPolicy


def default_home() -> Path:
    return Path(os.environ.get("PILOTWAVE_HOME", "~/.pilotwave")).expanduser()


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    db_url: str | None = None  # default: SQLite under home
    heartbeat_interval_s: float = 10.0
    heartbeat_timeout_s: float = 30.0
    claim_wait_max_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: Limits = field(default_factory=Limits)
    quotas: Quotas = field(default_factory=Quotas)
    blob_collect_interval_s: float = 600.0
    """How often blobs nothing refers to are deleted."""
    blob_grace_s: float = BLOB_GRACE_S

    @property
    def unseen_grace_s(self) -> float:
        """How long a claimed job may be missing from its pilot's heartbeats before it is lost.

        Lost claim answers are caught at the pilot's next claim; this is the backstop for a
        pilot that never claims again.  Far longer than a heartbeat's possible staleness.
        """
        return max(60.0, 4 * self.heartbeat_timeout_s)

    attempt_key_file: Path | None = None
    """The key that signs attempt tokens (default: ``attempt-key`` under the home, created
    0600).  Servers sharing one database must be given the same file."""

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'pilotwave.db'}"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or ``None`` for another database (or SQLite in memory)."""
        url = self.database_url
        if not url.startswith("sqlite:///") or url.endswith(":memory:"):
            return None
        return Path(url.removeprefix("sqlite:///").split("?")[0])

    @property
    def key_path(self) -> Path:
        return self.attempt_key_file or self.home / "attempt-key"
