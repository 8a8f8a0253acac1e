"""The records that cross the wire, defined once: the SDK and the pilot build them, the server
validates them (FastAPI reads the constraints in their annotations), and both ends share the
markers that travel inside JSON arguments.

The records are frozen dataclasses with plain types: no pydantic here, so a pilot's worker
imports them cheaply.  Constraints use ``annotated_types`` (``Ge``, ``MaxLen``...) and two
markers of our own, ``Pattern``, ``Glob`` and ``ArtifactName``, which pydantic applies on the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal, TypedDict

from annotated_types import Ge, Gt, Le, MaxLen, MinLen

from pilotwave.protocol.globs import check_glob
from pilotwave.protocol.limits import MAX_BATCH, MAX_IDS, Limits, check_depth
from pilotwave.protocol.states import Isolation, KillReason, Reason

FUTURE = "$pw_future"
"""``{"$pw_future": id}`` in a job's arguments: the result of job ``id``, filled in by the server."""
FUNCTION = "$pw_function"
"""``{"$pw_function": {...}}`` in a job's arguments: a ``@pw.job``/``@pw.workflow`` function."""

_FUTURE_RE = re.compile(r'\{"\$pw_future":(\d+)\}')
"""A placeholder in compact JSON text (inside JSON strings quotes are escaped, so it cannot match)."""


def id_ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, de-duplicated ids as inclusive ``(first, last)`` runs: ``[1,2,3,7] -> [(1,3),(7,7)]``."""
    ranges: list[list[int]] = []
    for i in sorted(set(ids)):
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return [(a, b) for a, b in ranges]


def future_ids(spec: str) -> list[int]:
    """The jobs compact JSON text refers to through placeholders, in first-seen order."""
    if FUTURE not in spec:
        return []
    return list(dict.fromkeys(int(m) for m in _FUTURE_RE.findall(spec)))


def fill_futures(spec: str, results: dict[int, str]) -> str:
    """Replace the placeholders of jobs in ``results`` by their results (JSON text)."""
    if FUTURE not in spec:
        return spec

    def repl(m: re.Match[str]) -> str:
        found = results.get(int(m.group(1)))
        return m.group(0) if found is None else found

    return _FUTURE_RE.sub(repl, spec)


# -- constraints -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """A string constraint: the whole value matches ``regex`` (also shown in the OpenAPI schema)."""

    regex: str

    @property
    def anchored(self) -> str:
        return f"^(?:{self.regex})$"

    def matches(self, value: str) -> bool:
        return re.fullmatch(self.regex, value) is not None

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        schema = handler(source)
        schema["pattern"] = self.anchored
        return schema


def check_artifact_name(name: str) -> str:
    """``name`` if it is a safe relative path (``a/b.txt``), else ``ValueError``: no absolute
    path, no ``.``/``..`` or empty parts, no backslash or NUL, at most 500 characters."""
    if not 1 <= len(name) <= 500:
        raise ValueError("an artifact name has 1 to 500 characters")
    if "\x00" in name or "\\" in name:
        raise ValueError("an artifact name has no NUL or backslash")
    if name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        raise ValueError(
            f"{name!r} is not a relative path inside the outputs (no leading /, '.', '..' or '//')"
        )
    return name


@dataclass(frozen=True)
class ArtifactName:
    """A string constraint: a file name under a job's outputs (``check_artifact_name``)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(check_artifact_name, handler(source))


