"""Configuration: one TOML file, ``${ENV}`` references for secrets, strict validation at startup.

Every model is frozen and forbids unknown keys, so a typo stops the start with the key named.
Relative paths are taken from the config file's folder (from the working directory for the
embedded defaults).  Sink options and a route's source ``settings`` are open sets: each
plugin validates its own table when it is loaded (``receiver.plugins``), and so is a route's
``auth`` without a ``type``, which takes its source's scheme.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from handlers.json_depth import DEFAULT_MAX_JSON_DEPTH
from handlers.netguard import AllowedNetwork, HostPattern
from receiver.auth import RouteAuth, SourceDefaultAuth, route_auth
from receiver.errors import ConfigError
from receiver.journal.config import JournalConfig, SqliteConfig
from receiver.logs import LogConfig
from receiver.ops_webhooks import OpsWebhooksConfig
from receiver.routing import RuleConfig

__all__ = [
    "AdminConfig",
    "ClusterConfig",
    "Config",
    "DispatcherConfig",
    "FilesConfig",
    "JournalConfig",
    "PollerConfig",
    "RetentionConfig",
    "RetryConfig",
    "RouteConfig",
    "ServerConfig",
    "SinkHostConfig",
    "expand_env",
    "format_validation_error",
    "load_config",
    "parse_config",
    "split_sink_options",
]

MiB = 1024 * 1024
GiB = 1024 * MiB
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Model(BaseModel):
    # hide_input_in_errors: a misspelt key next to a secret must not print the secret.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    grace_seconds: Annotated[float, Field(gt=0, le=3600)] = 20.0
    """On SIGTERM: how long in-flight requests and sink deliveries may take to finish."""
    drain_seconds: Annotated[float, Field(ge=0, le=600)] = 0.0
    """On SIGTERM: how long /readyz answers 503 before the listener closes, for load balancers."""
    access_log: bool = False
    """uvicorn's access log.  Off by default: it would log URL tokens."""
    header_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    """A request's line and headers must all arrive within this long (408, then close)."""
    body_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """A request's whole body must arrive within this long after its headers (408, close)."""
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    """The request line and headers together, at most (431, then close)."""
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Open connections at once; one more is answered 503 and closed as it opens."""
    keep_alive_seconds: Annotated[int, Field(ge=1, le=600)] = 5
    """An idle kept-alive connection is closed after this long."""


DEFAULT_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600)
"""Seconds to wait after failed attempt 1, 2, ...; the last one repeats (hourly)."""


class RetryConfig(_Model):
    """When to try a failed (event, sink) pair again, and when to give up on it.

    The default waits 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then hourly: 30 attempts span
    about a day (24.7 h) before the pair is dead-lettered.  ``base_seconds`` switches to
    exponential backoff (base, 2 x base, 4 x base, ... up to ``cap_seconds``) instead.
    """

    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 30
    schedule: Annotated[tuple[Annotated[float, Field(gt=0)], ...], Field(min_length=1)] | None = (
        None
    )
    """Delays in seconds after each failed attempt; the last repeats.  Default: DEFAULT_SCHEDULE."""
    base_seconds: Annotated[float, Field(gt=0)] | None = None
    cap_seconds: Annotated[float, Field(gt=0)] | None = None
    """The longest wait, for either form (default: 1 h for exponential backoff, none else)."""
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Share of each delay drawn at random, so retries from many deliveries spread out."""

    @model_validator(mode="after")
    def _one_form(self) -> RetryConfig:
        if self.schedule is not None and self.base_seconds is not None:
            raise ValueError("give either schedule or base_seconds, not both")
        return self

    def merged(self, override: dict[str, Any]) -> RetryConfig:
        """This policy with ``override``'s keys on top (a sink's own ``retry`` table)."""
        base = self.model_dump(exclude_unset=True)
        if "base_seconds" in override:
            base.pop("schedule", None)
        if "schedule" in override:
            base.pop("base_seconds", None)
        return RetryConfig.model_validate({**base, **override})


