"""Typed errors for PanDA calls: what went wrong, never a status tuple, never a secret."""

from __future__ import annotations


class PandaError(Exception):
    """Base of every error this provider raises."""


class PandaInputError(PandaError, ValueError):
    """Bad input from the caller, found before any request was sent."""


class PandaConnectionConfigError(PandaInputError):
    """The Airflow connection cannot be used as it is (no host, bad URL, no credentials...)."""


class PandaTransportError(PandaError):
    """The request did not get an HTTP answer: refused, reset, timed out, TLS failure."""


class PandaCertificateError(PandaTransportError):
    """A certificate was refused in the TLS handshake (ours or the server's), or our x509 proxy has
    expired: no retry mends it, the message names the file to fix."""


class PandaHTTPError(PandaError):
    """The server answered outside the JSON envelope (non-200)."""

    def __init__(self, status_code: int, text: str):
        self.status_code = status_code
        self.text = text
        super().__init__(f"HTTP {status_code}: {text}")


class PandaAuthError(PandaHTTPError):
    """Credentials refused: the PanDA server's 403 (token or certificate refused, user banned, method
    forbidden), or the IdP refusing to refresh an expired token (``status_code`` is then the IdP's
    answer, 401 when its answer was unusable). No retry can mend it."""


class PandaServerError(PandaHTTPError):
    """HTTP 5xx (or 429): the server failed or is overloaded; safe calls are retried."""


class PandaResponseError(PandaError):
    """The answer was not the JSON envelope the API promises."""


class PandaNotEnvelopeError(PandaResponseError):
    """A 200 answer that is not PanDA's envelope at all (a proxy's or SSO page, a cut body): retried
    like a 5xx for calls that are safe to repeat."""


class PandaCallFailed(PandaError):
    """The server handled the call and said ``success: false`` (message kept)."""

    def __init__(self, message: str, data: object = None):
        self.server_message = message
        self.data = data
        super().__init__(message)


class PandaNotFoundError(PandaCallFailed):
    """The task or job does not exist (or is not visible to this user)."""


class PandaPermissionError(PandaCallFailed):
    """Not the task owner, or the production role is required."""


class PandaCommandRejected(PandaCallFailed):
    """A task command or submission answered with a non-zero code."""

    def __init__(self, code: int, message: str, task_id: int | None = None, action: str = "submit"):
        self.code = code
        self.task_id = task_id
        self.action = action
        super().__init__(f"PanDA {action} rejected with code {code}: {message}", data=code)
        self.server_message = message


class PandaDuplicateTaskError(PandaCommandRejected):
    """A submission matched an existing task with the same taskName; ``task_id`` names it."""


class PandaTaskFailedError(PandaError):
    """A waited-on task reached a failing status."""

    def __init__(self, message: str, task_id: int, status: str):
        self.task_id = task_id
        self.status = status
        super().__init__(message)


class PandaTimeoutError(PandaError):
    """A wait ran past its timeout."""


class PandaTaskNameTaken(PandaError):
    """The taskName is already held by a PanDA task this Airflow task instance did not submit."""

    def __init__(self, message: str, task_id: int, status: str | None):
        self.task_id = task_id
        self.status = status
        super().__init__(message)


class PandaSubmissionUnknownError(PandaError):
    """A submission got no answer and its task could not be found: it may or may not exist."""

    def __init__(self, message: str, task_name: str):
        self.task_name = task_name
        super().__init__(message)