@dataclass(frozen=True)
class Glob:
    """A string constraint: a GPU model glob (``protocol.globs``), checked when submitted."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(check_glob, handler(source))


INT64 = 2**63 - 1
INT32 = 2**31 - 1  # an INTEGER column on PostgreSQL
NAME = Pattern(r"[A-Za-z0-9_.-]{1,64}")
QUEUES = Pattern(r"\*|[A-Za-z0-9_.-]{1,64}")
LABEL = Pattern(r"[A-Za-z0-9_.:=-]{1,64}")
SHA256 = Pattern(r"[0-9a-f]{64}")
TEXT = Pattern(r"[^\x00]*")
ENV_NAME = Pattern(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
"""Free text: anything but NUL, which PostgreSQL cannot store."""

Id = Annotated[int, Ge(1), Le(INT64)]
Count = Annotated[int, Ge(0), Le(INT64)]
Name = Annotated[str, NAME]
"""A queue name: letters, digits and ``_.-``, 1 to 64 characters."""
QueueName = Annotated[str, QUEUES]
"""A queue a pilot or token serves: a name, or ``*`` for every queue."""
Label = Annotated[str, LABEL]
Sha256 = Annotated[str, SHA256]
Megabytes = Annotated[int, Ge(0), Le(INT32)]
Fingerprint = Annotated[str, Pattern(r"[0-9a-f]{16,64}")]

_FORBID = {"extra": "forbid"}


# -- submissions -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a job (or a workflow's driver) runs and how it ranks."""

    queue: Name = "default"
    labels: Annotated[tuple[Label, ...], MaxLen(64)] = ()
    priority: Annotated[int, Ge(-1_000_000), Le(1_000_000)] = 0
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class JobOptions(Placement):
    """A job's resources and retry budget: every option ``@pw.job`` takes that the server reads."""

    cores: Annotated[int, Ge(1), Le(4096)] = 1
    memory_mb: Megabytes = 0
    gpus: Annotated[int, Ge(0), Le(256)] = 0
    gpu_model: Annotated[str, Glob()] | None = None
    """Globs the GPU's model name must match, e.g. ``"A100|H100"`` (``protocol.globs``)."""
    gpu_memory_mb: Megabytes | None = None
    walltime_s: Annotated[float, Gt(0), Le(1e9)] | None = None
    max_attempts: Annotated[int, Ge(1), Le(100)] = 3
    isolate: bool = False
    """Run in a fresh process rather than a warm worker."""

    def options(self) -> JobOptions:
        """Just the options (a subclass's own fields dropped)."""
        return JobOptions(**{k: getattr(self, k) for k in JOB_OPTION_FIELDS})


PLACEMENT_FIELDS: tuple[str, ...] = tuple(Placement.__dataclass_fields__)
JOB_OPTION_FIELDS: tuple[str, ...] = tuple(JobOptions.__dataclass_fields__)


def options_json(options: Placement, names: tuple[str, ...]) -> dict[str, Any]:
    """The named option fields as JSON (tuples as lists), for a request body."""
    out = {k: getattr(options, k) for k in names}
    out["labels"] = list(options.labels)
    return out


@dataclass(frozen=True, kw_only=True)
class FunctionRef:
    """The function a pilot imports: ``module`` (importable) or ``path`` (a script in the sandbox)."""

    qualname: Annotated[str, MinLen(1), MaxLen(500), TEXT]
    module: Annotated[str, MaxLen(500), TEXT] | None = None
    path: Annotated[str, MaxLen(500), TEXT] | None = None
    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        if (self.module is None) == (self.path is None):
            raise ValueError("give exactly one of 'module' or 'path'")

    def as_json(self) -> dict[str, Any]:
        return {"module": self.module, "path": self.path, "qualname": self.qualname}

    def __str__(self) -> str:
        return f"{self.module or self.path}:{self.qualname}"


@dataclass(frozen=True, kw_only=True)
class JobSubmission(JobOptions):
    """One job as a client submits it."""

    kind: Literal["python", "shell"]
    name: Annotated[str, MaxLen(200), TEXT] = ""
    key: Annotated[str, MinLen(1), MaxLen(64), TEXT] | None = None
    """An idempotency key: re-sending it returns the same job."""
    function: FunctionRef | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    argv: Annotated[list[Annotated[str, TEXT]], MaxLen(MAX_BATCH)] | None = None
    env: Annotated[dict[Annotated[str, ENV_NAME], Annotated[str, TEXT]], MaxLen(1000)] = field(
        default_factory=dict
    )
    """Variables added to a shell job's environment (the pilot's own ``PILOTWAVE_*`` win)."""
    sandbox: Sha256 | None = None
    decisions: bool = False
    """``pw.report()`` in the job waits for its workflow driver's answer."""

    def __post_init__(self) -> None:
        check_depth(self.args, "args")
        check_depth(self.kwargs, "kwargs")
        if self.kind == "python":
            if self.function is None:
                raise ValueError("a python job needs 'function'")
            if self.argv is not None:
                raise ValueError("a python job takes 'args'/'kwargs', not 'argv'")
        else:
            if not self.argv or not self.argv[0]:
                raise ValueError(
                    "a shell job needs a non-empty 'argv' whose first item names a program"
                )
            if self.function is not None or self.args or self.kwargs:
                raise ValueError("a shell job takes 'argv', not 'function'/'args'/'kwargs'")

    def payload(self) -> dict[str, Any]:
        """The part only the pilot reads (stored as the job's ``spec``)."""
        if self.kind == "python":
            assert self.function is not None
            out: dict[str, Any] = {
                "function": self.function.as_json(),
                "args": self.args,
                "kwargs": self.kwargs,
            }
        else:
            out = {"argv": self.argv, "env": self.env}
        if self.decisions:
            out["decisions"] = True
        return out

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.function is not None:
            return self.function.qualname
        return (self.argv or [""])[0]


