"""Real Redis servers that the tests start and stop themselves.

* :class:`RedisServer` — one ``redis-server`` on a spare loopback port, for
  fault tests (kill it, start it again on the same port).  The shared server
  on 6379 is never touched.
* :class:`LocalRedisCluster` — a real 3-primary Redis Cluster
  (``--cluster-enabled yes`` + ``redis-cli --cluster create``).
* :func:`cluster_url` — one cluster per test process, started on first use and
  stopped at exit, so ``tests/backends.py`` factories (which get no pytest
  request) can share it.

Servers run with ``--save "" --appendonly no`` in temporary directories and
die with the test process (``PR_SET_PDEATHSIG``), so a killed run leaves none
behind.  No ``redis-server`` binary skips the tests, except under
``AUTHKIT_REQUIRE_SERVICES=1`` where it fails them.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ports import spare_ports
from tests.services import REQUIRED, SERVICES_OFF


def require_redis_server() -> str:
    """The ``redis-server`` binary; skip (or fail under AUTHKIT_REQUIRE_SERVICES=1) without one."""
    if SERVICES_OFF:
        pytest.skip("Redis servers: not in the database-free run (AUTHKIT_TEST_SERVICES=none)")
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("redis-cli") is None:
        message = "*** redis-server/redis-cli not installed: the Redis server/cluster tests did NOT run ***"
        if REQUIRED:
            pytest.fail(message + " (AUTHKIT_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return binary


def _pdeathsig() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child get SIGTERM when the test process dies (Linux).

    libc's ``prctl`` is looked up here, in the parent: the child between fork and
    exec then only calls it, with no import or dlopen that another thread's lock
    could block.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]

    def set_pdeathsig() -> None:  # pragma: no cover - runs in the child
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_pdeathsig


_DIE_WITH_PARENT = _pdeathsig()


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    """Until *this* server says it is ready (a connect could reach another process on a taken port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OSError(f"redis-server exited with {proc.returncode} (port taken?)")
        if log.exists() and b"Ready to accept connections" in log.read_bytes():
            return
        time.sleep(0.02)
    raise RuntimeError(f"redis-server did not start in {timeout}s")


class RedisServer:
    """One ``redis-server`` process we own: ``start()``, ``kill()``, ``start()`` again on the same port."""

    def __init__(self, port: int | None = None, *extra: str) -> None:
        self.binary = require_redis_server()
        self.auto_port = port is None
        self.port = port if port is not None else spare_ports(1)[0]
        self.extra = list(extra)
        self.dir = Path(tempfile.mkdtemp(prefix="authkit-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart, on the same port); an auto-picked port that another process
        took meanwhile is replaced by another spare one."""
        for attempt in range(5 if self.auto_port else 1):
            log = self.dir / "redis.log"
            log.unlink(missing_ok=True)
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.dir), "--logfile", str(log), *self.extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_DIE_WITH_PARENT,
            )
            try:
                _wait_ready(self.proc, log)
                return self
            except OSError:
                if not self.auto_port or attempt == 4:
                    raise
                self.port = spare_ports(1)[0]
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL: the server dies mid-run, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalRedisCluster:
    """Three cluster-enabled ``redis-server`` primaries joined by ``redis-cli --cluster create``."""

    def __init__(self, nodes: int = 3) -> None:
        binary = require_redis_server()
        self.ports = spare_ports(nodes, with_bus=True)
        self.servers = [
            RedisServer(port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "5000")
            for port in self.ports
        ]
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> LocalRedisCluster:
        try:
            for server in self.servers:
                server.start()
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node reports ``cluster_state:ok`` and knows every slot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [
                subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"], capture_output=True, text=True,
                               timeout=10).stdout
                for p in self.ports
            ]
            if all("cluster_state:ok" in s and "cluster_slots_assigned:16384" in s for s in states):
                return
            time.sleep(0.1)
        raise RuntimeError("the local Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_cluster: LocalRedisCluster | None = None
_cluster_mutex = threading.Lock()


def cluster_url() -> str:
    """The URL of this test process's cluster, started on first use, stopped at exit (or by :func:`stop_cluster`)."""
    global _cluster
    with _cluster_mutex:
        if _cluster is None:
            for attempt in range(3):
                try:  # fresh spare ports each time: another test process may have taken ours
                    _cluster = LocalRedisCluster().start()
                    break
                except OSError:
                    if attempt == 2:
                        raise
            atexit.register(stop_cluster)
        assert _cluster is not None
        return _cluster.url


def stop_cluster() -> None:
    global _cluster
    with _cluster_mutex:
        if _cluster is not None and os.getpid() == _cluster_pid:
            _cluster.stop()
        _cluster = None


_cluster_pid = os.getpid()
