"""A hookdock sink that appends each event as one JSON line to a file.

Configured as::

    [sinks.journal-copy]
    type = "jsonl"
    path = "events.jsonl"   # relative to the config file's folder
    fsync = true

It is idempotent on the event id: on first use it reads the ids already in the file, and it
holds an asyncio lock while it checks and appends, so the same event delivered twice (a retry,
a replay, two at once) is written once.  A line torn by a crash is skipped when the file is
read back and the event is written again in full on the next delivery.

Only ``handlers`` (hookdock's plugin kit) and pydantic are imported, never ``receiver``.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from handlers import Event, RetryableSinkError

__all__ = ["JsonlSink", "JsonlSinkConfig"]


class JsonlSinkConfig(BaseModel):
    """The plugin's own keys of a ``[sinks.NAME]`` table (hookdock keeps ``type``, ``retry``
    and ``concurrency`` for itself and does not pass them here)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    """The file the lines go to; a relative path starts at the config file's folder."""
    fsync: bool = True
    """fsync the file after every line (and its folder when the file is new)."""

    @field_validator("path")
    @classmethod
    def _resolve(cls, path: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        return path


class JsonlSink:
    """Appends ``event.model_dump_json()`` plus a newline to ``config.path``, once per event id."""

    config_model: ClassVar[type[BaseModel]] = JsonlSinkConfig

    def __init__(self, config: JsonlSinkConfig) -> None:
        self.config = config
        self.path = config.path
        self._seen: set[str] | None = None
        self._torn_tail = False
        self._lock = asyncio.Lock()

    async def deliver(self, event: Event) -> None:
        line = event.model_dump_json() + "\n"
        async with self._lock:
            try:
                if self._seen is None:
                    found, self._torn_tail = await asyncio.to_thread(self._scan)
                    self._seen = found
                seen: set[str] = self._seen
                if event.event_id in seen:
                    return
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                raise RetryableSinkError(
                    f"jsonl sink: cannot write {self.path}: {exc.strerror or exc}"
                ) from exc
            seen.add(event.event_id)

    def _scan(self) -> tuple[set[str], bool]:
        """The event ids already in the file, and whether its last line was torn."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return set(), False
        seen: set[str] = set()
        for raw in data.splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # a line torn by a crash: that event was not acknowledged
            if isinstance(record, dict) and isinstance(record.get("event_id"), str):
                seen.add(record["event_id"])
        return seen, bool(data) and not data.endswith(b"\n")

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        data = line.encode("utf-8")
        if self._torn_tail:
            data = b"\n" + data  # start on a line of our own after a torn one
        with self.path.open("ab") as file:
            file.write(data)
            file.flush()
            if self.config.fsync:
                os.fsync(file.fileno())
        self._torn_tail = False
        if new and self.config.fsync:
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    async def check(self) -> list[str]:
        """Every reason the file could not be appended to; empty when it can."""
        return await asyncio.to_thread(self._check)

    def _check(self) -> list[str]:
        folder = self.path.parent
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            return [f"jsonl sink: {folder} cannot be created"]
        if not os.access(existing, os.W_OK | os.X_OK):
            return [f"jsonl sink: {existing} is not writable"]
        if self.path.exists() and not os.access(self.path, os.W_OK):
            return [f"jsonl sink: {self.path} is not writable"]
        return []

    async def aclose(self) -> None:
        """Nothing is held open between deliveries; forget the ids read (harmless twice)."""
        self._seen = None
