"""Durable storage of deliveries and their dispatch state."""

from receiver.journal.base import (
    AppendResult,
    Claim,
    DeliveryInfo,
    DeliveryState,
    Journal,
    Outcome,
)
from receiver.journal.sqlite import SqliteJournal

__all__ = [
    "AppendResult",
    "Claim",
    "DeliveryInfo",
    "DeliveryState",
    "Journal",
    "Outcome",
    "SqliteJournal",
]