@dataclass(frozen=True, kw_only=True)
class WorkflowSubmission(Placement):
    """A workflow as a client (or a parent workflow's driver) starts it."""

    function: FunctionRef
    name: Annotated[str, MaxLen(200), TEXT] = ""
    key: Annotated[str, MinLen(1), MaxLen(64), TEXT] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    sandbox: Sha256 | None = None
    seed: Annotated[int, Ge(0), Le((1 << 62) - 1)] | None = None
    max_attempts: Annotated[int, Ge(1), Le(100)] = 10
    """Driver attempts (lost pilots, server trouble): its code's own errors are not retried."""

    def __post_init__(self) -> None:
        check_depth(self.kwargs, "kwargs")


# -- the driver's command log ----------------------------------------------------------


class CommandKind(StrEnum):
    SUBMIT = "submit"
    """Jobs or a child workflow were submitted; the outcome holds their ids."""
    OBSERVE = "observe"
    """The driver saw these jobs final (in this order), and these intermediate reports."""


ReportSeen = tuple[int, int, int, int, float]
"""A report a driver observed: ``[id, job_id, attempt, step, value]``."""


@dataclass(frozen=True, kw_only=True)
class CommandRecord:
    """One step of a workflow's driver, as it sends it to be recorded (or replayed)."""

    seq: Annotated[int, Ge(0), Le(INT64)]
    kind: CommandKind
    call: Annotated[str, MinLen(1), MaxLen(200), TEXT]
    fingerprint: Fingerprint
    jobs: Annotated[list[JobSubmission], MaxLen(MAX_BATCH)] | None = None
    workflow: WorkflowSubmission | None = None
    observed: Annotated[list[Id], MaxLen(MAX_IDS)] = field(default_factory=list)
    reports: Annotated[list[ReportSeen], MaxLen(MAX_IDS)] = field(default_factory=list)
    at: float | None = None
    """An observation of the clock (``pw.now()``)."""
    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        if self.kind == CommandKind.SUBMIT:
            if (self.jobs is None) == (self.workflow is None):
                raise ValueError("a submit command carries either 'jobs' or 'workflow'")
            if self.reports or self.observed:
                raise ValueError("a submit command carries no 'observed' or 'reports'")
        elif self.jobs is not None or self.workflow is not None:
            raise ValueError("an observe command carries 'observed' ids and 'reports' only")

    def observation(self) -> dict[str, Any]:
        """An observe command's outcome, as recorded."""
        out: dict[str, Any] = {"ids": list(self.observed)}
        if self.reports:
            out["reports"] = [list(r) for r in self.reports]
        if self.at is not None:
            out["at"] = self.at
        return out


