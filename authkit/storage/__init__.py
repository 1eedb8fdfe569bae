"""Storage backends behind one contract, :class:`AuthStorage`.

>>> from authkit.storage import open_storage
>>> storage = open_storage("memory://")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authkit.storage.base import AuthStorage
from authkit.storage.memory import MemoryStorage
from authkit.storage.url import open_storage

if TYPE_CHECKING:
    from authkit.storage.cached import CachedStorage
    from authkit.storage.encrypted import EncryptedStorage, generate_key
    from authkit.storage.redis import RedisStorage
    from authkit.storage.sql import SqlStorage

__all__ = [
    "AuthStorage",
    "MemoryStorage",
    "SqlStorage",
    "RedisStorage",
    "EncryptedStorage",
    "CachedStorage",
    "generate_key",
    "open_storage",
]

# Backends import their drivers (SQLAlchemy, redis, cryptography) lazily, so
# ``import authkit`` stays cheap and works without the optional extras.
_LAZY = {
    "SqlStorage": "authkit.storage.sql",
    "RedisStorage": "authkit.storage.redis",
    "EncryptedStorage": "authkit.storage.encrypted",
    "generate_key": "authkit.storage.encrypted",
    "CachedStorage": "authkit.storage.cached",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'authkit.storage' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
