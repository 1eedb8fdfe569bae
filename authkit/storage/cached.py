"""``CachedStorage``: an in-process read cache in front of any backend.

Usage::

    from authkit.storage import CachedStorage, open_storage

    storage = CachedStorage(open_storage("postgresql://app@db/app"), ttl=5.0, maxsize=10_000)
    storage.get_session(session_id)      # a round trip the first time, then from memory

It caches the three hot reads: ``get_token_by_access_token``, ``get_session``
and ``get_kv`` (a ``cachetools.TTLCache`` under a lock).  Everything else goes
straight to the inner storage.

Consistency:

* This process's own writes and deletes (single, bulk, ``update_token``,
  ``cleanup_expired``, and the atomic primitives ``create_session``,
  ``replace_session``, ``touch_session``, ``add_kv``, ``incr_kv``,
  ``touch_kv``) evict what they touch, so this process reads its own writes.
  ``delete_user_sessions``/``delete_user_tokens`` do not know the ids they
  delete, so they evict every cached session / token.
* Another process's writes are seen at most ``ttl`` seconds late: an entry is
  served for at most ``ttl`` seconds after it was read from the inner store.
  Pick ``ttl`` for how stale a revoked token or a logged-out session may be.
* An entry is never served past its own ``expires_at`` (checked with the
  storage clock on every hit).
* Misses are not cached, so a record another process has just created is
  seen at once.
* Callers get copies: changing a returned object never changes the cache.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any

from cachetools import TTLCache

from authkit.models import AuthToken, CleanupReport, SessionData
from authkit.storage._codec import live
from authkit.storage._copy import copy_session, copy_token
from authkit.storage.base import AuthStorage
from authkit.storage.wrapper import WrappingStorage

__all__ = ["CachedStorage"]

# Cache keys are (kind, id) tuples, so a kv key never collides with a session id.
_TOKEN = "t"
_SESSION = "s"
_KV = "k"


_live = live


class CachedStorage(WrappingStorage):
    """A read-through cache of at most ``maxsize`` entries, each kept ``ttl`` seconds.

    >>> storage = CachedStorage(MemoryStorage(), ttl=5.0, maxsize=10_000)
    >>> storage.store_kv("k", b"v")
    >>> storage.get_kv("k")
    b'v'

    ``timer`` (monotonic seconds) measures ``ttl``; tests inject one.
    """

    def __init__(
        self,
        inner: AuthStorage,
        ttl: float = 5.0,
        maxsize: int = 10_000,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
            raise TypeError("ttl must be a number of seconds")
        if not math.isfinite(ttl) or ttl <= 0:
            raise ValueError("ttl must be a positive, finite number of seconds")
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError("maxsize must be an int")
        if maxsize <= 0:
            raise ValueError("maxsize must be > 0")
        super().__init__(inner)
        self._ttl = float(ttl)
        self._maxsize = maxsize
        self._mutex = threading.Lock()
        self._cache: TTLCache[Hashable, Any] = TTLCache(maxsize=maxsize, ttl=float(ttl), timer=timer)
        # token_id -> access tokens cached for it: a write to a token id must evict
        # the entry under its *old* access token, which the write does not name.
        self._access_by_id: dict[str, set[str]] = {}
        # A read that started before a write must not put what it read into the
        # cache after the write evicted it: each write bumps its kind's generation
        # and a read only fills the cache if the generation did not move.
        self._generation = {_TOKEN: 0, _SESSION: 0, _KV: 0}

    def __repr__(self) -> str:
        return f"CachedStorage({self._inner!r}, ttl={self._ttl}, maxsize={self._maxsize})"

    def clear_cache(self) -> None:
        """Forget every cached entry (the next reads go to the inner store)."""
        with self._mutex:
            self._cache.clear()
            self._access_by_id.clear()
            for kind in self._generation:
                self._generation[kind] += 1

    # -- the cache --------------------------------------------------------

    def _lookup(self, kind: str, key: str) -> tuple[Any, int]:
        """The cached value (or ``None``) and the generation to fill the cache with."""
        with self._mutex:
            try:
                # cache[key], not cache.get(key): get() looks the key up twice, 3x slower.
                return self._cache[(kind, key)], self._generation[kind]
            except KeyError:
                return None, self._generation[kind]

    def _fill(self, kind: str, key: str, value: Any, generation: int) -> None:
        with self._mutex:
            if self._generation[kind] == generation:
                self._cache[(kind, key)] = value

    def _evict(self, kind: str, keys: list[str]) -> None:
        with self._mutex:
            self._generation[kind] += 1
            for key in keys:
                self._cache.pop((kind, key), None)

    def _evict_kind(self, kind: str) -> None:
        """Forget every cached entry of one kind (a write whose ids we do not know)."""
        with self._mutex:
            self._generation[kind] += 1
            for cache_key in [k for k in self._cache if isinstance(k, tuple) and k[0] == kind]:
                self._cache.pop(cache_key, None)
            if kind == _TOKEN:
                self._access_by_id.clear()

    def _evict_tokens(self, token_ids: list[str], access_tokens: list[str]) -> None:
        with self._mutex:
            self._generation[_TOKEN] += 1
            for token_id in token_ids:
                for access in self._access_by_id.pop(token_id, ()):
                    self._cache.pop((_TOKEN, access), None)
            for access in access_tokens:
                self._cache.pop((_TOKEN, access), None)

    # -- tokens -----------------------------------------------------------

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        try:
            self._inner._store_tokens(tokens)
        finally:  # evict even if the write failed: it may have reached the server
            self._evict_tokens([t.token_id for t in tokens], [t.access_token for t in tokens])

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        cached, generation = self._lookup(_TOKEN, access_token)
        if cached is not None and _live(cached.expires_at, now):
            return copy_token(cached)
        token = self._inner._get_token_by_access_token(access_token, now)
        if token is not None:
            entry = copy_token(token)
            with self._mutex:
                if self._generation[_TOKEN] == generation:
                    self._cache[(_TOKEN, access_token)] = entry
                    index = self._access_by_id.setdefault(entry.token_id, set())
                    index.add(access_token)
                    if len(self._access_by_id) > 2 * self._maxsize:
                        self._prune_index()
        return token

    def _prune_index(self) -> None:
        """Drop index entries whose cache entries have expired or been evicted (under the mutex)."""
        self._cache.expire()
        for token_id in list(self._access_by_id):
            alive = {a for a in self._access_by_id[token_id] if (_TOKEN, a) in self._cache}
            if alive:
                self._access_by_id[token_id] = alive
            else:
                del self._access_by_id[token_id]

    def _update_token(self, token: AuthToken) -> None:
        try:
            self._inner._update_token(token)
        finally:
            self._evict_tokens([token.token_id], [token.access_token])

    def _delete_tokens(self, token_ids: list[str]) -> None:
        try:
            self._inner._delete_tokens(token_ids)
        finally:
            self._evict_tokens(token_ids, [])

    # -- sessions ---------------------------------------------------------

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        try:
            self._inner._store_sessions(sessions)
        finally:
            self._evict(_SESSION, [s.session_id for s in sessions])

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        cached, generation = self._lookup(_SESSION, session_id)
        if cached is not None and _live(cached.expires_at, now):
            return copy_session(cached)
        session = self._inner._get_session(session_id, now)
        if session is not None:
            self._fill(_SESSION, session_id, copy_session(session), generation)
        return session

    def _delete_sessions(self, session_ids: list[str]) -> None:
        try:
            self._inner._delete_sessions(session_ids)
        finally:
            self._evict(_SESSION, session_ids)

    # -- key-value --------------------------------------------------------

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        try:
            self._inner._store_kv(key, value, expires_at)
        finally:
            self._evict(_KV, [key])

    def _store_kv_entries(self, entries: list[tuple[str, bytes, datetime | None]]) -> None:
        try:
            self._inner._store_kv_entries(entries)
        finally:
            self._evict(_KV, [key for key, _, _ in entries])

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        cached, generation = self._lookup(_KV, key)
        if cached is not None and _live(cached[1], now):
            return cached  # type: ignore[no-any-return]  # bytes and datetime are immutable: no copy
        return self._read_kv_entry(key, now, generation)

    def _read_kv_entry(self, key: str, now: datetime, generation: int) -> tuple[bytes, datetime | None] | None:
        entry = self._inner._get_kv_entry(key, now)
        if entry is not None:
            self._fill(_KV, key, entry, generation)
        return entry

    def _delete_kv(self, key: str) -> None:
        try:
            self._inner._delete_kv(key)
        finally:
            self._evict(_KV, [key])

    # -- atomic primitives: delegated, then evict what they touched ------------

    def _create_session(self, session: SessionData, now: datetime) -> bool:
        try:
            return self._inner._create_session(session, now)
        finally:
            self._evict(_SESSION, [session.session_id])

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        try:
            return self._inner._replace_session(session, now)
        finally:
            self._evict(_SESSION, [session.session_id])

    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        try:
            return self._inner._touch_session(session_id, expires_at, last_activity, now)
        finally:
            self._evict(_SESSION, [session_id])

    def _touch_session_ip(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, ip_address: str | None,
        now: datetime,
    ) -> bool:
        try:
            return self._inner._touch_session_ip(session_id, expires_at, last_activity, ip_address, now)
        finally:
            self._evict(_SESSION, [session_id])

    def _delete_user_sessions(self, user_id: str, keep: str | None) -> int:
        try:
            return self._inner._delete_user_sessions(user_id, keep)
        finally:
            self._evict_kind(_SESSION)

    def _delete_user_tokens(self, user_id: str) -> int:
        try:
            return self._inner._delete_user_tokens(user_id)
        finally:
            self._evict_kind(_TOKEN)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        try:
            return self._inner._add_kv(key, value, expires_at, now)
        finally:
            self._evict(_KV, [key])

    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        try:
            return self._inner._incr_kv(key, amount, expires_at, now)
        finally:
            self._evict(_KV, [key])

    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool:
        try:
            return self._inner._touch_kv(key, expires_at, now)
        finally:
            self._evict(_KV, [key])

    # -- maintenance ------------------------------------------------------

    def _cleanup_batch(self, kind: str, now: datetime, limit: int, cursor: Any) -> tuple[CleanupReport, Any]:
        # Cleanup deletes only expired records, which the cache never serves;
        # clearing anyway keeps "a delete evicts" true without knowing the ids.
        try:
            return self._inner._cleanup_batch(kind, now, limit, cursor)
        finally:
            self.clear_cache()

    def close(self) -> None:
        """Empty the cache and close the inner storage."""
        self.clear_cache()
        super().close()
