"""A TCP gate: a local port that forwards to a server (the shared RabbitMQ), and that the
harness can close, so that to the run's processes the server is gone, and open again.

Closed, it drops every connection it carries and refuses new ones (connection refused),
exactly what clients see when the broker's host goes away; the server itself and everyone
else's connections to it are untouched. That is why the rehearsal's RabbitMQ outage uses
it rather than `rabbitmqctl`: taking the vhost's permissions away makes a connection that
is still open fail its next publish with ACCESS_REFUSED (a Celery worker takes that for an
unrecoverable error and exits), and a vhost connection limit makes Celery's consumer
reconnect in a tight loop (NOT_ALLOWED is not retried with a back-off): neither is what a
real outage looks like.
"""

from __future__ import annotations

import contextlib
import socket
import threading

CHUNK = 65536


class TcpGate:
    """Forwards 127.0.0.1:`port` (a free port unless given) to (`host`, `target_port`)."""

    def __init__(self, host: str, target_port: int, port: int = 0):
        self.target = (host, target_port)
        self.port = port
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        """Listen (again, on the same port) and forward every connection."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name=f"tcp-gate-{self.port}", daemon=True).start()

    def stop(self) -> int:
        """Stop listening and drop every connection; how many were dropped."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        return len(conns) // 2

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by stop()
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    server.close()
                    return
                self._conns.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(source)
                self._conns.discard(sink)
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
