"""Schema and migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pilotwave.store import migrate
from pilotwave.store.db import Database, normalize_url
from pilotwave.store.schema import metadata


def test_server_start_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    db = Database(db_url)
    assert migrate.current_revision(db) is None
    migrate.upgrade(db)
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.head_revision()
    tables = set(sa.inspect(db.engine).get_table_names())
    assert {
        "jobs",
        "attempts",
        "pilots",
        "queues",
        "users",
        "tokens",
        "artifacts",
        "blobs",
        "log_chunks",
        "events",
    } <= tables


def test_migrations_match_the_schema_the_code_uses(db_url: str) -> None:
    db = Database(db_url)
    migrate.upgrade(db)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_short_database_urls_are_accepted() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("/tmp/x.db") == "sqlite:////tmp/x.db"


def test_a_database_from_the_previous_release_upgrades_with_its_jobs(db_url: str) -> None:
    from alembic import command

    db = Database(db_url)
    cfg = migrate._config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(sa.text("INSERT INTO users (name, created_at) VALUES ('old', 0)"))
        conn.execute(
            sa.text(
                "INSERT INTO jobs (owner_id, name, kind, spec, queue, labels, cores, memory_mb,"
                " gpus, priority, max_attempts, isolate, state, created_at) VALUES"
                " (1, 'j', 'shell', '{}', 'default', '[]', 1, 0, 0, 0, 3, false, 'queued', 0)"
            )
        )
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.head_revision()
    with db.read() as conn:
        row = conn.execute(sa.text("SELECT state, held, deps_left, workflow_id FROM jobs")).one()
        assert tuple(row) == ("queued", False, 0, None)
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    if db.dialect == "sqlite":  # the claim indexes keep their DESC through the upgrade
        with db.read() as conn:
            sql = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_jobs_claim_any'"
            ).scalar()
        assert "priority DESC" in sql
