"""Alerts: events in which a vendor reports trouble of its own (SuperOffice's
``webhook.errors``: "I am failing to deliver to you").

A source marks such an event with ``Event.alert``, a line saying what is wrong.  The event is
routed and delivered like any other; besides, hookdock logs the line as an error when the
delivery is routed, and ``hookdock status`` counts the stored alerts by vendor and kind
(``"alerts": {"superoffice webhook.errors": 2}``), read from the journal without loading a
plugin.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from handlers.event import Event, RawDelivery
from handlers.redact import redact_text
from handlers.source import Source

__all__ = ["AlertingSource"]

log = logging.getLogger("hookdock")


class AlertingSource:
    """``source`` as the dispatcher sees it: the same events, alerts logged as errors.

    Only ``normalize`` is the dispatcher's; ``vendor`` and ``content_types`` are the
    protocol's, and ingest reads the wrapped source's own.
    """

    vendor: ClassVar[str] = "(wrapped)"
    content_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, source: Source) -> None:
        self.source = source

    def admit(self, delivery: RawDelivery) -> str:
        return self.source.admit(delivery)

    def normalize(self, delivery: RawDelivery) -> Sequence[Event]:
        events = self.source.normalize(delivery)
        for event in events:
            if event.alert:
                log.error(
                    "alert from %s (%s, route %s, delivery %s): %s",
                    event.vendor,
                    event.kind,
                    event.route,
                    event.delivery_id,
                    # The line is the source's, built from the vendor's values: keep it one
                    # line, and keep credentials such as SAS signatures out of the log.
                    redact_text(" ".join(event.alert.split()))[:500],
                )
        return events
