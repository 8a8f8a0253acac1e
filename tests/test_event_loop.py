"""On SQLite, large requests run off the event loop: one user's cannot stall everyone's.

Each test holds a heavy request inside its database work (until the test lets it go) and
asks for ``/health`` meanwhile: the answer must come while the heavy request is still in
flight.  Order is asserted, never time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import SHELL, Api, in_process_api

from pilotwave.server.core import INLINE_ITEMS
from pilotwave.wms import jobs as wms_jobs

PATIENCE_S = 30.0  # only if the loop is stalled after all: the test then fails, not hangs


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with in_process_api(tmp_path) as api:
        yield api


class Held:
    """Wraps a function of the queue so that its calls stop in the middle until ``release``."""

    def __init__(self, fn: Callable[..., Any], log: list[str]) -> None:
        self.fn, self.log = fn, log
        self.entered = threading.Event()
        self.go = threading.Event()

    def __call__(self, *args: Any, **kw: Any) -> Any:
        self.log.append("heavy entered")
        self.entered.set()
        self.go.wait(PATIENCE_S)
        return self.fn(*args, **kw)

    def release(self) -> None:
        self.go.set()


class SpyLock:
    """The database's writer lock, telling when somebody waits for it while it is held."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking and self.lock.locked():
            self.waiting.set()
        return bool(self.lock.acquire(blocking, timeout))

    def release(self) -> None:
        self.lock.release()

    def locked(self) -> bool:
        return bool(self.lock.locked())


def in_thread(log: list[str], what: str, call: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        r = call()
        log.append(f"{what} answered {r.status_code}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def health_while(api: Api, held: Held, log: list[str]) -> None:
    assert held.entered.wait(PATIENCE_S), "the heavy request never reached the database"
    r = api.get("/api/v1/health", token=None)
    log.append(f"health answered {r.status_code}")
    held.release()


def test_health_answers_while_a_large_submission_is_written(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = api.token("alice")
    log: list[str] = []
    held = Held(wms_jobs.submit, log)
    monkeypatch.setattr(wms_jobs, "submit", held)
    body = {"jobs": [SHELL] * (INLINE_ITEMS + 1)}
    heavy = in_thread(log, "submit", lambda: api.post("/api/v1/jobs", body, token=alice))
    health_while(api, held, log)
    heavy.join(PATIENCE_S)
    assert log == ["heavy entered", "health answered 200", "submit answered 201"]


def test_health_answers_while_a_large_watch_is_read(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = api.token("alice")
    ids = api.post("/api/v1/jobs", {"jobs": [SHELL] * 300}, token=alice).json()["ids"]
    log: list[str] = []
    held = Held(wms_jobs.finished, log)
    monkeypatch.setattr(wms_jobs, "finished", held)
    body = {"ranges": [[ids[0], ids[-1]]], "timeout_s": 0}
    heavy = in_thread(log, "watch", lambda: api.post("/api/v1/jobs/watch", body, token=alice))
    health_while(api, held, log)
    heavy.join(PATIENCE_S)
    assert log == ["heavy entered", "health answered 200", "watch answered 200"]


def test_a_small_write_waits_for_a_large_one_off_the_event_loop(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a large write holds SQLite's writer lock in a thread, a small write (which would
    run on the loop) waits for the lock in a thread too: the loop still answers, and both
    writes land."""
    alice, bob = api.token("alice"), api.token("bob")
    db = api.c.app.state.core.db
    lock = SpyLock(db._write_lock)
    monkeypatch.setattr(db, "_write_lock", lock)
    log: list[str] = []
    held = Held(wms_jobs.submit, log)
    monkeypatch.setattr(wms_jobs, "submit", held)
    big = {"jobs": [SHELL] * (INLINE_ITEMS + 1)}
    heavy = in_thread(log, "large", lambda: api.post("/api/v1/jobs", big, token=alice))
    assert held.entered.wait(PATIENCE_S)
    monkeypatch.setattr(wms_jobs, "submit", held.fn)  # the small one goes straight through
    small = in_thread(log, "small", lambda: api.post("/api/v1/jobs", {"jobs": [SHELL]}, token=bob))
    assert lock.waiting.wait(PATIENCE_S), "the small write never waited for the lock"
    health_while(api, held, log)
    heavy.join(PATIENCE_S)
    small.join(PATIENCE_S)
    assert log[:2] == ["heavy entered", "health answered 200"]
    assert sorted(log[2:]) == ["large answered 201", "small answered 201"]
    counts = api.get("/api/v1/jobs/summary").json()["counts"]
    assert counts == {"queued": INLINE_ITEMS + 2}


def test_a_watch_of_many_jobs_is_woken_by_each_of_them() -> None:
    """A large watch subscribes its ids as one set: publishing any of their job topics
    wakes it, other jobs' do not, and closing it ends that."""
    import asyncio

    from pilotwave.server.notify import Notifier
    from pilotwave.wms.wakeups import job_topic, report_topic

    async def run() -> None:
        notifier = Notifier()
        notifier.bind(asyncio.get_running_loop())
        sub = notifier.open([report_topic(7)], jobs=set(range(1, 1001)))
        notifier.publish([job_topic(5000), "queue:default"])
        assert not sub.event.is_set() and sub.take() == set()
        notifier.publish([job_topic(999), job_topic(2), report_topic(7)])
        assert sub.event.is_set()
        assert sub.take() == {job_topic(999), job_topic(2), report_topic(7)}
        notifier.publish_all()  # as after a lost database connection: everything fired
        assert len(sub.take()) == 1001
        notifier.close_subscription(sub)
        sub.event.clear()
        notifier.publish([job_topic(3)])
        assert not sub.event.is_set()

    asyncio.run(run())


def test_a_large_watch_streams_jobs_as_they_end(api: Api) -> None:
    import json

    alice = api.token("alice")
    n = INLINE_ITEMS + 100
    ids = api.post("/api/v1/jobs", {"jobs": [SHELL] * n}, token=alice).json()["ids"]
    body = {"ranges": [[ids[0], ids[-1]]], "timeout_s": 60}
    lines: list[dict[str, Any]] = []

    def watch() -> Any:
        r = api.post("/api/v1/jobs/watch", body, token=alice)
        lines.extend(json.loads(line) for line in r.text.splitlines())
        return r

    log: list[str] = []
    watcher = in_thread(log, "watch", watch)
    r = api.post("/api/v1/jobs/cancel", {"ids": ids}, token=alice)
    assert r.status_code == 200
    watcher.join(PATIENCE_S)
    assert log == ["watch answered 200"]
    done = {int(i) for line in lines for i in line.get("done", {})}
    assert done == set(ids) and lines[-1] == {"end": True, "pending": 0}
