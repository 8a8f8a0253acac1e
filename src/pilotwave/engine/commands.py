"""The driver command log: what a workflow's driver did, in order, so a re-run can replay it.

Each command a driver issues carries a sequence number.  ``submit`` commands create jobs
(or child workflows) in the transaction that records them; ``observe`` commands record
which jobs the driver saw finish (from ``result``, ``wait``, ``as_completed``, ``done``).
A re-run driver reads the log and replays it locally; a command sent again with a
recorded sequence number returns its recorded outcome, or is refused as non-deterministic
if its fingerprint differs.  Records cut by a retry are *stale*: a stale submit whose
fingerprint matches is taken over (its jobs are not re-run), a stale observation of the
same jobs takes the new outcome; anything else ends the stale tail, whose unfinished jobs
are cancelled, and the driver goes on live.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.errors import InvalidRequest
from pilotwave.protocol import FINAL_JOB_STATES, CommandKind, CommandRecord, Reason, Recorded, Step
from pilotwave.protocol import decide as replay_rule
from pilotwave.store.schema import commands, jobs
from pilotwave.wms import jobs as wms_jobs
from pilotwave.wms.wakeups import Wakeups


def decide(workflow_id: int, cmd: CommandRecord, rec: Recorded | None) -> Step:
    """The replay rule (``protocol.decide``) applied to a command as sent."""
    return replay_rule(workflow_id, cmd.seq, cmd.kind, cmd.call, cmd.fingerprint, rec)


def read_log(conn: Connection, workflow_id: int, from_seq: int = 0) -> list[Recorded]:
    q = (
        sa.select(commands)
        .where(commands.c.workflow_id == workflow_id, commands.c.seq >= from_seq)
        .order_by(commands.c.seq)
    )
    return [
        Recorded(r.seq, r.kind, r.call, r.fingerprint, json.loads(r.outcome), bool(r.stale))
        for r in conn.execute(q)
    ]


def observed_ids(log: Sequence[Recorded]) -> list[int]:
    return [i for rec in log if rec.kind == CommandKind.OBSERVE for i in rec.outcome["ids"]]


Submitter = Callable[[Connection, CommandRecord, Wakeups], dict[str, Any]]


def apply(
    conn: Connection,
    workflow_id: int,
    owner_id: int,
    batch: Sequence[tuple[CommandRecord, Submitter | None]],
    now: float,
    wake: Wakeups,
) -> list[dict[str, Any]]:
    """Record a batch of commands in order (one transaction); returns each command's outcome."""
    seqs = [c.seq for c, _ in batch]
    if seqs != sorted(set(seqs)):
        raise InvalidRequest("commands must have increasing sequence numbers", field="commands")
    # Only the records this batch may meet: a long workflow's log is not read per command.
    log = {r.seq: r for r in read_log(conn, workflow_id, seqs[0] if seqs else 0)}
    outcomes: list[dict[str, Any]] = []
    fresh: list[dict[str, Any]] = []  # new records, inserted together
    for cmd, submitter in batch:
        rec = log.get(cmd.seq)
        step = decide(workflow_id, cmd, rec)
        if step is Step.REPLAY:
            assert rec is not None
            outcomes.append(rec.outcome)
            continue
        if step is Step.ADOPT:
            assert rec is not None
            outcome = rec.outcome if cmd.kind == CommandKind.SUBMIT else cmd.observation()
            conn.execute(
                commands.update()
                .where(commands.c.workflow_id == workflow_id, commands.c.seq == cmd.seq)
                .values(stale=False, outcome=json.dumps(outcome))
            )
            outcomes.append(outcome)
            continue
        if step is Step.TRUNCATE:
            _drop_tail(conn, workflow_id, owner_id, cmd.seq, now, wake)
            log = {s: r for s, r in log.items() if s < cmd.seq}
        if cmd.kind == CommandKind.SUBMIT:
            if submitter is None:
                raise InvalidRequest(f"command {cmd.seq}: a submit needs jobs", field="commands")
            outcome = submitter(conn, cmd, wake)
        else:
            outcome = cmd.observation()
        fresh.append(
            {
                "workflow_id": workflow_id,
                "seq": cmd.seq,
                "kind": cmd.kind,
                "call": cmd.call[:200],
                "fingerprint": cmd.fingerprint,
                "outcome": json.dumps(outcome),
                "stale": False,
                "created_at": now,
            }
        )
        outcomes.append(outcome)
    if fresh:
        conn.execute(commands.insert(), fresh)
    return outcomes


def _drop_tail(
    conn: Connection, workflow_id: int, owner_id: int, seq: int, now: float, wake: Wakeups
) -> None:
    """Delete stale records from ``seq`` on; jobs only they submitted are cancelled."""
    tail = [r for r in read_log(conn, workflow_id, seq) if r.stale and r.kind == CommandKind.SUBMIT]
    orphans = [i for r in tail for i in r.outcome.get("ids", [])]
    conn.execute(
        commands.delete().where(commands.c.workflow_id == workflow_id, commands.c.seq >= seq)
    )
    if orphans:
        live = list(
            conn.scalars(
                sa.select(jobs.c.id).where(
                    jobs.c.id.in_(orphans), jobs.c.state.not_in(list(FINAL_JOB_STATES))
                )
            )
        )
        if live:
            wms_jobs.cancel(
                conn,
                live,
                owner_id,
                now,
                wake,
                reason=Reason.OTHER_PATH,
                why="its workflow took another path on retry",
            )


def cut(conn: Connection, workflow_id: int, reset: set[int]) -> int | None:
    """Mark stale every record from the first one that observed a job in ``reset``; returns that seq."""
    first = next(
        (
            r.seq
            for r in read_log(conn, workflow_id)
            if r.kind == CommandKind.OBSERVE and reset.intersection(r.outcome["ids"])
        ),
        None,
    )
    if first is not None:
        conn.execute(
            commands.update()
            .where(commands.c.workflow_id == workflow_id, commands.c.seq >= first)
            .values(stale=True)
        )
    return first
