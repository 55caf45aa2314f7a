"""Shared helpers for tests that run real hookdock processes.

* ``free_port()``: a TCP port on 127.0.0.1 that nothing listens on right now.
* ``run_hookdock(folder, config_toml, command="serve")``: a context manager that writes
  ``hookdock.toml`` into ``folder``, starts ``python -m receiver <command>`` with its output
  captured to files in ``folder``, waits until it is ready and stops it (SIGTERM, then SIGKILL
  after a deadline) on exit.  ``config_toml=None`` runs on the embedded defaults (cwd=folder).
* ``run_cli(*args)``: one short-lived ``python -m receiver ...`` command, output captured.
* ``wait_until(predicate)``: poll with a deadline; returns the predicate's truthy value.
* ``make_config(tmp_path, **overrides)``: TOML text for a test server: the four SmartDocumentor
  routes with a URL token, one route per other auth scheme (all on the text-document source),
  a route without auth, and a local sink ``exports`` at ``<tmp_path>/exports``.  The
  credentials live in ``CREDS`` (random per test session).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from receiver.defaults import DEFAULT_ROUTES

__all__ = [
    "CREDS",
    "ROUTE_BASIC",
    "ROUTE_HEADER",
    "ROUTE_HMAC",
    "ROUTE_NONE",
    "ROUTE_STANDARD",
    "SD_ROUTES",
    "Credentials",
    "HookdockProcess",
    "delivery_id_from",
    "export_path",
    "free_port",
    "make_config",
    "read_json",
    "route",
    "run_cli",
    "run_hookdock",
    "to_toml",
    "wait_until",
]

T = TypeVar("T")

HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 30.0

# kind -> route name, the same names the embedded defaults use.
SD_ROUTES: dict[str, str] = {
    source.removeprefix("smartdocumentor."): name for name, source in DEFAULT_ROUTES.items()
}
ROUTE_BASIC = "basic-auth"
ROUTE_HEADER = "header-token"
ROUTE_STANDARD = "standard-webhooks"
ROUTE_HMAC = "superoffice-hmac"
ROUTE_NONE = "none"

_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
_ACCEPTED = re.compile(r"^hookdock: (?:already )?accepted as ([0-9a-f]{26})\n?$")


def _url_safe(n: int) -> str:
    """``n`` random characters from the RFC 3986 unreserved set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class Credentials:
    """Every secret ``make_config`` puts in a config; ``all()`` for "never leaked" checks."""

    url_token: str
    basic_user: str
    basic_password: str
    header_name: str
    header_prefix: str
    header_token: str
    whsec_old: str
    whsec_new: str
    hmac_header: str
    hmac_secret: str

    @classmethod
    def generate(cls) -> Credentials:
        creds = cls(
            url_token="t0ken-" + _url_safe(40),
            basic_user="sd-export",
            basic_password="pw-" + secrets.token_hex(16),
            header_name="Authorization",
            header_prefix="Bearer ",
            header_token="ht-" + secrets.token_hex(20),
            whsec_old=_whsec(),
            whsec_new=_whsec(),
            hmac_header="X-SuperOffice-Signature",
            hmac_secret="so-" + secrets.token_hex(20),
        )
        assert _URL_SAFE.fullmatch(creds.url_token)
        return creds

    def all(self) -> list[str]:
        """The secret values (and their distinctive parts), to search for in output."""
        return [
            self.url_token,
            self.basic_password,
            self.header_token,
            self.whsec_old,
            self.whsec_old.removeprefix("whsec_"),
            self.whsec_new,
            self.whsec_new.removeprefix("whsec_"),
            self.hmac_secret,
        ]


CREDS = Credentials.generate()