# -- pilots ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Gpu:
    index: Annotated[int, Ge(0), Le(1 << 16)]
    model: Annotated[str, MaxLen(200), TEXT] = ""
    memory_mb: Megabytes = 0
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class PilotInfo:
    """What a pilot offers, sent when it registers."""

    name: Annotated[str, MinLen(1), MaxLen(200), TEXT]
    hostname: Annotated[str, MinLen(1), MaxLen(200), TEXT]
    queues: Annotated[tuple[QueueName, ...], MinLen(1), MaxLen(256)]
    cores: Annotated[int, Ge(1), Le(1 << 20)]
    memory_mb: Megabytes
    slots: Annotated[int, Ge(1), Le(MAX_BATCH)]
    labels: Annotated[tuple[Label, ...], MaxLen(64)] = ()
    gpus: Annotated[tuple[Gpu, ...], MaxLen(1024)] = ()
    prefetch: Annotated[int, Ge(0), Le(MAX_BATCH)] = 0
    """CPU jobs held ahead of free slots."""
    driver_slots: Annotated[int, Ge(0), Le(MAX_BATCH)] = 0
    """Workflow drivers that may run a step at once (parked ones hold none)."""
    version: Annotated[str, MaxLen(32), TEXT] = ""
    isolation: Isolation = Isolation.NONE
    """How it keeps jobs apart: a pilot running every user's jobs may not use ``none``."""
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class Registered:
    """The server's answer to a registration."""

    id: str
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    limits: Limits


@dataclass(frozen=True, kw_only=True)
class Claimed:
    """A job handed to a pilot, with everything the pilot needs to run it."""

    id: int
    attempt: int
    claim_seq: int
    name: str
    kind: str
    spec: str  # JSON text: function + args, or argv + env
    sandbox: str | None
    cores: int
    memory_mb: int
    gpus: tuple[int, ...]  # the GPU indices assigned on the pilot
    walltime_s: float | None
    isolate: bool
    waited_s: float  # since it was submitted
    token: str = ""  # this attempt's own credentials
    owner: int = (
        0  # the submitting user's id: warm processes and caches are never shared across owners
    )

    @property
    def key(self) -> tuple[int, int]:
        return (self.id, self.attempt)

    @property
    def is_driver(self) -> bool:
        return self.kind == "driver"


@dataclass(frozen=True, kw_only=True)
class LogChunk:
    """Output of a running attempt: ``data`` starts at byte ``pos`` of the attempt's output."""

    job_id: Id
    attempt: Annotated[int, Ge(1), Le(1 << 30)]
    pos: Count
    data: str
    nbytes: Count
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class ArtifactRef:
    """A file a job wrote to ``pw.outputs()``, uploaded as a blob."""

    name: Annotated[str, ArtifactName()]
    sha256: Sha256
    size: Count
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class AttemptReport:
    """A pilot's account of how an attempt ended."""

    job_id: Id
    attempt: Annotated[int, Ge(1), Le(1 << 30)]
    outcome: Literal["succeeded", "failed", "killed"]
    result: str | None = None
    """JSON text of the result, for a succeeded attempt."""
    error: str | None = None
    exit_code: Annotated[int, Ge(-(1 << 31)), Le(INT32)] | None = None
    retryable: bool = True
    reason: Literal[Reason.PRUNED] | None = None
    """``pruned``: the job stopped early on its workflow's decision (it succeeded)."""
    cpu_s: float | None = None
    max_rss_mb: float | None = None
    log: LogChunk | None = None
    artifacts: Annotated[tuple[ArtifactRef, ...], MaxLen(MAX_BATCH)] = ()
    __pydantic_config__ = _FORBID


class Ack(StrEnum):
    """The server's answer to one attempt report."""

    ACCEPTED = "accepted"
    """Recorded now."""
    DUPLICATE = "duplicate"
    """Already recorded with the same outcome: nothing changed."""
    STALE = "stale"
    """Not the job's running attempt any more (409)."""
    UNKNOWN = "unknown"
    """No such attempt on this pilot (404)."""


@dataclass(frozen=True, kw_only=True)
class ClaimRequest:
    """Report finished attempts, then take up to ``max_jobs`` jobs and ``max_drivers`` drivers."""

    max_jobs: Annotated[int, Ge(0), Le(MAX_BATCH)] = 1
    max_drivers: Annotated[int, Ge(0), Le(MAX_BATCH)] = 0
    prefetch: bool = True
    """May hold jobs beyond the pilot's free slots."""
    wait_s: Annotated[float, Ge(0), Le(300)] = 0.0
    reports: Annotated[list[AttemptReport], MaxLen(MAX_BATCH)] = field(default_factory=list)
    last_claim_seq: Count | None = None
    """The last claim whose answer the pilot saw: jobs of later claims never reached it."""
    parkable: Annotated[int, Ge(0), Le(MAX_BATCH)] = 0
    """Drivers here that wait for jobs and could park: ask how many queued drivers want a slot."""
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class ClaimAnswer:
    jobs: list[Claimed]
    acks: list[Ack]
    parked: bool = False
    """Nothing was claimable when the claim came (the next will likely wait too)."""
    drivers_queued: int = 0
    """Queued drivers this pilot could run if it parked some of its waiting ones."""


