"""The pilot's side of the REST API: protocol records in, protocol records out."""

from __future__ import annotations

from typing import Any

from pilotwave.protocol import (
    Ack,
    AttemptReport,
    Claimed,
    ClaimRequest,
    Heartbeat,
    Kill,
    KillReason,
    Limits,
    LogChunk,
    ParkRequest,
    PilotCommands,
    PilotInfo,
    Registered,
    UnparkRequest,
)
from pilotwave.protocol.wire import ClaimAnswer
from pilotwave.sdk.http import Http


class PilotApi:
    def __init__(self, url: str, token: str, ca_bundle: str | None = None) -> None:
        # The agent retries around failures itself, so requests give up quickly.
        self.http = Http(url, token, retry_for_s=5.0, ca_bundle=ca_bundle)
        self.pilot_id = ""

    def register(self, info: PilotInfo) -> Registered:
        resp = self.http.post("/api/v1/pilots", info, retry_for_s=60.0)
        self.pilot_id = resp["id"]
        return Registered(
            id=resp["id"],
            heartbeat_interval_s=float(resp["heartbeat_interval_s"]),
            heartbeat_timeout_s=float(resp["heartbeat_timeout_s"]),
            limits=Limits(**resp.get("limits", {})),
        )

    def _p(self, what: str) -> str:
        return f"/api/v1/pilots/{self.pilot_id}/{what}"

    def claim(self, request: ClaimRequest) -> ClaimAnswer:
        resp = self.http.post(self._p("claim"), request, wait_s=request.wait_s)
        return ClaimAnswer(
            jobs=[_claimed(j) for j in resp["jobs"]],
            acks=[Ack(a) for a in resp["acks"]],
            parked=bool(resp.get("parked")),
            drivers_queued=int(resp.get("drivers_queued", 0)),
        )

    def report(self, reports: list[AttemptReport]) -> list[Ack]:
        resp = self.http.post(self._p("reports"), {"reports": reports})
        return [Ack(a) for a in resp["acks"]]

    def heartbeat(self, beat: Heartbeat) -> PilotCommands:
        # Never resent: a heartbeat is a snapshot, and a stale one could make the server
        # think this pilot forgot jobs it was given meanwhile.
        resp = self.http.post(self._p("heartbeat"), beat, wait_s=beat.wait_s, retry_for_s=0)
        kills = [
            Kill(job_id=k["job_id"], attempt=k["attempt"], reason=KillReason(k["reason"]))
            for k in resp["kill"]
        ]
        return PilotCommands(kill=kills, drain=bool(resp["drain"]))

    def parkable(self, n: int) -> None:
        self.http.request("PUT", self._p("parkable"), json_body={"parkable": n})

    def park(self, request: ParkRequest) -> bool:
        return bool(self.http.post(self._p("park"), request)["parked"])

    def unpark(self, request: UnparkRequest) -> str:
        resp = self.http.post(self._p("unpark"), request, wait_s=request.wait_s)
        return str(resp["state"])

    def logs(self, chunks: list[LogChunk]) -> None:
        self.http.post(self._p("logs"), {"chunks": chunks})

    def exit(self) -> None:
        self.http.post(self._p("exit"), {})

    def blob(self, sha256: str) -> bytes:
        return self.http.get(f"/api/v1/blobs/{sha256}", raw=True, retry_for_s=60.0)

    def upload(self, sha256: str, data: bytes) -> None:
        self.http.put_blob(sha256, data)

    def close(self) -> None:
        self.http.close()


def _claimed(j: dict[str, Any]) -> Claimed:
    return Claimed(**{**j, "gpus": tuple(j["gpus"])})
