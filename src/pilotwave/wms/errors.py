"""Errors raised by the queue's rules; the HTTP layer maps each to one status code."""

from __future__ import annotations


class WmsError(Exception):
    status = 400


class NotFound(WmsError):
    """Unknown id, or one the caller may not see (both look the same: 404)."""

    status = 404


class Forbidden(WmsError):
    """The caller is known but may not do this."""

    status = 403


class Conflict(WmsError):
    """The request no longer applies to the current state (e.g. a stale attempt report)."""

    status = 409


class Invalid(WmsError):
    """Well-formed but unacceptable input."""

    status = 422

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
