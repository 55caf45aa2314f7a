"""Slow clients, and the figures they must not spoil: normal POSTs' latency and POST to file.

Shared by ``tests/e2e/test_slow_clients_e2e.py`` (a generous factor, asserted) and
``bench/slow_clients.py`` (the figures, printed side by side).  Everything talks to 127.0.0.1.

* ``SlowClients``: ``n`` connections that are as slow as a client can be while the server's
  deadlines allow: half stuck in their headers, half in a body that promised 1,000 bytes.
  A thread sends each one more byte now and then, so none of them is merely idle.
* ``measure``: ``count`` POSTs from ``concurrency`` threads, each timed by the client, and the
  time from receipt to delivered file of each, as the journal recorded it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

import httpx

from tests.rawhttp import RawConnection, request_bytes

__all__ = ["Figures", "SlowClients", "measure", "percentile"]

DELIVERED_TIMEOUT = 60.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Figures:
    post_ms: list[float]
    to_file_ms: list[float]


class SlowClients:
    """``n`` slow connections to ``path`` on ``port``; closed when the block ends."""

    def __init__(self, port: int, path: str, n: int, trickle_seconds: float = 0.5) -> None:
        self.port = port
        self.path = path
        self.n = n
        self.trickle_seconds = trickle_seconds
        self.connections: list[RawConnection] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        for i in range(self.n):
            conn = RawConnection(self.port)
            self.connections.append(conn)
            if i % 2:
                conn.send(f"POST {self.path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ".encode())
            else:
                conn.send(request_bytes(self.path, b'{"taskId": "', content_length=1000))
        self._thread.start()
        return self

    def _trickle(self) -> None:
        while not self._stop.wait(self.trickle_seconds):
            for conn in self.connections:
                conn.try_send(b"a")

    def still_open(self) -> int:
        """How many have not been answered or closed by the server."""
        return sum(1 for conn in self.connections if not conn.closed_by_peer(timeout=0.001))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in self.connections:
            conn.close()


def _delays(journal: Path, deliveries: list[str]) -> dict[str, float] | None:
    """Seconds from receipt to delivered per delivery, or None while some are not delivered."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT d.id, d.received_at, s.delivered_at FROM deliveries d"
            " JOIN sends s ON s.delivery_id = d.id"
            f" WHERE d.id IN ({','.join('?' * len(deliveries))}) AND s.state = 'delivered'",
            deliveries,
        ).fetchall()
    finally:
        conn.close()
    if len(rows) < len(deliveries):
        return None
    return {d: at - datetime.fromisoformat(received).timestamp() for d, received, at in rows}


def measure(base_url: str, path: str, journal: Path, count: int, concurrency: int = 4) -> Figures:
    """POST ``count`` SmartDocumentor bodies to ``path``; both latencies, in milliseconds."""
    post_ms: list[float] = []
    deliveries: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30.0, trust_env=False) as client:
            for _ in range(n):
                body = f'{{"taskId": "slow-{uuid.uuid4().hex}", "workspaceId": 7}}'.encode()
                started = time.perf_counter()
                response = client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, response.text
                with lock:
                    post_ms.append(elapsed)
                    deliveries.append(response.text.rsplit(" ", 1)[1].strip())

    with ThreadPoolExecutor(concurrency) as pool:
        shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
        for future in [pool.submit(worker, n) for n in shares]:
            future.result()
    deadline = time.monotonic() + DELIVERED_TIMEOUT
    while (delays := _delays(journal, deliveries)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all of {len(deliveries)} deliveries were delivered in time")
        time.sleep(0.05)
    return Figures(post_ms, [seconds * 1000 for seconds in delays.values()])
