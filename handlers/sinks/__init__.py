"""Built-in sinks."""

from handlers.sinks.local import LocalSink, LocalSinkConfig

__all__ = ["LocalSink", "LocalSinkConfig"]
