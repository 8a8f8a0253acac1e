"""Database access: one short transaction per state change, on SQLite or PostgreSQL.

SQLite has a single writer, so writes take an in-process lock and ``BEGIN IMMEDIATE``
(no busy-wait sleeps inside SQLite); readers run concurrently thanks to WAL.  On
PostgreSQL, writers lock the rows they change (``FOR UPDATE [SKIP LOCKED]``) and a
transaction that hits a deadlock or serialization failure is retried.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def normalize_url(url: str) -> str:
    """Accept the short forms users type (``postgresql://``, a bare path) and return a full URL."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class WriterBusy(Exception):
    """SQLite's writer lock is held by another thread and the caller chose not to wait."""


class Database:
    """An engine plus the transaction discipline of pilotwave."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self.dialect = sa.engine.make_url(self.url).get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(
                f"unsupported database {self.url!r}: use sqlite:/// or postgresql+psycopg://"
            )
        self._write_lock = threading.Lock()
        self.engine = self._make_engine(pool_size)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def _make_engine(self, pool_size: int) -> Engine:
        if self.dialect == "sqlite":
            path = sa.engine.make_url(self.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=pool_size,
                max_overflow=30,
            )

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                # Transactions are begun explicitly (BEGIN IMMEDIATE for writers).
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(
                    "PRAGMA synchronous=NORMAL"
                )  # durable across process crashes in WAL mode
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            return engine
        # No pre-ping (a round trip per transaction): a connection that died with a database
        # restart fails its first statement, is invalidated, and ``transact`` retries.
        return sa.create_engine(self.url, pool_size=pool_size, max_overflow=30)

    @contextmanager
    def write(self, *, wait: bool = True) -> Iterator[Connection]:
        """A read-write transaction, committed when the block exits without error.

        On SQLite, ``wait=False`` raises ``WriterBusy`` at once instead of waiting while
        another thread's write holds the writer lock (an event loop must not block on it).
        """
        if self.dialect == "sqlite":
            if not self._write_lock.acquire(blocking=wait):
                raise WriterBusy("another write is in progress")
            try:
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    yield from _transaction(conn)
            finally:
                self._write_lock.release()
        else:
            with self.engine.connect() as conn:
                yield from _transaction(conn)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """Reads: a snapshot on SQLite; on PostgreSQL each statement sees committed data
        (autocommit, saving the BEGIN and ROLLBACK round trips on every read)."""
        if self.dialect == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("BEGIN")
                try:
                    yield conn
                finally:
                    conn.rollback()
        else:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                yield conn

    def transact(self, fn: Callable[[Connection], T], *, attempts: int = 5, wait: bool = True) -> T:
        """Run ``fn`` in a write transaction, retrying deadlocks, serialization failures and
        dropped connections; ``wait`` as for ``write`` (``WriterBusy`` comes before ``fn`` runs)."""
        for i in range(attempts):
            try:
                with self.write(wait=wait) as conn:
                    return fn(conn)
            except sa.exc.DBAPIError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None)
                retry = sqlstate in _RETRYABLE_SQLSTATES or exc.connection_invalidated
                if not retry or i == attempts - 1:
                    raise
                log.info("retrying transaction sqlstate=%s attempt=%d", sqlstate, i + 1)
                time.sleep(random.uniform(0.001, 0.02) * (i + 1))
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()


_HOOKS = "pilotwave.before_commit"


H = TypeVar("H", bound=Callable[[Connection], None])


def before_commit(conn: Connection, key: str, make: Callable[[], H]) -> H:
    """The hook registered under ``key`` in this transaction (made on first use); it runs last
    thing before the commit and is dropped with a rollback (e.g. one batched insert of rows
    collected during the transaction)."""
    hooks = conn.info.setdefault(_HOOKS, {})
    if key not in hooks:
        hooks[key] = make()
    return hooks[key]


def _transaction(conn: Connection) -> Iterator[Connection]:
    try:
        yield conn
        for hook in list(conn.info.get(_HOOKS, {}).values()):
            hook(conn)
    except BaseException:
        conn.info.pop(_HOOKS, None)
        conn.rollback()
        raise
    conn.info.pop(_HOOKS, None)
    conn.commit()


def insert_ignoring_duplicates(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]]
) -> None:
    """INSERT rows, skipping those that collide with a unique key (idempotent re-sends)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).on_conflict_do_nothing(), rows)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(table).on_conflict_do_nothing(), rows)
