"""The test proxy itself: it forwards, counts turns, stalls and drops (against a real Redis)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.services import REDIS_URL, require
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    from urllib.parse import urlsplit

    parts = urlsplit(require(REDIS_URL, "Redis"))
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        yield proxy


def _ask(sock: socket.socket, request: bytes, expected: bytes) -> None:
    sock.sendall(request)
    answer = b""
    while len(answer) < len(expected):
        chunk = sock.recv(1024)
        assert chunk, "connection closed"
        answer += chunk
    assert answer == expected


def test_counts_one_turn_per_request_and_answer(proxy: TcpProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        _ask(sock, b"PING\r\n", b"+PONG\r\n")
        assert proxy.turns == 1
        # two commands sent in one go are one turn; a request in pieces is one turn
        _ask(sock, b"PING\r\nPING\r\n", b"+PONG\r\n+PONG\r\n")
        sock.sendall(b"PI")
        _ask(sock, b"NG\r\n", b"+PONG\r\n")
        assert proxy.turns == 3
    assert proxy.connections == 1
    proxy.reset()
    assert (proxy.turns, proxy.connections) == (0, 0)


def test_stall_forwards_nothing_and_closes_nothing_until_resumed(proxy: TcpProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        _ask(sock, b"PING\r\n", b"+PONG\r\n")
        proxy.stall()
        sock.sendall(b"PING\r\n")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1024)  # no answer, and no EOF either: the connection is still open
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as late:
            late.settimeout(0.3)
            late.sendall(b"PING\r\n")
            with pytest.raises(TimeoutError):
                late.recv(1024)
            proxy.resume()
            late.settimeout(10)
            assert late.recv(1024) == b"+PONG\r\n"
        sock.settimeout(10)
        assert sock.recv(1024) == b"+PONG\r\n"


def test_drop_closes_open_connections_and_accepts_new_ones(proxy: TcpProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        _ask(sock, b"PING\r\n", b"+PONG\r\n")
        proxy.drop()
        assert sock.recv(1024) == b""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        _ask(sock, b"PING\r\n", b"+PONG\r\n")
