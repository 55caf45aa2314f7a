"""A sink that accepts every event and stores nothing: for measuring hookdock's own cost.

Named in a bench config as ``type = "bench.null_sink:NullSink"`` (the bench scripts put the
checkout on ``PYTHONPATH``), so that what a dispatch figure measures is the journal and the
dispatcher, not a disk or a network.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from handlers.event import Event


class NullSinkConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NullSink:
    config_model = NullSinkConfig

    def __init__(self, config: NullSinkConfig) -> None:
        self.config = config
        self.delivered = 0

    async def deliver(self, event: Event) -> None:
        self.delivered += 1
