"""Errors users see; each message says what happened and, where it can, what to do."""

from __future__ import annotations


class PilotwaveError(Exception):
    """Base class of every pilotwave error."""

    @property
    def reason(self) -> str:
        """The message's last non-empty line (for a failed job: its exception, not the traceback)."""
        lines = [ln for ln in str(self).strip().splitlines() if ln.strip()]
        return (lines[-1] if lines else str(self))[:500]


class ConfigError(PilotwaveError):
    """No server configured, or a configuration file that cannot be read."""


class ServerUnreachable(PilotwaveError):
    """The server did not answer (after retries)."""


class ApiError(PilotwaveError):
    """The server refused a request; ``status`` is the HTTP code, ``field`` the offending input if any."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(f"{detail} (HTTP {status})")
        self.status = status
        self.detail = detail
        self.field = field


class Unauthorized(ApiError):
    """401: no token, or an unknown or revoked one."""


class Forbidden(ApiError):
    """403: the token's role may not do this."""


class NotFound(ApiError):
    """404: no such job/pilot/artifact, or one that belongs to someone else."""


class Conflict(ApiError):
    """409: the request no longer applies (e.g. a report for a stale attempt)."""


class TooLarge(ApiError):
    """413: a body, argument list, result or upload over its limit."""


class InvalidRequest(ApiError):
    """422: a malformed request; ``field`` names the input."""


class JobFailed(PilotwaveError):
    """A job failed permanently; ``error`` holds its traceback or reason."""

    def __init__(self, job_id: int, error: str | None, name: str = "") -> None:
        label = f"job {job_id}" + (f" ({name})" if name else "")
        super().__init__(f"{label} failed:\n{error or 'no error recorded'}")
        self.job_id = job_id
        self.error = error


class JobCancelled(PilotwaveError):
    """The job was cancelled before it finished."""

    def __init__(self, job_id: int, reason: str | None = None) -> None:
        super().__init__(f"job {job_id} was cancelled" + (f": {reason}" if reason else ""))
        self.job_id = job_id


class WorkflowFailed(JobFailed):
    """A workflow failed: its driver raised (often because a job it waited on failed)."""

    def __init__(self, workflow_id: int, job_id: int, error: str | None, name: str = "") -> None:
        PilotwaveError.__init__(
            self,
            f"workflow {workflow_id}"
            + (f" ({name})" if name else "")
            + f" failed:\n{error or 'no error recorded'}",
        )
        self.workflow_id = workflow_id
        self.job_id = job_id
        self.error = error


class WorkflowCancelled(JobCancelled):
    """The workflow was cancelled before it finished."""

    def __init__(self, workflow_id: int, job_id: int, reason: str | None = None) -> None:
        PilotwaveError.__init__(
            self, f"workflow {workflow_id} was cancelled" + (f": {reason}" if reason else "")
        )
        self.workflow_id = workflow_id
        self.job_id = job_id


class NonDeterminismError(PilotwaveError):
    """A replayed workflow made a different call than the one recorded at the same step.

    Workflows must make the same calls given the same inputs and results; draw random
    numbers from ``pw.seed()`` and never branch on the clock or on files that change.
    """


class SandboxError(PilotwaveError):
    """A source directory that cannot be packed, or an archive that must not be unpacked."""


class ResultError(PilotwaveError):
    """A job's return value that cannot be sent back (not JSON-serializable, or too large)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: InvalidRequest,
}


def api_error(status: int, detail: str, field: str | None = None) -> ApiError:
    return _BY_STATUS.get(status, ApiError)(status, detail, field)
