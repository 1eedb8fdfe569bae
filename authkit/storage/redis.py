"""``RedisStorage``: tokens, sessions and kv data in Redis or a Redis Cluster.

Usage::

    import redis
    from authkit.storage import RedisStorage, open_storage

    storage = open_storage("redis://localhost:6379/0", prefix="myapp:")
    storage = open_storage("redis://node1:7000", cluster=True)          # a Redis Cluster
    storage = open_storage("redis+sentinel://:pw@s1,s2,s3/mymaster/0")  # the master Sentinel names
    storage = RedisStorage(redis.Redis(host="localhost"), prefix="myapp:")

    storage.store_kv("greeting", b"hello", ttl=60)
    with storage.lock("nightly-cleanup", timeout=0):
        storage.cleanup_expired()

Layout (``B`` is the prefix plus one hash tag, e.g. ``authkit:{authkit}:``)::

    B t:<token_id>        string  the token as JSON (no TTL, or the safety-net TTL)
    B ta:<sha256(access)> string  token id: the access-token lookup (the raw token is never a key name)
    B tu:<user_id>        zset    token ids scored by expiry (microseconds since 1970, +inf = never)
    B tx                  zset    every token id scored by expiry: cleanup and stats
    B ti                  zset    every token id, score 0: paging by id (ZRANGEBYLEX)
    B to                  hash    token id -> "<digest><user_id>": what to unindex, even once
                                  the record itself is gone
    B s:<session_id>      string  the session as JSON, with a native TTL (PX)
    B su:<user_id>        zset    the user's session ids, score 0 (membership only: a save
                                  that slides the expiry leaves it alone)
    B sx                  zset    every session id scored by expiry: liveness, cleanup, counts
    B si, B so            zset, hash   as ti and to, for sessions (so: id -> user_id)
    B kv:<key>            string  8-byte expiry header + value, with a native TTL (PX)
    B kx                  zset    kv keys scored by expiry
    B lock:<name>         string  a lock holder's random token, with a PX TTL
    B incr                string  incr_kv's scratch key, only while its script runs

Every write that touches more than one key is one Lua script, so a record and
its indexes change together (atomically, also on a cluster: every key of one
storage has the same hash tag, so one hash slot).  Expiry is decided on read
with the storage's clock; Redis's own TTLs only reclaim memory.

The pieces: this module is the storage class; the Lua scripts are in
:mod:`authkit.storage._redis_scripts`, the key and record encoding in
:mod:`authkit.storage._redis_codec`, clients from URLs and error mapping in
:mod:`authkit.storage._redis_client` (Sentinel URLs: ``_redis_sentinel``).
"""

from __future__ import annotations

import struct
import uuid
from datetime import datetime, timedelta
from typing import Any

import redis
import redis.cluster

from authkit.errors import ConfigurationError, NotFoundError
from authkit.models import AuthToken, CleanupReport, SessionData
from authkit.storage import _redis_codec as codec
from authkit.storage import _redis_scripts as lua
from authkit.storage._codec import counter_overflow, live, micros, moment, ttl_seconds
from authkit.storage._redis_client import Errors, Script, command_runner, open_client, where
from authkit.storage.base import CLEANUP_DONE, AuthStorage, Clock

__all__ = ["RedisStorage"]

_SCAN_COUNT = 1000
_MAX_RETENTION = 100 * 366 * 24 * 3600.0


