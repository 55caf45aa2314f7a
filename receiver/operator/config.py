"""What an operator's command reads of a configuration: the journal, the cluster's liveness
limits, and the sinks' names and types.  Nothing else is validated or expanded, so a command
that only reads the journal runs without the webhook secrets in its environment (only the
journal's own, a PostgreSQL DSN, must be there), and never makes a URL token or a data folder
(the embedded defaults' are found, not created).  ``hookdock check`` validates everything.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from receiver.config import ClusterConfig, expand_env, format_validation_error
from receiver.errors import ConfigError
from receiver.journal.config import JournalConfig, PostgresConfig, SqliteConfig

__all__ = ["OperatorConfig", "embedded_operator_config", "load_operator_config"]


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    journal: SqliteConfig | PostgresConfig
    cluster: ClusterConfig
    sinks: dict[str, dict[str, Any]]
    """Name -> ``{"type": plugin}``: for showing, never built."""


def embedded_operator_config(data_dir: Path) -> OperatorConfig:
    """The embedded defaults' journal and sink, found under ``data_dir``."""
    return OperatorConfig(
        journal=SqliteConfig(path=data_dir.resolve() / "hookdock.db"),
        cluster=ClusterConfig(),
        sinks={"exports": {"type": "local"}},
    )


def load_operator_config(path: Path, env: dict[str, str] | None = None) -> OperatorConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid configuration in {path}: not valid TOML: {exc}") from None
    heading = f"invalid configuration in {path}:"
    missing: list[str] = []
    journal_data = expand_env(data.get("journal", {}), "journal", env, missing)
    cluster_data = expand_env(data.get("cluster", {}), "cluster", env, missing)
    if missing:
        raise ConfigError("\n  ".join([heading, *missing]))
    problems: list[str] = []
    try:
        journal = TypeAdapter(JournalConfig).validate_python(journal_data)
    except ValidationError as exc:
        problems += format_validation_error(exc, prefix="journal")
    try:
        cluster = ClusterConfig.model_validate(cluster_data)
    except ValidationError as exc:
        problems += format_validation_error(exc, prefix="cluster")
    if problems:
        raise ConfigError("\n  ".join([heading, *problems]))
    if isinstance(journal, SqliteConfig) and not journal.path.is_absolute():
        journal = journal.model_copy(update={"path": path.resolve().parent / journal.path})
    sinks = data.get("sinks", {})
    return OperatorConfig(
        journal=journal,
        cluster=cluster,
        sinks={
            str(name): {"type": str(options.get("type"))}
            for name, options in (sinks.items() if isinstance(sinks, dict) else ())
            if isinstance(options, dict)
        },
    )
