"""Run the server: bind, write ``server.json`` (URL and pid) under the home, serve until stopped."""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from pilotwave.server.app import create_app
from pilotwave.server.settings import Settings

log = logging.getLogger("pilotwave.server")


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_for(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"


def write_server_file(home: Path, url: str) -> Path:
    path = home / "server.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    tmp.replace(path)
    return path


class _Server(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT, answer held long-polls at once so shutdown is prompt."""

    notifier: Any = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.notifier is not None:
            self.notifier.shut_down()


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8765,
    log_level: str = "warning",
    tls: tuple[Path, Path] | None = None,
) -> None:
    """Serve until stopped; ``tls``: a certificate and its key, to speak https."""
    app = create_app(settings)  # creates the home, private
    # What start-up built (modules, schemas, routes) lives as long as the server: out of the
    # collector's sight, a full collection in the middle of a large request costs the event
    # loop about half as much (bench/health_stall.py).
    gc.collect()
    gc.freeze()
    sock = bind(host, port)
    url = url_for(sock, "https" if tls else "http")
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=120,
        loop="auto",
        http="auto",
        lifespan="on",
        timeout_graceful_shutdown=5,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )
    server = _Server(config)
    server.notifier = app.state.core.notifier
    write_server_file(settings.home, url)
    log.info("serving url=%s db=%s", url, settings.database_url.split("@")[-1])
    server.run(sockets=[sock])
