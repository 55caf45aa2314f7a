"""The embedded defaults: what ``hookdock serve`` runs with no configuration at all.

A SQLite journal and an export folder under the data folder, one route per SmartDocumentor
webhook kind, each protected by one random URL token made on first start and kept in the data
folder (mode 0600), so the URLs stay the same across restarts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from receiver.config import Config, parse_config
from receiver.journal.sqlite import tighten_modes

__all__ = ["DEFAULT_DATA_DIR", "DEFAULT_ROUTES", "default_config", "load_or_create_token"]

DEFAULT_DATA_DIR = Path("hookdock-data")
TOKEN_FILE = "url-token"  # noqa: S105 - a file name, not a secret

DEFAULT_ROUTES = {
    "sd-text-documents": "smartdocumentor.text_document",
    "sd-transcripts": "smartdocumentor.transcript",
    "sd-transcript-files": "smartdocumentor.transcript_file",
    "sd-anonymization-files": "smartdocumentor.anonymization_file",
}


def load_or_create_token(data_dir: Path) -> str:
    path = data_dir / TOKEN_FILE
    # The data folder holds the journal (raw bodies with SAS links): one made by an older
    # hookdock, or under a loose umask, is made the owner's alone, like a new one.
    tighten_modes([(data_dir, 0o700), (path, 0o600)], f"the data folder {data_dir}")
    try:
        token = path.read_text(encoding="ascii").strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # O_EXCL: two first starts at once must not hand out two different tokens.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return token


def default_config(data_dir: Path = DEFAULT_DATA_DIR) -> tuple[Config, Path]:
    base_dir = data_dir.resolve().parent
    token = load_or_create_token(data_dir)
    data: dict[str, Any] = {
        "journal": {"path": str(data_dir.resolve() / "hookdock.db")},
        "routes": [
            {
                "name": name,
                "source": source,
                "auth": {"type": "url-token", "token": token},
                "sinks": ["exports"],
            }
            for name, source in DEFAULT_ROUTES.items()
        ],
        "sinks": {"exports": {"type": "local", "root": str(data_dir.resolve() / "exports")}},
    }
    return parse_config(data, base_dir=base_dir, env={}), base_dir
