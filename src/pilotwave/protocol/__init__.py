"""The wire protocol between SDK, pilot and server, defined once.

- ``states``: job, attempt, pilot and workflow states, their final sets, and the reasons a
  job ended as it did (cancelled with its workflow, pruned, ...).
- ``wire``: the records that travel (job and workflow submissions, claims, attempt reports,
  heartbeats, driver commands) and the ``$pw_*`` markers inside JSON arguments.
- ``replay``: the rule that decides what a workflow's command means given its log.
- ``limits``: every size limit.

The SDK, the pilot and the server import these; nothing else defines them.
"""

from pilotwave.protocol.limits import Limits
from pilotwave.protocol.replay import Recorded, Step, decide, fingerprint
from pilotwave.protocol.states import (
    FINAL_ATTEMPT_STATES,
    FINAL_JOB_STATES,
    FINAL_WORKFLOW_STATES,
    AttemptState,
    Isolation,
    JobKind,
    JobState,
    KillReason,
    PilotState,
    Reason,
    WorkflowState,
    workflow_state,
)
from pilotwave.protocol.wire import (
    FUNCTION,
    FUTURE,
    Ack,
    ArtifactRef,
    AttemptReport,
    ClaimAnswer,
    Claimed,
    ClaimRequest,
    CommandKind,
    CommandRecord,
    Final,
    FunctionRef,
    Gpu,
    Heartbeat,
    JobOptions,
    JobSubmission,
    Kill,
    Known,
    LogChunk,
    ParkRequest,
    PilotCommands,
    PilotInfo,
    Placement,
    Registered,
    UnparkRequest,
    Wait,
    WorkflowSubmission,
)

__all__ = [
    "FINAL_ATTEMPT_STATES",
    "FINAL_JOB_STATES",
    "FINAL_WORKFLOW_STATES",
    "FUNCTION",
    "FUTURE",
    "Ack",
    "ArtifactRef",
    "AttemptReport",
    "AttemptState",
    "ClaimAnswer",
    "ClaimRequest",
    "Claimed",
    "CommandKind",
    "CommandRecord",
    "Final",
    "FunctionRef",
    "Gpu",
    "Heartbeat",
    "Isolation",
    "JobKind",
    "JobOptions",
    "JobState",
    "JobSubmission",
    "Kill",
    "KillReason",
    "Known",
    "Limits",
    "LogChunk",
    "ParkRequest",
    "PilotCommands",
    "PilotInfo",
    "PilotState",
    "Placement",
    "Reason",
    "Recorded",
    "Registered",
    "Step",
    "UnparkRequest",
    "Wait",
    "WorkflowState",
    "WorkflowSubmission",
    "decide",
    "fingerprint",
    "workflow_state",
]
