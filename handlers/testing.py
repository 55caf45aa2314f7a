"""Fakes and a contract test for sources, sinks and the host.

* ``RecordingSink``: records what it is given, idempotently, and can be told to fail.
* ``make_event(**fields)``: a valid ``Event`` with a fresh id, for a sink's tests.
* ``SinkContract``: the tests every sink must pass.  Subclass it in your own test module,
  provide a ``sink`` fixture and ``copies()``, and pytest runs them against your sink::

      class TestMySink(SinkContract):
          @pytest.fixture
          async def sink(self, tmp_path):
              sink = MySink(MySink.config_model(root=tmp_path))
              yield sink
              await sink.aclose()

          async def copies(self, sink, event):
              return len(list(sink.config.root.glob(f"*{event.event_id}*")))

  A sink that takes files (``FileSink``) also provides ``stored_file(sink, event, role)``: the
  bytes of the stored file, read back from the destination, or None; the file tests are
  skipped for sinks that take no files.

  It needs pytest and anyio (its tests are async and run on asyncio).
* ``SourceContract`` and ``make_delivery``: the same for sources (``handlers.source_contract``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from handlers.errors import PermanentSinkError, RetryableSinkError
from handlers.event import Event, FileRef
from handlers.files import IncomingFile
from handlers.sink import FileSink, Sink
from handlers.source_contract import SourceContract, make_delivery

__all__ = ["RecordingSink", "SinkContract", "SourceContract", "make_delivery", "make_event"]

_counter = itertools.count()


def make_event(**fields: Any) -> Event:
    """A SmartDocumentor-like event with a unique ``event_id``; ``fields`` override any field."""
    n = next(_counter)
    delivery_id = fields.pop("delivery_id", f"t{os.getpid():x}{n:06d}{os.urandom(3).hex()}")
    values: dict[str, Any] = {
        "event_id": f"{delivery_id}-0",
        "delivery_id": delivery_id,
        "vendor": "smartdocumentor",
        "kind": "text_document",
        "route": "contract",
        "received_at": datetime.now(UTC),
        "task_id": f"task-{n}",
        "task_number": n,
        "workspace_id": "7",
        "display_name": f"invoice {n}.pdf",
        "payload": {"taskId": f"task-{n}", "workspaceId": 7, "displayName": f"invoice {n}.pdf"},
    }
    values.update(fields)
    return Event(**values)


class RecordingSink:
    """Keeps every event by id (idempotent like a real sink) and can be told to fail.

    ``fail_next`` failures are raised before anything is recorded: retryable ones unless
    ``permanent`` is set.
    """

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}
        self.calls = 0
        self.fail_next = 0
        self.permanent = False
        self.closed = False

    async def deliver(self, event: Event) -> None:
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            if self.permanent:
                raise PermanentSinkError("recording sink: told to fail for good")
            raise RetryableSinkError("recording sink: told to fail")
        self.events.setdefault(event.event_id, event)

    async def aclose(self) -> None:
        self.closed = True


class SinkContract:
    """What hookdock relies on from every sink; subclass it to run the checks on yours.

    Provide a ``sink`` fixture (yield a ready sink; close it afterwards) and
    ``copies(sink, event)``: how many copies of ``event`` the destination holds, read back
    from the destination itself.
    """

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def sink(self) -> Any:
        raise NotImplementedError("provide a `sink` fixture that yields the sink under test")

    async def copies(self, sink: Any, event: Event) -> int:
        raise NotImplementedError("read the destination back: how many copies of the event")

    async def stored_file(self, sink: Any, event: Event, role: str) -> bytes | None:
        raise NotImplementedError("read the destination back: the stored file's bytes, or None")

    def _file_sink(self, sink: Any) -> FileSink:
        if not isinstance(sink, FileSink):
            pytest.skip("the sink takes no files")
        return sink

    @pytest.mark.anyio
    async def test_is_a_sink_with_a_strict_config_model(self, sink: Any) -> None:
        assert isinstance(sink, Sink)
        model = getattr(type(sink), "config_model", None)
        assert isinstance(model, type) and issubclass(model, BaseModel), "a pydantic config_model"
        assert model.model_config.get("extra") == "forbid", "unknown options must be errors"
        assert model.model_config.get("frozen") is True

    @pytest.mark.anyio
    async def test_delivers_an_event(self, sink: Any) -> None:
        event = make_event()
        await sink.deliver(event)
        assert await self.copies(sink, event) == 1

    @pytest.mark.anyio
    async def test_is_idempotent_on_the_event_id(self, sink: Any) -> None:
        event = make_event()
        await sink.deliver(event)
        await sink.deliver(event)
        assert await self.copies(sink, event) == 1

    @pytest.mark.anyio
    async def test_the_same_event_at_once_is_one_copy(self, sink: Any) -> None:
        event = make_event()
        await asyncio.gather(*(sink.deliver(event) for _ in range(4)))
        assert await self.copies(sink, event) == 1

    @pytest.mark.anyio
    async def test_distinct_events_are_distinct_copies(self, sink: Any) -> None:
        events = [make_event() for _ in range(5)]
        await asyncio.gather(*(sink.deliver(e) for e in events))
        assert [await self.copies(sink, e) for e in events] == [1] * 5

    @pytest.mark.anyio
    async def test_check_reports_a_list_of_problems(self, sink: Any) -> None:
        check = getattr(sink, "check", None)
        if check is None:
            pytest.skip("the sink has no check()")
        problems = await check()
        assert isinstance(problems, list)
        assert problems == [], f"a healthy destination reported problems: {problems}"

    @pytest.mark.anyio
    async def test_aclose_twice_is_harmless(self, sink: Any) -> None:
        await sink.deliver(make_event())
        aclose = getattr(sink, "aclose", None)
        if aclose is None:
            pytest.skip("the sink has no aclose()")
        await aclose()
        await aclose()

    # ------------------------------------------------------------------ files

    @staticmethod
    def _file_event() -> Event:
        url = "https://vendor.example/files/scan%20one.pdf?se=2030-01-01T00:00:00Z&sig=SECRET"
        return make_event(files=(FileRef(role="exported", url=url),))

    @pytest.mark.anyio
    async def test_stores_a_file_byte_identical(self, sink: Any) -> None:
        file_sink = self._file_sink(sink)
        event = self._file_event()
        data = os.urandom(300_000)
        incoming = IncomingFile.from_bytes("exported", data, filename="scan one.pdf")
        await file_sink.deliver_file(event, incoming)
        assert incoming.done, "deliver_file must read the stream to its end"
        assert await self.stored_file(sink, event, "exported") == data
        await file_sink.deliver(event.with_files({"exported": incoming.info()}))
        assert await self.copies(sink, event) >= 1

    @pytest.mark.anyio
    async def test_a_file_stored_twice_is_one_file(self, sink: Any) -> None:
        file_sink = self._file_sink(sink)
        event = self._file_event()
        data = os.urandom(70_000)
        for _ in range(2):
            await file_sink.deliver_file(
                event, IncomingFile.from_bytes("exported", data, filename="a.pdf")
            )
        assert await self.stored_file(sink, event, "exported") == data

    @pytest.mark.anyio
    async def test_a_download_that_fails_midway_stores_nothing(self, sink: Any) -> None:
        file_sink = self._file_sink(sink)
        event = self._file_event()

        async def broken() -> Any:
            yield b"x" * 100_000
            raise RetryableSinkError("download cut")

        incoming = IncomingFile("exported", broken(), filename="a.pdf")
        raised: BaseException | None = None
        try:
            await file_sink.deliver_file(event, incoming)
        except Exception as exc:  # whatever the sink made of it, it must not pass as stored
            raised = exc
        assert raised is not None, "a cut download must not count as a stored file"
        assert isinstance(incoming.failure, RetryableSinkError)
        assert await self.stored_file(sink, event, "exported") is None
