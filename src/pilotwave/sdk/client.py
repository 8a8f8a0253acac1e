"""The user's client: submit jobs, wait for them, read logs and artifacts, manage users and tokens."""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pilotwave.errors import ResultError
from pilotwave.protocol.wire import check_artifact_name, id_ranges
from pilotwave.sdk import config, sandbox
from pilotwave.sdk.http import Http
from pilotwave.sdk.records import (
    Artifact,
    Event,
    Job,
    JobRow,
    LogPiece,
    Pilot,
    WorkflowInfo,
    WorkflowStatus,
)

SUBMIT_BATCH = 1000


class Client:
    """A connection to a pilotwave server.  ``Client()`` reads ``PILOTWAVE_URL``/``PILOTWAVE_TOKEN`` or ``client.json``."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        retry_for_s: float = 30.0,
        ca_bundle: str | None = None,
    ) -> None:
        cfg = config.resolve(url, token)
        self.url = cfg.url
        # Requests are retried through a server restart for ``retry_for_s``.
        self.http = Http(
            cfg.url, cfg.token, retry_for_s=retry_for_s, ca_bundle=ca_bundle or cfg.ca_bundle
        )
        self._sandboxes: dict[Path, tuple[Any, str]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sandboxes -------------------------------------------------------------------

    def sandbox_for(self, root: Path) -> str:
        """Pack ``root`` and upload it unless the server has it; cached while the tree is unchanged."""
        root = root.resolve()
        # A driver on a pilot submitting functions from its own sandbox: same tree, same hash.
        own, sha = os.environ.get("PILOTWAVE_SANDBOX"), os.environ.get("PILOTWAVE_SANDBOX_SHA")
        if own and sha and Path(own).resolve() == root:
            return sha
        with self._lock:
            sig = sandbox.signature(root)
            cached = self._sandboxes.get(root)
            if cached and cached[0] == sig:
                return cached[1]
            box = sandbox.pack(root)
            self.upload_blob(box.sha256, box.data)
            self._sandboxes[root] = (sig, box.sha256)
            return box.sha256

    def upload_blob(self, sha256: str, data: bytes) -> None:
        self.http.put_blob(sha256, data)

    # -- jobs ------------------------------------------------------------------------

    def submit(self, jobs: Sequence[dict[str, Any]]) -> list[int]:
        """Submit job specs (see the REST API) in batches; returns ids in order."""
        ids: list[int] = []
        for i in range(0, len(jobs), SUBMIT_BATCH):
            ids += self.http.post("/api/v1/jobs", {"jobs": list(jobs[i : i + SUBMIT_BATCH])})["ids"]
        return ids

    def job(self, job_id: int, wait_s: float = 0.0) -> Job:
        """One job with its attempts; with ``wait_s``, once it is final (or the time is up)."""
        params = {"wait": wait_s} if wait_s else None
        return self.http.get(f"/api/v1/jobs/{job_id}", params=params, wait_s=wait_s)

    def jobs(
        self,
        *,
        state: Iterable[str] = (),
        queue: str | None = None,
        ids: Iterable[int] = (),
        limit: int = 100,
    ) -> list[JobRow]:
        """Jobs, newest first."""
        params: dict[str, Any] = {"limit": limit, "state": list(state), "ids": list(ids)}
        if queue:
            params["queue"] = queue
        return self.http.get("/api/v1/jobs", params=params)["jobs"]

    def summary(self) -> dict[str, int]:
        return self.http.get("/api/v1/jobs/summary")["counts"]

    def watch(
        self, ids: Iterable[int], timeout_s: float
    ) -> Generator[dict[int, dict[str, Any]], None, None]:
        """Yield batches ``{id: {state, result, error}}`` as the jobs become final, for up to ``timeout_s``.

        One streaming request for any number of jobs; a dropped connection raises
        ``ServerUnreachable`` (callers re-watch what is still pending).
        """
        body = {"ranges": id_ranges(ids), "timeout_s": timeout_s}
        for line in self.http.stream_lines("POST", "/api/v1/jobs/watch", body, wait_s=timeout_s):
            if "done" in line:
                yield {int(k): v for k, v in line["done"].items()}

    def job_reports(self, job_id: int) -> list[dict[str, Any]]:
        """The intermediate values a job reported (``pw.report``), with its driver's answers."""
        return self.http.get(f"/api/v1/jobs/{job_id}/reports")["reports"]

    def cancel(self, ids: Sequence[int]) -> list[int]:
        return self.http.post("/api/v1/jobs/cancel", {"ids": list(ids)})["cancelled"]

    def events(self, job_id: int) -> list[Event]:
        """The job's story: every transition, oldest first."""
        return self.http.get(f"/api/v1/jobs/{job_id}/events")["events"]

    def logs(
        self, job_id: int, *, follow: bool = False, wait_s: float = 30.0
    ) -> Iterator[LogPiece]:
        """Yield log chunks (``attempt``, ``pos``, ``data``); with ``follow``, until the job is final."""
        attempt, pos = 0, -1
        while True:
            params = {"attempt": attempt, "pos": pos, "wait": wait_s if follow else 0}
            page = self.http.get(
                f"/api/v1/jobs/{job_id}/logs", params=params, wait_s=params["wait"]
            )
            yield from page["chunks"]
            attempt, pos = page["cursor"]["attempt"], page["cursor"]["pos"]
            if not follow or (
                page["state"] in ("succeeded", "failed", "cancelled") and not page["chunks"]
            ):
                return

    def artifacts(self, job_id: int) -> list[Artifact]:
        return self.http.get(f"/api/v1/jobs/{job_id}/artifacts")["artifacts"]

    def artifact(self, job_id: int, name: str) -> bytes:
        return self.http.get(f"/api/v1/jobs/{job_id}/artifacts/{name}", raw=True)

    def download(self, job_id: int, dest: Path, names: Iterable[str] | None = None) -> list[Path]:
        """Write a job's artifacts under ``dest``; returns the files written.

        A name that would land outside ``dest`` (absolute, ``..``) raises ``ResultError``
        before anything is written: the server refuses such names, this is the second lock.
        """
        wanted = set(names) if names is not None else None
        root = Path(dest).resolve()
        chosen = [a for a in self.artifacts(job_id) if wanted is None or a["name"] in wanted]
        for a in chosen:
            try:
                check_artifact_name(a["name"])
            except ValueError as exc:
                raise ResultError(f"job {job_id}: artifact {exc}") from None
        written = []
        for a in chosen:
            path = root / a["name"]
            if not path.resolve().is_relative_to(root):  # a symlink already under dest
                raise ResultError(f"job {job_id}: artifact {a['name']!r} leads outside {root}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.artifact(job_id, a["name"]))
            written.append(path)
        return written

    # -- workflows -------------------------------------------------------------------

    def submit_workflow(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a workflow from a REST body; returns ``{"id", "driver_job_id"}``."""
        return self.http.post("/api/v1/workflows", body)

    def workflow(self, workflow_id: int) -> WorkflowStatus:
        """Status: state, counts over the whole tree, jobs and nested workflows."""
        return self.http.get(f"/api/v1/workflows/{workflow_id}")

    def workflows(
        self, *, state: Iterable[str] = (), nested: bool = False, limit: int = 100
    ) -> list[WorkflowInfo]:
        params = {"state": list(state), "nested": nested, "limit": limit}
        return self.http.get("/api/v1/workflows", params=params)["workflows"]

    def workflow_events(self, workflow_id: int) -> list[Event]:
        return self.http.get(f"/api/v1/workflows/{workflow_id}/events")["events"]

    def workflow_op(self, workflow_id: int, op: str) -> dict[str, Any]:
        """``cancel``, ``suspend``, ``resume`` or ``retry``."""
        return self.http.post(f"/api/v1/workflows/{workflow_id}/{op}", {})

    # -- pilots, users, tokens -------------------------------------------------------

    def pilots(self) -> list[Pilot]:
        return self.http.get("/api/v1/pilots")["pilots"]

    def whoami(self) -> dict[str, Any]:
        return self.http.get("/api/v1/whoami")

    def add_user(self, name: str) -> dict[str, Any]:
        return self.http.post("/api/v1/admin/users", {"name": name})

    def create_token(
        self,
        user: str,
        role: str = "user",
        queues: list[str] | None = None,
        description: str = "",
        all_users: bool = False,
    ) -> dict[str, Any]:
        """A new token (its secret is in this answer only).  A pilot token runs only ``user``'s
        jobs unless ``all_users``: then its pilots must isolate jobs (``--isolation user``)."""
        body = {
            "user": user,
            "role": role,
            "queues": queues,
            "description": description,
            "all_users": all_users,
        }
        return self.http.post("/api/v1/admin/tokens", body)

    def tokens(self) -> list[dict[str, Any]]:
        return self.http.get("/api/v1/admin/tokens")["tokens"]

    def revoke_token(self, token_id: int) -> None:
        self.http.request("DELETE", f"/api/v1/admin/tokens/{token_id}")

    def health(self) -> dict[str, Any]:
        return self.http.get("/api/v1/health")


_default: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process-wide client, created on first use from the environment or ``client.json``."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def connect(
    url: str | None = None, token: str | None = None, *, ca_bundle: str | None = None
) -> Client:
    """Set (and return) the process-wide client."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = Client(url, token, ca_bundle=ca_bundle)
        return _default
