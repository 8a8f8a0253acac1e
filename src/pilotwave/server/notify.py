"""In-process wake-ups for long-polls: waiters subscribe to topics, committed changes publish them.

Subscribing happens *before* the waiter checks the database, so a change committed
between the check and the wait still wakes it (no lost wake-ups, no polling).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Set
from contextlib import contextmanager
from typing import Any, TypeVar

from pilotwave.wms.wakeups import Wakeups, job_topic, topic_job

T = TypeVar("T")


class Subscription:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.fired: set[str] = set()
        self.topics: list[str] = []
        self.jobs: Set[int] = frozenset()  # job ids whose job topics wake it too

    def take(self) -> set[str]:
        """The topics published since the last ``take``."""
        fired, self.fired = self.fired, set()
        return fired

    async def wait(self, timeout: float, gone: asyncio.Future[Any] | None = None) -> bool:
        """Wait for a publish; ``False`` on timeout or when ``gone`` (the client left) completes first."""
        woken = asyncio.ensure_future(self.event.wait())
        waits: set[asyncio.Future[Any]] = {woken} if gone is None else {woken, gone}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        if self.event.is_set():
            self.event.clear()
            return True
        return False


class Notifier:
    """Topic -> subscribers, living on the server's event loop."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._job_watchers: set[Subscription] = set()  # subscriptions with ``jobs``
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.closing = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextmanager
    def subscribe(self, topics: Iterable[str]) -> Iterator[Subscription]:
        sub = self.open(topics)
        try:
            yield sub
        finally:
            self.close_subscription(sub)

    def open(self, topics: Iterable[str], jobs: Set[int] = frozenset()) -> Subscription:
        """Subscribe until ``close_subscription`` (for subscriptions that outlive a block, like streams).

        ``jobs``: ids whose ``job_topic`` wakes it as well, kept as the one set given.  A
        topic each costs about 3 µs on the event loop to subscribe and 0.5 µs to close (a
        million ids: seconds); a set costs nothing here, and each published job topic is
        looked up in every such set: use it for watches of many jobs.
        """
        sub = Subscription()
        sub.topics = list(topics)
        for t in sub.topics:
            self._subs[t].add(sub)
        if jobs:
            sub.jobs = jobs
            self._job_watchers.add(sub)
        return sub

    def close_subscription(self, sub: Subscription) -> None:
        self._job_watchers.discard(sub)
        for t in sub.topics:
            subs = self._subs.get(t)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[t]

    def publish(self, topics: Iterable[str]) -> None:
        """Wake every subscriber of ``topics`` (call on the event loop)."""
        for t in topics:
            for sub in self._subs.get(t, ()):
                sub.fired.add(t)
                sub.event.set()
            if self._job_watchers and (job := topic_job(t)) is not None:
                for sub in self._job_watchers:
                    if job in sub.jobs:
                        sub.fired.add(t)
                        sub.event.set()
            if t.startswith("queue:"):  # pilots serving every queue
                for sub in self._subs.get("queue:*", ()):
                    sub.event.set()

    def shut_down(self) -> None:
        """End every long-poll now and start no new waits (the server is stopping); thread-safe."""
        if self._loop is None:
            return

        def close() -> None:
            self.closing = True
            self.publish_all()

        self._loop.call_soon_threadsafe(close)

    def publish_all(self) -> None:
        """Wake every subscriber as if all its topics fired (after notifications may have been missed)."""
        for subs in list(self._subs.values()):
            for sub in subs:
                sub.fired.update(sub.topics)
                sub.event.set()
        for sub in self._job_watchers:  # rare (shutdown, a lost database connection): a topic each
            sub.fired.update(sub.topics)
            sub.fired.update(map(job_topic, sub.jobs))
            sub.event.set()

    def apply(self, wake: Wakeups) -> None:
        """Publish what a committed transaction changed, now or at the times it asks."""
        self.publish(wake.now)
        for when, topic in wake.later:
            self.publish_at(when, topic)

    def publish_at(self, when: float, topic: str) -> None:
        assert self._loop is not None, "Notifier.bind() was not called"
        # A little late rather than early: the loop may run timers up to its clock resolution
        # ahead, and a waiter woken before ``when`` would find nothing and sleep on.
        delay = max(0.0, when - time.time()) + 0.005
        key = f"{topic}@{round(when, 2)}"
        if key in self._timers:
            return
        handle = self._loop.call_later(delay, self._fire_timer, key, topic)
        self._timers[key] = handle

    def _fire_timer(self, key: str, topic: str) -> None:
        self._timers.pop(key, None)
        self.publish([topic])

    def close(self) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()

    async def poll(
        self,
        topics: Iterable[str],
        timeout: float,
        check: Callable[[], Awaitable[T]],
        receive: Callable[[], Awaitable[Any]] | None = None,
    ) -> T:
        """Return ``check()`` as soon as it is truthy, re-checking on every wake-up, until ``timeout``.

        ``receive`` (the ASGI receive of a request whose body was read) ends the wait early
        when the client disconnects, so abandoned long-polls never pile up.
        """
        deadline = time.monotonic() + timeout
        gone = asyncio.ensure_future(_disconnect(receive)) if receive is not None else None
        try:
            with self.subscribe(topics) as sub:
                while True:
                    result = await check()
                    remaining = deadline - time.monotonic()
                    if (
                        result
                        or remaining <= 0
                        or self.closing
                        or (gone is not None and gone.done())
                    ):
                        return result
                    await sub.wait(remaining, gone)
        finally:
            if gone is not None:
                gone.cancel()


async def _disconnect(receive: Callable[[], Awaitable[Any]]) -> None:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return
