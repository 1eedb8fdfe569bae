"""Connecting :class:`~authkit.storage.redis.RedisStorage`: redis-py clients from URLs
(single server, Cluster, Sentinel), where a client points, redis-py's
exceptions turned into authkit's, and the Lua scripts run by their SHA.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.cluster
import redis.sentinel
from redis import exceptions as redis_errors

from authkit.errors import ConfigurationError, StorageError, StorageUnavailableError
from authkit.storage import _redis_sentinel as _sentinel
from authkit.storage._redact import url_secrets

__all__ = ["Errors", "Script", "command_runner", "open_client", "where"]

# Errors that mean "the server cannot be reached (now)"; every other redis-py
# error is a plain StorageError.  RedisClusterException is not a RedisError:
# it is what the cluster client raises when no node answers.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.RedisClusterException,
    redis_errors.BusyLoadingError,
)


class Errors:
    """``with storage._errors:`` turns redis-py exceptions into authkit's, cause attached."""

    __slots__ = ("_secrets", "_where")

    def __init__(self, where: str, secrets: list[str]) -> None:
        self._where = where
        self._secrets = secrets

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, _UNAVAILABLE):
            raise StorageUnavailableError(f"Redis at {self._where} is unavailable: {self.text(exc)}") from exc
        if isinstance(exc, redis_errors.RedisError):
            raise StorageError(f"Redis at {self._where} failed: {self.text(exc)}") from exc

    def text(self, exc: BaseException) -> str:
        """``exc`` as text for a message, every secret masked."""
        text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:  # never echo a password, whatever the driver put in its message
            text = text.replace(secret, "***")
        return text


def command_runner(client: Any) -> Callable[..., Any]:
    """``run(*args)``: what ``client.execute_command(*args)`` returns for GET and EVALSHA,
    with fewer layers on a plain ``redis.Redis``.

    A session request is one or two commands, and redis-py's per-command layers
    (observability hooks, closures, timers) cost about as much client CPU as
    the round trip itself.  On a plain client this takes a pooled connection,
    sends and reads under the connection's own ``Retry`` (a connection error is
    retried on a fresh connection, as redis-py does) and gives the connection
    back; no reply callbacks apply to GET and EVALSHA.  A cluster client, a
    single-connection client and anything else use ``execute_command`` itself.
    """
    if type(client) is not redis.Redis or client.connection is not None:
        return client.execute_command  # type: ignore[no-any-return]
    pool: Any = client.connection_pool  # redis-py's connections are untyped: checked by the tests
    # redis-py < 5.3 wants a command name here; later versions warn about one.
    # (A version without the parameter at all takes none.)
    parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
    named = parameter is not None and parameter.default is inspect.Parameter.empty

    def run(*args: Any) -> Any:
        conn: Any = pool.get_connection(args[0]) if named else pool.get_connection()

        def round_trip() -> Any:
            packed = _packed(args) if type(conn).send_command is _PLAIN_SEND else None
            if packed is None:  # a connection that does more on sending (client-side caching)
                conn.send_command(*args)
            else:
                conn.send_packed_command([packed])
            return conn.read_response()

        try:
            return conn.retry.call_with_retry(round_trip, lambda error: conn.disconnect())
        finally:
            if getattr(conn, "should_reconnect", bool)():  # a maintenance notice (redis-py >= 6)
                conn.disconnect()
            pool.release(conn)

    return run


# What redis-py's plain connections do to send a command: pack it (in Python, per
# argument, through the client's encoder), then send it.
_PLAIN_SEND = getattr(redis.connection, "AbstractConnection", redis.connection.Connection).send_command


def _packed(args: tuple[Any, ...]) -> bytes | None:
    """``args`` as one RESP command, as redis-py's packer would give it; ``None`` for
    an argument it would encode by the client's settings (non-ASCII text, floats).

    Our commands are bytes, ASCII names and ints: packing them in one pass costs
    half what redis-py's general packer does, which shows on the session hot path.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is not bytes:
            if kind is str and arg.isascii():
                arg = arg.encode()
            elif kind is int:
                arg = b"%d" % arg
            else:
                return None
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


class Script:
    """A Lua script called as ``EVALSHA`` straight through ``client.execute_command``.

    What redis-py's ``register_script`` does, minus its layers (a tuple copy of
    the arguments, a pipeline check and the ``evalsha`` wrapper on every call):
    the sessions call a script on every request.  A server that does not know
    the script yet (a restart, a failover, a new cluster node) gets it with
    ``SCRIPT LOAD`` and the call is made again, as redis-py does.

    >>> delete = Script(client, "return redis.call('DEL', KEYS[1])", command_runner(client))
    >>> delete([b"lock:x"], [])
    """

    __slots__ = ("_client", "_run", "_sha", "_text")

    def __init__(self, client: Any, text: str, run: Callable[..., Any]) -> None:
        self._client = client
        self._run = run  # client.execute_command, or command_runner(client)
        self._text = text.encode()
        self._sha = hashlib.sha1(self._text).hexdigest()  # noqa: S324 - the name Redis gives a script

    def __call__(self, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        try:
            return self._run("EVALSHA", self._sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            self._client.script_load(self._text)
            return self._run("EVALSHA", self._sha, len(keys), *keys, *args)


def where(client: Any) -> str:
    """Where the client points, for repr and messages: never the password."""
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client  # get_nodes() has no type hints
        nodes = sorted(f"{n.host}:{n.port}" for n in cluster.get_nodes())
        return "cluster " + ",".join(nodes[:3]) + (",…" if len(nodes) > 3 else "")
    pool = client.connection_pool
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        sentinels = pool.sentinel_manager.sentinels
        at = ",".join(where(s).rsplit("/", 1)[0] for s in sentinels)
        return f"sentinel {pool.service_name} via {at}/{pool.connection_kwargs.get('db', 0)}"
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def open_client(url: str, cluster: bool, options: dict[str, Any]) -> tuple[Any, Any]:
    """``(client, sentinel)`` for ``url``: a redis-py client (``sentinel``: the
    :class:`redis.sentinel.Sentinel` behind it, else ``None``), options checked now.

    Connect and read timeouts default to 5 s and 30 s; ``options`` go to redis-py.
    A bad URL or option is a :class:`ConfigurationError` naming no secret.
    """
    options.setdefault("socket_connect_timeout", 5.0)
    options.setdefault("socket_timeout", 30.0)
    try:
        urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        raise ConfigurationError("malformed Redis URL") from exc
    # Every secret of the URL (user-info and ?password=), masked out of any message.
    errors = Errors(url.split("://", 1)[0] + "://…", url_secrets(url))
    sentinel: Any = None
    try:
        with errors:
            client: redis.Redis | redis.cluster.RedisCluster
            if url.split("://", 1)[0].lower() in _sentinel.SCHEMES:
                if cluster:
                    raise ConfigurationError("cluster=True and a redis+sentinel:// URL exclude each other")
                client, sentinel = _sentinel.sentinel_client(url, options)
            elif cluster:
                client = redis.cluster.RedisCluster.from_url(url, **options)
            else:
                client = redis.Redis.from_url(url, **options)
                # redis-py only builds a connection (and so rejects an unknown
                # option) at the first command: check the options now.
                pool = client.connection_pool
                pool.connection_class(**pool.connection_kwargs)
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL or option: {errors.text(exc)}") from exc
    return client, sentinel
