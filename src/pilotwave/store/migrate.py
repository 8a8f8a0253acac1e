"""Create or upgrade the schema to the newest migration (run by the server at start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from pilotwave.store.db import Database

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x70696C6F  # serializes concurrent server starts on one PostgreSQL


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database) -> None:
    """Bring the database to the head revision; a no-op when it is already there."""
    if current_revision(db) == head_revision():
        return
    cfg = _config()
    with db.engine.begin() as conn:
        if db.is_postgres:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the whole upgrade is one transaction
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
