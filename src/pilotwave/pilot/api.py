"""The pilot's side of the REST API."""

from __future__ import annotations

from typing import Any

from pilotwave.sdk.http import Http


class PilotApi:
    def __init__(self, url: str, token: str) -> None:
        # The agent loops retry around failures itself, so requests give up quickly.
        self.http = Http(url, token, retry_for_s=5.0)
        self.pilot_id = ""

    def register(self, info: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post("/api/v1/pilots", info, retry_for_s=60.0)
        self.pilot_id = resp["id"]
        return resp

    def _p(self, what: str) -> str:
        return f"/api/v1/pilots/{self.pilot_id}/{what}"

    def claim(
        self,
        max_jobs: int,
        wait_s: float,
        reports: list[dict[str, Any]],
        max_drivers: int = 0,
        prefetch: bool = True,
    ) -> dict[str, Any]:
        body = {
            "max_jobs": max_jobs,
            "max_drivers": max_drivers,
            "prefetch": prefetch,
            "wait_s": wait_s,
            "reports": reports,
        }
        return self.http.post(self._p("claim"), body, wait_s=wait_s)

    def report(self, reports: list[dict[str, Any]]) -> list[str]:
        return self.http.post(self._p("reports"), {"reports": reports})["acks"]

    def heartbeat(
        self, known: list[dict[str, Any]], last_claim_seq: int, draining: bool, wait_s: float
    ) -> dict[str, Any]:
        body = {
            "known": known,
            "last_claim_seq": last_claim_seq,
            "draining": draining,
            "wait_s": wait_s,
        }
        # Never resent: a heartbeat is a snapshot, and a stale one could make the server
        # think this pilot forgot jobs it was given meanwhile.
        return self.http.post(self._p("heartbeat"), body, wait_s=wait_s, retry_for_s=0)

    def logs(self, chunks: list[dict[str, Any]]) -> None:
        self.http.post(self._p("logs"), {"chunks": chunks})

    def exit(self) -> None:
        self.http.post(self._p("exit"), {})

    def blob(self, sha256: str) -> bytes:
        return self.http.get(f"/api/v1/blobs/{sha256}", raw=True, retry_for_s=60.0)

    def upload(self, sha256: str, data: bytes) -> None:
        self.http.put_blob(sha256, data)

    def close(self) -> None:
        self.http.close()
