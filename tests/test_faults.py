"""Storage under faults and load, on the real servers (issue 9, items 3-6).

- Round trips, counted by a TCP proxy: one per single storage operation on
  PostgreSQL, MariaDB and Redis (no pre-ping, no BEGIN/COMMIT around one statement).
- A stalled network (the proxy stops forwarding, closing nothing) gives
  ``StorageUnavailableError`` after the configured timeout, for a call on an open
  connection and for a new connection alike; the same storage recovers.
- Pool exhaustion is a ``StorageError`` that names ``pool_size``/``max_overflow``,
  not "unavailable".
- 64 threads each holding their own lock and using the storage inside it, with
  default pool options: all succeed.
- ``cleanup_expired`` racing writers that make records live again never deletes
  a live one.
- A REAL restart of a private server (never the shared ones): the same storage
  recovers on its next call; a lock held across the restart keeps excluding; a
  lock whose lease ran out while the server was away makes the holder's next call
  fail loudly, inside its ``with`` block.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from authkit.errors import StorageError, StorageUnavailableError
from authkit.models import AuthToken, SessionData
from authkit.storage import AuthStorage
from authkit.storage.redis import RedisStorage
from authkit.storage.sql import SqlStorage
from tests.backends import drop_redis_keys
from tests.clock import FakeClock
from tests.private_servers import private_server
from tests.services import REDIS_URL, require, unique_prefix
from tests.sql_storages import server_url, url_for
from tests.tcp_proxy import TcpProxy
from tests.threads import run_threads


@pytest.fixture
def proxy_for() -> Iterator[Callable[[str], TcpProxy]]:
    """TcpProxies, closed afterwards.  Ask for it before ``opened``: storages behind a proxy
    are dropped first, while their proxy still forwards."""
    made: list[TcpProxy] = []

    def make(url: str) -> TcpProxy:
        parts = urlsplit(url)
        proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def token(token_id: str, user: str = "u1", **fields: Any) -> AuthToken:
    return AuthToken(token_id=token_id, user_id=user, access_token=f"access-{token_id}", **fields)


def single_operations(storage: AuthStorage) -> dict[str, Callable[[], object]]:
    """Every single-record operation (and the cheap listings), each one statement / command."""
    return {
        "store_kv": lambda: storage.store_kv("k", b"v", ttl=60),
        "get_kv": lambda: storage.get_kv("k"),
        "delete_kv": lambda: storage.delete_kv("gone"),
        "list_kv_keys": lambda: storage.list_kv_keys("k"),
        "store_token": lambda: storage.store_token(token("t1")),
        "get_token": lambda: storage.get_token("t1"),
        "get_token_by_access_token": lambda: storage.get_token_by_access_token("access-t1"),
        "update_token": lambda: storage.update_token(token("t1", refresh_token="r")),
        "list_user_tokens": lambda: storage.list_user_tokens("u1"),
        "delete_token": lambda: storage.delete_token("gone"),
        "store_session": lambda: storage.store_session("s1", SessionData("", "u1")),
        "get_session": lambda: storage.get_session("s1"),
        "list_user_sessions": lambda: storage.list_user_sessions("u1"),
        "count_active_sessions": lambda: storage.count_active_sessions(),
        "delete_session": lambda: storage.delete_session("gone"),
    }


def assert_one_round_trip_each(storage: AuthStorage, proxy: TcpProxy, *, skip: tuple[str, ...] = ()) -> None:
    turns = {}
    for name, operation in single_operations(storage).items():
        if name in skip:
            continue
        operation()  # warm: connection open, script loaded
        proxy.reset()
        operation()
        turns[name] = (proxy.turns, proxy.connections)
    assert turns == {name: (1, 0) for name in turns}


# -- one round trip per call ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_one_round_trip_per_single_operation_on_sql(
    kind: str, proxy_for: Callable[[str], TcpProxy], opened: Callable[..., SqlStorage]
) -> None:
    proxy = proxy_for(server_url(kind))
    storage = opened(proxy.url(server_url(kind)))
    assert_one_round_trip_each(storage, proxy)


def test_one_round_trip_per_single_operation_on_redis(proxy_for: Callable[[str], TcpProxy]) -> None:
    proxy = proxy_for(require(REDIS_URL, "Redis"))
    prefix = unique_prefix("rt").rstrip("_") + ":"
    storage = RedisStorage.from_url(proxy.url(REDIS_URL), prefix=prefix)
    try:
        # list_kv_keys reads the key index, then the entries' expiry: 2 turns, a listing.
        assert_one_round_trip_each(storage, proxy, skip=("list_kv_keys",))
    finally:
        drop_redis_keys(storage._client, prefix)
        storage.close()


# -- bounded waits ----------------------------------------------------------------------------


def _all_unavailable(calls: list[Callable[[], object]]) -> None:
    """Each call raises StorageUnavailableError; a call still blocked after 60 s fails the test by name."""

    def run(n: int) -> None:
        with pytest.raises(StorageUnavailableError):
            calls[n]()

    for n in range(len(calls)):  # one at a time: each must end on its own timeout
        run_threads(lambda _i, n=n: run(n), 1, timeout=60)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_stalled_network_is_unavailable_after_the_timeout_and_the_storage_recovers(
    kind: str, proxy_for: Callable[[str], TcpProxy], opened: Callable[..., SqlStorage]
) -> None:
    url = server_url(kind)
    proxy = proxy_for(url)
    twin = opened(url)
    storage = opened(proxy.url(url), prefix=twin.prefix, create_schema=False, timeout=2)
    storage.store_kv("k", b"before")
    proxy.stall()
    _all_unavailable([
        lambda: storage.get_kv("k"),  # on the open, pooled connection
        lambda: storage.store_kv("k", b"during"),  # that one was closed: a new connection, stalled too
        lambda: storage.lock("job", timeout=0).__enter__(),
    ])
    proxy.resume()
    assert storage.get_kv("k") == b"before"
    storage.store_kv("k", b"after")
    assert twin.get_kv("k") == b"after"


def test_a_stalled_redis_is_unavailable_after_the_timeout(proxy_for: Callable[[str], TcpProxy]) -> None:
    proxy = proxy_for(require(REDIS_URL, "Redis"))
    prefix = unique_prefix("rs").rstrip("_") + ":"
    storage = RedisStorage.from_url(proxy.url(REDIS_URL), prefix=prefix, socket_timeout=1, socket_connect_timeout=1)
    try:
        storage.store_kv("k", b"before")
        proxy.stall()
        _all_unavailable([lambda: storage.get_kv("k"), lambda: storage.store_kv("k", b"during")])
        proxy.resume()
        assert storage.get_kv("k") == b"before"
    finally:
        drop_redis_keys(storage._client, prefix)
        storage.close()


def test_timeout_option_is_checked() -> None:
    with pytest.raises(ValueError):
        SqlStorage("sqlite://", timeout=0)
    with pytest.raises(TypeError):
        SqlStorage("sqlite://", timeout="30")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_pool_exhaustion_is_a_storage_error_that_says_what_to_size(
    kind: str, opened: Callable[..., SqlStorage]
) -> None:
    storage = opened(server_url(kind), pool_size=1, max_overflow=0, pool_timeout=0.2)
    storage.store_kv("k", b"v")

    def inside(_cursor: Any) -> pytest.ExceptionInfo[StorageError]:  # the pool's only connection is busy here
        with pytest.raises(StorageError) as info:
            storage.get_kv("k")
        return info

    info = storage._run(inside)
    assert type(info.value) is StorageError  # not StorageUnavailableError: the server is fine
    assert "pool_size" in str(info.value) and "max_overflow" in str(info.value)
    assert storage.get_kv("k") == b"v"


# -- locks that cannot starve the pool -------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite-file", "sqlite-memory", "postgresql", "mysql"])
def test_64_threads_each_holding_a_lock_use_the_storage_inside_it(
    kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]
) -> None:
    storage = opened(url_for(kind, tmp_path))  # default pool options (5 + 10 overflow)
    count = 64
    all_holding = threading.Barrier(count)

    def worker(n: int) -> None:
        with storage.lock(f"own-{n}", timeout=60):
            all_holding.wait(60)  # every lock is held at once, then each thread uses the storage
            storage.store_kv(f"k{n}", str(n).encode())
            assert storage.get_kv(f"k{n}") == str(n).encode()

    run_threads(worker, count)
    assert len(storage.list_kv_keys("k")) == count


def test_64_threads_each_holding_a_lock_use_redis_inside_it() -> None:
    prefix = unique_prefix("rl").rstrip("_") + ":"
    storage = RedisStorage.from_url(require(REDIS_URL, "Redis"), prefix=prefix)  # redis-py's default pool
    count = 64
    all_holding = threading.Barrier(count)

    def worker(n: int) -> None:
        with storage.lock(f"own-{n}", timeout=60):
            all_holding.wait(60)
            storage.store_kv(f"k{n}", str(n).encode())
            assert storage.get_kv(f"k{n}") == str(n).encode()

    try:
        run_threads(worker, count)
        assert len(storage.list_kv_keys("k")) == count
    finally:
        drop_redis_keys(storage._client, prefix)
        storage.close()


# -- cleanup racing writers --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite-file", "postgresql", "mysql"])
def test_cleanup_racing_writers_never_deletes_a_live_record(
    kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]
) -> None:
    clock = FakeClock()
    storage = opened(url_for(kind, tmp_path), clock=clock)
    writers, per_writer, rounds = 4, 150, 3
    for round_ in range(rounds):
        ids = [f"r{round_}-{n}" for n in range(writers * per_writer)]
        soon = clock() + timedelta(seconds=1)
        storage.store_sessions_bulk([(i, SessionData("", "u", expires_at=soon)) for i in ids])
        storage.store_tokens_bulk([token(i, expires_at=soon) for i in ids])
        for i in ids:
            storage.store_kv(i, b"old", ttl=1)
        clock.advance(2)  # every record above is expired now; writers make them live again
        writing = threading.Event()
        done = threading.Barrier(writers + 1)

        def work(n: int, ids: list[str] = ids, writing: threading.Event = writing,
                 done: threading.Barrier = done) -> None:
            if n == writers:  # the cleaner: small batches, again and again, while the writers write
                writing.wait(60)
                while done.n_waiting < writers:
                    storage.cleanup_expired(batch_size=16)
                done.wait(60)
                return
            writing.set()
            later = clock() + timedelta(hours=1)
            for i in ids[n * per_writer:(n + 1) * per_writer]:
                storage.store_session(i, SessionData("", "u", expires_at=later))
                storage.store_token(token(i, expires_at=later))
                storage.store_kv(i, b"new", ttl=3600)
            done.wait(60)

        run_threads(work, writers + 1)
        lost = [i for i in ids if storage.get_session(i) is None or storage.get_kv(i) != b"new"
                or storage.get_token(i) is None]
        assert lost == []


# -- real restarts of a private server ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_real_server_restart(kind: str, opened: Callable[..., SqlStorage]) -> None:
    with private_server(kind) as server:
        clock = FakeClock()
        holder = opened(server.url, clock=clock, timeout=5)
        other = opened(server.url, prefix=holder.prefix, create_schema=False, timeout=5)
        holder.store_kv("k", b"before")
        assert other.get_kv("k") == b"before"

        # 1. The same storage recovers by itself: its first call after the restart
        #    finds the pooled connection dead and runs again on a fresh one.
        server.restart()
        assert holder.get_kv("k") == b"before"
        assert other.get_kv("k") == b"before"

        # 2. A lock held across a restart keeps excluding, and its holder goes on.
        with holder.lock("job", timeout=0, ttl=30):
            server.restart()
            with pytest.raises(TimeoutError):
                with other.lock("job", timeout=0):
                    pass
            holder.store_kv("k", b"inside")
        with other.lock("job", timeout=0):
            assert other.get_kv("k") == b"inside"

        # 3. The server stays away longer than the lock's ttl: the lease may have been
        #    taken over, so the holder's next call fails loudly, still inside the block.
        with pytest.raises(StorageError, match="was lost"):
            with holder.lock("job2", timeout=0, ttl=2):
                server.stop()
                clock.advance(3)  # the holder's lease ran out while nothing could renew it
                server.start()
                with pytest.raises(StorageError, match="was lost"):
                    holder.get_kv("k")
        with other.lock("job2", timeout=10):  # by the other's clock too, once its ttl has passed
            pass
        assert holder.get_kv("k") == b"inside"  # outside the block, calls work again
        holder.drop_schema()


def _blocked(conn: sa.Connection, kind: str) -> bool:
    """Whether some transaction waits for a row lock (the storage's, in this test)."""
    if kind == "postgresql":
        sql = "SELECT count(*) FROM pg_locks WHERE NOT granted"
    else:
        sql = "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
    return bool(conn.execute(sa.text(sql)).scalar())


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_deadlock_on_the_write_path_is_retried(kind: str, opened: Callable[..., SqlStorage]) -> None:
    """A real deadlock between the storage's transaction and another: the storage's is the
    victim (it waits first, for PostgreSQL's detector; it is the lighter one, for InnoDB's)
    and is run again instead of failing."""
    storage = opened(server_url(kind))
    for name in ("a", "b"):
        storage.store_kv(name, b"0")
    kv = storage._tables.kv
    engine = sa.create_engine(storage.engine.url)
    attempts: list[int] = []
    storage_holds_a = threading.Event()

    def other_transaction() -> None:
        with engine.connect() as watcher, engine.begin() as conn:
            # Heavier than the storage's transaction, so InnoDB picks the storage's as the victim.
            conn.exec_driver_sql(f"INSERT INTO {kv.name} (name, value) VALUES (%(k)s, %(v)s)",
                                 [{"k": f"w{i}", "v": b"w"} for i in range(50)])
            conn.exec_driver_sql(update, {"v": b"other", "k": "b"})
            other_holds_b.set()
            assert storage_holds_a.wait(30)
            deadline = time.monotonic() + 20  # bounded: a failing run must end, not hang the suite
            while not _blocked(watcher, kind):  # until the storage waits for "b"
                assert time.monotonic() < deadline, "the storage's transaction never waited for b"
                watcher.rollback()  # a fresh snapshot for the next look
                # InnoDB refreshes innodb_trx only when it was last read over 0.1 s ago, by anyone:
                # two test runs polling the same server in a fixed rhythm can keep it stale for ever.
                time.sleep(random.uniform(0.15, 0.35))
            conn.exec_driver_sql(update, {"v": b"other", "k": "a"})

    other_holds_b = threading.Event()
    update = f"UPDATE {kv.name} SET value = %(v)s WHERE name = %(k)s"

    def work(cursor: Any) -> None:
        attempts.append(1)
        cursor.execute(update, {"v": b"mine", "k": "a"})
        if len(attempts) == 1:
            assert other_holds_b.wait(30), errors
            storage_holds_a.set()
        cursor.execute(update, {"v": b"mine", "k": "b"})

    errors: list[BaseException] = []

    def run_other() -> None:
        try:
            other_transaction()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run_other, daemon=True)  # never keeps pytest from exiting
    thread.start()
    try:
        storage._run(work, transaction=True)
    finally:
        thread.join(60)
        engine.dispose()
    # Retried (a retry may deadlock again, with the other transaction still running), never raised.
    assert errors == [] and len(attempts) >= 2
    assert storage.get_kv("a") == b"mine" and storage.get_kv("b") == b"mine"