class RedisStorage(AuthStorage):
    """Storage in Redis (redis-py), or in a Redis Cluster through ``redis.cluster.RedisCluster``.

    ``client`` must not decode responses.  ``prefix`` starts every key name;
    it gets a hash tag appended (``authkit:`` -> ``authkit:{authkit}:``) unless
    it already has one, so all keys of a storage share one cluster slot.
    ``token_retention`` is the safety net for tokens: Redis deletes a token
    that long after it expired even if ``cleanup_expired`` never runs
    (``None``: never).  A client passed in is the caller's to close (unless
    ``owns_client=True``); one built by :meth:`from_url` is closed by :meth:`close`.

    Like the SQL tables, a storage has a marker key (``<prefix>{...}:schema``):
    ``create_schema=True`` (the default) writes it if missing; with
    ``create_schema=False`` a missing marker is a :class:`ConfigurationError`,
    so a mistyped prefix or database number is refused instead of looking
    like an empty store (``authkit init`` writes it).

    >>> storage = RedisStorage(redis.Redis(), prefix="myapp:")
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        prefix: str = "authkit:",
        clock: Clock | None = None,
        token_retention: float | timedelta | None = None,
        owns_client: bool = False,
        create_schema: bool = True,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
            raise TypeError(f"client must be a redis.Redis or redis.cluster.RedisCluster, not {type(client).__name__}")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisStorage needs a client with decode_responses=False (values are bytes)")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if not prefix or "\x00" in prefix:
            raise ValueError("prefix must be a non-empty str without NUL")
        self._retention = ttl_seconds(token_retention)
        if self._retention is not None and self._retention > _MAX_RETENTION:
            # Redis refuses a PX this large, and would refuse it inside the store script.
            raise ValueError("token_retention must be at most 100 years")
        self._client: Any = client  # redis-py's return types are sync/async unions: checked here, not by mypy
        self._owns_client = owns_client
        self._sentinel: Any = None  # the redis.sentinel.Sentinel from_url built, closed with the client
        self.prefix = prefix
        base = self._b = codec.base(prefix)
        self._tx, self._ti, self._to, self._sx, self._si, self._so, self._kx = (
            base + k for k in (b"tx", b"ti", b"to", b"sx", b"si", b"so", b"kx")
        )
        self._token_keys = [self._tx, self._ti, self._to]
        self._session_keys = [self._sx, self._si, self._so]
        password = client.get_connection_kwargs().get("password")
        self._where = where(client)
        self._errors = Errors(self._where, [password] if isinstance(password, str) and password else [])
        # GET and EVALSHA, the commands of every session request, on redis-py's lean path.
        self._run = run = command_runner(client)
        self._store_tokens_lua = Script(client, lua.STORE_TOKENS, run)
        self._delete_records_lua = Script(client, lua.DELETE_RECORDS, run)
        self._token_by_access_lua = Script(client, lua.TOKEN_BY_ACCESS, run)
        self._user_tokens_lua = Script(client, lua.USER_TOKENS, run)
        self._store_sessions_lua = Script(client, lua.STORE_SESSIONS, run)
        self._write_session_lua = Script(client, lua.WRITE_SESSION, run)
        self._touch_session_lua = Script(client, lua.TOUCH_SESSION, run)
        self._delete_session_lua = Script(client, lua.DELETE_SESSION, run)
        self._user_sessions_lua = Script(client, lua.USER_SESSIONS, run)
        self._delete_user_lua = Script(client, lua.DELETE_USER, run)
        self._store_kv_lua = Script(client, lua.STORE_KV, run)
        self._store_kv_entries_lua = Script(client, lua.STORE_KV_ENTRIES, run)
        self._add_kv_lua = Script(client, lua.ADD_KV, run)
        self._incr_kv_lua = Script(client, lua.INCR_KV, run)
        self._touch_kv_lua = Script(client, lua.TOUCH_KV, run)
        self._delete_kv_lua = Script(client, lua.DELETE_KV, run)
        self._cleanup_lua = Script(client, lua.CLEANUP, run)
        self._stats_lua = Script(client, lua.STATS, run)
        self._release_lua = Script(client, lua.RELEASE_LOCK, run)
        self._check_marker(create_schema)

    def _check_marker(self, create: bool) -> None:
        """Write the marker key (``create``), or refuse a store without one, as SQL refuses missing tables."""
        if not isinstance(create, bool):
            raise TypeError("create_schema must be a bool")
        marker = self._b + codec.MARKER
        with self._errors:
            if create:
                self._client.set(marker, codec.MARKER_VALUE, nx=True)
                return
            present = self._client.exists(marker)
        if not present:
            raise ConfigurationError(
                f"no authkit store with prefix {self.prefix!r} at Redis {self._where} "
                "(a wrong database or prefix?); create it with `authkit init` "
                "(flask authkit init, manage.py authkit_init; in code, create_schema=True)"
            )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStorage:
        """A storage on a new client for ``redis://``, ``rediss://`` or ``unix://`` URLs.

        Options: ``prefix``, ``clock``, ``token_retention``, ``cluster=True``
        (a :class:`redis.cluster.RedisCluster` seeded from the URL's node),
        ``create_schema`` (write the marker key, or with ``False`` refuse a
        store without one); anything else goes to redis-py's ``from_url`` (e.g.
        ``socket_timeout``, ``ssl_ca_certs``).  ``redis+sentinel://`` and
        ``rediss+sentinel://`` URLs give a client on the master Redis Sentinel names
        (see :mod:`authkit.storage._redis_sentinel` for the URL form).

        >>> storage = RedisStorage.from_url("redis://:secret@localhost:6379/0", prefix="myapp:")
        """
        if not isinstance(url, str):
            raise TypeError("url must be a str")
        own = {k: options.pop(k) for k in ("prefix", "clock", "token_retention", "create_schema") if k in options}
        cluster = bool(options.pop("cluster", False))
        client, sentinel = open_client(url, cluster, options)
        try:
            storage = cls(client, owns_client=True, **own)
        except BaseException:
            client.close()
            raise
        storage._sentinel = sentinel
        return storage

    def __repr__(self) -> str:
        return f"RedisStorage({self._where!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        """Close the client if this storage built it (:meth:`from_url`)."""
        if self._owns_client:
            self._client.close()
            if self._sentinel is not None:  # the connections to the sentinels themselves
                for client in self._sentinel.sentinels:
                    client.close()

    # -- helpers ------------------------------------------------------------

    def _key(self, kind: bytes, name: str) -> bytes:
        return self._b + kind + codec.enc(name)

    def _token_arg(self, token: AuthToken, now: datetime) -> bytes:
        """One token as the store script reads it: ``id NUL digest user NUL score NUL px NUL json``."""
        if token.expires_at is None or self._retention is None:
            px = b""
        else:  # the safety net: `retention` after expiry, counted from now for tokens already expired
            left = max((token.expires_at - now).total_seconds(), 0.0)
            px = codec.ms(left + self._retention)
        return b"\0".join((codec.enc(token.token_id), codec.digest(token.access_token) + codec.enc(token.user_id),
                           codec.score(token.expires_at), px, codec.token_record(token)))

    # -- tokens -----------------------------------------------------------

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        now = self.now()
        args = [self._b, b"0", *(self._token_arg(token, now) for token in tokens)]
        with self._errors:
            self._store_tokens_lua(self._token_keys, args)

    def _get_token(self, token_id: str) -> AuthToken | None:
        with self._errors:
            data = self._run("GET", self._key(b"t:", token_id))
        return None if data is None else codec.token_from(data)

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        with self._errors:
            data = self._token_by_access_lua([self._b + b"ta:" + codec.digest(access_token)], [self._b])
        if data is None:
            return None
        token = codec.token_from(data)
        # Never trust the index alone: the record must be this token, and live.
        if token.access_token != access_token or not live(token.expires_at, now):
            return None
        return token

    # A sealed record is one JSON document here like any other: its reads are the plain ones,
    # without the base class's call in between (see AuthStorage._get_sealed_token).
    _get_sealed_token = _get_token
    _get_sealed_token_by_access_token = _get_token_by_access_token

    def _update_token(self, token: AuthToken) -> None:
        with self._errors:
            found = self._store_tokens_lua(
                self._token_keys, [self._b, b"1", self._token_arg(token, self.now())]
            )
        if not found:
            raise NotFoundError(f"no token with id {token.token_id!r}")

    def _delete_tokens(self, token_ids: list[str]) -> None:
        with self._errors:
            self._delete_records_lua(self._token_keys, [self._b, b"t", *map(codec.enc, token_ids)])

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        with self._errors:
            records = self._user_tokens_lua([self._key(b"tu:", user_id)], [self._b])
        tokens = [t for t in (codec.token_from(r) for r in records if r is not None) if t.user_id == user_id]
        return sorted(tokens, key=lambda t: (t.issued_at, t.token_id))

    # -- sessions ---------------------------------------------------------

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        if len(sessions) == 1:
            self._write_session(sessions[0], b"", self.now())
            return
        now = self.now()
        args: list[Any] = [self._b]
        args += (b"\0".join((codec.enc(s.session_id), codec.enc(s.user_id), codec.score(s.expires_at),
                              codec.px(s.expires_at, now), codec.session_record(s))) for s in sessions)
        with self._errors:
            self._store_sessions_lua(self._session_keys, args)

    def _write_session(self, session: SessionData, mode: bytes, now: datetime) -> bool:
        """Store one session; with ``mode`` ``c``/``r`` only if it is not / is live (one script)."""
        name, user = codec.enc(session.session_id), codec.enc(session.user_id)
        b = self._b
        keys = [b + b"s:" + name, b + b"su:" + user]
        # Each time in microseconds once: the record, the score and the TTL share them.
        at = micros(now)
        expires = None if session.expires_at is None else micros(session.expires_at)
        args: list[Any] = [b, name, user, codec.INF_SCORE if expires is None else expires, codec.px_micros(expires, at),
                codec.session_json(session, expires), mode, at]
        with self._errors:
            return bool(self._write_session_lua(keys, args))

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        with self._errors:
            data = self._run("GET", self._key(b"s:", session_id))
        if data is None:
            return None
        session = codec.session_from(session_id, data)
        return session if live(session.expires_at, now) else None

    _get_sealed_session = _get_session  # see _get_sealed_token

    def _delete_sessions(self, session_ids: list[str]) -> None:
        with self._errors:
            if len(session_ids) == 1:  # a logout: the lean script
                name = codec.enc(session_ids[0])
                self._delete_session_lua([self._b + b"s:" + name], [self._b, name])
            else:
                self._delete_records_lua(self._session_keys,
                                         [self._b, b"s", *map(codec.enc, session_ids)])

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        with self._errors:
            found = self._user_sessions_lua([self._key(b"su:", user_id)], [self._b])
        sessions = []
        for session_id, data in zip(found[::2], found[1::2], strict=True):
            if data is None:
                continue
            session = codec.session_from(codec.dec(session_id), data)
            # Never trust the index alone: the record must be this user's, and live.
            if session.user_id == user_id and live(session.expires_at, now):
                sessions.append(session)
        return sorted(sessions, key=lambda s: (s.created_at, s.session_id))

    def _count_active_sessions(self, now: datetime) -> int:
        with self._errors:
            return int(self._client.zcount(self._sx, f"({micros(now)}", "+inf"))

    # -- key-value --------------------------------------------------------

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        header = codec.kv_header(expires_at)
        name = codec.enc(key)
        with self._errors:
            self._store_kv_lua([self._b + b"kv:" + name, self._kx],
                               [header + value, name, codec.score(expires_at), codec.px(expires_at, self.now())])

    def _store_kv_entries(self, entries: list[tuple[str, bytes, datetime | None]]) -> None:
        if not entries:
            return
        now = self.now()
        args: list[Any] = [self._b]
        for key, value, expires_at in entries:
            args += [codec.enc(key), codec.kv_header(expires_at) + value, codec.score(expires_at),
                     codec.px(expires_at, now)]
        with self._errors:
            self._store_kv_entries_lua([self._kx], args)

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        with self._errors:
            data = self._run("GET", self._key(b"kv:", key))
        return None if data is None else self._kv_entry(data, now)

    @staticmethod
    def _kv_entry(data: bytes, now: datetime) -> tuple[bytes, datetime | None] | None:
        """A stored kv value (expiry header + value) as ``(value, expires_at)``, ``None`` if expired."""
        try:
            (expiry,) = codec.HEADER.unpack_from(data)
        except struct.error as exc:
            raise codec.unreadable("kv entry", exc) from exc
        expires_at = None if expiry == codec.NO_EXPIRY else moment(expiry)
        if not live(expires_at, now):
            return None
        return data[codec.HEADER.size:], expires_at

    def _delete_kv(self, key: str) -> None:
        name = codec.enc(key)
        with self._errors:
            self._delete_kv_lua([self._b + b"kv:" + name, self._kx], [name])

    def _list_kv_keys(self, prefix: str, now: datetime) -> list[str]:
        # SCAN, never KEYS: it walks the keyspace in steps without blocking the
        # server.  On a cluster, scan_iter walks every primary (the slot may be
        # mid-migration between two of them).
        start = self._b + b"kv:"
        pattern = codec.glob_escape(start + codec.enc(prefix)) + b"*"
        with self._errors:
            names = {name[len(start):] for name in self._client.scan_iter(match=pattern, count=_SCAN_COUNT)}
            members = sorted(names)
            scores: list[float | None] = []
            for i in range(0, len(members), _SCAN_COUNT):
                scores += self._client.zmscore(self._kx, members[i:i + _SCAN_COUNT])
        cutoff = micros(now)
        # A key SCAN saw is listed only if the expiry index says it is live now.
        return [codec.dec(m) for m, s in zip(members, scores, strict=True) if s is not None and s > cutoff]

    # -- atomic primitives: one script each --------------------------------

    def _create_session(self, session: SessionData, now: datetime) -> bool:
        return self._write_session(session, b"c", now)

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        return self._write_session(session, b"r", now)

    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        return self._touch(session_id, expires_at, last_activity, now, [])

    def _touch(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime, more: list[Any]
    ) -> bool:
        """TOUCH_SESSION; ``more``: the ip address argument of _touch_session_ip, or nothing."""
        name = codec.enc(session_id)
        at = micros(now)  # each time in microseconds once: the score, the TTL and the record share them
        expires = None if expires_at is None else micros(expires_at)
        score = codec.INF_SCORE if expires is None else expires
        args: list[Any] = [self._b, name, at, score, codec.px_micros(expires, at),
                b"null" if expires is None else expires, micros(last_activity), *more]
        with self._errors:
            return bool(self._touch_session_lua([self._b + b"s:" + name], args))

    def _touch_session_ip(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, ip_address: str | None,
        now: datetime,
    ) -> bool:
        return self._touch(session_id, expires_at, last_activity, now, [codec.dumps(ip_address)])

    def _delete_user(self, kind: bytes, user_id: str, keep: str | None) -> int:
        index = self._key(kind + b"u:", user_id)
        keys = [index, *(self._token_keys if kind == b"t" else self._session_keys)]
        with self._errors:
            return int(self._delete_user_lua(keys, [self._b, kind, b"" if keep is None else codec.enc(keep)]))

    def _delete_user_sessions(self, user_id: str, keep: str | None) -> int:
        return self._delete_user(b"s", user_id, keep)

    def _delete_user_tokens(self, user_id: str) -> int:
        return self._delete_user(b"t", user_id, None)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        header = codec.kv_header(expires_at)
        name = codec.enc(key)
        with self._errors:
            return bool(self._add_kv_lua(
                [self._b + b"kv:" + name, self._kx],
                [header + value, name, codec.score(expires_at), codec.px(expires_at, now), micros(now)],
            ))

    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        header = codec.kv_header(expires_at)
        name = codec.enc(key)
        with self._errors:
            total = self._incr_kv_lua(
                [self._b + b"kv:" + name, self._kx, self._b + b"incr"],
                [name, amount, header, codec.score(expires_at), codec.px(expires_at, now), micros(now)],
            )
        if total is None:
            raise counter_overflow(key, amount)
        return int(total)

    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool:
        header = codec.kv_header(expires_at)
        name = codec.enc(key)
        with self._errors:
            return bool(self._touch_kv_lua(
                [self._b + b"kv:" + name, self._kx],
                [name, header, codec.score(expires_at), codec.px(expires_at, now), micros(now)],
            ))

    # -- maintenance ------------------------------------------------------

    def _cleanup_batch(self, kind: str, now: datetime, limit: int, cursor: Any) -> tuple[CleanupReport, Any]:
        # Every kind in one script (cheap here); what a step deletes leaves the
        # indexes, so the next one starts over (cursor None) without passing it again.
        with self._errors:
            tokens, sessions, kv = self._cleanup_lua(
                [*self._token_keys, *self._session_keys, self._kx], [self._b, micros(now), limit]
            )
        more = max(int(tokens), int(sessions), int(kv)) >= limit
        return CleanupReport(tokens=int(tokens), sessions=int(sessions), kv=int(kv)), None if more else CLEANUP_DONE

    def _stats(self, now: datetime) -> dict[str, int]:
        with self._errors:
            counts = self._stats_lua([self._tx, self._sx, self._kx], [micros(now)])
        names = ["tokens_live", "tokens_expired", "sessions_live", "sessions_expired", "kv_live", "kv_expired"]
        return {name: int(count) for name, count in zip(names, counts, strict=True)}

    def _id_page(self, index: bytes, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        # The id index is ordered by id (all scores 0): the cursor is the last
        # id returned, so ids stored or deleted meanwhile never shift a page.
        low = b"-" if cursor is None else b"(" + codec.enc(cursor)
        with self._errors:
            members = self._client.zrangebylex(index, low, b"+", start=0, num=limit)
        ids = [codec.dec(m) for m in members]
        return ids, (ids[-1] if len(ids) == limit else None)

    # Pages of whole records (encrypt_existing, reencrypt): the id page, then one MGET.

    def _mget(self, kind: bytes, names: list[str]) -> list[bytes | None]:
        if not names:
            return []
        with self._errors:
            return list(self._client.mget([self._key(kind, n) for n in names]))

    def _token_page(self, cursor: str | None, limit: int) -> tuple[list[AuthToken], str | None]:
        ids, cursor = self._token_id_page(cursor, limit)
        return [codec.token_from(data) for data in self._mget(b"t:", ids) if data is not None], cursor

    def _session_page(self, cursor: str | None, limit: int, now: datetime) -> tuple[list[SessionData], str | None]:
        ids, cursor = self._session_id_page(cursor, limit)
        records = zip(ids, self._mget(b"s:", ids), strict=True)
        found = (codec.session_from(i, data) for i, data in records if data is not None)
        return [s for s in found if live(s.expires_at, now)], cursor

    def _get_kv_entries(self, keys: list[str], now: datetime) -> list[tuple[bytes, datetime | None] | None]:
        return [None if data is None else self._kv_entry(data, now) for data in self._mget(b"kv:", keys)]

    def _token_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._id_page(self._ti, cursor, limit)

    def _session_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._id_page(self._si, cursor, limit)

    def _try_lock(self, name: str, ttl: float) -> bytes | None:
        holder = uuid.uuid4().hex.encode()
        with self._errors:
            taken = self._client.set(self._key(b"lock:", name), holder, nx=True, px=int(codec.ms(ttl)))
        return holder if taken else None

    def _release_lock(self, name: str, handle: Any) -> None:
        with self._errors:
            # Compare-and-delete: a holder whose ttl ran out must not free
            # the lock someone else holds now.
            self._release_lua([self._key(b"lock:", name)], [handle])
