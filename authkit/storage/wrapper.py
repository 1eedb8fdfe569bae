"""``WrappingStorage``: an :class:`AuthStorage` that hands every call to another one.

The base of the wrappers (:class:`EncryptedStorage`, :class:`CachedStorage`):
each overrides only the hooks it changes, and everything else — locks,
cleanup, stats, id walks, whatever it does not touch — goes to ``inner``.
Time is ``inner``'s clock, and ``close()`` closes ``inner``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from authkit.models import AuthToken, CleanupReport, SessionData
from authkit.storage.base import AuthStorage

__all__ = ["WrappingStorage"]


class WrappingStorage(AuthStorage):
    """Delegates every storage hook to ``inner``; subclasses override what they change."""

    _holds_records = False  # the inner storage has its own gate (see _marker)

    def __init__(self, inner: AuthStorage) -> None:
        if not isinstance(inner, AuthStorage):
            raise TypeError(f"inner must be an AuthStorage, not {type(inner).__name__}")
        # The inner storage's clock itself when its now() is the standard one: asking the time
        # through a bound inner.now() was one Python call more on every read that asks it.
        super().__init__(clock=inner._clock if type(inner).now is AuthStorage.now else inner.now)
        self._inner = inner

    @property
    def inner(self) -> AuthStorage:
        """The wrapped storage."""
        return self._inner

    def close(self) -> None:
        """Close the inner storage."""
        self._inner.close()

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        self._inner._store_tokens(tokens)

    def _get_token(self, token_id: str) -> AuthToken | None:
        return self._inner._get_token(token_id)

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        return self._inner._get_token_by_access_token(access_token, now)

    def _update_token(self, token: AuthToken) -> None:
        self._inner._update_token(token)

    def _delete_tokens(self, token_ids: list[str]) -> None:
        self._inner._delete_tokens(token_ids)

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        return self._inner._list_user_tokens(user_id)

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        self._inner._store_sessions(sessions)

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        return self._inner._get_session(session_id, now)

    def _delete_sessions(self, session_ids: list[str]) -> None:
        self._inner._delete_sessions(session_ids)

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        return self._inner._list_user_sessions(user_id, now)

    def _count_active_sessions(self, now: datetime) -> int:
        return self._inner._count_active_sessions(now)

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        self._inner._store_kv(key, value, expires_at)

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        return self._inner._get_kv_entry(key, now)

    def _delete_kv(self, key: str) -> None:
        self._inner._delete_kv(key)

    def _list_kv_keys(self, prefix: str, now: datetime) -> list[str]:
        return self._inner._list_kv_keys(prefix, now)

    def _cleanup_batch(self, kind: str, now: datetime, limit: int, cursor: Any) -> tuple[CleanupReport, Any]:
        return self._inner._cleanup_batch(kind, now, limit, cursor)

    def _stats(self, now: datetime) -> dict[str, int]:
        return self._inner._stats(now)

    def _token_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._inner._token_id_page(cursor, limit)

    def _session_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._inner._session_id_page(cursor, limit)

    def _token_page(self, cursor: str | None, limit: int) -> tuple[list[AuthToken], str | None]:
        return self._inner._token_page(cursor, limit)

    def _session_page(self, cursor: str | None, limit: int, now: datetime) -> tuple[list[SessionData], str | None]:
        return self._inner._session_page(cursor, limit, now)

    def _kv_page(
        self, after: str | None, limit: int, now: datetime
    ) -> tuple[list[tuple[str, bytes, datetime | None]], str | None]:
        return self._inner._kv_page(after, limit, now)

    def _get_kv_entries(self, keys: list[str], now: datetime) -> list[tuple[bytes, datetime | None] | None]:
        return self._inner._get_kv_entries(keys, now)

    def _store_kv_entries(self, entries: list[tuple[str, bytes, datetime | None]]) -> None:
        self._inner._store_kv_entries(entries)

    def _try_lock(self, name: str, ttl: float) -> Any:
        return self._inner._try_lock(name, ttl)

    def _release_lock(self, name: str, handle: Any) -> None:
        self._inner._release_lock(name, handle)

    def _drop_old_copies(self) -> None:
        self._inner._drop_old_copies()

    # -- atomic primitives: still one step, on the inner storage ----------------

    def _create_session(self, session: SessionData, now: datetime) -> bool:
        return self._inner._create_session(session, now)

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        return self._inner._replace_session(session, now)

    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        return self._inner._touch_session(session_id, expires_at, last_activity, now)

    def _touch_session_ip(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, ip_address: str | None,
        now: datetime,
    ) -> bool:
        return self._inner._touch_session_ip(session_id, expires_at, last_activity, ip_address, now)

    def _delete_user_sessions(self, user_id: str, keep: str | None) -> int:
        return self._inner._delete_user_sessions(user_id, keep)

    def _delete_user_tokens(self, user_id: str) -> int:
        return self._inner._delete_user_tokens(user_id)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        return self._inner._add_kv(key, value, expires_at, now)

    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        return self._inner._incr_kv(key, amount, expires_at, now)

    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool:
        return self._inner._touch_kv(key, expires_at, now)
