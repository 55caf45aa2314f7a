"""A real HAProxy on loopback ports, running ``infra/haproxy.cfg`` itself.

The shipped config takes its addresses and check intervals from the environment (each with
the default compose uses), so tests and benchmarks run the very file operators deploy, with
only the ports and faster checks substituted::

    with HAProxy(folder, [port_a, port_b], check_inter="200ms") as lb:
        lb.wait_status("hookdock-1", "UP")
        httpx.post(lb.url + "/hooks/...")
        lb.frontend()["hrsp_5xx"]

``stats()`` reads HAProxy's own CSV statistics (``/stats;csv`` on a stats port of its own):
each server's state as HAProxy's checks see it, and the frontend's responses by class.  No
pytest in here: ``bench/replicas.py`` uses it too.  Only 127.0.0.1; ``stop()`` (or leaving the
``with``) ends the process, SIGKILL after a deadline.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["HAPROXY_CFG", "HAPROXY_MISSING", "SERVER_NAMES", "HAProxy", "haproxy_binary"]

HOST = "127.0.0.1"
HAPROXY_CFG = Path(__file__).resolve().parents[1] / "infra" / "haproxy.cfg"
SERVER_NAMES = ("hookdock-1", "hookdock-2")
"""The servers ``infra/haproxy.cfg`` names, in order (``HOOKDOCK_REPLICA_1``, ``_2``)."""
HAPROXY_MISSING = (
    "HAProxy is not installed: apt-get install -y haproxy (Debian's 2.6; .ci/run installs it)"
)


def haproxy_binary() -> str | None:
    """The haproxy executable (Debian puts it in /usr/sbin, not on every user's PATH)."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class HAProxy:
    """``haproxy -db -f infra/haproxy.cfg`` in front of replicas on ``127.0.0.1:<port>``.

    ``replicas`` gives the ports of ``hookdock-1`` and ``hookdock-2``: one port twice puts one
    replica behind both entries.  Its output (startup warnings, one log line per request)
    goes to ``folder/haproxy.log``.
    """

    def __init__(
        self,
        folder: Path,
        replicas: Sequence[int],
        *,
        check_inter: str = "200ms",
        check_fastinter: str = "100ms",
        check_downinter: str = "200ms",
    ) -> None:
        if len(replicas) != len(SERVER_NAMES):
            raise ValueError(f"infra/haproxy.cfg has {len(SERVER_NAMES)} servers")
        self.folder = folder
        self.replicas = list(replicas)
        self.port = _free_port()
        self.stats_port = _free_port()
        self.checks = (check_inter, check_fastinter, check_downinter)
        self.log_path = folder / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        inter, fastinter, downinter = self.checks
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env |= {
            "HOOKDOCK_LB_BIND": f"{HOST}:{self.port}",
            "HOOKDOCK_LB_STATS_BIND": f"{HOST}:{self.stats_port}",
            "HOOKDOCK_LB_CHECK_INTER": inter,
            "HOOKDOCK_LB_CHECK_FASTINTER": fastinter,
            "HOOKDOCK_LB_CHECK_DOWNINTER": downinter,
        }
        for n, port in enumerate(self.replicas, start=1):
            env[f"HOOKDOCK_REPLICA_{n}"] = f"{HOST}:{port}"
        return env

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until its stats answer (servers may still be checked DOWN)."""
        binary = haproxy_binary()
        if binary is None:
            raise RuntimeError(HAPROXY_MISSING)
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # -db: stay in the foreground (logs to stdout, stops with its parent's signal).
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(HAPROXY_CFG)],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                self.stats()
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"haproxy's stats did not answer within {timeout:g}s")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's CSV statistics: one row per frontend, backend and server."""
        url = f"http://{HOST}:{self.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        return list(csv.DictReader(io.StringIO(text.removeprefix("# "))))

    def row(self, proxy: str, name: str) -> dict[str, str]:
        for row in self.stats():
            if row["pxname"] == proxy and row["svname"] == name:
                return row
        raise KeyError(f"no stats row {proxy}/{name}")

    def server_status(self, name: str) -> str:
        """``UP``, ``DOWN``, or a transition such as ``UP 1/2`` (going down), ``no check``."""
        return self.row("hookdock", name)["status"]

    def frontend(self) -> dict[str, int]:
        """The public frontend's counters: requests, responses by class, errors."""
        row = self.row("hookdock", "FRONTEND")
        keys = ("req_tot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "ereq")
        return {key: int(row[key] or 0) for key in keys}

    def wait_status(self, name: str, status: str, timeout: float = 10.0) -> float:
        """Wait until HAProxy's checks put server ``name`` in ``status``; seconds it took."""
        began = time.monotonic()
        deadline = began + timeout
        while True:
            seen = self.server_status(name)
            if seen == status:
                return time.monotonic() - began
            if time.monotonic() >= deadline:
                raise TimeoutError(f"haproxy: {name} is {seen!r}, not {status!r} after {timeout}s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode
