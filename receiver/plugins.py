"""Sources and sinks by the names config uses: entry points, or ``module:attr``.

A sink ``type`` or a route ``source`` is either the name of an entry point in the group
``hookdock.sinks`` / ``hookdock.sources`` (the built-ins are registered the same way, in
hookdock's own ``pyproject.toml``) or a ``module:attr`` string.  Only what the config names is
imported: one broken installed package cannot stop a service that does not use it.

Every problem is collected and reported at once, each on one line that names the config key,
the plugin and, for entry points, the distribution that provides it::

    sinks.archive.type: unknown sink type 'lcoal' (available: http, local, s3; or module:attr)
    sinks.archive.type: cannot import sink plugin 's3' from hookdock 0.1.0 \
(handlers.sinks.s3:S3Sink): ImportError: ...
    sinks.archive.bucket: Field required (plugin s3)

``available_plugins()`` reads entry-point metadata only, and never imports anything.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from handlers.poller import Poller
from handlers.redact import redact_text
from handlers.sink import Sink
from handlers.source import NoSettings, Source
from receiver.auth import AuthConfig, resolve_auth
from receiver.config import Config, RouteConfig, format_validation_error, split_sink_options
from receiver.errors import ConfigError

__all__ = [
    "GROUPS",
    "POLLER_GROUP",
    "SINK_GROUP",
    "SOURCE_GROUP",
    "LoadedPlugin",
    "PluginError",
    "PluginInfo",
    "Plugins",
    "available_plugins",
    "build_sinks",
    "build_sources",
    "load_plugin",
    "load_plugins",
]

log = logging.getLogger("hookdock")

SINK_GROUP = "hookdock.sinks"
SOURCE_GROUP = "hookdock.sources"
POLLER_GROUP = "hookdock.pollers"
GROUPS = (SINK_GROUP, SOURCE_GROUP, POLLER_GROUP)
_KIND = {SINK_GROUP: "sink", SOURCE_GROUP: "source", POLLER_GROUP: "poller"}


class PluginError(ConfigError):
    """A plugin could not be loaded; the message is one line naming it and its distribution."""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One entry point, from metadata only (nothing imported)."""

    name: str
    group: str
    value: str
    """``module:attr``."""
    distribution: str | None
    version: str | None

    @property
    def origin(self) -> str:
        """``hookdock 0.1.0``, or ``an unknown distribution``."""
        if self.distribution is None:
            return "an unknown distribution"
        return f"{self.distribution} {self.version}" if self.version else self.distribution


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A plugin that imported and passed its shape checks."""

    name: str
    """What the config wrote: an entry-point name or ``module:attr``."""
    group: str
    obj: Any
    value: str
    distribution: str | None
    """None for a ``module:attr`` reference."""
    version: str | None

    def describe(self) -> str:
        where = f"{self.distribution} {self.version}" if self.distribution else "module:attr"
        return f"{_KIND[self.group]} plugin {self.name!r} ({self.value}, from {where})"


def _info(ep: metadata.EntryPoint, group: str) -> PluginInfo:
    dist = ep.dist
    name = dist.metadata["Name"] if dist is not None else None
    return PluginInfo(
        name=ep.name,
        group=group,
        value=ep.value,
        distribution=name or None,
        version=(dist.version if dist is not None else None) or None,
    )


def available_plugins(group: str | None = None) -> list[PluginInfo]:
    """Every installed entry point of ``group`` (or of both groups), sorted; imports nothing.

    When two distributions register the same name, the first found on ``sys.path`` wins (the
    one that would be loaded); the other is left out.
    """
    out: list[PluginInfo] = []
    for current in GROUPS if group is None else (group,):
        seen: set[str] = set()
        for ep in metadata.entry_points(group=current):
            if ep.name not in seen:
                seen.add(ep.name)
                out.append(_info(ep, current))
    return sorted(out, key=lambda p: (p.group, p.name))


def _find_entry_point(group: str, name: str) -> PluginInfo | None:
    for ep in metadata.entry_points(group=group, name=name):
        return _info(ep, group)
    return None


def _exc(exc: BaseException) -> str:
    """``Type: message`` on one line, SAS signatures and URL passwords redacted; no traceback."""
    text = redact_text(" ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _shape_problem(group: str, obj: Any) -> str | None:
    """Why ``obj`` cannot be a plugin of ``group``, or None."""
    if not callable(obj):
        return f"is a {type(obj).__name__}, not a class or factory"
    if group == SINK_GROUP:
        model = getattr(obj, "config_model", None)
        missing = []
        if not inspect.iscoroutinefunction(getattr(obj, "deliver", None)):
            missing.append("no async deliver(event) method")
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            missing.append("no pydantic config_model")
        return f"is not a sink: {', '.join(missing)}" if missing else None
    if group == POLLER_GROUP:
        model = getattr(obj, "config_model", None)
        missing = []
        if not inspect.iscoroutinefunction(getattr(obj, "poll", None)):
            missing.append("no async poll(state, context) method")
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            missing.append("no pydantic config_model")
        return f"is not a poller: {', '.join(missing)}" if missing else None
    missing = [
        f"no {name}()" for name in ("admit", "normalize") if not callable(getattr(obj, name, None))
    ]
    if not isinstance(getattr(obj, "content_types", None), tuple | list | frozenset):
        missing.append("no content_types")
    return f"is not a source: {', '.join(missing)}" if missing else None


def load_plugin(group: str, ref: str) -> LoadedPlugin:
    """Import the plugin ``ref`` (an entry-point name or ``module:attr``) of ``group``.

    Raises ``PluginError`` with a one-line message (without the config key) on any failure:
    an unknown name, an import that raises anything, a missing attribute, the wrong shape.
    """
    kind = _KIND[group]
    info = _find_entry_point(group, ref)
    if info is None and ":" not in ref:
        names = ", ".join(p.name for p in available_plugins(group)) or "none installed"
        what = {SINK_GROUP: "sink type", SOURCE_GROUP: "source"}.get(group, "poller type")
        raise PluginError(f"unknown {what} {ref!r} (available: {names}; or module:attr)")
    if info is not None:
        value = info.value
        label = f"{kind} plugin {ref!r} from {info.origin} ({value})"
    else:
        value = ref
        label = f"{kind} plugin {ref!r}"
    module_name, _, attr = (part.strip() for part in value.partition(":"))
    if not module_name or not attr:
        raise PluginError(f"{label}: not of the form module:attr")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"cannot import {label}: {_exc(exc)}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(
                f"{label}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    problem = _shape_problem(group, obj)
    if problem is not None:
        raise PluginError(f"{label}: {module_name}:{attr} {problem}")
    return LoadedPlugin(
        name=ref,
        group=group,
        obj=obj,
        value=value,
        distribution=info.distribution if info else None,
        version=info.version if info else None,
    )


@dataclass
class Plugins:
    """What ``load_plugins`` built, and every problem it met on the way."""

    sources: dict[str, Source] = field(default_factory=dict)
    """By route name."""
    auths: dict[str, AuthConfig] = field(default_factory=dict)
    """By route name: the scheme each route uses (its own, or its source's default)."""
    sinks: dict[str, Sink] = field(default_factory=dict)
    """By sink name."""
    pollers: dict[str, Poller] = field(default_factory=dict)
    """By poller name."""
    loaded: dict[tuple[str, str], LoadedPlugin] = field(default_factory=dict)
    """By (group, reference)."""
    problems: list[str] = field(default_factory=list)

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError("\n  ".join(["invalid configuration:", *self.problems]))

    def log_loaded(self) -> None:
        for plugin in self.loaded.values():
            log.info("loaded %s", plugin.describe())


class _Loader:
    """Imports each reference once, remembering failures too."""

    def __init__(self, plugins: Plugins) -> None:
        self.plugins = plugins
        self.failed: dict[tuple[str, str], str] = {}

    def get(self, group: str, ref: str) -> LoadedPlugin | str:
        key = (group, ref)
        if key in self.plugins.loaded:
            return self.plugins.loaded[key]
        if key not in self.failed:
            try:
                self.plugins.loaded[key] = load_plugin(group, ref)
                return self.plugins.loaded[key]
            except PluginError as exc:
                self.failed[key] = str(exc)
        return self.failed[key]


def _construct(plugin: LoadedPlugin, where: str, *args: Any) -> Any:
    try:
        return plugin.obj(*args)
    except Exception as exc:
        raise PluginError(f"{where}: {plugin.describe()} failed to start: {_exc(exc)}") from exc


def _build_sources(config: Config, base_dir: Path, loader: _Loader) -> None:
    plugins = loader.plugins
    for index, route in enumerate(config.routes):
        where = f"routes[{index}].source"
        plugin = loader.get(SOURCE_GROUP, route.source)
        if isinstance(plugin, str):
            plugins.problems.append(f"{where}: {plugin}")
            continue
        auth = _route_auth(plugins, index, route, plugin)
        model = getattr(plugin.obj, "settings_model", None)
        args: tuple[Any, ...] = ()
        if model is NoSettings and route.settings:
            model = None  # to say so, rather than "unknown key" for each of them
        if isinstance(model, type) and issubclass(model, BaseModel):
            try:
                args = (model.model_validate(route.settings, context={"base_dir": base_dir}),)
            except ValidationError as exc:
                lines = format_validation_error(exc, prefix=f"routes[{index}].settings")
                plugins.problems.extend(f"{line} (source {route.source})" for line in lines)
                continue
        elif route.settings:
            plugins.problems.append(
                f"routes[{index}].settings: source {route.source!r} takes no settings"
            )
            continue
        try:
            source = _construct(plugin, where, *args)
        except PluginError as exc:
            plugins.problems.append(str(exc))
            continue
        if auth is not None:
            plugins.sources[route.name] = source
            plugins.auths[route.name] = auth


def _route_auth(
    plugins: Plugins, index: int, route: RouteConfig, plugin: LoadedPlugin
) -> AuthConfig | None:
    """The route's scheme, its source's default filled in; None (a problem noted) if invalid."""
    default = getattr(plugin.obj, "default_auth", None)
    try:
        return resolve_auth(route.auth, default if isinstance(default, Mapping) else None)
    except ValidationError as exc:
        plugins.problems.extend(format_validation_error(exc, prefix=f"routes[{index}].auth"))
    except ValueError as exc:
        plugins.problems.append(f"routes[{index}].auth: {exc} ({route.source})")
    return None


def _sink_settings(
    name: str, options: Mapping[str, Any], base_dir: Path, loader: _Loader
) -> tuple[LoadedPlugin, BaseModel] | list[str]:
    """A sink's plugin and its validated settings, or the problems, one line each."""
    host, own = split_sink_options(dict(options))
    ref = str(host.get("type"))
    plugin = loader.get(SINK_GROUP, ref)
    if isinstance(plugin, str):
        return [f"sinks.{name}.type: {plugin}"]
    model: type[BaseModel] = plugin.obj.config_model
    try:
        return plugin, model.model_validate(own, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = format_validation_error(exc, prefix=f"sinks.{name}")
        return [f"{line} (plugin {ref})" for line in lines]


def _build_sinks(config: Config, base_dir: Path, loader: _Loader) -> None:
    plugins = loader.plugins
    for name, options in config.sinks.items():
        built = _sink_settings(name, options, base_dir, loader)
        if isinstance(built, list):
            plugins.problems.extend(built)
            continue
        try:
            plugins.sinks[name] = _construct(built[0], f"sinks.{name}", built[1])
        except PluginError as exc:
            plugins.problems.append(str(exc))


def sink_option_problems(error: ConfigError, base_dir: Path) -> list[str]:
    """What the sink plugins say of the sinks of a configuration that did not validate as a
    whole (``ConfigError.sinks``): ``hookdock check`` names every problem in one run.  A sink
    without a type, and a key whose variable is missing (said already), are left out."""
    loader = _Loader(Plugins())
    problems: list[str] = []
    for name, options in (error.sinks or {}).items():
        if not isinstance(options, Mapping) or not isinstance(options.get("type"), str):
            continue
        built = _sink_settings(str(name), options, base_dir, loader)
        if isinstance(built, list):
            problems += [line for line in built if line.split(":", 1)[0] not in error.unset]
    return problems


def _build_pollers(config: Config, base_dir: Path, loader: _Loader) -> None:
    plugins = loader.plugins
    for index, poller in enumerate(config.pollers):
        plugin = loader.get(POLLER_GROUP, poller.type)
        if isinstance(plugin, str):
            plugins.problems.append(f"pollers[{index}].type: {plugin}")
            continue
        model: type[BaseModel] = plugin.obj.config_model
        try:
            settings = model.model_validate(poller.settings, context={"base_dir": base_dir})
        except ValidationError as exc:
            lines = format_validation_error(exc, prefix=f"pollers[{index}].settings")
            plugins.problems.extend(f"{line} (plugin {poller.type})" for line in lines)
            continue
        try:
            plugins.pollers[poller.name] = _construct(plugin, f"pollers[{index}]", settings)
        except PluginError as exc:
            plugins.problems.append(str(exc))


def load_plugins(
    config: Config,
    base_dir: Path,
    *,
    parts: Iterable[str] = ("sources", "sinks", "pollers"),
) -> Plugins:
    """Build every source and sink the config names; never raises for a plugin's problem.

    What could be built is in the result next to ``problems`` (one line each), so a caller can
    still run the checks of the sinks that did build (``hookdock check`` does).
    """
    plugins = Plugins()
    loader = _Loader(plugins)
    wanted = set(parts)
    if "sources" in wanted:
        _build_sources(config, base_dir, loader)
    if "sinks" in wanted:
        _build_sinks(config, base_dir, loader)
    if "pollers" in wanted:
        _build_pollers(config, base_dir, loader)
    return plugins


def build_sources(config: Config) -> dict[str, Source]:
    """One source instance per route name; ``ConfigError`` lists every problem."""
    plugins = load_plugins(config, Path.cwd(), parts=("sources",))
    plugins.raise_problems()
    plugins.log_loaded()
    return plugins.sources


def build_sinks(config: Config, base_dir: Path) -> dict[str, Sink]:
    """One sink instance per sink name, options validated by the plugin's own model."""
    plugins = load_plugins(config, base_dir, parts=("sinks",))
    plugins.raise_problems()
    plugins.log_loaded()
    return plugins.sinks


async def close_sinks(sinks: Mapping[str, Sink]) -> None:
    """``aclose()`` every sink that has one; a failure is logged and the others still close."""
    for name, sink in sinks.items():
        aclose = getattr(sink, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                log.exception("sink %s did not close cleanly", name)