class DispatcherConfig(_Model):
    enabled: bool = True
    """Run the dispatcher inside ``hookdock serve``; turn off when ``hookdock worker`` runs it."""
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 16
    """Each sink's slots unless the sink (or its plugin) says otherwise."""
    route_concurrency: Annotated[int, Field(ge=1, le=4096)] = 256
    """Deliveries routed at once.  Routing is hookdock's own work (no destination to spare),
    and the routings in flight are written together, one group commit for them all."""
    route_bytes: Annotated[int, Field(ge=1, le=16 * 1024 * MiB)] = 64 * MiB
    """Body bytes routed at once: a claim takes up to ``route_concurrency`` deliveries whose
    bodies add up to no more than this (always one, whatever its size), so that deliveries
    of small bodies are routed many at a time and large ones fewer, in bounded memory."""
    lease_seconds: Annotated[float, Field(gt=0, le=86400)] = 60.0
    poll_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    busy_requests: Annotated[int, Field(ge=0, le=100_000)] = 32
    """Ingest first: with this many requests at work (body received, being journaled),
    exports pause for up to ``busy_pause_seconds``, then run as long whatever ingest does
    (``receiver/ingest_first.py``): a burst is journaled and answered at full speed and
    exported right after, and a sustained rate does not starve exports.  0: never pause.
    Not fewer than about 32: requests waiting on the group commit's fsync count too, and at
    a steady 1,000/s a few milliseconds of it keep eight at work most of the time, so 8
    paused exports that the process had the room for (POST-to-file p99 up to 0.9 s instead
    of 30 to 86 ms, bench/README.md)."""
    busy_pause_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    file_transfers: Annotated[int, Field(ge=1, le=256)] = 4
    """Files downloaded at once, across every sink: each transfer takes a few MiB (a part or
    two for S3), so this bounds the memory files take, however many wait."""
    retry: RetryConfig = RetryConfig()


class ClusterConfig(_Model):
    """Liveness of the processes sharing a journal (``[cluster]``)."""

    heartbeat_seconds: Annotated[float, Field(gt=0, le=600)] = 5.0
    """How often each process records that it is alive, and looks for dead ones."""
    stale_seconds: Annotated[float, Field(gt=0, le=86400)] = 30.0
    """A process whose heartbeat is older than this is gone: its work is taken over."""
    node: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")] | None = None
    """This machine's name in the journal (default: the host name).  Processes of the same
    node are checked by pid, so a restart after a crash takes its work back at once; those of
    other nodes by their heartbeat.  Give replicas that share a host name (containers with a
    fixed one) names of their own."""

    @model_validator(mode="after")
    def _stale_after_beats(self) -> ClusterConfig:
        if self.stale_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "cluster.stale_seconds: must be at least twice heartbeat_seconds, or a slow"
                " beat would have a live process's work taken over"
            )
        return self


class RetentionConfig(_Model):
    """``[retention]``: delete delivered and dead deliveries past their ages, in one process
    at a time."""

    delivered_days: Annotated[float, Field(ge=0, le=36500)] = 0.0
    """Done deliveries (raw bodies, events, sends, attempts) older than this go; 0 keeps all."""
    dead_days: Annotated[float, Field(ge=0, le=36500)] = 0.0
    """Dead deliveries older than this go too (they hold raw bodies: SAS links, personal
    data); 0 keeps them until an operator retries or prunes them."""
    every_seconds: Annotated[float, Field(gt=0, le=86400)] = 3600.0


