"""Server settings, with the defaults a laptop wants and the knobs a cluster needs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pilotwave.protocol import Limits
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

    @property
    def unseen_grace_s(self) -> float:
        """How long a claimed job may be missing from its pilot's heartbeats before it is lost.

        Lost claim answers are caught at the pilot's next claim; this is the backstop for a
        pilot that never claims again.  Far longer than a heartbeat's possible staleness.
        """
        return max(60.0, 4 * self.heartbeat_timeout_s)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'pilotwave.db'}"
