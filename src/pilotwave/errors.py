"""Every error pilotwave raises, in one hierarchy; each message says what happened and what to do.

The same classes serve both ends of the wire: the server's rules raise ``NotFound``,
``Conflict``, ``InvalidRequest``… and the HTTP layer answers with their ``status``; the
client turns the answer back into the same class (by the ``error`` name the server sends,
else by status), so ``except pw.NotFound`` works alike in a driver, a script or a test of
the queue's rules.
"""

from __future__ import annotations


class PilotwaveError(Exception):
    """Base class of every pilotwave error."""

    @property
    def reason(self) -> str:
        """The message's last non-empty line (for a failed job: its exception, not the traceback)."""
        lines = [ln for ln in str(self).strip().splitlines() if ln.strip()]
        return (lines[-1] if lines else str(self))[:500]


class ConfigError(PilotwaveError, ValueError):
    """No server configured, or a configuration (client.json, a YAML run config) that cannot be used."""


class ServerUnreachable(PilotwaveError):
    """The server did not answer (after retries)."""


class ApiError(PilotwaveError):
    """A request refused: ``status`` is its HTTP code, ``detail`` the reason, ``field`` the input at fault.

    Raised by the server's rules (and answered with ``status``) and by the client when the
    server refused a request.
    """

    status = 400

    def __init__(self, detail: str, field: str | None = None, *, status: int | None = None) -> None:
        self.status = status if status is not None else type(self).status
        self.detail = detail
        self.field = field
        super().__init__(detail)

    def __str__(self) -> str:
        return f"{self.detail} (HTTP {self.status})"


class Unauthorized(ApiError):
    """401: no token, or an unknown or revoked one."""

    status = 401


class Forbidden(ApiError):
    """403: the token's role may not do this."""

    status = 403


class NotFound(ApiError):
    """404: no such job, workflow, pilot or artifact, or one that belongs to someone else."""

    status = 404


class Conflict(ApiError):
    """409: the request no longer applies (a report for a stale attempt, a finished workflow)."""

    status = 409


class NonDeterminismError(Conflict):
    """A replayed workflow made a different call than the one recorded at the same step.

    Workflows must make the same calls given the same inputs and results; draw random
    numbers from ``pw.seed()`` and never branch on the clock or on files that change.
    """


class TooLarge(ApiError):
    """413: a body, argument list, result or upload over its limit."""

    status = 413


class InvalidRequest(ApiError):
    """422: a malformed or unacceptable request; ``field`` names the input."""

    status = 422


class TooManyRequests(ApiError):
    """429: over a user's quota.  ``retry_after`` (seconds) when waiting will help (a
    submission rate); ``None`` when something must end first (jobs in flight)."""

    status = 429

    def __init__(
        self,
        detail: str,
        field: str | None = None,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, field, status=status)
        self.retry_after = retry_after


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
        self.why = reason


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
        self.why = reason


class NotInWorkflow(PilotwaveError, RuntimeError):
    """A call that only means something inside a running ``@pw.workflow`` (``pw.seed()``), made outside one."""


class SandboxError(PilotwaveError):
    """A source directory that cannot be packed, or an archive that must not be unpacked."""


class ResultError(PilotwaveError):
    """A job's return value that cannot be sent back (not JSON-serializable, or too large)."""


class Pruned(PilotwaveError):
    """Raise in a job to end it early because its workflow said so: the job ends, it does not fail."""

    def __init__(self, step: int | None = None) -> None:
        self.step = step
        super().__init__(
            f"stopped at step {step} on its workflow's decision" if step is not None else "stopped"
        )


class IllegalTransition(PilotwaveError, RuntimeError):
    """A state change the job state machine does not allow, or a guarded write that lost a race.

    Always a bug in pilotwave (the transaction is rolled back); never the user's fault.
    """


_REFUSALS: tuple[type[ApiError], ...] = (
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    InvalidRequest,
    TooManyRequests,
)
_BY_STATUS: dict[int, type[ApiError]] = {cls.status: cls for cls in _REFUSALS}
_KNOWN: tuple[type[ApiError], ...] = (ApiError, NonDeterminismError, *_REFUSALS)
_BY_NAME: dict[str, type[ApiError]] = {cls.__name__: cls for cls in _KNOWN}


def api_error(
    status: int, detail: str, field: str | None = None, name: str | None = None
) -> ApiError:
    """The error a refused request stands for: by the class ``name`` the server sent, else by status."""
    cls = _BY_NAME.get(name or "") or _BY_STATUS.get(status, ApiError)
    return cls(detail, field, status=status)
