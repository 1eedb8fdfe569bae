"""One factory per backend the conformance suite runs on.

A factory takes ``(tmp_path, clock)`` and returns a context manager yielding a
fresh, empty storage under its own table/key prefix, dropping it afterwards.
To make a new backend join the whole suite, add its factory to ``BACKENDS``.
"""

from __future__ import annotations

import importlib.util
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from authkit.storage import AuthStorage, MemoryStorage
from tests.clock import FakeClock
from tests.services import MYSQL_URL, POSTGRES_URL, REDIS_URL, require, unique_prefix

Factory = Callable[[Path, FakeClock], AbstractContextManager[AuthStorage]]

# How another process opens the same store as a storage this module made:
# a picklable recipe for ``reopen()``.  Memory-only stores have none.
_RECIPES: weakref.WeakKeyDictionary[AuthStorage, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def recipe(storage: AuthStorage) -> tuple[Any, ...] | None:
    """What :func:`reopen` needs to open ``storage``'s store in another process, or ``None``."""
    return _RECIPES.get(storage)


def reopen(how: tuple[Any, ...]) -> AuthStorage:
    """A new storage on the same store (in a spawned process, say), from :func:`recipe`."""
    kind = how[0]
    if kind == "sql":
        from authkit.storage.sql import SqlStorage

        return SqlStorage(how[1], prefix=how[2], create_schema=False, **(how[3] if len(how) > 3 else {}))
    if kind == "redis":
        from authkit.storage.redis import RedisStorage

        return RedisStorage.from_url(how[1], prefix=how[2], cluster=how[3])
    if kind == "encrypted":
        from authkit.storage.encrypted import EncryptedStorage

        return EncryptedStorage(reopen(how[1]), how[2])
    if kind == "cached":
        from authkit.storage.cached import CachedStorage

        return CachedStorage(reopen(how[1]))
    raise ValueError(f"unknown recipe {kind!r}")


@contextmanager
def memory(tmp_path: Path, clock: FakeClock) -> Iterator[AuthStorage]:
    with MemoryStorage(clock=clock) as storage:
        yield storage


def _sql(url: str, tmp_path: Path, clock: FakeClock, **options: Any) -> AbstractContextManager[AuthStorage]:
    """A SqlStorage on its own table prefix, its tables dropped afterwards."""
    from authkit.storage.sql import SqlStorage

    @contextmanager
    def factory() -> Iterator[AuthStorage]:
        storage = SqlStorage(url, prefix=unique_prefix("s"), clock=clock, **options)
        if not storage._in_memory:
            _RECIPES[storage] = ("sql", url, storage.prefix, options)
        try:
            yield storage
        finally:
            storage.drop_schema()
            storage.close()

    return factory()


def sqlite_file(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    return _sql(f"sqlite:///{tmp_path / 'authkit.db'}", tmp_path, clock)


def sqlite_memory(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    return _sql("sqlite://", tmp_path, clock)


def postgresql(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    return _sql(require(POSTGRES_URL, "PostgreSQL"), tmp_path, clock)


def postgresql_pgbouncer(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    """PostgreSQL through a private PgBouncer in transaction pooling mode (tests/local_servers.py)."""
    from tests.local_servers import pgbouncer_url

    return _sql(pgbouncer_url(), tmp_path, clock)


def mysql(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    return _sql(require(MYSQL_URL, "MariaDB/MySQL"), tmp_path, clock)


@contextmanager
def _encrypted(inner: AbstractContextManager[AuthStorage]) -> Iterator[AuthStorage]:
    """EncryptedStorage around another factory's storage; that factory cleans up."""
    from authkit.storage.encrypted import EncryptedStorage, generate_key

    with inner as storage:
        key = generate_key()
        encrypted = EncryptedStorage(storage, [key])
        inner_recipe = recipe(storage)
        if inner_recipe is not None:
            _RECIPES[encrypted] = ("encrypted", inner_recipe, [key])
        yield encrypted


def encrypted_memory(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    return _encrypted(memory(tmp_path, clock))


def encrypted_sqlite(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    return _encrypted(sqlite_file(tmp_path, clock))


@contextmanager
def cached_sqlite(tmp_path: Path, clock: FakeClock) -> Iterator[AuthStorage]:
    from authkit.storage.cached import CachedStorage

    with sqlite_file(tmp_path, clock) as inner:
        cached = CachedStorage(inner)
        inner_recipe = recipe(inner)
        assert inner_recipe is not None
        _RECIPES[cached] = ("cached", inner_recipe)
        yield cached


def drop_redis_keys(client: object, prefix: str) -> None:
    """Delete every key under ``prefix``, with SCAN on every node (every primary of a cluster)."""
    import redis
    import redis.cluster

    from authkit.storage._redis_codec import glob_escape as _glob_escape

    pattern = _glob_escape(prefix.encode()) + b"*"
    if isinstance(client, redis.cluster.RedisCluster):
        for node in client.get_primaries():
            names = list(client.scan_iter(match=pattern, count=1000, target_nodes=node))
            for name in names:
                client.delete(name)
    else:
        assert isinstance(client, redis.Redis)
        names = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(names), 1000):
            client.delete(*names[i:i + 1000])


@contextmanager
def _redis(url: str, clock: FakeClock, **options: object) -> Iterator[AuthStorage]:
    """A RedisStorage on its own key prefix, every key under it deleted afterwards."""
    from authkit.storage.redis import RedisStorage

    prefix = unique_prefix("r").rstrip("_") + ":"
    storage = RedisStorage.from_url(url, prefix=prefix, clock=clock, **options)
    _RECIPES[storage] = ("redis", url, prefix, bool(options.get("cluster")))
    try:
        yield storage
    finally:
        drop_redis_keys(storage._client, prefix)
        storage.close()


def redis_single(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    return _redis(require(REDIS_URL, "Redis"), clock)


def redis_cluster(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    from tests.redis_cluster import cluster_url

    return _redis(cluster_url(), clock, cluster=True)


def encrypted_redis(tmp_path: Path, clock: FakeClock) -> AbstractContextManager[AuthStorage]:
    return _encrypted(redis_single(tmp_path, clock))


BACKENDS: dict[str, Factory] = {
    "memory": memory,
    "sqlite-file": sqlite_file,
    "sqlite-memory": sqlite_memory,
    "postgresql": postgresql,
    "mysql": mysql,
    "encrypted-memory": encrypted_memory,
    "encrypted-sqlite": encrypted_sqlite,
    "cached-sqlite": cached_sqlite,
    "redis": redis_single,
    "redis-cluster": redis_cluster,
    "encrypted-redis": encrypted_redis,
}

# PostgreSQL behind PgBouncer (transaction pooling) runs the whole suite once lock() is a lease
# row: a session-level advisory lock excludes nobody there (tests/test_pgbouncer.py shows it).
LEASE_LOCKS = importlib.util.find_spec("authkit.storage._sql_lock") is not None
if LEASE_LOCKS:
    BACKENDS["postgresql-pgbouncer"] = postgresql_pgbouncer
