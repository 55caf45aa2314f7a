"""Errors of the host, and how each becomes an HTTP response.

The tree::

    ReceiverError                  anything the host raises on purpose
    ├── ConfigError                the configuration is invalid; the message names the key
    ├── IngestError                a request is refused; ``status`` and a one-line ``message``
    │   ├── RouteNotFound          404
    │   ├── PayloadTooLarge        413
    │   ├── UnsupportedMediaType   415
    │   ├── AuthFailed             401
    │   └── BadPayload             400 / 422
    └── OperatorError              an operator's request cannot be done (API and CLI)
        ├── NotFound               404: no delivery, event, send or sink by that name
        ├── BadRequest             400: a bad filter, cursor or sink name
        ├── Unauthorized           401: no admin token, or not one of ``[admin] tokens``
        └── Forbidden              403: a console action without its session's CSRF token,
                                   or sent from another site

The journal keeps its own errors (``receiver.journal.errors``: ``JournalError``, and
``JournalUnavailable``, which ingest answers with 503); they are re-exported here.

Every ingest error body is one short plain-text line, prefixed ``hookdock:``, because a
SmartDocumentor reviewer reads it on the document.  It never holds a secret or a traceback.
"""

from __future__ import annotations

from receiver.journal.errors import JournalError, JournalUnavailable

__all__ = [
    "AuthFailed",
    "BadPayload",
    "BadRequest",
    "ConfigError",
    "Forbidden",
    "IngestError",
    "JournalError",
    "JournalUnavailable",
    "NotFound",
    "OperatorError",
    "PayloadTooLarge",
    "ReceiverError",
    "RouteNotFound",
    "Unauthorized",
    "UnsupportedMediaType",
]


class ReceiverError(Exception):
    """Something the host can explain went wrong."""


class ConfigError(ReceiverError):
    """The configuration is invalid; the message names the key and what is wrong with it.

    ``sinks`` is the document's ``[sinks]`` (variables expanded) when it could be read, and
    ``unset`` the keys whose variable is missing: what ``hookdock check`` still hands to the
    sink plugins, so that their problems are named in the same run."""

    def __init__(
        self,
        message: str,
        *,
        sinks: dict[str, object] | None = None,
        unset: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(message)
        self.sinks = sinks
        self.unset = unset


class IngestError(ReceiverError):
    """A request was refused.  ``message`` is shown to the sender as is."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class RouteNotFound(IngestError):
    status = 404


class PayloadTooLarge(IngestError):
    status = 413


class UnsupportedMediaType(IngestError):
    status = 415


class AuthFailed(IngestError):
    status = 401


class BadPayload(IngestError):
    status = 422


class OperatorError(ReceiverError):
    """An operator's request cannot be done; ``message`` says why (and what to do instead)."""

    status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(OperatorError):
    status = 404


class BadRequest(OperatorError):
    status = 400


class Unauthorized(OperatorError):
    status = 401


class Forbidden(OperatorError):
    status = 403
