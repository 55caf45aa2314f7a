"""A TCP proxy on 127.0.0.1 that a test can cut and restore, to stage a database outage.

``TcpProxy(("127.0.0.1", 5432))`` listens on a free port of its own and forwards every
connection to the upstream address, two threads a connection (one per direction), so that a
slow reader on one side never stalls the other.

* ``cut()``: every open connection is reset (RST, as when a database host dies or a firewall
  drops the flows), and every new connection is accepted and reset at once, as long as the
  cut lasts.  A client therefore fails fast (no connect timeout to wait out), which is what a
  restarted database or a refused port looks like too.
* ``restore()``: new connections are forwarded again; the old ones stay gone.

Use it as a context manager: ``close()`` stops the listener and resets everything, and joins
every thread it started.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType

__all__ = ["TcpProxy"]

_CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a RST rather than a FIN: the peer sees "connection reset"."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        # Wakes the pump thread blocked in recv() on this socket.
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class _Pair:
    """One proxied connection: the client's socket and ours to the upstream."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self._lock = threading.Lock()
        self._closed = False

    def close(self, *, reset: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sock in (self.client, self.upstream):
            if reset:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` until ``cut()``; see the module doc."""

    def __init__(self, upstream: tuple[str, int], *, connect_timeout: float = 5.0) -> None:
        self.upstream = upstream
        self._connect_timeout = connect_timeout
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._threads: list[threading.Thread] = []
        self._cut = False
        self._closing = False
        self.accepted = 0
        """Connections forwarded to the upstream."""
        self.refused = 0
        """Connections reset at once because the proxy was cut."""
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)

    @property
    def is_cut(self) -> bool:
        return self._cut

    def __enter__(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore()``."""
        with self._lock:
            self._cut = True
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            pair.close(reset=True)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            pairs = list(self._pairs)
            self._pairs.clear()
        with contextlib.suppress(OSError):
            # shutdown() is what wakes a thread blocked in accept(); close() alone does not.
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for pair in pairs:
            pair.close(reset=True)
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=10)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=10)
        stuck = [t.name for t in [self._acceptor, *threads] if t.is_alive()]
        assert not stuck, f"proxy threads did not stop: {stuck}"

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                closing, cut = self._closing, self._cut
            if closing:
                _reset(client)
                return
            if cut:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=self._connect_timeout)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            pair = _Pair(client, upstream)
            with self._lock:
                if self._cut or self._closing:
                    # cut() ran while we connected: this one must not slip through.
                    pair.close(reset=True)
                    continue
                self._pairs.add(pair)
                self.accepted += 1
                pumps = [
                    threading.Thread(
                        target=self._pump, args=(pair, src, dst), name="tcp-proxy-pump", daemon=True
                    )
                    for src, dst in ((client, upstream), (upstream, client))
                ]
                # Forget finished threads so a long test does not hold thousands of them.
                self._threads = [t for t in self._threads if t.is_alive()] + pumps
                # Started under the lock: close() never joins a thread that has not started.
                for thread in pumps:
                    thread.start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._pairs.discard(pair)
        pair.close(reset=False)
