"""Server settings, with the defaults a laptop wants and the knobs a cluster needs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pilotwave.wms.retry import RetryPolicy

MiB = 1024 * 1024


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
    max_request_bytes: int = 32 * MiB
    max_blob_bytes: int = 256 * MiB
    max_result_bytes: int = 1 * MiB
    max_spec_bytes: int = 1 * MiB

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'pilotwave.db'}"
