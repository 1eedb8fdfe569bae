"""Private servers a test starts, kills and stops itself: never the shared ones.

Ports come from ``tests/ports.py`` (claimed, so runs side by side never collide).  A missing
binary skips the test with a loud reason, or fails it under ``AUTHKIT_REQUIRE_SERVICES=1`` (CI
installs them in ``.ci/run``).
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port, spare_ports
from tests.redis_cluster import _DIE_WITH_PARENT
from tests.services import POSTGRES_URL, REQUIRED, require


def binary(name: str, package: str) -> str:
    """The path of ``name``; skip (or fail under AUTHKIT_REQUIRE_SERVICES=1) when it is missing."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None)
    if path is None:
        message = f"*** {name} is not installed (apt-get install {package}): its tests did NOT run ***"
        if REQUIRED:
            pytest.fail(message + " (AUTHKIT_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return path


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    """Poll until something accepts connections on ``port`` (a server starting up, not a race)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout:g}s")


@dataclass
class Servers:
    """Processes started by one fixture, stopped (killed if need be) at its end."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], port: int, log: Path, *, user: str | None = None
              ) -> subprocess.Popen[bytes]:
        """Start ``argv`` (as ``user`` when running as root), killed if this process dies."""
        prepare: Any = _DIE_WITH_PARENT
        if user is not None and os.geteuid() == 0:
            # Drop to the user *before* asking to die with the parent: the kernel forgets that
            # request when a process changes its credentials (PgBouncer's own "-u" would).
            account = pwd.getpwnam(user)

            def prepare() -> None:
                os.setgroups([])
                os.setgid(account.pw_gid)
                os.setuid(account.pw_uid)
                _DIE_WITH_PARENT()

        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=prepare)
        self.processes[name] = process
        wait_for_port(port, process, name)
        return process

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.kill()
        process.wait(30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@dataclass
class SentinelSet:
    master_port: int
    replica_port: int
    sentinel_ports: list[int]
    service: str
    servers: Servers

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"


@contextmanager
def redis_sentinel_set(tmp: Path, *, down_after_ms: int = 1000) -> Iterator[SentinelSet]:
    """A master, one replica and three sentinels (quorum 2) on spare ports."""
    server = binary("redis-server", "redis-server")
    master, replica, *sentinels = spare_ports(5)
    service = "h15svc"
    servers = Servers()
    try:
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
        servers.start("master", [server, "--port", str(master), "--dir", str(tmp), *common], master, tmp / "master.log")
        servers.start("replica", [server, "--port", str(replica), "--dir", str(tmp), *common,
                                  "--replicaof", "127.0.0.1", str(master)], replica, tmp / "replica.log")
        for n, port in enumerate(sentinels):
            conf = tmp / f"sentinel{n}.conf"  # sentinel rewrites its config file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {tmp}\n"
                f"sentinel monitor {service} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                f"sentinel failover-timeout {service} 10000\n"
                f"sentinel parallel-syncs {service} 1\n"
            )
            servers.start(f"sentinel{n}", [server, str(conf), "--sentinel"], port, tmp / f"sentinel{n}.log")
        yield SentinelSet(master, replica, sentinels, service, servers)
    finally:
        servers.stop_all()


def wait_until_ready(servers: SentinelSet, timeout: float = 60.0) -> None:
    """Poll until the replica is in sync and every sentinel knows the replica and the other two."""
    import redis

    deadline = time.monotonic() + timeout
    sentinels = [redis.Redis(port=p, socket_timeout=2) for p in servers.sentinel_ports]
    try:
        while time.monotonic() < deadline:
            try:
                ready = all(
                    len(s.sentinel_slaves(servers.service)) == 1 and len(s.sentinel_sentinels(servers.service)) == 2
                    and s.sentinel_slaves(servers.service)[0]["master-link-status"] == "ok"
                    for s in sentinels
                )
            except redis.RedisError:
                ready = False
            if ready:
                return
            time.sleep(0.2)
        raise AssertionError("the sentinels never saw the replica and each other")
    finally:
        for s in sentinels:
            s.close()


# -- PgBouncer ---------------------------------------------------------------------------

# SqlStorage needs no option behind PgBouncer: it notices the pooler (authkit/storage/_sql_pgbouncer.py).


@contextmanager
def pgbouncer(*, pool_mode: str = "transaction", pool_size: int = 20,
              upstream_url: str | None = None, settings: dict[str, str] | None = None) -> Iterator[str]:
    """A private PgBouncer in front of ``upstream_url`` (default: the shared PostgreSQL); yields its
    ``postgresql://`` URL.  ``settings`` are more ``[pgbouncer]`` lines (e.g. ``server_login_retry``)."""
    from urllib.parse import urlsplit

    executable = binary("pgbouncer", "pgbouncer")
    upstream = urlsplit(upstream_url or require(POSTGRES_URL, "PostgreSQL"))
    port = free_port()
    # pgbouncer refuses to run as root: it runs as nobody (Servers.start), who must read the config.
    tmp = Path(tempfile.mkdtemp(prefix="authkit-pgbouncer-"))
    tmp.chmod(0o755)
    user = upstream.username or "postgres"
    (tmp / "users.txt").write_text(f'"{user}" ""\n')
    (tmp / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={upstream.hostname or '127.0.0.1'} port={upstream.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {tmp / 'users.txt'}\n"
        f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
        # psycopg/libpq may send these startup parameters; PgBouncer 1.18 refuses unknown ones.
        "ignore_startup_parameters = extra_float_digits,options\n"
        + "".join(f"{key} = {value}\n" for key, value in (settings or {}).items())
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (tmp / name).chmod(0o644)
    argv = [executable, str(tmp / "pgbouncer.ini")]
    servers = Servers()
    try:
        servers.start("pgbouncer", argv, port, tmp / "pgbouncer.log", user="nobody")
        database = upstream.path.lstrip("/") or "test"
        yield f"postgresql://{user}@127.0.0.1:{port}/{database}"
    finally:
        servers.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


_shared_bouncer: tuple[str, Any] | None = None
_shared_mutex = threading.Lock()


def pgbouncer_url() -> str:
    """One transaction-pooling PgBouncer per test process, started on first use, stopped at exit."""
    global _shared_bouncer
    with _shared_mutex:
        if _shared_bouncer is None:
            manager = pgbouncer()
            url = manager.__enter__()
            _shared_bouncer = (url, manager)
            atexit.register(manager.__exit__, None, None, None)
        return _shared_bouncer[0]
