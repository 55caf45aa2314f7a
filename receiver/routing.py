"""Routing: which sinks an event goes to.

A route names its default sinks and, optionally, rules.  Rules are tried in order and the
first whose every condition holds decides: its ``sinks`` (one event can fan out to several)
or ``drop = true``.  An event no rule matches goes to the route's default ``sinks``::

    [[routes]]
    name = "sd-anon"
    sinks = ["archive"]                                  # everything else
    rules = [
      { workspace_id = ["41", "42"], sinks = ["s3", "archive"] },
      { fields = { "totalPages" = 0 }, drop = true },
    ]

A condition's value is one value or a list of values (any of them matches).  ``attributes``
matches what the source names its events by (``{ entity = "contact", tenant = "Cust1" }``
for SuperOffice, ``{ workspace_id = "41" }`` for SmartDocumentor), ``fields`` the vendor's
JSON payload by dotted path (``chunks.0.type``); numbers and strings
match across types (``7`` matches ``"7"``), since vendors are not consistent about ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from handlers.event import Event
from handlers.jsonpath import MISSING, lookup

__all__ = ["Router", "RuleConfig"]

Scalar = str | int | float | bool
Wanted = Scalar | Annotated[list[Scalar], Field(min_length=1)]

_EVENT_KEYS = ("vendor", "kind", "task_id", "workspace_id", "batch_id", "external_id")


class RuleConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    vendor: Wanted | None = None
    kind: Wanted | None = None
    task_id: Wanted | None = None
    workspace_id: Wanted | None = None
    batch_id: Wanted | None = None
    external_id: Wanted | None = None
    attributes: dict[str, Wanted] = {}
    """The event's attributes, by the names its source gives them (``entity``, ``tenant``)."""
    fields: dict[str, Wanted] = {}
    """Dotted paths into the vendor's payload, such as ``documentType`` or ``chunks.0.type``."""
    sinks: list[str] = []
    drop: bool = False

    @model_validator(mode="after")
    def _one_outcome(self) -> RuleConfig:
        if self.drop and self.sinks:
            raise ValueError("a rule either drops events or names sinks, not both")
        if not self.drop and not self.sinks:
            raise ValueError("a rule needs sinks = [...] or drop = true")
        return self

    def conditions(self) -> list[tuple[str, tuple[Scalar, ...]]]:
        """(where, accepted values): ``event.kind`` style for event fields, ``attributes.NAME``
        for attributes, else payload paths."""
        out: list[tuple[str, tuple[Scalar, ...]]] = []
        for key in _EVENT_KEYS:
            wanted = getattr(self, key)
            if wanted is not None:
                out.append((f"event.{key}", _as_tuple(wanted)))
        out.extend(
            (f"attributes.{name}", _as_tuple(wanted)) for name, wanted in self.attributes.items()
        )
        out.extend((f"payload.{path}", _as_tuple(wanted)) for path, wanted in self.fields.items())
        return out


def _as_tuple(wanted: Wanted) -> tuple[Scalar, ...]:
    return tuple(wanted) if isinstance(wanted, list) else (wanted,)


def _same(actual: Any, wanted: Scalar) -> bool:
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return actual is wanted
    if isinstance(actual, str | int | float) and isinstance(wanted, str | int | float):
        return actual == wanted or str(actual) == str(wanted)
    return False


class _Compiled:
    __slots__ = ("attribute_conditions", "event_conditions", "payload_conditions", "sinks")

    def __init__(self, rule: RuleConfig) -> None:
        self.event_conditions: list[tuple[str, tuple[Scalar, ...]]] = []
        self.attribute_conditions: list[tuple[str, tuple[Scalar, ...]]] = []
        self.payload_conditions: list[tuple[str, tuple[Scalar, ...]]] = []
        targets = {
            "event": self.event_conditions,
            "attributes": self.attribute_conditions,
            "payload": self.payload_conditions,
        }
        for where, wanted in rule.conditions():
            scope, name = where.split(".", 1)
            targets[scope].append((name, wanted))
        self.sinks: tuple[str, ...] = () if rule.drop else tuple(dict.fromkeys(rule.sinks))

    def matches(self, event: Event) -> bool:
        for name, wanted in self.event_conditions:
            actual = getattr(event, name)
            if actual is None or not any(_same(actual, w) for w in wanted):
                return False
        for name, wanted in self.attribute_conditions:
            actual = event.attributes.get(name)
            if actual is None or not any(_same(actual, w) for w in wanted):
                return False
        for path, wanted in self.payload_conditions:
            actual = lookup(event.payload, path)
            if actual is MISSING or not any(_same(actual, w) for w in wanted):
                return False
        return True


class Router:
    """Picks an event's sinks by the route's rules; pure and cheap, so it runs per event."""

    def __init__(self, rules: Sequence[RuleConfig], default_sinks: Sequence[str]) -> None:
        self._rules = [_Compiled(rule) for rule in rules]
        self._default = tuple(dict.fromkeys(default_sinks))

    def sinks_for(self, event: Event) -> tuple[str, ...]:
        """The sinks ``event`` goes to, in config order; empty when it is dropped."""
        for rule in self._rules:
            if rule.matches(event):
                return rule.sinks
        return self._default
