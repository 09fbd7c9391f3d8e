"""The error hierarchy, split by what the caller can do about it.

- ``BadInput``: the request itself is wrong; nothing was changed; exit code 2.
- ``TemporaryError``: worth retrying later (network, 5xx, timeouts); exit 1.
- ``PermanentError``: will not succeed by retrying (auth, missing tool); exit 1.

Every error carries a short machine ``code`` (used in ``--json`` output and MCP
errors) and a message that says what was wrong and, where possible, what to do.
"""

from __future__ import annotations


class FiovpnError(Exception):
    """Base of every error fiovpn reports to a user."""

    code: str = "error"
    exit_code: int = 1

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class BadInput(FiovpnError):
    """The input is invalid: nothing was changed."""

    code = "bad_input"
    exit_code = 2


class NotFound(BadInput):
    """A named thing (device, client, file) does not exist."""

    code = "not_found"


class Conflict(BadInput):
    """The request collides with existing state (IP or key already taken)."""

    code = "conflict"


class TemporaryError(FiovpnError):
    """A failure that may go away: retry later (optionally after ``delay`` seconds)."""

    code = "temporary"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        delay: float | None = None,
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.delay = delay


class PermanentError(FiovpnError):
    """A failure that retrying will not fix."""

    code = "failed"


class MissingTool(PermanentError):
    """A required system program is not installed."""

    code = "missing_tool"


class ApiError(PermanentError):
    """The FoundriesFactory API answered with an error."""

    code = "api_error"

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.status = status


class AuthError(ApiError):
    """The API token is missing, wrong or lacks the needed scope."""

    code = "auth"


class ApiNotFound(ApiError):
    """The API says the factory or device does not exist."""

    code = "not_found"
    exit_code = 2


class BadResponse(ApiError):
    """The API answered with something fiovpn cannot understand."""

    code = "bad_response"


class ApiTemporaryError(TemporaryError):
    """The API is down, slow or rate-limiting: keep the last good state, retry."""

    code = "api_unavailable"


class RemoteCommandError(PermanentError):
    """A command run over SSH failed."""

    code = "remote_failed"


def api_error_code(exc: BaseException) -> str:
    """What kind of factory API failure ``exc`` is, as ``server status`` reports it
    (``last_error_code``) and ``/metrics`` counts it: ``auth_failed`` (the token was
    refused, or a fioctl login cannot be refreshed), ``api_unreachable`` (timeouts,
    connection errors, 5xx after the retries), else ``api_error``."""
    if isinstance(exc, AuthError):
        return "auth_failed"
    if isinstance(exc, TemporaryError):
        return "api_unreachable"
    if isinstance(exc, FiovpnError) and exc.code in ("auth_failed", "api_unreachable"):
        return exc.code
    return "api_error"


def from_os_error(exc: OSError) -> PermanentError:
    """An ``OSError`` no service expected (a file or device failing), as one clear
    line naming the file: what the command line prints instead of a traceback."""
    where = f": {exc.filename}" if exc.filename else ""
    return PermanentError(f"{exc.strerror or exc}{where}", code="os_error")
