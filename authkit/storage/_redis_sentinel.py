"""``redis+sentinel://`` URLs: a Redis client that follows the master Redis Sentinel names.

redis-py handles Sentinel discovery and failover (:class:`redis.sentinel.Sentinel`) but has no
URL form for it.  This is the convention Redis-Sentinel-Url, Prefect and docket use::

    redis+sentinel://[[user]:password@]host[:port][,host2[:port2],...]/service_name[/db][?options]
    rediss+sentinel://...            TLS to the data nodes and to the sentinels

- the hosts are the **sentinels** (port 26379 unless given), tried in order;
- the user and password are the **data nodes'** (``AUTH`` on the master);
- ``sentinel_username`` / ``sentinel_password`` options authenticate to the sentinels;
- every other option is one of redis-py's URL options (``socket_timeout``, ``ssl_ca_certs``,
  ...), parsed by redis-py itself and used for the data nodes; the ``socket_*`` and ``ssl_*``
  ones are used for the sentinels too.

The client asks a sentinel for the master's address on every new connection, and a connection
that finds the old master gone (or demoted to a read-only replica) is dropped, so after a
failover the same client, and so the same storage, continues on the new master.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import redis
import redis.connection
import redis.sentinel

from authkit.errors import ConfigurationError

__all__ = ["SCHEMES", "sentinel_client"]

SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})
_DEFAULT_PORT = 26379


def _hosts(netloc: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        if item.startswith("["):  # [::1]:26379
            host, _, rest = item[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ConfigurationError("redis+sentinel:// URL has an empty sentinel host")
        try:
            port = int(port_text) if port_text else _DEFAULT_PORT
        except ValueError as exc:
            raise ConfigurationError("redis+sentinel:// URL has a port that is not a number") from exc
        if not 0 < port < 65536:
            raise ConfigurationError("redis+sentinel:// URL has a port out of range")
        hosts.append((host, port))
    return hosts


def sentinel_client(url: str, options: dict[str, Any]) -> tuple[redis.Redis, redis.sentinel.Sentinel]:
    """``(master client, sentinel manager)`` for a ``redis+sentinel://`` URL.

    ``options`` (keyword arguments of :meth:`RedisStorage.from_url`) are defaults for the data
    nodes that the URL's own options override.  Raises :class:`ConfigurationError` for a
    malformed URL; never contacts a server.
    """
    scheme, _, rest = url.partition("://")
    tls = scheme.lower() == "rediss+sentinel"
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if not at:
        userinfo = ""
    hosts = _hosts(hostlist)
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ConfigurationError("redis+sentinel:// URL needs /service_name[/db] after the sentinels")
    service = parts[0]
    db = parts[1] if len(parts) == 2 else "0"
    if not db.isdigit():
        raise ConfigurationError("redis+sentinel:// URL has a db that is not a number")
    # Let redis-py parse the credentials and options exactly as it does for redis:// URLs.
    standalone = f"{'rediss' if tls else 'redis'}://{userinfo + '@' if at else ''}localhost/{db}"
    parse: Any = redis.connection.parse_url  # untyped in redis-py
    kwargs: dict[str, Any] = parse(standalone + (f"?{query}" if query else ""))
    for name in ("host", "port", "connection_class"):
        kwargs.pop(name, None)
    kwargs = {**options, **kwargs}  # the URL's options win, as in redis-py's own from_url
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith(("socket_", "ssl_"))}
    for name in ("sentinel_username", "sentinel_password"):
        value = kwargs.pop(name, None)
        if value is not None:
            sentinel_kwargs[name.removeprefix("sentinel_")] = value
    if tls:
        kwargs["ssl"] = True
        sentinel_kwargs["ssl"] = True
    sentinel: Any = redis.sentinel.Sentinel  # redis-py's Sentinel has no type hints
    manager = sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **kwargs)
    client: redis.Redis = manager.master_for(service, redis_class=redis.Redis)
    return client, manager