@dataclass(frozen=True, kw_only=True)
class Wait:
    """What a workflow's driver waits for: jobs to end (``any`` or ``all`` of them), or a new
    report of one of them (``reports``: job -> the last report seen), or the time to pass."""

    ids: Annotated[list[tuple[Id, Id]], MaxLen(MAX_IDS)]
    """Inclusive ``[first, last]`` id ranges."""
    mode: Literal["any", "all"] = "all"
    reports: Annotated[dict[int, Count], MaxLen(MAX_BATCH)] | None = None
    timeout_s: Annotated[float, Ge(0)] | None = None
    __pydantic_config__ = _FORBID

    def covers(self, job_id: int) -> bool:
        return any(first <= job_id <= last for first, last in self.ids)

    def count(self) -> int:
        return sum(last - first + 1 for first, last in self.ids)


class DriverNote(StrEnum):
    """What a workflow driver's process tells its pilot over their pipe (``{"note": ...}``)."""

    WAITS = "waits"
    """It blocks until what it observes happens (the message carries its ``Wait``)."""
    ASKS = "asks"
    """What it waited for happened: may it go on?  Answered ``{"go": true}`` once it holds a
    driver slot again (at once, unless the pilot parked it meanwhile)."""


def wait_json(wait: Wait) -> dict[str, Any]:
    return {
        "ids": [list(r) for r in wait.ids],
        "mode": wait.mode,
        "reports": {str(k): v for k, v in wait.reports.items()} if wait.reports else None,
        "timeout_s": wait.timeout_s,
    }


def wait_of(data: dict[str, Any]) -> Wait:
    reports = data.get("reports")
    return Wait(
        ids=[(int(a), int(b)) for a, b in data["ids"]],
        mode=data.get("mode", "all"),
        reports={int(k): int(v) for k, v in reports.items()} if reports else None,
        timeout_s=data.get("timeout_s"),
    )


@dataclass(frozen=True, kw_only=True)
class ParkRequest:
    """A pilot parks one of its drivers, which waits for ``wait``: it gives its slot up."""

    job_id: Id
    attempt: Annotated[int, Ge(1), Le(1 << 30)]
    wait: Wait
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class UnparkRequest:
    """A pilot's parked driver wants to go on: it runs once a driver slot is free there."""

    job_id: Id
    attempt: Annotated[int, Ge(1), Le(1 << 30)]
    wait_s: Annotated[float, Ge(0), Le(300)] = 30.0
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class Known:
    """An attempt as the pilot holds it, in a heartbeat."""

    job_id: Id
    attempt: Annotated[int, Ge(1), Le(1 << 30)]
    killing: bool = False
    """The pilot is already stopping it."""
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class Heartbeat:
    known: Annotated[list[Known], MaxLen(MAX_BATCH)] = field(default_factory=list)
    last_claim_seq: Count = 0
    draining: bool = False
    wait_s: Annotated[float, Ge(0), Le(300)] = 0.0
    __pydantic_config__ = _FORBID


@dataclass(frozen=True, kw_only=True)
class Kill:
    job_id: int
    attempt: int
    reason: KillReason


@dataclass(frozen=True, kw_only=True)
class PilotCommands:
    """A heartbeat's answer: attempts to stop, and whether to drain."""

    kill: list[Kill] = field(default_factory=list)
    drain: bool = False

    def __bool__(self) -> bool:
        return bool(self.kill or self.drain)


# -- what clients read -----------------------------------------------------------------


class Final(TypedDict):
    """A finished job as clients see it (watch streams, command logs, ``Future``)."""

    state: str
    result: Any
    error: str | None
    reason: str | None
