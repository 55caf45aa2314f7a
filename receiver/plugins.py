"""Finding sources and sinks by the short names users type in config, and building them.

Only what the config names is built, and each sink validates its own options table, so an
error names the sink and the key (``sinks.archive.root: Field required``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from handlers.sink import Sink
from handlers.sinks.local import LocalSink
from handlers.source import Source
from handlers.sources.smartdocumentor import SOURCES as SMARTDOCUMENTOR_SOURCES
from receiver.config import Config, format_validation_error
from receiver.errors import ConfigError

__all__ = ["SINK_TYPES", "SOURCE_TYPES", "build_sinks", "build_sources"]


SOURCE_TYPES: dict[str, type[Any]] = dict(SMARTDOCUMENTOR_SOURCES)
SINK_TYPES: dict[str, Any] = {"local": LocalSink}


def build_sources(config: Config) -> dict[str, Source]:
    """One source instance per route name."""
    problems = []
    sources: dict[str, Source] = {}
    for index, route in enumerate(config.routes):
        factory = SOURCE_TYPES.get(route.source)
        if factory is None:
            problems.append(
                f"routes[{index}].source: unknown source {route.source!r} "
                f"(known: {', '.join(sorted(SOURCE_TYPES))})"
            )
            continue
        sources[route.name] = factory()
    if problems:
        raise ConfigError("\n  ".join(["invalid configuration:", *problems]))
    return sources


def build_sinks(config: Config, base_dir: Path) -> dict[str, Sink]:
    """One sink instance per configured sink name, options validated by the sink's own model."""
    problems: list[str] = []
    sinks: dict[str, Sink] = {}
    for name, options in config.sinks.items():
        kind = options.get("type")
        factory = SINK_TYPES.get(str(kind))
        if factory is None:
            problems.append(
                f"sinks.{name}.type: unknown sink type {kind!r} "
                f"(known: {', '.join(sorted(SINK_TYPES))})"
            )
            continue
        try:
            settings = factory.config_model.model_validate(options, context={"base_dir": base_dir})
        except ValidationError as exc:
            problems.extend(format_validation_error(exc, prefix=f"sinks.{name}"))
            continue
        sinks[name] = factory(settings)
    if problems:
        raise ConfigError("\n  ".join(["invalid configuration:", *problems]))
    return sinks
