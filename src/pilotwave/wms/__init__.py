"""The job queue: states, matching, claims, attempts, heartbeats and the lost-pilot reaper.

Rules are pure functions over plain data (``states``, ``matching``, ``retry``); the modules
that touch the database (``jobs``, ``claims``, ``attempts``, ``pilots``) apply them inside
one transaction per state change.
"""
