"""``open_storage(url, **options)``: a backend from a URL.

======================================  =====================================
URL                                     backend
======================================  =====================================
``memory://``                           :class:`MemoryStorage`
``sqlite:///path.db``, ``sqlite://``    :class:`SqlStorage` (``sqlite://`` is in memory, shared by threads)
``postgresql://user@host/db``           :class:`SqlStorage` on psycopg 3 (``pip install 'authkit[postgres]'``)
``mysql://…``, ``mariadb://…``          :class:`SqlStorage` on PyMySQL (``pip install 'authkit[mysql]'``)
``redis://…``, ``rediss://…``,          :class:`RedisStorage` (``pip install 'authkit[redis]'``)
``unix:///path/redis.sock``
``redis+sentinel://s1,s2,s3/svc/0``     :class:`RedisStorage` on the master Redis Sentinel names
``rediss+sentinel://…``                 (the same over TLS; see docs/scaling.md)
======================================  =====================================

Options: ``prefix`` (table or key prefix), ``create_schema`` (default True),
``clock``, backend-specific ones (see each backend), and ``encryption_keys``:
a list of keys (or set ``AUTHKIT_ENCRYPTION_KEYS``, comma-separated) wraps the
backend in :class:`EncryptedStorage`.

>>> storage = open_storage("sqlite:///authkit.db", prefix="myapp_")
"""

from __future__ import annotations

import os
from typing import Any

from authkit.errors import ConfigurationError
from authkit.storage.base import AuthStorage

__all__ = ["open_storage", "ENCRYPTION_KEYS_ENV"]

ENCRYPTION_KEYS_ENV = "AUTHKIT_ENCRYPTION_KEYS"

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
        return MemoryStorage(clock=options.get("clock"))
    if scheme in _SQL_SCHEMES:
        from authkit.storage.sql import SqlStorage

        return SqlStorage(url, **options)
    if scheme in _REDIS_SCHEMES:
        try:
            import redis  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError(
                "redis:// needs the redis extra: pip install 'authkit[redis]'"
            ) from exc
        from authkit.storage.redis import RedisStorage

        return RedisStorage.from_url(url, **options)
    raise ConfigurationError(
        f"unknown storage scheme {scheme!r}; expected memory, sqlite, postgresql, mysql, mariadb, redis, rediss or unix"
    )


def open_storage(url: str, **options: Any) -> AuthStorage:
    """Open the storage ``url`` names; see the module docstring for schemes and options."""
    if not isinstance(url, str):
        raise TypeError("url must be a str")
    scheme = _scheme(url)
    keys = options.pop("encryption_keys", None)
    if keys is None and os.environ.get(ENCRYPTION_KEYS_ENV, "").strip():
        keys = [k.strip() for k in os.environ[ENCRYPTION_KEYS_ENV].split(",") if k.strip()]
        if not keys:  # set but only commas: never fall back to storing plaintext
            raise ConfigurationError(f"{ENCRYPTION_KEYS_ENV} is set but holds no key")
    storage = _open_backend(url, scheme, options)
    if not keys:
        return storage
    from authkit.storage.encrypted import EncryptedStorage

    try:
        return EncryptedStorage(storage, keys)
    except BaseException:
        storage.close()
        raise
