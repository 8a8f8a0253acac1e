"""Live logs: read what a payload wrote since the last look, as UTF-8 text with byte positions."""

from __future__ import annotations

import codecs
import threading
from pathlib import Path

from pilotwave.protocol import LogChunk
from pilotwave.protocol.limits import LOG_CHUNK_BYTES


class LogTail:
    """The part of ``path`` from ``start`` on that belongs to one attempt.

    A lock serializes reads so the final chunk (sent with the completion report) is
    always the last one, after any chunk the log shipper sent.
    """

    def __init__(self, job_id: int, attempt: int, path: Path, start: int) -> None:
        self.job_id, self.attempt, self.path = job_id, attempt, path
        self.start = start
        self.pos = start
        self.lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tail = ""  # the last few KB, for shell results

    def read(self, final: bool = False, limit: int | None = LOG_CHUNK_BYTES) -> LogChunk | None:
        """The next chunk as a log message (``pos`` relative to the attempt's output), or ``None``."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read(-1 if limit is None else limit)
        except FileNotFoundError:
            data = b""
        if not data and not final:
            return None
        pos = self.pos - self.start
        self.pos += len(data)
        text = self._decoder.decode(data, final=final)
        if text:
            self.tail = (self.tail + text)[-4096:]
        if not text:
            return None
        return LogChunk(
            job_id=self.job_id, attempt=self.attempt, pos=pos, data=text, nbytes=len(data)
        )

    def rewind(self, chunk: LogChunk) -> None:
        """Un-read a chunk the server did not get, so the next read sends it again."""
        self.pos = self.start + chunk.pos
        self._decoder.reset()
