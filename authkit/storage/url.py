"""``open_storage(url, **options)``: a backend from a URL.

======================================  =====================================
URL                                     backend
======================================  =====================================
``memory://``                           :class:`MemoryStorage`
``sqlite:///path.db``, ``sqlite://``    :class:`SqlStorage` (``sqlite://`` is in memory, shared by threads)
``postgresql://user@host/db``           :class:`SqlStorage` on psycopg 3 (``pip install 'authkit-sf[postgres]'``)
``mysql://…``, ``mariadb://…``          :class:`SqlStorage` on PyMySQL (``pip install 'authkit-sf[mysql]'``)
``redis://…``, ``rediss://…``,          :class:`RedisStorage` (``pip install 'authkit-sf[redis]'``)
``unix:///path/redis.sock``
``redis+sentinel://s1,s2,s3/svc/0``     :class:`RedisStorage` on the master Redis Sentinel names
``rediss+sentinel://…``                 (the same over TLS; see docs/scaling.md)
======================================  =====================================

``memory://`` is a store private to its object: it takes no host or path, and
its ``prefix`` and ``create_schema`` are checked like any backend's and need
nothing more (the store is its own namespace, with no schema to create).

Options: ``prefix`` (table or key prefix), ``create_schema`` (default True),
``clock``, backend-specific ones (see each backend), and ``encryption_keys``:
a list of keys, a key file's :class:`~pathlib.Path` or a provider function
(or set ``AUTHKIT_ENCRYPTION_KEYS``, comma-separated, or
``AUTHKIT_ENCRYPTION_KEY_FILE``) wraps the backend in :class:`EncryptedStorage`.
An empty key list, given or from the environment, is a
:class:`~authkit.errors.ConfigurationError`, never "no encryption"; so is
opening an encrypted store without keys.

>>> storage = open_storage("sqlite:///authkit.db", prefix="myapp_")
"""

from __future__ import annotations

from typing import Any

from authkit.errors import ConfigurationError
from authkit.storage._marker import allow_maintenance, check_plain_open
from authkit.storage.base import AuthStorage
from authkit.storage.keys import ENCRYPTION_KEY_FILE_ENV, ENCRYPTION_KEYS_ENV, keys_from_environment, resolve_keys

__all__ = ["open_storage", "ENCRYPTION_KEYS_ENV", "ENCRYPTION_KEY_FILE_ENV"]

_SQL_SCHEMES = {"sqlite", "postgresql", "postgres", "mysql", "mariadb"}
_REDIS_SCHEMES = {"redis", "rediss", "unix"}
_EXTRA = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql", "mariadb": "mysql"}


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigurationError("storage URL has no scheme; expected e.g. sqlite:///authkit.db")
    return scheme.split("+", 1)[0].lower()


def _open_backend(url: str, scheme: str, options: dict[str, Any]) -> AuthStorage:
    if scheme == "memory":
        from authkit.storage.memory import MemoryStorage

        unknown = set(options) - {"clock", "prefix", "create_schema"}
        if unknown:
            raise TypeError(f"unknown option(s) for memory://: {', '.join(sorted(unknown))}")
        if url.partition("://")[2]:
            raise ConfigurationError("memory:// takes no host, path or query: every memory store is private")
        _check_memory_options(options)
        return MemoryStorage(clock=options.get("clock"))
    if scheme in _SQL_SCHEMES:
        from authkit.storage.sql import SqlStorage

        return SqlStorage(url, **options)
    if scheme in _REDIS_SCHEMES:
        try:
            import redis  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError(
                "redis:// needs the redis extra: pip install 'authkit-sf[redis]'"
            ) from exc
        from authkit.storage.redis import RedisStorage

        return RedisStorage.from_url(url, **options)
    raise ConfigurationError(
        f"unknown storage scheme {scheme!r}; expected memory, sqlite, postgresql, mysql, mariadb, redis, rediss or unix"
    )


def _check_memory_options(options: dict[str, Any]) -> None:
    """The options a memory store honours trivially are still checked, never silently dropped.

    A memory store is private to its object, so it is a namespace of its own:
    a ``prefix`` has nothing more to separate and there is no schema to create.
    Values another backend would refuse are refused here too, so a test on
    ``memory://`` fails where production would.
    """
    prefix = options.get("prefix")
    if prefix is not None:
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if not prefix or len(prefix) > 64 or not prefix.isprintable() or prefix.strip() != prefix:
            raise ValueError("prefix must be 1-64 printable characters without surrounding spaces")
    create_schema = options.get("create_schema", True)
    if not isinstance(create_schema, bool):
        raise TypeError("create_schema must be a bool")


def open_storage(url: str, **options: Any) -> AuthStorage:
    """Open the storage ``url`` names; see the module docstring for schemes and options."""
    return _open_storage(url, maintenance=False, **options)


def _open_storage(url: str, *, maintenance: bool, **options: Any) -> AuthStorage:
    """``open_storage``; with ``maintenance`` and no keys, an encrypted store opens for
    cleanup, counts and locks only (``authkit cleanup``/``stats`` from cron, without keys)."""
    if not isinstance(url, str):
        raise TypeError("url must be a str")
    scheme = _scheme(url)
    source = options.pop("encryption_keys", None)
    if source is None:
        source = keys_from_environment()
    # Resolved (file read, provider called, emptiness refused) before anything is opened.
    keys = None if source is None else resolve_keys(source)
    storage = _open_backend(url, scheme, options)
    try:
        if keys is None:
            if maintenance and allow_maintenance(storage):
                return storage
            check_plain_open(storage)  # an encrypted store without keys: refused now, at open
            return storage
        from authkit.storage.encrypted import EncryptedStorage

        return EncryptedStorage(storage, keys)
    except BaseException:
        storage.close()
        raise
