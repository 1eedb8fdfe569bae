"""A TCP proxy for tests: forwards bytes, counts request/response turns, and can stall.

Put it between a storage and its server to see what the storage does on the wire::

    with TcpProxy("127.0.0.1", 5432) as proxy:
        storage = SqlStorage(proxy.url("postgresql://postgres@127.0.0.1:5432/test"))
        storage.get_kv("warm-up")           # opens the pooled connection
        proxy.reset()
        storage.get_kv("k")
        assert proxy.turns == 1             # one round trip
        proxy.stall()                       # stop forwarding, close nothing: a dead network
        ...
        proxy.resume()

A *turn* is one request/response exchange: it is counted when bytes come back from the
server after the client sent some on the same connection (a server greeting, such as
MySQL's, is not a turn; a request split over many packets, or a long answer, is one).
``stall()`` stops forwarding in both directions and for new connections without closing
anything, as a partitioned network or a frozen server looks to a client; ``drop()`` closes
every open connection, as a restarted server does; ``cut()`` also closes every new one
until ``restore()``, as a server that is down does.
"""

from __future__ import annotations

import selectors
import socket
import threading
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

_CHUNK = 65536


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` in a background thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._mutex = threading.Lock()
        self._turns = 0
        self._connections = 0
        self._stalled = threading.Event()
        self._acted = threading.Condition()
        self._closing = False
        # Each pair maps a socket to its peer and to whether the client spoke last on it.
        self._peers: dict[socket.socket, socket.socket] = {}
        self._client_side: set[socket.socket] = set()
        self._awaiting_answer: set[socket.socket] = set()  # client sockets whose request is unanswered
        self._pending: list[socket.socket] = []  # clients accepted while stalled, not yet connected on
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=f"TcpProxy:{self.port}", daemon=True)
        self._thread.start()

    # -- what tests use ------------------------------------------------------------------

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's (user, path and query kept)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def turns(self) -> int:
        """Request/response turns on every connection since the start or the last ``reset()``."""
        with self._mutex:
            return self._turns

    @property
    def connections(self) -> int:
        """Connections accepted since the start or the last ``reset()``."""
        with self._mutex:
            return self._connections

    def reset(self) -> None:
        """Start counting turns and connections from zero."""
        with self._mutex:
            self._turns = 0
            self._connections = 0

    # Each of these returns once the forwarding thread has acted on it: bytes the client
    # sends afterwards are already treated the new way.

    def stall(self) -> None:
        """Stop forwarding (both ways, old and new connections) without closing anything."""
        self._stalled.set()
        self._settle()

    def resume(self) -> None:
        """Forward again what waited, and go on forwarding."""
        self._stalled.clear()
        self._settle()

    def drop(self) -> None:
        """Close every open connection (new ones are still accepted), as a server restart does."""
        with self._mutex:
            self._drop_requested = True
        self._settle()

    def cut(self) -> None:
        """Close every open connection and every new one until ``restore()``: a server that is down."""
        self._refusing = True
        self.drop()

    def restore(self) -> None:
        """Forward new connections again after ``cut()``."""
        self._refusing = False
        self._settle()

    def _settle(self) -> None:
        with self._acted:
            self._requests += 1
            wanted = self._requests
            self._wake()
            if not self._acted.wait_for(lambda: self._handled >= wanted or self._closing, timeout=30):
                raise RuntimeError("the proxy thread did not answer")

    def close(self) -> None:
        self._closing = True
        self._wake()
        self._thread.join(10)
        for sock in (*self._peers, *self._pending, self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the forwarding thread -----------------------------------------------------------

    _drop_requested = False
    _refusing = False
    _requests = 0
    _handled = 0

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # closed: the thread is gone already

    def _run(self) -> None:
        registered_stalled = False
        while not self._closing:
            stalled = self._stalled.is_set()
            if stalled != registered_stalled:
                # While stalled, nothing is read from the pairs: bytes wait in the kernel buffers.
                for sock in self._peers:
                    if stalled:
                        self._selector.unregister(sock)
                    else:
                        self._selector.register(sock, selectors.EVENT_READ)
                registered_stalled = stalled
            if not stalled:
                while self._pending:
                    self._connect(self._pending.pop())
            with self._mutex:
                drop, self._drop_requested = self._drop_requested, False
            if drop:
                for sock in list(self._client_side):
                    self._close_pair(sock, registered=not stalled)
            with self._acted:
                self._handled = self._requests
                self._acted.notify_all()
            for key, _ in self._selector.select():
                sock = key.fileobj
                if sock is self._wake_r:
                    self._wake_r.recv(_CHUNK)
                elif sock is self._listener:
                    self._accept(stalled)
                elif isinstance(sock, socket.socket) and sock in self._peers:
                    self._forward(sock)

    def _accept(self, stalled: bool) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        with self._mutex:
            self._connections += 1
        if self._refusing:
            client.close()
        elif stalled:
            self._pending.append(client)  # accepted by the kernel anyway; nothing reaches the server
        else:
            self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self._target, timeout=10)
        except OSError:
            client.close()  # the client sees a refused/closed connection, as without the proxy
            return
        for sock in (client, server):
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client] = server
        self._peers[server] = client
        self._client_side.add(client)
        self._selector.register(client, selectors.EVENT_READ)
        self._selector.register(server, selectors.EVENT_READ)

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers[sock]
        try:
            data = sock.recv(_CHUNK)
        except OSError:
            data = b""
        if data:
            # Counted before forwarding: once the client has the answer, the turn is counted.
            client = sock if sock in self._client_side else peer
            if sock is client:
                self._awaiting_answer.add(client)
            elif client in self._awaiting_answer:
                self._awaiting_answer.discard(client)
                with self._mutex:
                    self._turns += 1
            try:
                peer.sendall(data)
            except OSError:
                data = b""
        if not data:
            self._close_pair(sock, registered=True)

    def _close_pair(self, sock: socket.socket, *, registered: bool) -> None:
        peer = self._peers.pop(sock)
        del self._peers[peer]
        for each in (sock, peer):
            if registered:
                self._selector.unregister(each)
            self._client_side.discard(each)
            self._awaiting_answer.discard(each)
            each.close()
