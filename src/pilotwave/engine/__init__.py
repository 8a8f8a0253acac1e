"""Workflows: the driver command log, replay, and workflow operations (the iDDS half)."""
