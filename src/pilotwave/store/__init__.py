"""Durable state: the SQL schema, migrations and database access (SQLite or PostgreSQL)."""

from pilotwave.store.db import Database

__all__ = ["Database"]
