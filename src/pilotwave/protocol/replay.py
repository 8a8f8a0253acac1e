"""The replay rule, written once: what a workflow's command means given what its log holds.

A driver issues numbered commands.  The server records each with a fingerprint of what
it did; a re-run driver replays the record and goes live at the first unrecorded step.
The driver applies this rule to answer replayed steps locally, and the server applies the
same rule to every command it is sent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pilotwave.errors import NonDeterminismError


class Step(StrEnum):
    """What to do with a command, given what is recorded at its sequence number."""

    RECORD = "record"
    """Nothing recorded: run it and record it."""
    REPLAY = "replay"
    """Recorded with the same fingerprint: return the recorded outcome."""
    ADOPT = "adopt"
    """A record cut by a retry, with the same fingerprint: a submit keeps its jobs, an observe
    takes the new outcome."""
    TRUNCATE = "truncate"
    """The cut part of the log diverges here: drop it, then run and record."""


@dataclass(frozen=True)
class Recorded:
    """A command as the log holds it."""

    seq: int
    kind: str
    call: str
    fingerprint: str
    outcome: dict[str, Any]
    stale: bool = False  # cut by a retry: it may be adopted or dropped, never replayed

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recorded:
        return cls(
            data["seq"],
            data["kind"],
            data["call"],
            data["fingerprint"],
            data["outcome"],
            bool(data.get("stale")),
        )


def fingerprint(material: Any) -> str:
    """A stable digest of what a command does (sorted JSON), to compare a replay with its record."""
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def decide(workflow_id: int, seq: int, kind: str, call: str, fp: str, rec: Recorded | None) -> Step:
    """The replay rule; ``NonDeterminismError`` when a live record differs from the command."""
    if rec is None:
        return Step.RECORD
    same = rec.fingerprint == fp and rec.kind == kind
    if not rec.stale:
        if not same:
            raise NonDeterminismError(
                f"workflow {workflow_id} is not deterministic: step {seq} was {rec.call} "
                f"(fingerprint {rec.fingerprint[:12]}) when it first ran, and is {call} "
                f"(fingerprint {fp[:12]}) on replay. A workflow must make the same calls given "
                "the same results: draw random numbers from pw.seed(), and do not branch on the "
                "clock, the environment or files that change"
            )
        return Step.REPLAY
    return Step.ADOPT if same else Step.TRUNCATE
