"""hookdock's host: ingest, verification, journal, dispatcher and command line."""

__version__ = "0.1.0"
