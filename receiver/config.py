"""Configuration: one TOML file, ``${ENV}`` references for secrets, strict validation at startup.

Every model is frozen and forbids unknown keys, so a typo stops the start with the key named.
Relative paths are taken from the config file's folder (from the working directory for the
embedded defaults).  Sink options are an open set: each sink plugin validates its own table.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from receiver.auth import AuthConfig
from receiver.errors import ConfigError

__all__ = [
    "Config",
    "DispatcherConfig",
    "JournalConfig",
    "RetryConfig",
    "RouteConfig",
    "ServerConfig",
    "format_validation_error",
    "load_config",
    "parse_config",
]

MiB = 1024 * 1024
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


class JournalConfig(_Model):
    type: Literal["sqlite"] = "sqlite"
    path: Path = Path("hookdock-data/hookdock.db")
    busy_timeout_ms: Annotated[int, Field(ge=0, le=600_000)] = 10_000
    """How long a write waits for another process's lock before the delivery is refused (503)."""


class RetryConfig(_Model):
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 10
    base_seconds: Annotated[float, Field(gt=0)] = 2.0
    cap_seconds: Annotated[float, Field(gt=0)] = 600.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Share of each delay drawn at random, so retries from many deliveries spread out."""


class DispatcherConfig(_Model):
    enabled: bool = True
    """Run the dispatcher inside ``hookdock serve``; turn off when ``hookdock worker`` runs it."""
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 16
    lease_seconds: Annotated[float, Field(gt=0, le=86400)] = 60.0
    poll_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    busy_requests: Annotated[int, Field(ge=0, le=100_000)] = 8
    """Ingest first: with this many requests in flight, exports pause (one batch per
    ``busy_pause_seconds``), so a burst is journaled and answered at full speed and exported
    right after.  0: never pause."""
    busy_pause_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    retry: RetryConfig = RetryConfig()


class RouteConfig(_Model):
    name: Annotated[str, Field(pattern=_NAME)]
    source: str
    auth: AuthConfig
    sinks: Annotated[list[str], Field(min_length=1)]
    max_body_bytes: Annotated[int, Field(ge=1, le=1024 * MiB)] = MiB


class Config(_Model):
    server: ServerConfig = ServerConfig()
    journal: JournalConfig = JournalConfig()
    dispatcher: DispatcherConfig = DispatcherConfig()
    routes: Annotated[list[RouteConfig], Field(min_length=1)]
    sinks: dict[Annotated[str, Field(pattern=_NAME)], dict[str, Any]]

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        seen: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.name in seen:
                raise ValueError(f"routes[{index}].name: route {route.name!r} is defined twice")
            seen.add(route.name)
            for sink in route.sinks:
                if sink not in self.sinks:
                    raise ValueError(
                        f"routes[{index}].sinks: no sink named {sink!r} "
                        f"(defined: {', '.join(sorted(self.sinks)) or 'none'})"
                    )
        for name, options in self.sinks.items():
            if not isinstance(options.get("type"), str):
                raise ValueError(f'sinks.{name}.type: missing (for example type = "local")')
        return self

    def route(self, name: str) -> RouteConfig | None:
        for route in self.routes:
            if route.name == name:
                return route
        return None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("url-token", "basic", "header-token", "standard-webhooks", "none") or (
            part.startswith("hmac-")
        ):
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


def parse_config(
    data: dict[str, Any], *, base_dir: Path, env: dict[str, str] | None = None, origin: str = ""
) -> Config:
    """Validate a parsed TOML document; ``base_dir`` anchors relative paths."""
    missing: list[str] = []
    data = _expand_env(data, "", dict(os.environ) if env is None else env, missing)
    heading = f"invalid configuration{f' in {origin}' if origin else ''}:"
    if missing:
        raise ConfigError("\n  ".join([heading, *missing]))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n  ".join([heading, *format_validation_error(exc)])) from None
    if not config.journal.path.is_absolute():
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
