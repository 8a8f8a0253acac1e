"""Where the server is and which token to use: arguments, then the environment, then ``client.json``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pilotwave.errors import ConfigError
from pilotwave.private import write_private


def home() -> Path:
    return Path(os.environ.get("PILOTWAVE_HOME", "~/.pilotwave")).expanduser()


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str
    ca_bundle: str | None = None
    """Certificates an ``https`` server's must chain to (``None``: ``PILOTWAVE_CA_BUNDLE`` or
    the system's)."""


def resolve(url: str | None = None, token: str | None = None) -> ClientConfig:
    """Resolve the server URL and token; raise ``ConfigError`` saying how to set them if missing."""
    url = url or os.environ.get("PILOTWAVE_URL")
    token = token or os.environ.get("PILOTWAVE_TOKEN")
    path = home() / "client.json"
    ca_bundle = None
    if (not url or not token) and path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        if not url or url == saved.get("url"):
            ca_bundle = saved.get("ca_bundle")
        url = url or saved.get("url")
        token = token or saved.get("token")
    if not url or not token:
        raise ConfigError(
            "no pilotwave server configured: run `pilotwave up` (writes "
            f"{path}), or set PILOTWAVE_URL and PILOTWAVE_TOKEN"
        )
    return ClientConfig(url.rstrip("/"), token, ca_bundle)


def save(url: str, token: str, directory: Path | None = None, ca_bundle: str | None = None) -> Path:
    """Write ``client.json`` (mode 0600) so the SDK and CLI need no configuration."""
    path = (directory or home()) / "client.json"
    saved = {"url": url, "token": token, **({"ca_bundle": ca_bundle} if ca_bundle else {})}
    write_private(path, json.dumps(saved))
    return path
