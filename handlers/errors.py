"""Errors raised by sources and sinks.

The tree::

    HandlerError                 anything a handler raises on purpose
    ├── PayloadRejected          the body can never be valid for this source (4xx at the door)
    ├── NormalizeError           a journaled delivery could not become events (dead-lettered)
    ├── SinkError                a sink could not deliver an event
    │   ├── RetryableSinkError   try again later (network, throttling, a full disk that may clear)
    │   └── PermanentSinkError   retrying cannot help (bad path template, refused by policy)
    │       ├── SinkGone         the destination is gone for good (HTTP 410): stop the sink
    │       ├── FileUnavailable  a referenced file cannot be fetched (expired, deleted, ...)
    │       └── EventNotWritable the event cannot be written as JSON (nested too deep, ...)
    └── PluginConfigError        a handler's own configuration is invalid

Every message is written for the person who reads it: the vendor's reviewer for
``PayloadRejected``, the operator for the rest.  Secrets never go into a message.
"""

from __future__ import annotations

__all__ = [
    "EventNotWritable",
    "FileUnavailable",
    "HandlerError",
    "NormalizeError",
    "PayloadRejected",
    "PermanentSinkError",
    "PluginConfigError",
    "RetryableSinkError",
    "SinkError",
    "SinkGone",
]


class HandlerError(Exception):
    """A source or sink failed in a way it can explain."""


class PayloadRejected(HandlerError):
    """The request body is not acceptable for this route's source.

    ``status`` is 400 when the body cannot be parsed at all and 422 when it parses but has the
    wrong shape.  The message is shown to the sender, so keep it short and plain.
    """

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class NormalizeError(HandlerError):
    """A stored delivery could not be normalized; it is dead-lettered and can be retried later."""


class SinkError(HandlerError):
    """A sink could not deliver an event.

    ``code`` is a short, stable name for the kind of failure (``link_expired``,
    ``file_too_large``, ...) that the host counts where an operator looks (``hookdock status``);
    None for the run of the mill.
    """

    retryable: bool = True
    code: str | None = None


class RetryableSinkError(SinkError):
    """The sink may succeed if the same event is delivered again later.

    ``retry_after`` (seconds) is the destination's own word on when to come back, such as an
    HTTP ``Retry-After``; the host waits at least that long (within reason) before the next try.
    """

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    """Delivering the same event again cannot succeed without a change of config or data."""

    retryable = False


class SinkGone(PermanentSinkError):
    """The destination says it is gone for good (HTTP 410 Gone).

    The host stops the sink: its events wait, none is lost, until an operator has fixed the
    destination and resumes the sink (``hookdock sinks resume NAME``).
    """


class FileUnavailable(PermanentSinkError):
    """A file an event refers to cannot be fetched, and trying again will not change that.

    ``code`` says why, for counting: ``link_expired`` (the vendor's link ran out, or its
    signature no longer holds), ``file_deleted`` (the vendor no longer has it),
    ``file_too_large`` (over the route's cap), ``address_refused`` (the SSRF guard refused the
    host or address) or ``file_refused`` (any other refusal).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class EventNotWritable(PermanentSinkError):
    """The event cannot be serialized (nested deeper than JSON writers go, a value no JSON
    holds): the same event fails the same way on every attempt, so it is dead-lettered."""

    code = "not_serializable"


class PluginConfigError(HandlerError):
    """A source's or sink's configuration is invalid."""