def _admin_token(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < 24:
        raise ValueError("an admin token needs 24 characters or more")
    return value


class AdminConfig(_Model):
    """``[admin]``: the operators' HTTP API under ``/admin/api`` and web console under
    ``/admin``, with tokens of their own.

    Without ``tokens`` both are off.  With ``port``, it listens there (on ``host``) and not
    beside the webhooks, so it need not be exposed where they are.
    """

    tokens: tuple[Annotated[SecretStr, AfterValidator(_admin_token)], ...] = ()
    """Bearer tokens (``Authorization: Bearer ...``), 24 characters or more: ``${NAME}``."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """A listener of its own for the API; None: beside the webhooks, on ``[server]``'s."""
    console: bool = True
    """The web console under ``/admin`` (with ``tokens``): log in with one of them."""
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 8.0
    """How long a console login lasts."""
    replay_chunk: Annotated[int, Field(ge=1, le=10_000)] = 500
    """Events a bulk replay replays in one transaction, between its pauses for live traffic:
    smaller, it holds the journal's write lock for less at a time, and goes slower."""


class FilesConfig(_Model):
    """What a route does with the files its events refer to (``[routes.files]``).

    SmartDocumentor's ``exportedFileUrl`` (role ``exported``) is fetched by default and
    ``originalFileUrl`` (``original``) on request: ``fetch = ["exported", "original"]``;
    ``fetch = []`` leaves every link to whoever reads the event.  Each file goes to every sink
    of the event that takes files, next to the event.
    """

    fetch: tuple[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")], ...] = ("exported",)
    """The roles of the file references to fetch.  An event with several files of one role
    numbers the others (``exported-2``, ``exported-3``): they are fetched with it."""
    max_bytes: Annotated[int, Field(ge=1, le=1024 * GiB)] = 2 * GiB
    """A larger file is refused (dead-lettered with the reason), not stored."""
    allow_hosts: tuple[HostPattern, ...] = ()
    """Host patterns files may come from, e.g. ``*.blob.core.windows.net``; empty: any host."""
    allow_networks: tuple[AllowedNetwork, ...] = ()
    """Opt-in: private, loopback or other internal networks that may be reached, such as
    ``127.0.0.1/32``.  Without it such addresses are refused (SSRF guard); cloud metadata
    addresses are refused always."""
    connect_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    read_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Idle read: the longest wait for the next bytes of a file."""
    total_seconds: Annotated[float, Field(gt=0, le=86400)] = 3600.0
    """The longest one transfer may take, start to end."""
    max_redirects: Annotated[int, Field(ge=0, le=3)] = 3


class RouteConfig(_Model):
    name: Annotated[str, Field(pattern=_NAME)]
    source: str
    auth: Annotated[RouteAuth, BeforeValidator(route_auth)] = Field(
        default_factory=SourceDefaultAuth
    )
    """A scheme (``type = ...``); without a type, the source's own scheme with these keys on
    top (SuperOffice: ``auth = { secret = "..." }``)."""
    settings: dict[str, Any] = {}
    """The source's own settings, validated by its ``settings_model`` when it is loaded."""
    sinks: list[str]
    """Where an event goes when no rule matches it (empty: dropped unless a rule matches)."""
    rules: list[RuleConfig] = []
    """Tried in order; the first that matches an event picks its sinks (or drops it)."""
    max_body_bytes: Annotated[int, Field(ge=1, le=1024 * MiB)] = MiB
    max_json_depth: Annotated[int, Field(ge=1, le=200)] = DEFAULT_MAX_JSON_DEPTH
    """Levels a JSON body may nest; deeper is refused (422) before it is journaled.  At most
    200: JSON writers stop near 254, and an event wraps the payload in levels of its own."""
    files: FilesConfig = FilesConfig()

    @model_validator(mode="after")
    def _has_destination(self) -> RouteConfig:
        if not self.sinks and not self.rules:
            raise ValueError("sinks: name at least one sink (or add rules)")
        return self

    def sink_names(self) -> list[str]:
        """Every sink this route can send to, default and rules', in first-seen order."""
        return _sink_names(self.sinks, self.rules)


def _sink_names(sinks: list[str], rules: list[RuleConfig]) -> list[str]:
    names = dict.fromkeys(sinks)
    for rule in rules:
        names.update(dict.fromkeys(rule.sinks))
    return list(names)


class PollerConfig(_Model):
    """A ``[[pollers]]`` entry: a vendor asked on a schedule, its findings routed like a route's."""

    name: Annotated[str, Field(pattern=_NAME)]
    type: str
    """The plugin: an entry-point name in ``hookdock.pollers`` or ``module:attr``."""
    interval_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = 300.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Share of the interval drawn at random, so replicas' and pollers' calls spread out."""
    max_backoff_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = 3600.0
    """After failed polls the wait doubles from the interval up to this (or ``Retry-After``)."""
    settings: dict[str, Any] = {}
    """The poller's own options, validated by its plugin."""
    sinks: list[str] = []
    """Where the poller's own events go when no rule matches."""
    rules: list[RuleConfig] = []
    files: FilesConfig = FilesConfig()
    """The files the poller's events link to (a Documill batch's results), as for a route."""

    @model_validator(mode="after")
    def _has_destination(self) -> PollerConfig:
        if not self.sinks and not self.rules:
            raise ValueError("sinks: name at least one sink (or add rules)")
        return self

    def sink_names(self) -> list[str]:
        return _sink_names(self.sinks, self.rules)


HOST_SINK_KEYS = frozenset({"type", "retry", "concurrency"})
"""Keys of a ``[sinks.NAME]`` table that hookdock reads; the rest belong to the sink plugin."""


class SinkHostConfig(_Model):
    """What hookdock itself reads from a ``[sinks.NAME]`` table."""

    type: str
    """The plugin: an entry-point name in ``hookdock.sinks`` or ``module:attr``."""
    retry: dict[str, Any] = {}
    """Keys of ``RetryConfig`` for this sink, on top of ``dispatcher.retry``."""
    concurrency: Annotated[int, Field(ge=1, le=1024)] | None = None
    """At most this many deliveries to this sink at once (default: ``dispatcher.concurrency``)."""


def split_sink_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``[sinks.NAME]`` table as (hookdock's keys, the plugin's own options)."""
    host = {k: v for k, v in options.items() if k in HOST_SINK_KEYS}
    plugin = {k: v for k, v in options.items() if k not in HOST_SINK_KEYS}
    return host, plugin


class Config(_Model):
    server: ServerConfig = ServerConfig()
    journal: JournalConfig = SqliteConfig()
    dispatcher: DispatcherConfig = DispatcherConfig()
    cluster: ClusterConfig = ClusterConfig()
    retention: RetentionConfig = RetentionConfig()
    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    alerts: OpsWebhooksConfig = OpsWebhooksConfig()
    routes: Annotated[list[RouteConfig], Field(min_length=1)]
    sinks: dict[Annotated[str, Field(pattern=_NAME)], dict[str, Any]]
    pollers: list[PollerConfig] = []

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        # Every problem at once, one line each: a config is fixed in one pass, not one a run.
        problems = _reference_problems(
            [route.model_dump(include={"name", "sinks", "rules"}) for route in self.routes],
            self.sinks,
        )
        webhook_secrets = [
            (route.name, secret.get_secret_value())
            for route in self.routes
            for key in ("token", "password")
            if (secret := getattr(route.auth, key, None)) is not None
        ]
        for number, token in enumerate(self.admin.tokens):
            for name, value in webhook_secrets:
                if token.get_secret_value() == value:
                    problems.append(
                        f"admin.tokens[{number}]: the same as the token of route {name!r}:"
                        " give the admin API a token of its own"
                    )
        seen = {route.name for route in self.routes}
        defined = ", ".join(sorted(self.sinks)) or "none"
        for index, poller in enumerate(self.pollers):
            if poller.name in seen:
                # A poller's own events travel as deliveries on a route of its name.
                problems.append(
                    f"pollers[{index}].name: {poller.name!r} is already a route or poller name"
                )
            seen.add(poller.name)
            wanted = [*poller.sinks, *(s for rule in poller.rules for s in rule.sinks)]
            for sink in wanted:
                if sink not in self.sinks:
                    problems.append(
                        f"pollers[{index}].sinks: no sink named {sink!r} (defined: {defined})"
                    )
        for name, options in self.sinks.items():
            if not isinstance(options.get("type"), str):
                problems.append(f'sinks.{name}.type: missing (for example type = "local")')
                continue
            host, _ = split_sink_options(options)
            try:
                self.dispatcher.retry.merged(host.get("retry") or {})
                SinkHostConfig.model_validate({**host, "retry": {}})
            except ValidationError as exc:
                where = f"sinks.{name}.retry" if "retry" in host else f"sinks.{name}"
                problems += format_validation_error(exc, prefix=where)
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def sink_host(self, name: str) -> SinkHostConfig:
        host, _ = split_sink_options(self.sinks[name])
        return SinkHostConfig.model_validate(host)

    def sink_retry(self, name: str) -> RetryConfig:
        """``dispatcher.retry`` with the sink's own ``retry`` keys on top."""
        return self.dispatcher.retry.merged(self.sink_host(name).retry)

    def poller(self, name: str) -> PollerConfig | None:
        return next((p for p in self.pollers if p.name == name), None)

    def route(self, name: str) -> RouteConfig | None:
        for route in self.routes:
            if route.name == name:
                return route
        return None


def _reference_problems(routes: Any, sinks: Any) -> list[str]:
    """Routes named twice, and sinks a route or a rule names that are not defined; from the
    validated config, or from the raw document when other keys failed to validate."""
    problems: list[str] = []
    defined_names = set(sinks) if isinstance(sinks, dict) else set()
    defined = ", ".join(sorted(defined_names)) or "none"
    seen: set[str] = set()
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, dict):
            continue
        name = route.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(f"routes[{index}].name: route {name!r} is defined twice")
            seen.add(name)
        wanted = [(f"routes[{index}].sinks", route.get("sinks"))]
        rules = route.get("rules")
        for number, rule in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(rule, dict):
                wanted.append((f"routes[{index}].rules[{number}].sinks", rule.get("sinks")))
        for where, names in wanted:
            for sink in names if isinstance(names, list) else []:
                if isinstance(sink, str) and sink not in defined_names:
                    problems.append(f"{where}: no sink named {sink!r} (defined: {defined})")
    return problems


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in (
            "url-token",
            "basic",
            "header-token",
            "standard-webhooks",
            "source-default",
            "none",
            "sqlite",
            "postgres",
        ) or (part == "hmac" or part.startswith("hmac-")):
            continue  # the discriminator's branch name is noise next to the key itself
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem, each naming the key: ``routes[0].auth.token: Field required``."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        where = _loc(tuple(err["loc"]))
        if where == "(top level)" and err["type"] == "value_error" and not prefix:
            # Cross-checks (model validators) already name their key in the message.
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        if prefix:
            where = f"{prefix}.{where}" if where != "(top level)" else prefix
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return lines


def expand_env(value: Any, where: str, env: dict[str, str] | None, missing: list[str]) -> Any:
    """``value`` with every ``${NAME}`` replaced from ``env`` (default: the environment); each
    variable that is not set is named in ``missing``, with where it is."""
    return _expand_env(value, where, dict(os.environ) if env is None else env, missing)


def _expand_env(value: Any, where: str, env: dict[str, str], missing: list[str]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append(f"{where}: environment variable {name} is not set")
                return ""
            return env[name]

        return _ENV_REF.sub(replace, value)
    if isinstance(value, dict):
        return {
            k: _expand_env(v, f"{where}.{k}" if where else k, env, missing)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]", env, missing) for i, v in enumerate(value)]
    return value


def _sinks_of(data: Any) -> dict[str, object] | None:
    sinks = data.get("sinks") if isinstance(data, dict) else None
    return dict(sinks) if isinstance(sinks, dict) else None


def parse_config(
    data: dict[str, Any], *, base_dir: Path, env: dict[str, str] | None = None, origin: str = ""
) -> Config:
    """Validate a parsed TOML document; ``base_dir`` anchors relative paths."""
    missing: list[str] = []
    data = _expand_env(data, "", dict(os.environ) if env is None else env, missing)
    heading = f"invalid configuration{f' in {origin}' if origin else ''}:"
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # Every problem in one run: the missing variables, every bad or unknown key (but not
        # the emptiness of a value whose variable is missing: that is said already), and the
        # references between routes and sinks, which the model checks only once the rest
        # is valid.
        unset = {line.split(":", 1)[0] for line in missing}
        lines = [
            line for line in format_validation_error(exc) if line.split(":", 1)[0] not in unset
        ]
        if not any(": no sink named " in line for line in lines):
            lines += _reference_problems(data.get("routes"), data.get("sinks"))
        raise ConfigError(
            "\n  ".join([heading, *missing, *lines]), sinks=_sinks_of(data), unset=frozenset(unset)
        ) from None
    if missing:
        unset = {line.split(":", 1)[0] for line in missing}
        raise ConfigError(
            "\n  ".join([heading, *missing]), sinks=_sinks_of(data), unset=frozenset(unset)
        )
    if isinstance(config.journal, SqliteConfig) and not config.journal.path.is_absolute():
        journal = config.journal.model_copy(update={"path": base_dir / config.journal.path})
        config = config.model_copy(update={"journal": journal})
    return config


def load_config(path: Path, env: dict[str, str] | None = None) -> tuple[Config, Path]:
    """Read and validate a TOML file; returns the config and the folder relative paths start at."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid configuration in {path}: not valid TOML: {exc}") from None
    base_dir = path.resolve().parent
    return parse_config(data, base_dir=base_dir, env=env, origin=str(path)), base_dir
