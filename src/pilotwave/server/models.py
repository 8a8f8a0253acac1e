"""Request bodies at the HTTP edge (pydantic); everything inside the server uses plain dataclasses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pilotwave.wms.matching import valid_gpu_model

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Label = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:=-]{1,64}$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionRef(Strict):
    module: str | None = Field(
        None, max_length=500, description="importable module, e.g. 'mypkg.train'"
    )
    path: str | None = Field(
        None, max_length=500, description="script path inside the sandbox, for __main__"
    )
    qualname: str = Field(..., min_length=1, max_length=500)

    @model_validator(mode="after")
    def _one_location(self) -> FunctionRef:
        if (self.module is None) == (self.path is None):
            raise ValueError("give exactly one of 'module' or 'path'")
        return self


class JobIn(Strict):
    kind: Literal["python", "shell"]
    name: str = Field("", max_length=200)
    key: str | None = Field(None, min_length=1, max_length=64, description="idempotency key")
    function: FunctionRef | None = None
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    argv: list[str] | None = Field(None, max_length=10_000)
    env: dict[str, str] = Field(default_factory=dict)
    sandbox: Sha256 | None = None
    queue: Name = "default"
    labels: list[Label] = Field(default_factory=list, max_length=64)
    cores: int = Field(1, ge=1, le=4096)
    memory_mb: int = Field(0, ge=0, le=1 << 30)
    gpus: int = Field(0, ge=0, le=256)
    gpu_model: str | None = Field(
        None, max_length=200, description="regex the GPU model must match"
    )
    gpu_memory_mb: int | None = Field(None, ge=0)
    walltime_s: float | None = Field(None, gt=0)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    max_attempts: int = Field(3, ge=1, le=100)
    isolate: bool = False
    decisions: bool = Field(
        False, description="pw.report() in the job waits for its workflow driver's answer"
    )

    @field_validator("gpu_model")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None and not valid_gpu_model(v):
            raise ValueError("not a valid regular expression")
        return v

    @model_validator(mode="after")
    def _payload(self) -> JobIn:
        if self.kind == "python":
            if self.function is None:
                raise ValueError("a python job needs 'function'")
            if self.argv is not None:
                raise ValueError("a python job takes 'args'/'kwargs', not 'argv'")
        else:
            if not self.argv:
                raise ValueError("a shell job needs a non-empty 'argv'")
            if self.function is not None or self.args or self.kwargs:
                raise ValueError("a shell job takes 'argv', not 'function'/'args'/'kwargs'")
        return self

    def payload(self) -> dict[str, Any]:
        """The part of the spec only the pilot reads."""
        if self.kind == "python":
            assert self.function is not None
            out: dict[str, Any] = {
                "function": self.function.model_dump(),
                "args": self.args,
                "kwargs": self.kwargs,
            }
        else:
            out = {"argv": self.argv, "env": self.env}
        if self.decisions:
            out["decisions"] = True
        return out


class WorkflowIn(Strict):
    name: str = Field("", max_length=200)
    key: str | None = Field(None, min_length=1, max_length=64, description="idempotency key")
    function: FunctionRef
    kwargs: dict[str, Any] = Field(default_factory=dict)
    sandbox: Sha256 | None = None
    queue: Name = "default"
    labels: list[Label] = Field(default_factory=list, max_length=64)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    seed: int | None = Field(None, ge=0, lt=1 << 62)
    max_attempts: int = Field(10, ge=1, le=100, description="driver attempts (lost pilots)")


ReportSeen = tuple[int, int, int, int, float]
"""A report a driver observed: ``[id, job_id, attempt, step, value]``."""


class CommandIn(Strict):
    seq: int = Field(..., ge=0)
    kind: Literal["submit", "observe"]
    call: str = Field(..., min_length=1, max_length=200)
    fingerprint: str = Field(..., pattern=r"^[0-9a-f]{16,64}$")
    jobs: list[JobIn] | None = Field(None, max_length=10_000)
    workflow: WorkflowIn | None = None
    observed: list[int] = Field(default_factory=list, max_length=100_000)
    reports: list[ReportSeen] = Field(
        default_factory=list, max_length=100_000, description="observe: reports seen, in order"
    )
    at: float | None = Field(None, description="observe: the driver's clock reading (pw.now())")

    @model_validator(mode="after")
    def _shape(self) -> CommandIn:
        if self.kind == "submit" and (self.jobs is None) == (self.workflow is None):
            raise ValueError("a submit command carries either 'jobs' or 'workflow'")
        if self.kind == "observe" and (self.jobs is not None or self.workflow is not None):
            raise ValueError("an observe command carries 'observed' ids and 'reports' only")
        if self.kind == "submit" and self.reports:
            raise ValueError("a submit command carries no 'reports'")
        return self


class CommandsIn(Strict):
    commands: list[CommandIn] = Field(..., min_length=1, max_length=10_000)


class SubmitIn(Strict):
    jobs: list[JobIn] = Field(..., min_length=1, max_length=10_000)


class IdsIn(Strict):
    ids: list[int] = Field(..., min_length=1, max_length=100_000)


MAX_WATCH = 1_000_000


class WatchIn(Strict):
    ranges: list[tuple[int, int]] = Field(
        ..., min_length=1, max_length=100_000, description="inclusive [first, last] id ranges"
    )
    timeout_s: float = Field(30.0, ge=0, le=600)
    reports_after: dict[int, int] | None = Field(
        None,
        max_length=10_000,
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


class ReportValueIn(Strict):
    attempt: int = Field(..., ge=1)
    step: int = Field(..., ge=0, lt=1 << 62)
    value: float
    wait_s: float = Field(0.0, ge=0, le=300, description="wait this long for the driver's answer")


class DecisionsIn(Strict):
    answers: dict[int, bool] = Field(
        ..., min_length=1, max_length=100_000, description="report id -> stop"
    )


class UserIn(Strict):
    name: str = Field(..., min_length=1, max_length=64)


class TokenIn(Strict):
    user: str = Field(..., min_length=1, max_length=64)
    role: Literal["admin", "user", "pilot"] = "user"
    queues: list[Annotated[str, Field(pattern=r"^(\*|[A-Za-z0-9_.-]{1,64})$")]] | None = None
    description: str = Field("", max_length=200)


class GpuIn(Strict):
    index: int = Field(..., ge=0)
    model: str = Field("", max_length=200)
    memory_mb: int = Field(0, ge=0)


class PilotIn(Strict):
    name: str = Field(..., min_length=1, max_length=200)
    hostname: str = Field(..., min_length=1, max_length=200)
    queues: list[Annotated[str, Field(pattern=r"^(\*|[A-Za-z0-9_.-]{1,64})$")]] = Field(
        ..., min_length=1
    )
    labels: list[Label] = Field(default_factory=list)
    cores: int = Field(..., ge=1)
    memory_mb: int = Field(..., ge=0)
    gpus: list[GpuIn] = Field(default_factory=list)
    slots: int = Field(..., ge=1, le=10_000)
    prefetch: int = Field(0, ge=0, le=10_000, description="CPU jobs held ahead of free slots")
    driver_slots: int = Field(0, ge=0, le=10_000, description="slots for workflow drivers")
    version: str = Field("", max_length=32)


class LogIn(Strict):
    job_id: int
    attempt: int = Field(..., ge=1)
    pos: int = Field(..., ge=0)
    data: str
    nbytes: int = Field(..., ge=0)


class ArtifactIn(Strict):
    name: str = Field(..., min_length=1, max_length=500)
    sha256: Sha256
    size: int = Field(..., ge=0)


class ReportIn(Strict):
    job_id: int
    attempt: int = Field(..., ge=1)
    outcome: Literal["succeeded", "failed", "killed"]
    result: str | None = Field(None, description="JSON text of the result")
    error: str | None = None
    exit_code: int | None = None
    retryable: bool = True
    cpu_s: float | None = None
    max_rss_mb: float | None = None
    log: LogIn | None = None
    artifacts: list[ArtifactIn] = Field(default_factory=list)


class ReportsIn(Strict):
    reports: list[ReportIn] = Field(..., max_length=10_000)


class ClaimIn(Strict):
    max_jobs: int = Field(1, ge=0, le=10_000)
    max_drivers: int = Field(0, ge=0, le=10_000)
    prefetch: bool = Field(True, description="may hold jobs beyond the pilot's free slots")
    wait_s: float = Field(0.0, ge=0, le=300)
    reports: list[ReportIn] = Field(default_factory=list, max_length=10_000)


class KnownIn(Strict):
    job_id: int
    attempt: int
    killing: bool = False


class HeartbeatIn(Strict):
    known: list[KnownIn] = Field(default_factory=list)
    last_claim_seq: int = Field(0, ge=0)
    draining: bool = False
    wait_s: float = Field(0.0, ge=0, le=300)


class LogsIn(Strict):
    chunks: list[LogIn] = Field(..., max_length=10_000)
