"""Keeping pilots running: local processes (and, later, batch systems)."""
