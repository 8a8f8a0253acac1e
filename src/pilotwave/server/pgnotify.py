"""Wake-ups across server processes on one PostgreSQL: ``NOTIFY`` in the transaction, ``LISTEN`` in each server.

A transaction's wake-ups travel with it: ``pg_notify`` is delivered at commit (never for
a rollback), so a server woken by another one always finds the new state.  Each server
also publishes its own wake-ups directly and ignores the echo of its own notifications.
If the listening connection drops, the server reconnects and wakes every waiter once so
that nothing missed meanwhile stays asleep.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pilotwave.server.notify import Notifier
from pilotwave.wms.wakeups import Wakeups

log = logging.getLogger(__name__)

CHANNEL = "pilotwave"
_MAX_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes
_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")


class PgBridge:
    def __init__(self, url: str, notifier: Notifier) -> None:
        self.url = (
            sa.engine.make_url(url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self.notifier = notifier
        self.origin = uuid.uuid4().hex[:12]
        self._task: asyncio.Task[None] | None = None

    def emit(self, conn: Connection, wake: Wakeups) -> None:
        """Queue ``wake`` as notifications of the current transaction (sent at commit)."""
        items: list[Any] = sorted(wake.now) + [[when, topic] for when, topic in wake.later]
        chunk: list[Any] = []
        size = 0
        for item in items:
            n = len(json.dumps(item)) + 1
            if chunk and size + n > _MAX_PAYLOAD:
                self._send(conn, chunk)
                chunk, size = [], 0
            chunk.append(item)
            size += n
        if chunk:
            self._send(conn, chunk)

    def _send(self, conn: Connection, items: list[Any]) -> None:
        payload = json.dumps({"o": self.origin, "t": items}, separators=(",", ":"))
        conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _listen_forever(self) -> None:
        import psycopg

        delay = 0.1
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not first:  # we may have missed notifications while away
                        self.notifier.publish_all()
                    first, delay = False, 0.1
                    async for note in conn.notifies():
                        self._deliver(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped connection or a database restart
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _deliver(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if message.get("o") == self.origin:
            return  # our own wake-ups were published when our transaction committed
        wake = Wakeups()
        for item in message.get("t", []):
            if isinstance(item, str):
                wake.add(item)
            else:
                wake.at(float(item[0]), str(item[1]))
        self.notifier.apply(wake)
