"""RedisStorage on a Sentinel-managed master: the URL form, and a real failover on private servers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("redis")

import redis

import authkit.storage.url
from authkit import open_storage
from authkit.errors import ConfigurationError, StorageUnavailableError
from authkit.storage.redis import RedisStorage
from tests.local_servers import redis_sentinel_set, wait_until_ready
from tests.services import unique_prefix


@pytest.fixture
def no_marker_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read how a URL is parsed: the hosts are made up, so nothing may connect.
    (Opening a store checks its marker key on the server; the failover tests cover that.)"""
    monkeypatch.setattr(RedisStorage, "_check_marker", lambda self, create: None)
    # Nor the encryption marker a plain open looks for (it waited ~10 s on the made-up hosts).
    monkeypatch.setattr(authkit.storage.url, "check_plain_open", lambda storage: None)


def test_url_form(no_marker_check: None) -> None:
    storage = open_storage("redis+sentinel://:s3cr%40t@h1,h2:26380,[::1]:26381/mymaster/2?socket_timeout=3"
                           "&sentinel_password=other")
    try:
        assert isinstance(storage, RedisStorage)
        assert repr(storage) == "RedisStorage('sentinel mymaster via h1:26379,h2:26380,::1:26381/2', prefix='authkit:')"
        kwargs = storage._client.connection_pool.connection_kwargs
        assert (kwargs["password"], kwargs["db"], kwargs["socket_timeout"]) == ("s3cr@t", 2, 3.0)
        sentinels = [s.connection_pool.connection_kwargs for s in storage._sentinel.sentinels]
        assert [(s["host"], s["port"], s["password"]) for s in sentinels] == [
            ("h1", 26379, "other"), ("h2", 26380, "other"), ("::1", 26381, "other")]
        assert sentinels[0]["socket_timeout"] == 3.0  # socket_* options reach the sentinels too
    finally:
        storage.close()


def test_tls_url_form(no_marker_check: None) -> None:
    storage = open_storage("rediss+sentinel://h1/mymaster?ssl_cert_reqs=none")
    try:
        kwargs = storage._client.connection_pool.connection_kwargs
        assert storage._client.connection_pool.connection_class.__name__ == "SentinelManagedSSLConnection"
        assert kwargs["ssl_cert_reqs"] == "none"
        sentinel = storage._sentinel.sentinels[0].connection_pool
        assert sentinel.connection_class is redis.SSLConnection
    finally:
        storage.close()


@pytest.mark.parametrize("url", [
    "redis+sentinel://h1,h2",               # no service name
    "redis+sentinel://h1/svc/x",            # db not a number
    "redis+sentinel://h1/svc/0/extra",
    "redis+sentinel://h1:port/svc",
    "redis+sentinel://h1:70000/svc",
    "redis+sentinel://h1,,h2/svc",
])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_storage(url)


def test_cluster_and_sentinel_exclude_each_other() -> None:
    with pytest.raises(ConfigurationError):
        open_storage("redis+sentinel://h1/svc", cluster=True)


@pytest.mark.slow
def test_failover_errors_for_a_bounded_window_then_continues(tmp_path: Path) -> None:
    with redis_sentinel_set(tmp_path) as servers:
        wait_until_ready(servers)
        storage = open_storage(servers.url, prefix=unique_prefix("sn").rstrip("_") + ":",
                               socket_timeout=1.0, socket_connect_timeout=1.0)
        master = redis.Redis(port=servers.master_port)
        try:
            for n in range(100):
                storage.store_kv(f"k{n}", str(n).encode())
            assert storage.incr_kv("counter") == 1
            # WAIT: the writes above are on the replica before the master dies (see docs/redis.md).
            assert master.wait(1, 5000) == 1
            servers.servers.kill("master")
            killed = time.monotonic()
            acked = 1
            failed = 0
            first_ok_after_error: float | None = None
            while first_ok_after_error is None:
                assert time.monotonic() - killed < 120, "no new master after 120 s"
                try:
                    storage.incr_kv("counter")
                except StorageUnavailableError:
                    failed += 1
                    time.sleep(0.05)
                    continue
                acked += 1
                if failed:
                    first_ok_after_error = time.monotonic()
            window = first_ok_after_error - killed
            print(f"\nsentinel failover: {failed} calls failed, error window {window:.2f}s "
                  f"(down-after-milliseconds 1000)")
            assert failed > 0  # the master was really gone for a while
            # The same storage object continues on the promoted replica, with everything WAITed for.
            # Sentinels tell each other of a failover (hello messages every 2 s): the one asked
            # here may name the old master a moment after the storage, told by another, moved on.
            sentinel = redis.Redis(port=servers.sentinel_ports[0])
            deadline = time.monotonic() + 30
            while True:
                port = int(sentinel.sentinel_get_master_addr_by_name(servers.service)[1])
                if port == servers.replica_port or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            sentinel.close()
            assert port == servers.replica_port
            assert [storage.get_kv(f"k{n}") for n in range(100)] == [str(n).encode() for n in range(100)]
            value = int(storage.get_kv("counter") or b"0")
            assert acked <= value <= acked + failed
        finally:
            master.close()
            storage.close()
