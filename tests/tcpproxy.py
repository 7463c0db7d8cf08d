"""A real TCP proxy on loopback between the service and its PostgreSQL, which a test can cut.

``cut()`` resets every open connection and stops listening (new connections are refused), as a
database server that crashed or restarts looks from the client's side; ``restore()`` listens
again on the same port. The database itself is never touched.
"""
from __future__ import annotations

import selectors
import socket
import struct
import threading


class TcpProxy:
    """``with TcpProxy(5432) as proxy: ... proxy.port ... proxy.cut() ... proxy.restore()``"""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stopping = False

    def __enter__(self) -> "TcpProxy":
        self._listen()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping = True
        self.cut()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut: the listener was closed
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in selector.select():
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            for sock in (client, server):
                try:
                    sock.close()
                except OSError:
                    pass

    @property
    def connections(self) -> int:
        with self._lock:
            return sum(1 for client, _ in self._pairs if client.fileno() != -1)

    def cut(self) -> None:
        """Refuse new connections and reset the open ones (RST, as a crashed server's host would)."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            for sock in (client, server):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def restore(self) -> None:
        """Listen again, on the same port."""
        if self._listener is None and not self._stopping:
            self._listen()
