"""Typed errors for PanDA calls: what went wrong, never a status tuple, never a secret.

An error crosses the trigger boundary (triggerer to worker, as JSON) as its fields and is rebuilt
there through its own constructor: ``error_from_fields(**error.to_fields())`` is an error of the same
type, message and attributes. Every class is constructible as ``cls(message=..., **attributes)``
with its :attr:`PandaError.fields` as the attributes, besides its usual signature.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PandaError(Exception):
    """Base of every error this provider raises."""

    #: The attributes that describe the error beyond its message (primitives: they cross the trigger boundary).
    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str = "", **attributes: Any) -> None:
        unknown = sorted(set(attributes) - set(self.fields))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no attribute field {', '.join(unknown)}")
        super().__init__(message)
        for name, value in attributes.items():
            setattr(self, name, value)

    def attributes(self) -> dict[str, Any]:
        """The error's :attr:`fields` and their values."""
        return {name: getattr(self, name, None) for name in self.fields}

    def to_fields(self) -> dict[str, Any]:
        """The error as JSON-safe fields: ``error_type``, ``message``, ``attributes`` (the arguments of
        :func:`error_from_fields`)."""
        return {"error_type": type(self).__name__, "message": str(self), "attributes": self.attributes()}

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy through the same constructor (the default would call cls(message) alone)
        return _rebuild, (type(self), str(self), self.attributes())


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

    fields = ("status_code", "text")

    def __init__(self, status_code: int, text: str, *, message: str | None = None) -> None:
        super().__init__(f"HTTP {status_code}: {text}" if message is None else message,
                         status_code=status_code, text=text)


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
    """The server handled the call and said ``success: false`` (message kept). ``data`` (the envelope's
    data, anything) stays where the error was raised."""

    fields = ("server_message",)

    def __init__(self, message: str, data: object = None, *, server_message: str | None = None,
                 **attributes: Any) -> None:
        super().__init__(message, server_message=message if server_message is None else server_message, **attributes)
        self.data = data


class PandaNotFoundError(PandaCallFailed):
    """The task or job does not exist (or is not visible to this user)."""


class PandaPermissionError(PandaCallFailed):
    """Not the task owner, or the production role is required."""


class PandaCommandRejected(PandaCallFailed):
    """A task command or submission answered with a non-zero code."""

    fields = ("server_message", "code", "task_id", "action")

    def __init__(self, code: int, server_message: str, task_id: int | None = None, action: str = "submit", *,
                 message: str | None = None) -> None:
        text = f"PanDA {action} rejected with code {code}: {server_message}" if message is None else message
        super().__init__(text, code, server_message=server_message, code=code, task_id=task_id, action=action)


class PandaDuplicateTaskError(PandaCommandRejected):
    """A submission matched an existing task with the same taskName; ``task_id`` names it."""


class PandaTaskFailedError(PandaError):
    """A waited-on task reached a failing status."""

    fields = ("task_id", "status")

    def __init__(self, message: str, task_id: int, status: str) -> None:
        super().__init__(message, task_id=task_id, status=status)


class PandaTimeoutError(PandaError):
    """A wait ran past its timeout."""


class PandaTaskNameTaken(PandaError):
    """The taskName is already held by a PanDA task this Airflow task instance did not submit."""

    fields = ("task_id", "status")

    def __init__(self, message: str, task_id: int, status: str | None) -> None:
        super().__init__(message, task_id=task_id, status=status)


class PandaSubmissionUnknownError(PandaError):
    """A submission got no answer and its task could not be found: it may or may not exist."""

    fields = ("task_name",)

    def __init__(self, message: str, task_name: str) -> None:
        super().__init__(message, task_name=task_name)


def _rebuild(cls: type[PandaError], message: str, attributes: dict[str, Any]) -> PandaError:
    return cls(message=message, **{name: attributes.get(name) for name in cls.fields})


def error_from_fields(error_type: str | None, message: str, attributes: dict[str, Any] | None = None) -> PandaError:
    """The error :meth:`PandaError.to_fields` describes, built by its class's constructor: the class
    named ``error_type`` (a :class:`PandaError` class of this module; any other name gives
    :class:`PandaError`), with ``message`` as its text and the class's fields from ``attributes``
    (one missing is None, one the class does not have is ignored)."""
    cls = globals().get(str(error_type))
    if not (isinstance(cls, type) and issubclass(cls, PandaError)):
        cls = PandaError
    return _rebuild(cls, message, attributes or {})