@pytest.fixture(scope="session")
def creds() -> Credentials:
    return CREDS


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Call ``predicate`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout:.1f}s: {text}")
        time.sleep(interval)


def delivery_id_from(text: str) -> str:
    """The delivery id in a ``hookdock: [already ]accepted as <id>`` answer."""
    match = _ACCEPTED.match(text)
    assert match, f"not an acceptance: {text!r}"
    return match.group(1)


def export_path(
    root: Path,
    *,
    kind: str,
    task_id: str,
    delivery_id: str,
    workspace_id: str | None = None,
    vendor: str = "smartdocumentor",
) -> Path:
    """Where the local sink's default template puts the first event of a delivery."""
    workspace = "none" if workspace_id is None else workspace_id
    return root / vendor / workspace / task_id / f"{kind}-{delivery_id}-0.json"


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None while it is absent (for ``wait_until``)."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------- config


def route(
    name: str,
    auth: Mapping[str, Any],
    *,
    source: str = "smartdocumentor.text_document",
    sinks: Sequence[str] = ("exports",),
    **options: Any,
) -> dict[str, Any]:
    """One ``[[routes]]`` entry.

    It fetches no files unless ``files`` says so: the recorded payloads link to real Azure
    hosts, which tests must not (and here cannot) reach.
    """
    options.setdefault("files", {"fetch": []})
    return {"name": name, "source": source, "auth": dict(auth), "sinks": list(sinks), **options}


def _default_routes(creds: Credentials) -> list[dict[str, Any]]:
    url_token = {"type": "url-token", "token": creds.url_token}
    routes = [
        route(name, url_token, source=f"smartdocumentor.{kind}") for kind, name in SD_ROUTES.items()
    ]
    routes += [
        route(
            ROUTE_BASIC,
            {"type": "basic", "username": creds.basic_user, "password": creds.basic_password},
        ),
        route(
            ROUTE_HEADER,
            {
                "type": "header-token",
                "header": creds.header_name,
                "prefix": creds.header_prefix,
                "token": creds.header_token,
            },
        ),
        route(
            ROUTE_STANDARD,
            {"type": "standard-webhooks", "secrets": [creds.whsec_old, creds.whsec_new]},
        ),
        route(
            ROUTE_HMAC,
            {
                "type": "hmac-sha256-base64",
                "header": creds.hmac_header,
                "secret": creds.hmac_secret,
            },
        ),
        route(ROUTE_NONE, {"type": "none"}),
    ]
    return routes


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def make_config(tmp_path: Path, **overrides: Any) -> str:
    """TOML text for a test server whose journal and exports live under ``tmp_path``.

    Keyword overrides: a mapping is merged into the table of that name (``journal=...``,
    ``server=...``, ``dispatcher={"retry": {...}}``, ``sinks={"other": {...}}``; a value of
    None removes a key); ``extra_routes=[route(...), ...]`` appends routes; ``routes=[...]``
    replaces them all.  Credentials come from ``CREDS``.
    """
    doc: dict[str, Any] = {
        "server": {"host": HOST, "grace_seconds": 5.0},
        "journal": {"path": str(tmp_path / "hookdock.db")},
        "dispatcher": {"poll_seconds": 0.2},
        "routes": _default_routes(CREDS),
        "sinks": {"exports": {"type": "local", "root": str(tmp_path / "exports")}},
    }
    extra_routes = overrides.pop("extra_routes", ())
    doc = _merge(doc, overrides)
    doc["routes"] = [*doc["routes"], *extra_routes]
    return to_toml(doc)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string without \u escapes of astral characters is a TOML basic string.
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def to_toml(doc: Mapping[str, Any], _prefix: str = "") -> str:
    """A small TOML writer: tables, arrays of tables (inner tables inline), scalars, lists."""
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for key, value in doc.items():
        if isinstance(value, Mapping) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in nested:
        name = f"{_prefix}.{_key(key)}" if _prefix else _key(key)
        if isinstance(value, Mapping):
            out += f"\n[{name}]\n" + to_toml(value, name)
        else:
            for item in value:
                body = "".join(f"{_key(k)} = {_value(v)}\n" for k, v in item.items())
                out += f"\n[[{name}]]\n{body}"
    return out


# --------------------------------------------------------------------------- processes


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("HOOKDOCK_")}
    out["PYTHONUNBUFFERED"] = "1"
    out.update(env or {})
    return out


class HookdockProcess:
    """One ``python -m receiver <command>`` process with its output in files."""

    def __init__(
        self,
        folder: Path,
        config_path: Path | None,
        *,
        command: str = "serve",
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.folder = folder
        self.config_path = config_path
        self.command = command
        self.port = port
        self.env = env
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        n = 0
        while (folder / f"{command}-{n}.stderr").exists():
            n += 1
        self.stdout_path = folder / f"{command}-{n}.stdout"
        self.stderr_path = folder / f"{command}-{n}.stderr"

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.command} listens on no port"
        return f"http://{HOST}:{self.port}"

    def argv(self) -> list[str]:
        # Debug logging: the leak checks then cover the most talkative logs there are.
        argv = [sys.executable, "-m", "receiver", "--log-level", "debug", self.command]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        if self.port is not None:
            argv += ["--port", str(self.port)]
        return argv + self.args

    def start(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=self.folder,
                env=_child_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def dead_lettered(self, delivery_id: str) -> str | None:
        """The dispatcher's logged reason if it dead-lettered ``delivery_id`` (unroutable) or
        one of its events at a sink (``sink NAME: reason``), else None."""
        whole = f"delivery {delivery_id} (route "
        event = f"event {delivery_id}-"
        for line in self.stderr_text().splitlines():
            if whole in line and ") dead-lettered: " in line:
                return line.split(") dead-lettered: ", 1)[1]
            if event in line and " dead-lettered: " in line:
                head, reason = line.split(" dead-lettered: ", 1)
                return f"sink {head.rsplit(' to sink ', 1)[1]}: {reason}"
        return None

    def wait_export(self, path: Path, delivery_id: str, timeout: float = 15.0) -> Any:
        """The JSON exported at ``path``; fails at once if the delivery is dead-lettered."""

        def probe() -> Any:
            data = read_json(path)
            if data is None:
                reason = self.dead_lettered(delivery_id)
                if reason is not None:
                    pytest.fail(f"delivery {delivery_id} was dead-lettered: {reason}")
            return data

        return wait_until(probe, timeout, message=lambda: f"no export at {path}\n{self.describe()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def describe(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        state = "running" if code is None else f"exited with {code}"
        return (
            f"hookdock {self.command} ({state})\n--- stdout ---\n{self.stdout_text()}"
            f"\n--- stderr ---\n{self.stderr_text()}"
        )

    def _ready(self) -> bool:
        if not self.running():
            pytest.fail(f"hookdock {self.command} stopped while starting:\n{self.describe()}")
        if self.command == "worker":
            return "worker running" in self.stderr_text()
        if self.command != "serve":
            return True
        try:
            response = httpx.get(f"{self.url}/readyz", timeout=2.0, trust_env=False)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        wait_until(self._ready, timeout, 0.05, lambda: f"not ready:\n{self.describe()}")

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL.  Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _address_in_use(process: HookdockProcess) -> bool:
    return process.proc is not None and (
        process.proc.poll() not in (None, 0) and "address already in use" in process.stderr_text()
    )


@contextlib.contextmanager
def run_hookdock(
    folder: Path,
    config_toml: str | None,
    *,
    command: str = "serve",
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    wait_ready: bool = True,
) -> Iterator[HookdockProcess]:
    """Run ``python -m receiver <command>`` in ``folder`` until the block ends.

    ``config_toml`` is written to ``folder/hookdock.toml`` and passed as ``--config``; None runs
    on the embedded defaults.  ``serve`` gets a free port and is waited on until ``/readyz``
    answers 200; ``worker`` until it logs that it runs.  On exit: SIGTERM, then SIGKILL.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config_path = None
    if config_toml is not None:
        config_path = folder / "hookdock.toml"
        config_path.write_text(config_toml, encoding="utf-8")
    for attempt in range(3):
        port = free_port() if command == "serve" else None
        process = HookdockProcess(
            folder, config_path, command=command, port=port, env=env, args=args
        )
        process.start()
        try:
            if wait_ready:
                try:
                    process.wait_ready()
                except pytest.fail.Exception:
                    # Another process took the port between free_port() and the bind.
                    if attempt < 2 and _address_in_use(process):
                        continue
                    raise
            yield process
            return
        finally:
            process.stop()


def run_cli(
    *args: str,
    config: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run one ``python -m receiver <args...> [--config FILE]`` to completion."""
    argv = [sys.executable, "-m", "receiver", *args]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run(
        argv,
        cwd=cwd,
        env=_child_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------- PostgreSQL

PG_DSN_ENV = "HOOKDOCK_TEST_PG_DSN"
PG_DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test database (``$HOOKDOCK_TEST_PG_DSN``, else a local one with trust auth).

    Never skipped: the PostgreSQL journal is part of what ships, so a test run without the
    database fails here, saying which one it tried and how to point at another.
    """
    import psycopg

    from receiver.journal.postgres import describe_dsn

    dsn = os.environ.get(PG_DSN_ENV, PG_DEFAULT_DSN)
    try:
        _pg_connect(dsn).close()
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL is needed for these tests and {describe_dsn(dsn)} cannot be reached"
            f" ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}):"
            f" start it, or set {PG_DSN_ENV} to a database the tests may create schemas in",
            pytrace=False,
        )
    return dsn


def drop_pg_schema(dsn: str, schema: str) -> None:
    """``DROP SCHEMA ... CASCADE``; a journal still connected to it makes this fail, not hang."""
    with _pg_connect(dsn) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name of this test's own (a PG journal configured with it creates it);
    dropped with everything in it afterwards.  Close every journal on it before the test ends.
    """
    schema = f"hookdock_test_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        drop_pg_schema(pg_dsn, schema)


def pg_journal_table(dsn: str, schema: str, **options: Any) -> dict[str, Any]:
    """The ``[journal]`` table of a PostgreSQL journal in ``schema``, for ``to_toml``.

    With ``make_config``, drop its SQLite ``path`` in the same merge:
    ``make_config(tmp_path, journal={"path": None, **pg_journal_table(pg_dsn, pg_schema)})``.
    """
    return {"type": "postgres", "dsn": dsn, "schema": schema, **options}
