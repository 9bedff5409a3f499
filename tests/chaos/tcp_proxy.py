"""A small TCP proxy for partition tests: forward, then hold every byte (a cut), then heal.

``cut()`` models a network partition the way TCP sees one: nothing is refused or reset, the
bytes in flight simply stop arriving (each direction holds what it read until ``heal()``), so a
client waits on its socket timeout exactly as behind a dropped link. ``heal()`` delivers what was
held, in order, like TCP retransmission after the link comes back. New connections made during
the cut are accepted and held too.
"""

from __future__ import annotations

import contextlib
import socket
import threading

CHUNK = 65536


class TcpProxy:
    """Listens on 127.0.0.1:<port> and forwards every connection to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._pumps: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return not self._open.is_set()

    def cut(self) -> None:
        """Stop delivering bytes in both directions (held, not dropped)."""
        self._open.clear()

    def heal(self) -> None:
        """Deliver what was held and forward again."""
        self._open.set()

    def close(self) -> None:
        self._closed.set()
        self._open.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            pumps, self._pumps = self._pumps, []
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for pump in pumps:
            pump.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
                self.connections += 1
                for src, dst in ((client, server), (server, client)):
                    pump = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                    self._pumps.append(pump)
                    pump.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                self._open.wait()  # a cut holds what was read until heal()
                if not data or self._closed.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:  # one side ended: end both; each pump closes the socket it reads
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            src.close()
