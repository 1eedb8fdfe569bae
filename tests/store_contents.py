"""Everything a storage holds, as one blob of text, to show what never reaches it (a cookie value).

It reads the server directly, under the storage's own prefix: every row of every
table for SQL, every key and every value of every type for Redis, the
dictionaries for memory; wrappers (encrypted, cached) are looked through to
the storage they wrap.
"""

from __future__ import annotations

from typing import Any

from authkit.storage import AuthStorage


def _innermost(storage: AuthStorage) -> AuthStorage:
    inner = getattr(storage, "inner", None)
    return _innermost(inner) if isinstance(inner, AuthStorage) else storage


def store_contents(storage: AuthStorage) -> str:
    """The names and values of everything stored under ``storage``'s prefix, as text."""
    target = _innermost(storage)
    kind = type(target).__name__
    if kind == "SqlStorage":
        return _sql(target)
    if kind == "RedisStorage":
        return _redis(target)
    if kind == "MemoryStorage":
        return repr(vars(target))
    raise AssertionError(f"store_contents cannot read a {kind}")


def _sql(storage: Any) -> str:
    import sqlalchemy as sa

    engine: sa.Engine = storage.engine
    prefix: str = storage.prefix
    parts: list[str] = []
    metadata = sa.MetaData()
    with engine.connect() as connection:
        names = [name for name in sa.inspect(connection).get_table_names() if name.startswith(prefix)]
        assert names, f"no tables under {prefix!r}"
        for name in names:
            table = sa.Table(name, metadata, autoload_with=connection)
            parts.append(name)
            parts.extend(repr(tuple(row)) for row in connection.execute(sa.select(table)))
    return "\n".join(parts)


def _redis(storage: Any) -> str:
    from authkit.storage._redis_codec import glob_escape as _glob_escape

    client = storage._client
    base: bytes = storage._b  # the prefix plus its hash tag: every key of the storage starts with it
    parts: list[str] = []
    for name in client.scan_iter(match=_glob_escape(base) + b"*", count=1000):
        kind = client.type(name)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        value: object
        if kind == "string":
            value = client.get(name)
        elif kind == "hash":
            value = client.hgetall(name)
        elif kind == "zset":
            value = client.zrange(name, 0, -1, withscores=True)
        elif kind == "set":
            value = client.smembers(name)
        elif kind == "list":
            value = client.lrange(name, 0, -1)
        else:
            value = f"<{kind}>"
        parts.append(f"{name!r} {value!r}")
    return "\n".join(parts)
