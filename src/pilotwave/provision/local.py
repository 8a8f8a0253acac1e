"""A server and local pilots as real processes: what ``pilotwave up``, the demo and the tests run.

with LocalCluster(home, pilots=2) as cluster:
    square.map(range(10))   # the SDK finds the cluster through client.json under home
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pilotwave.errors import PilotwaveError
from pilotwave.private import write_private
from pilotwave.sdk import config
from pilotwave.sdk.client import Client
from pilotwave.sdk.records import Pilot


class StartError(PilotwaveError):
    """A server or pilot process that did not come up."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pilotwave.cli.main", *args]


class LocalCluster:
    """Start a server (SQLite under ``home`` unless ``db`` is given) and ``pilots`` local pilots."""

    def __init__(
        self,
        home: Path,
        *,
        pilots: int = 2,
        slots: int | None = None,
        db: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        server_args: list[str] | None = None,
        pilot_args: list[str] | None = None,
        log_dir: Path | None = None,
        detach: bool = False,
        isolation: str = "none",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """``isolation`` ``none``: the pilots run the admin's jobs only (one person's machine);
        ``user`` (as root): they run every user's, each owner's as a user of their own."""
        self.home = Path(home).resolve()
        self.n_pilots = pilots
        self.slots = slots
        self.db = db
        self.host, self.port = host, port
        self.server_args = list(server_args or [])
        self.pilot_args = list(pilot_args or [])
        self.log_dir = Path(log_dir or self.home / "logs")
        self.detach = detach
        self.isolation = isolation
        self.tls = tls  # (certificate, key): the server speaks https; clients trust the certificate
        self.ca_bundle = str(tls[0]) if tls else None
        self.server: subprocess.Popen[bytes] | None = None
        self.pilots: list[subprocess.Popen[bytes]] = []
        self.url = ""
        self.admin_token = ""
        self.pilot_token = ""
        self._client: Client | None = None

    # -- processes -----------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PILOTWAVE_HOME"] = str(self.home)
        env.pop("PILOTWAVE_URL", None)
        env.pop("PILOTWAVE_TOKEN", None)
        return env

    def _token_file(self, token: str) -> Path:
        """A 0600 file under the (0700) home holding ``token``: never on a command line."""
        path = self.home / "tokens" / f"pilot-{hashlib.sha256(token.encode()).hexdigest()[:12]}"
        if not path.exists():
            write_private(path, token + "\n")
        return path

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / log_name, "ab") as out:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
            )

    def start_server(self, timeout_s: float = 60.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        server_file = self.home / "server.json"
        server_file.unlink(missing_ok=True)
        argv = _cli("server", "--host", self.host, "--port", str(self.port), *self.server_args)
        if self.tls:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        if self.db:
            argv += ["--db", self.db]
        self.server = self._spawn(argv, "server.log")
        deadline = time.monotonic() + timeout_s
        while True:  # start-up only: wait for the server to write its address
            if self.server.poll() is not None:
                raise StartError(
                    f"the server exited with code {self.server.returncode}; see {self.log_dir / 'server.log'}"
                )
            if server_file.exists():
                info = json.loads(server_file.read_text())
                if info.get("pid") == self.server.pid:
                    break
            if time.monotonic() > deadline:
                raise StartError(
                    f"the server did not start within {timeout_s:g}s; see {self.log_dir / 'server.log'}"
                )
            time.sleep(0.05)
        self.url = info["url"]
        if self.port == 0:  # keep the address across restarts
            self.port = int(self.url.rsplit(":", 1)[1])
        token_file = self.home / "admin-token"
        if token_file.exists():
            self.admin_token = token_file.read_text().strip()
        elif not self.admin_token:
            raise StartError(
                f"no admin token under {self.home}: was the database created elsewhere?"
            )
        config.save(self.url, self.admin_token, self.home, self.ca_bundle)
        client = self.client()
        client.health()
        if not self.pilot_token:
            self.pilot_token = client.create_token(
                "admin",
                role="pilot",
                queues=["*"],
                description="local pilots",
                all_users=self.isolation != "none",
            )["token"]

    def start_pilot(
        self,
        *extra: str,
        slots: int | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a pilot serving every queue, on this cluster's server or the one at ``url``."""
        argv = _cli(
            "pilot",
            "--server",
            url or self.url,
            "--token-file",
            str(self._token_file(token or self.pilot_token)),
            "--queue",
            "*",
            "--isolation",
            self.isolation,
            *(["--ca-bundle", self.ca_bundle] if self.ca_bundle else []),
            *self.pilot_args,
            *extra,
        )
        if slots or self.slots:
            argv += ["--slots", str(slots or self.slots)]
        proc = self._spawn(argv, f"pilot-{len(self.pilots)}.log")
        self.pilots.append(proc)
        return proc

    def start(self) -> LocalCluster:
        self.start_server()
        for _ in range(self.n_pilots):
            self.start_pilot()
        if self.detach:
            (self.home / "cluster.json").write_text(
                json.dumps(
                    {
                        "server": self.server.pid if self.server else None,
                        "pilots": [p.pid for p in self.pilots],
                    }
                )
            )
        return self

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self.admin_token, ca_bundle=self.ca_bundle)
        return self._client

    def wait_for_pilots(self, n: int | None = None, timeout_s: float = 60.0) -> list[Pilot]:
        """Block until ``n`` pilots (default: all started) are registered and active."""
        n = len(self.pilots) if n is None else n
        deadline = time.monotonic() + timeout_s
        while True:
            active = [p for p in self.client().pilots() if p["state"] == "active"]
            if len(active) >= n:
                return active
            if time.monotonic() > deadline:
                raise StartError(
                    f"{len(active)} of {n} pilots registered after {timeout_s:g}s; see {self.log_dir}"
                )
            time.sleep(0.05)

    def kill_server(self) -> None:
        """SIGKILL the server (tests of durability)."""
        if self.server is not None:
            self.server.kill()
            self.server.wait()
            if self._client is not None:
                self._client.close()
                self._client = None

    def stop(self, timeout_s: float = 20.0) -> None:
        for p in self.pilots:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.pilots:
            _wait_or_kill(p, timeout_s)
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            _wait_or_kill(self.server, timeout_s)
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_detached(home: Path, timeout_s: float = 20.0) -> bool:
    """Stop a cluster started with ``pilotwave up --detach``; returns whether one was running."""
    path = Path(home) / "cluster.json"
    if not path.exists():
        return False
    info = json.loads(path.read_text())
    pids = [*info.get("pilots", []), info.get("server")]
    for pid in [p for p in pids if p]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
    path.unlink()
    return True
