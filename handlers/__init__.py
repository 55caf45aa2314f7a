"""hookdock's plugin kit: the ``Event`` model, the ``Source`` and ``Sink`` protocols, errors.

A plugin author needs only this package; it never imports ``receiver``.
"""

from handlers.errors import (
    FileUnavailable,
    HandlerError,
    NormalizeError,
    PayloadRejected,
    PermanentSinkError,
    PluginConfigError,
    RetryableSinkError,
    SinkError,
    SinkGone,
)
from handlers.event import Event, FileRef, RawDelivery
from handlers.files import FileInfo, IncomingFile
from handlers.redact import redact_text, redact_url
from handlers.sink import FileSink, Sink
from handlers.source import Source, SourceBase, SourceSettings

__all__ = [
    "Event",
    "FileInfo",
    "FileRef",
    "FileSink",
    "FileUnavailable",
    "HandlerError",
    "IncomingFile",
    "NormalizeError",
    "PayloadRejected",
    "PermanentSinkError",
    "PluginConfigError",
    "RawDelivery",
    "RetryableSinkError",
    "Sink",
    "SinkError",
    "SinkGone",
    "Source",
    "SourceBase",
    "SourceSettings",
    "redact_text",
    "redact_url",
]
