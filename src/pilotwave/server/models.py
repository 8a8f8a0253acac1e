"""Request envelopes at the HTTP edge.  The records inside them (job and workflow submissions,
attempt reports, claims, heartbeats, driver commands) are ``pilotwave.protocol``'s, validated
by FastAPI from the constraints in their annotations; nothing here redefines them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pilotwave.protocol import AttemptReport, CommandRecord, JobSubmission, LogChunk
from pilotwave.protocol.limits import MAX_BATCH, MAX_IDS, MAX_WATCH, check_depth
from pilotwave.protocol.wire import INT64, QUEUES, TEXT


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


JobId = Annotated[int, Field(ge=1, le=INT64)]
# Ids in paths are bounded like ids in bodies: one the database cannot hold is a 422, not a 500.
JobIdPath = Annotated[int, Path(ge=1, le=INT64, description="a job id")]
WorkflowIdPath = Annotated[int, Path(ge=1, le=INT64, description="a workflow id")]
TokenIdPath = Annotated[int, Path(ge=1, le=INT64, description="a token id")]
AttemptPath = Annotated[int, Path(ge=1, le=1 << 30, description="an attempt number")]


class SubmitIn(Strict):
    jobs: list[JobSubmission] = Field(..., min_length=1, max_length=MAX_BATCH)


class CommandsIn(Strict):
    commands: list[CommandRecord] = Field(..., min_length=1, max_length=MAX_BATCH)


class IdsIn(Strict):
    ids: list[JobId] = Field(..., min_length=1, max_length=MAX_IDS)


class WatchIn(Strict):
    ranges: list[tuple[JobId, JobId]] = Field(
        ..., min_length=1, max_length=MAX_IDS, description="inclusive [first, last] id ranges"
    )
    timeout_s: float = Field(30.0, ge=0, le=600)
    reports_after: dict[JobId, Annotated[int, Field(ge=0, le=INT64)]] | None = Field(
        None,
        max_length=MAX_BATCH,
        description="also stream the reports of these jobs newer than each job's cursor (a report id)",
    )

    @model_validator(mode="after")
    def _bounded(self) -> WatchIn:
        total = 0
        for first, last in self.ranges:
            if last < first:
                raise ValueError(f"range [{first}, {last}] is inverted")
            total += last - first + 1
        if total > MAX_WATCH:
            raise ValueError(f"{total} ids to watch; the limit is {MAX_WATCH}")
        return self

    def ids(self) -> list[int]:
        return list(dict.fromkeys(i for first, last in self.ranges for i in range(first, last + 1)))


class ProgressIn(Strict):
    progress: dict[str, Any]

    @model_validator(mode="after")
    def _shallow(self) -> ProgressIn:
        check_depth(self.progress, "progress")
        return self


class ReportValueIn(Strict):
    attempt: int = Field(..., ge=1, le=1 << 30)
    step: int = Field(..., ge=0, lt=1 << 62)
    value: float
    wait_s: float = Field(0.0, ge=0, le=300, description="wait this long for the driver's answer")


class DecisionsIn(Strict):
    answers: dict[JobId, bool] = Field(
        ..., min_length=1, max_length=MAX_IDS, description="report id -> stop"
    )


class UserIn(Strict):
    name: str = Field(..., min_length=1, max_length=64)


class TokenIn(Strict):
    user: str = Field(..., min_length=1, max_length=64)
    role: Literal["admin", "user", "pilot"] = "user"
    queues: list[Annotated[str, Field(pattern=QUEUES.anchored)]] | None = None
    description: str = Field("", max_length=200, pattern=TEXT.anchored)
    all_users: bool = Field(
        False,
        description="a pilot token whose pilots run every user's jobs (they must isolate them)",
    )


class ReportsIn(Strict):
    reports: list[AttemptReport] = Field(..., max_length=MAX_BATCH)


class LogsIn(Strict):
    chunks: list[LogChunk] = Field(..., max_length=MAX_BATCH)


class ParkableIn(Strict):
    parkable: int = Field(..., ge=0, le=MAX_BATCH)
