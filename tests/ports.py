"""Spare loopback ports for the servers the tests start themselves.

Every server a test starts (private PostgreSQL and MariaDB, Redis nodes and clusters,
sentinels, PgBouncer) takes its port from one range, ``AUTHKIT_TEST_PRIVATE_PORTS`` (default
16200-16999).  A port is handed out only when nothing listens on it *and* this process holds
its claim: an exclusive ``flock`` on a file per port, kept for the process's life and dropped
by the kernel when it exits.  So test runs side by side on one machine (CI runs the minimum
versions and the other interpreters beside the main suite) never start two servers on one
port, and nothing needs cleaning up after a crash.  A Redis Cluster node's bus port (its port
+ 10000) is claimed with it, so the range must end below 22768.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path

BUS_OFFSET = 10000
_CLAIMS = Path(tempfile.gettempdir()) / "authkit-test-ports"
_held: dict[int, int] = {}  # port -> the open claim file's descriptor, for the process's life


def port_range() -> range:
    low, _, high = os.environ.get("AUTHKIT_TEST_PRIVATE_PORTS", "16200-16999").partition("-")
    return range(int(low), int(high) + 1)


def _listening_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _claim(port: int) -> bool:
    if port in _held:
        return False  # ours already, handed out before
    _CLAIMS.mkdir(mode=0o777, exist_ok=True)
    fd = os.open(_CLAIMS / str(port), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # another test run's
    _held[port] = fd
    return True


def _release(port: int) -> None:
    os.close(_held.pop(port))


def spare_ports(count: int = 1, *, with_bus: bool = False) -> list[int]:
    """``count`` consecutive ports of the range, free and claimed by this process (with their
    cluster bus ports when ``with_bus``); never the same port twice in one process."""
    ports = port_range()
    for first in range(ports.start, ports.stop - count + 1):
        wanted = list(range(first, first + count))
        needed = wanted + ([p + BUS_OFFSET for p in wanted] if with_bus else [])
        claimed: list[int] = []
        for port in needed:
            if not _claim(port):
                break
            claimed.append(port)
        if len(claimed) == len(needed) and all(_listening_free(p) for p in needed):
            return wanted
        for port in claimed:
            _release(port)
    raise RuntimeError(f"no {count} free ports in {ports.start}-{ports.stop - 1} (AUTHKIT_TEST_PRIVATE_PORTS)")


def free_port() -> int:
    """One free port of the range, claimed by this process."""
    return spare_ports(1)[0]
