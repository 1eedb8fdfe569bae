"""``MemoryStorage``: everything in this process's memory, for tests and scripts.

Dicts keyed by id, with secondary indexes (access token -> token id, user ->
ids) so lookups are never scans.  One ``threading.RLock`` guards them all;
``lock()`` is shared by the threads of this process only.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from authkit.errors import NotFoundError
from authkit.models import AuthToken, CleanupReport, SessionData
from authkit.storage._codec import counter_bounds, counter_overflow, format_counter, live, parse_counter
from authkit.storage._copy import copy_session, copy_token
from authkit.storage.base import CLEANUP_DONE, AuthStorage, Clock

__all__ = ["MemoryStorage"]

_live = live


def _id_page(records: Mapping[str, object], cursor: str | None, limit: int) -> tuple[list[str], str | None]:
    """Ids after ``cursor`` in sorted order; the cursor is the last id returned."""
    ids = sorted(i for i in records if cursor is None or i > cursor)[:limit]
    return ids, (ids[-1] if len(ids) == limit else None)


class MemoryStorage(AuthStorage):
    """Storage in a Python dict; nothing survives the process.

    >>> storage = MemoryStorage()
    >>> storage.store_kv("k", b"v", ttl=30)
    >>> storage.get_kv("k")
    b'v'
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self._mutex = threading.RLock()
        self._tokens: dict[str, AuthToken] = {}
        self._token_by_access: dict[str, str] = {}
        self._tokens_by_user: dict[str, set[str]] = {}
        self._sessions: dict[str, SessionData] = {}
        self._sessions_by_user: dict[str, set[str]] = {}
        self._kv: dict[str, tuple[bytes, datetime | None]] = {}
        self._locks: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return "MemoryStorage()"

    # -- tokens -----------------------------------------------------------

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        # Copies: the checked records share their containers with the caller's.
        tokens = [copy_token(t) for t in tokens]
        with self._mutex:
            for token in tokens:
                self._unindex_token(token.token_id)
                self._tokens[token.token_id] = token
                self._token_by_access[token.access_token] = token.token_id
                self._tokens_by_user.setdefault(token.user_id, set()).add(token.token_id)

    def _unindex_token(self, token_id: str) -> None:
        old = self._tokens.pop(token_id, None)
        if old is None:
            return
        if self._token_by_access.get(old.access_token) == token_id:
            del self._token_by_access[old.access_token]
        ids = self._tokens_by_user.get(old.user_id)
        if ids is not None:
            ids.discard(token_id)
            if not ids:
                del self._tokens_by_user[old.user_id]

    def _get_token(self, token_id: str) -> AuthToken | None:
        with self._mutex:
            token = self._tokens.get(token_id)
            return None if token is None else copy_token(token)

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        with self._mutex:
            token_id = self._token_by_access.get(access_token)
            token = None if token_id is None else self._tokens.get(token_id)
            if token is None or not _live(token.expires_at, now):
                return None
            return copy_token(token)

    def _update_token(self, token: AuthToken) -> None:
        with self._mutex:
            if token.token_id not in self._tokens:
                raise NotFoundError(f"no token with id {token.token_id!r}")
            self._store_tokens([token])

    def _delete_tokens(self, token_ids: list[str]) -> None:
        with self._mutex:
            for token_id in token_ids:
                self._unindex_token(token_id)

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        with self._mutex:
            tokens = [copy_token(self._tokens[i]) for i in self._tokens_by_user.get(user_id, ())]
        return sorted(tokens, key=lambda t: (t.issued_at, t.token_id))

    # -- sessions ---------------------------------------------------------

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        sessions = [copy_session(s) for s in sessions]  # see _store_tokens
        with self._mutex:
            for session in sessions:
                self._unindex_session(session.session_id)
                self._sessions[session.session_id] = session
                self._sessions_by_user.setdefault(session.user_id, set()).add(session.session_id)

    def _unindex_session(self, session_id: str) -> None:
        old = self._sessions.pop(session_id, None)
        if old is None:
            return
        ids = self._sessions_by_user.get(old.user_id)
        if ids is not None:
            ids.discard(session_id)
            if not ids:
                del self._sessions_by_user[old.user_id]

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        with self._mutex:
            session = self._sessions.get(session_id)
            if session is None or not _live(session.expires_at, now):
                return None
            return copy_session(session)

    def _delete_sessions(self, session_ids: list[str]) -> None:
        with self._mutex:
            for session_id in session_ids:
                self._unindex_session(session_id)

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        with self._mutex:
            sessions = [
                copy_session(s)
                for s in (self._sessions[i] for i in self._sessions_by_user.get(user_id, ()))
                if _live(s.expires_at, now)
            ]
        return sorted(sessions, key=lambda s: (s.created_at, s.session_id))

    def _count_active_sessions(self, now: datetime) -> int:
        with self._mutex:
            return sum(1 for s in self._sessions.values() if _live(s.expires_at, now))

    # -- key-value --------------------------------------------------------

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        with self._mutex:
            self._kv[key] = (value, expires_at)

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        with self._mutex:
            entry = self._kv.get(key)
        if entry is None or not _live(entry[1], now):
            return None
        return entry  # bytes and datetimes are immutable: no copy needed

    def _delete_kv(self, key: str) -> None:
        with self._mutex:
            self._kv.pop(key, None)

    def _list_kv_keys(self, prefix: str, now: datetime) -> list[str]:
        with self._mutex:
            return [k for k, (_, exp) in self._kv.items() if k.startswith(prefix) and _live(exp, now)]

    # -- atomic primitives: each one critical section under the mutex ------------

    def _create_session(self, session: SessionData, now: datetime) -> bool:
        with self._mutex:
            old = self._sessions.get(session.session_id)
            if old is not None and _live(old.expires_at, now):
                return False
            self._store_sessions([session])
            return True

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        with self._mutex:
            old = self._sessions.get(session.session_id)
            if old is None or not _live(old.expires_at, now):
                return False
            self._store_sessions([session])
            return True

    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        return self._touch(session_id, now, expires_at=expires_at, last_activity=last_activity)

    def _touch_session_ip(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, ip_address: str | None,
        now: datetime,
    ) -> bool:
        return self._touch(session_id, now, expires_at=expires_at, last_activity=last_activity, ip_address=ip_address)

    def _touch(self, session_id: str, now: datetime, **changes: Any) -> bool:
        with self._mutex:
            old = self._sessions.get(session_id)
            if old is None or not _live(old.expires_at, now):
                return False
            # A new object, not a change in place: a reader may hold the old one.
            touched = object.__new__(SessionData)
            touched.__dict__.update(old.__dict__, **changes)
            self._sessions[session_id] = touched
            return True

    def _delete_user_sessions(self, user_id: str, keep: str | None) -> int:
        with self._mutex:
            ids = [i for i in self._sessions_by_user.get(user_id, ()) if i != keep]
            self._delete_sessions(ids)
            return len(ids)

    def _delete_user_tokens(self, user_id: str) -> int:
        with self._mutex:
            ids = list(self._tokens_by_user.get(user_id, ()))
            self._delete_tokens(ids)
            return len(ids)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        with self._mutex:
            old = self._kv.get(key)
            if old is not None and _live(old[1], now):
                return False
            self._kv[key] = (value, expires_at)
            return True

    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        with self._mutex:
            old = self._kv.get(key)
            if old is None or not _live(old[1], now):
                self._kv[key] = (format_counter(amount), expires_at)
                return amount
            current = parse_counter(old[0])
            low, high = counter_bounds(amount)
            if current is None or not low <= current <= high:
                raise counter_overflow(key, amount)
            self._kv[key] = (format_counter(current + amount), old[1])
            return current + amount

    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool:
        with self._mutex:
            old = self._kv.get(key)
            if old is None or not _live(old[1], now):
                return False
            self._kv[key] = (old[0], expires_at)
            return True

    # -- maintenance ------------------------------------------------------

    def _cleanup_batch(self, kind: str, now: datetime, limit: int, cursor: Any) -> tuple[CleanupReport, Any]:
        # Every kind in one step (cheap here); what a step deletes is gone, so the
        # next one starts over (cursor None) without passing it again.
        with self._mutex:
            tokens = [i for i, t in self._tokens.items() if not _live(t.expires_at, now)][:limit]
            sessions = [i for i, s in self._sessions.items() if not _live(s.expires_at, now)][:limit]
            kv = [k for k, (_, exp) in self._kv.items() if not _live(exp, now)][:limit]
            self._delete_tokens(tokens)
            self._delete_sessions(sessions)
            for key in kv:
                del self._kv[key]
        more = max(len(tokens), len(sessions), len(kv)) >= limit
        return CleanupReport(tokens=len(tokens), sessions=len(sessions), kv=len(kv)), None if more else CLEANUP_DONE

    def _stats(self, now: datetime) -> dict[str, int]:
        with self._mutex:
            tokens = sum(1 for t in self._tokens.values() if _live(t.expires_at, now))
            sessions = sum(1 for s in self._sessions.values() if _live(s.expires_at, now))
            kv = sum(1 for _, exp in self._kv.values() if _live(exp, now))
            return {
                "tokens_live": tokens,
                "tokens_expired": len(self._tokens) - tokens,
                "sessions_live": sessions,
                "sessions_expired": len(self._sessions) - sessions,
                "kv_live": kv,
                "kv_expired": len(self._kv) - kv,
            }

    def _token_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        with self._mutex:
            return _id_page(self._tokens, cursor, limit)

    def _session_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        with self._mutex:
            return _id_page(self._sessions, cursor, limit)

    def _try_lock(self, name: str, ttl: float) -> str | None:
        owner = uuid.uuid4().hex
        with self._mutex:
            now = time.monotonic()
            held = self._locks.get(name)
            if held is not None and held[1] > now:
                return None
            self._locks[name] = (owner, now + ttl)
            return owner

    def _release_lock(self, name: str, handle: object) -> None:
        with self._mutex:
            held = self._locks.get(name)
            if held is not None and held[0] == handle:
                del self._locks[name]
