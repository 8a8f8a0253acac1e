"""What a workflow's driver may do while one attempt of it runs: record its commands, publish
progress.  Only the driver's current attempt may act (fencing), so a zombie driver on a pilot
presumed lost cannot record anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from pilotwave.engine import commands as log
from pilotwave.engine import workflows as engine
from pilotwave.errors import Conflict, Forbidden
from pilotwave.protocol import CommandKind, CommandRecord, JobState, Limits, WorkflowSubmission
from pilotwave.protocol.limits import check_size
from pilotwave.wms import jobs as wms_jobs
from pilotwave.wms.wakeups import Wakeups


def workflow_spec(
    sub: WorkflowSubmission, limits: Limits, field: str = "kwargs"
) -> engine.WorkflowSpec:
    """The engine's spec for a submitted workflow; ``TooLarge`` if its arguments are too large."""
    kwargs = orjson.dumps(sub.kwargs).decode()
    check_size(len(kwargs), limits.max_spec_bytes, field, "the workflow's arguments")
    return engine.WorkflowSpec(
        name=sub.name or sub.function.qualname,
        function=sub.function.as_json(),
        kwargs=kwargs,
        sandbox=sub.sandbox,
        queue=sub.queue,
        labels=tuple(sub.labels),
        priority=sub.priority,
        key=sub.key,
        seed=sub.seed,
        max_attempts=sub.max_attempts,
    )


def check_driver(conn: Connection, wid: int, owner_id: int, attempt: tuple[int, int]) -> Any:
    """The workflow's row, if ``attempt`` (job, number) is its driver's current attempt.

    A driver's current attempt is running, or parked waiting for the jobs it observes.
    """
    job_id, number = attempt
    row = engine.load(conn, wid, owner_id)  # with its driver job's state and attempt
    if row.driver_job_id != job_id:
        raise Forbidden(f"this driver token belongs to job {job_id}, not to workflow {wid}")
    live = row.driver_state in (JobState.RUNNING, JobState.PARKED)
    if not live or row.driver_attempt != number:
        raise Conflict(f"attempt {number} of workflow {wid}'s driver is no longer current")
    return row


class Batch:
    """A driver's commands checked and converted before the transaction that records them."""

    def __init__(self, cmds: Sequence[CommandRecord], limits: Limits) -> None:
        self.items: list[tuple[CommandRecord, Any]] = []
        for i, c in enumerate(cmds):
            prepared: Any = None
            if c.kind == CommandKind.SUBMIT and c.workflow is not None:
                prepared = workflow_spec(c.workflow, limits, field=f"commands[{i}].workflow.kwargs")
            elif c.kind == CommandKind.SUBMIT:
                prepared = [wms_jobs.spec_of(j, k, limits) for k, j in enumerate(c.jobs or [])]
            self.items.append((c, prepared))


def record_commands(
    conn: Connection,
    wid: int,
    owner_id: int,
    attempt: tuple[int, int],
    batch: Batch,
    now: float,
    wake: Wakeups,
) -> list[dict[str, Any]]:
    """Run and record a driver's commands in order; recorded ones replay.

    What a driver submits belongs to its workflow and is held while the workflow is
    suspended; a child workflow starts suspended if its parent is.
    """
    row = check_driver(conn, wid, owner_id, attempt)

    def submitter(prepared: Any) -> log.Submitter | None:
        if prepared is None:
            return None
        if isinstance(prepared, engine.WorkflowSpec):

            def child(c: Connection, cmd: CommandRecord, w: Wakeups) -> dict[str, Any]:
                child_id, job_id = engine.create(
                    c, row.owner_id, prepared, now, w, parent_id=row.id, held=row.suspended
                )
                return {"ids": [job_id], "workflow_id": child_id}

            return child

        def jobs(c: Connection, cmd: CommandRecord, w: Wakeups) -> dict[str, Any]:
            mine = [replace(s, workflow_id=row.id, held=row.suspended) for s in prepared]
            return {"ids": wms_jobs.submit(c, row.owner_id, mine, now, w)}

        return jobs

    items = [(cmd, submitter(prepared)) for cmd, prepared in batch.items]
    return log.apply(conn, wid, row.owner_id, items, now, wake)


def set_progress(
    conn: Connection,
    wid: int,
    owner_id: int,
    attempt: tuple[int, int],
    progress: dict[str, Any],
    limits: Limits,
) -> None:
    """Store what the driver tells its watchers, replacing what it said before."""
    text = orjson.dumps(progress).decode()
    check_size(len(text), limits.max_spec_bytes, "progress", "the progress")
    check_driver(conn, wid, owner_id, attempt)
    engine.set_progress(conn, wid, text)
