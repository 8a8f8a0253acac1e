"""Every size limit in one place: what the server enforces and tells its pilots at registration."""

from __future__ import annotations

from dataclasses import dataclass

from pilotwave.errors import TooLarge

MiB = 1024 * 1024
GiB = 1024 * MiB

MAX_BATCH = 10_000
"""Jobs in one submission, commands in one record, reports or log chunks in one request."""
MAX_IDS = 100_000
"""Ids in one cancel, observation or answer list."""
MAX_WATCH = 1_000_000
"""Jobs one watch (or one driver's wait) may cover."""
LOG_CHUNK_BYTES = 256 * 1024
"""The most output a pilot ships in one log chunk."""
MAX_DEPTH = 128
"""How deeply JSON arguments, results and progress objects may nest."""
ERROR_KEEP_BYTES = 32 * 1024
"""An error text over twice this keeps its head and tail, this much of each."""


@dataclass(frozen=True)
class Limits:
    """Sizes the server accepts; configurable per server, sent to pilots when they register."""

    max_request_bytes: int = 32 * MiB
    """A request body (uploads of blobs excepted)."""
    max_blob_bytes: int = 256 * MiB
    """One uploaded blob: a sandbox archive or an artifact."""
    max_result_bytes: int = 1 * MiB
    """A job's JSON result: larger outputs go to ``pw.outputs()``."""
    max_spec_bytes: int = 1 * MiB
    """A job's or workflow's JSON arguments, and a workflow's progress object."""
    max_log_bytes: int = 16 * MiB
    """Output kept per attempt; the rest is cut with a note."""

    def result_too_large(self, nbytes: int) -> str | None:
        """The error for a result of ``nbytes``, or ``None`` if it fits (one message everywhere)."""
        if nbytes <= self.max_result_bytes:
            return None
        return (
            f"ResultError: the result is {nbytes} bytes, over the limit of "
            f"{self.max_result_bytes}; write large outputs to pw.outputs() and return their names"
        )


def check_depth(value: object, field: str, limit: int = MAX_DEPTH) -> None:
    """``ValueError`` naming ``field`` when lists and dicts in ``value`` nest deeper than ``limit``."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            item
            for v in level
            if isinstance(v, (list, dict))
            for item in (v.values() if isinstance(v, dict) else v)
        ]
        if not level:
            return
    raise ValueError(f"{field} nest deeper than {limit} levels")


def clip_error(text: str | None) -> str | None:
    """An error text short enough to store (its head and tail when it is very long; no NULs,
    which PostgreSQL cannot hold)."""
    if text is not None and "\x00" in text:
        text = text.replace("\x00", "\\0")
    if text is None or len(text) <= 2 * ERROR_KEEP_BYTES:
        return text
    return text[:ERROR_KEEP_BYTES] + "\n[...]\n" + text[-ERROR_KEEP_BYTES:]


def check_size(nbytes: int, limit: int, field: str, what: str) -> None:
    """``TooLarge`` naming ``field`` when ``what`` takes more than ``limit`` bytes."""
    if nbytes > limit:
        raise TooLarge(
            f"{field}: {what} take {nbytes} bytes, the limit is {limit}; "
            "pass large inputs as files in the sandbox or as artifacts",
            field=field,
        )
