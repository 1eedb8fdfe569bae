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
======================================  =====================================

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
