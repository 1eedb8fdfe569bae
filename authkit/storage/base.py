"""``AuthStorage``: the one contract every backend implements.

The public methods live here and check their arguments once, for every
backend; a backend implements the private ``_``-prefixed hooks and may assume
its arguments are valid (ids checked, datetimes in UTC, JSON checked, ``ttl``
turned into an absolute ``expires_at``).

Usage::

    from authkit.storage import open_storage

    with open_storage("sqlite:///authkit.db") as storage:
        storage.store_kv("greeting", b"hello", ttl=60)
        storage.get_kv("greeting")          # b"hello" for the next minute
        with storage.lock("nightly-cleanup", timeout=0):
            storage.cleanup_expired()

The atomic primitives (``create_session``, ``replace_session``,
``touch_session``, ``delete_user_sessions``, ``delete_user_tokens``,
``add_kv``, ``incr_kv``, ``get_kv_entry``, ``touch_kv``) are each one step on
the server — one statement, one Lua script, one critical section — so
concurrent callers never need ``lock()`` around them::

    if not storage.create_session(session_id, data):   # exactly one racer wins
        raise CollisionError
    hits = storage.incr_kv(f"rate:{ip}", ttl=60)         # a fixed-window rate limiter
"""

from __future__ import annotations

import abc
import bisect
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Final

from authkit.models import AuthToken, CleanupReport, KvEntry, SessionData, as_utc, utcnow
from authkit.storage._batch_sizer import BatchSizer
from authkit.storage._checks import checked_session, checked_token, checked_value
from authkit.storage._codec import (
    MAX_ID_LENGTH,
    check_batch_size,
    check_id,
    check_int64,
    check_text,
    expires_after,
    ttl_seconds,
)

__all__ = ["AuthStorage", "Clock", "MAX_ID_LENGTH", "DEFAULT_BATCH_SIZE"]

Clock = Callable[[], datetime]
"""A function returning the current aware UTC time; tests inject one to move time."""

DEFAULT_BATCH_SIZE = 1000
CLEANUP_KINDS = ("tokens", "sessions", "kv")
CLEANUP_DONE: Final = object()
"""What ``_cleanup_batch`` returns as the next cursor when the walk of its kind is over."""
# cleanup_expired sizes its batches by time: each statement should take about this long,
# short enough that writers waiting on the rows it deletes barely notice.
_CLEANUP_TARGET_SECONDS = 0.02
_CLEANUP_FIRST_BATCH = 1000
_CLEANUP_MAX_BATCH = 1_000_000
# lock(): the wait between attempts doubles from the first to the longest, jittered.
_LOCK_WAIT_FIRST, _LOCK_WAIT_LONGEST = 0.002, 0.1
_KV_WALK_SECONDS = 60.0  # how long the default _kv_page pages through one listing of the keys
KvValue = bytes | bytearray | memoryview
_ttl_seconds = ttl_seconds  # the name other modules imported before the codec existed


def _check_timeouts(timeout: object, ttl: object) -> tuple[float, float]:
    for name, value in (("timeout", timeout), ("ttl", ttl)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{name} must be a number of seconds")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite")
    assert isinstance(timeout, (int, float)) and isinstance(ttl, (int, float))
    if timeout < 0:
        raise ValueError("timeout must be >= 0")
    if ttl <= 0:
        raise ValueError("ttl must be > 0")
    if timeout > _MAX_WAIT or ttl > _MAX_WAIT:
        raise ValueError("timeout and ttl must be at most a year")  # drivers overflow on more
    return float(timeout), float(ttl)


_MAX_WAIT = 366 * 24 * 3600.0


def _wait_for(attempt: Callable[[], Any], timeout: float) -> Any:
    """Call ``attempt`` until it returns something other than ``None``, or ``None`` after ``timeout``.

    ``timeout=0`` tries once.  Waits between attempts grow exponentially with
    jitter, so many waiters neither poll in lock step nor hammer the server.
    """
    deadline = time.monotonic() + timeout
    wait = _LOCK_WAIT_FIRST
    while True:
        result = attempt()
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(remaining, wait * random.uniform(0.5, 1.5)))
        wait = min(wait * 2, _LOCK_WAIT_LONGEST)


class AuthStorage(abc.ABC):
    """Tokens, sessions and TTL'd key-value data in one store.

    Every backend is thread-safe, a context manager, and has :meth:`close`.
    Expiry is decided on read: an expired session or kv entry is never
    returned, even before :meth:`cleanup_expired` deletes it.  Tokens are the
    exception: :meth:`get_token` returns an expired token (it may still carry
    a refresh token) until cleanup removes it.

    ``clock`` returns the current aware UTC time; it exists so tests can move
    time instead of sleeping.
    """

    # A backend holds records; a wrapper (WrappingStorage) only passes them on.
    _holds_records = True
    # The walk in progress through the default _kv_page: its sorted keys, the cursor
    # its last page returned, and when it was listed (time.monotonic()).
    _kv_walk: tuple[list[str], str, float] | None = None

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or utcnow
        if self._holds_records:
            # The first storage call checks that this is not an encrypted store
            # (see _marker): a storage without keys must never read or write one.
            from authkit.storage._marker import install_gate

            install_gate(self)

    def now(self) -> datetime:
        """The storage's idea of the current time (aware UTC)."""
        return self._clock()

    # -- tokens -----------------------------------------------------------

    def store_token(self, token: AuthToken) -> None:
        """Insert ``token``, or replace the stored token with the same ``token_id``."""
        self._store_tokens([checked_token(token)])

    def get_token(self, token_id: str) -> AuthToken | None:
        """The token with this id, also when it has expired; ``None`` if there is none."""
        return self._get_token(check_id(token_id, "token_id"))

    def get_token_by_access_token(self, access_token: str) -> AuthToken | None:
        """The live token whose access token this is; ``None`` if none or expired."""
        if not isinstance(access_token, str):
            raise TypeError("access_token must be a str")
        if not access_token:
            raise ValueError("access_token must not be empty")
        return self._get_token_by_access_token(check_text(access_token, "access_token"), self.now())

    def update_token(self, token: AuthToken) -> None:
        """Replace a stored token; :class:`~authkit.errors.NotFoundError` if there is none."""
        self._update_token(checked_token(token))

    def delete_token(self, token_id: str) -> None:
        """Delete the token; deleting a missing token is not an error."""
        self._delete_tokens([check_id(token_id, "token_id")])

    def list_user_tokens(self, user_id: str) -> list[AuthToken]:
        """All the user's tokens, expired ones included, by ``issued_at`` then ``token_id``."""
        return self._list_user_tokens(check_id(user_id, "user_id"))

    def store_tokens_bulk(self, tokens: Iterable[AuthToken]) -> None:
        """Store many tokens in one transaction: all of them, or none if one is invalid."""
        checked = [checked_token(t) for t in _as_list(tokens, "tokens")]
        if checked:
            self._store_tokens(_last_wins(checked, lambda t: t.token_id))

    def delete_tokens_bulk(self, token_ids: Iterable[str]) -> None:
        """Delete many tokens in one transaction; missing ones are ignored."""
        ids = [check_id(i, "token_id") for i in _as_list(token_ids, "token_ids")]
        if ids:
            self._delete_tokens(list(dict.fromkeys(ids)))

    # -- sessions ---------------------------------------------------------

    def store_session(self, session_id: str, data: SessionData) -> None:
        """Insert or replace the session stored under ``session_id``."""
        self._store_sessions([checked_session(session_id, data)])

    def get_session(self, session_id: str) -> SessionData | None:
        """The session, or ``None`` if there is none or it has expired."""
        return self._get_session(check_id(session_id, "session_id"), self.now())

    def delete_session(self, session_id: str) -> None:
        """Delete the session; deleting a missing session is not an error."""
        self._delete_sessions([check_id(session_id, "session_id")])

    def list_user_sessions(self, user_id: str) -> list[SessionData]:
        """The user's live sessions, by ``created_at`` then ``session_id``."""
        return self._list_user_sessions(check_id(user_id, "user_id"), self.now())

    def count_active_sessions(self) -> int:
        """How many sessions are live, counted without loading them."""
        return self._count_active_sessions(self.now())

    def store_sessions_bulk(self, sessions: Iterable[tuple[str, SessionData]]) -> None:
        """Store many ``(session_id, data)`` pairs in one transaction, all or nothing."""
        checked = []
        for pair in _as_list(sessions, "sessions"):
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError("sessions must be (session_id, SessionData) pairs")
            checked.append(checked_session(pair[0], pair[1]))
        if checked:
            self._store_sessions(_last_wins(checked, lambda s: s.session_id))

    def delete_sessions_bulk(self, session_ids: Iterable[str]) -> None:
        """Delete many sessions in one transaction; missing ones are ignored."""
        ids = [check_id(i, "session_id") for i in _as_list(session_ids, "session_ids")]
        if ids:
            self._delete_sessions(list(dict.fromkeys(ids)))

    # -- key-value --------------------------------------------------------

    def store_kv(self, key: str, value: KvValue, ttl: float | timedelta | None = None) -> None:
        """Store ``value`` (bytes-like) under ``key``, for ``ttl`` seconds or forever."""
        check_id(key, "key")
        data = checked_value(value)
        self._store_kv(key, data, expires_after(self.now(), ttl))

    def get_kv(self, key: str) -> bytes | None:
        """The value as ``bytes``, or ``None`` if missing or expired."""
        entry = self._get_kv_entry(check_id(key, "key"), self.now())
        return None if entry is None else entry[0]

    def delete_kv(self, key: str) -> None:
        """Delete the entry; deleting a missing key is not an error."""
        self._delete_kv(check_id(key, "key"))

    def list_kv_keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with ``prefix`` literally (no wildcards), sorted."""
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if "\x00" in prefix:
            raise ValueError("prefix must not contain a NUL character")
        return sorted(self._list_kv_keys(check_text(prefix, "prefix"), self.now()))

    # -- atomic primitives ------------------------------------------------
    #
    # Each is one step on the server (one statement, one script, one critical
    # section), so concurrent callers race safely without lock().

    def create_session(self, session_id: str, data: SessionData) -> bool:
        """Store the session only if no *live* session has this id; ``True`` if it stored.

        An expired session under the id is replaced.  Among any number of
        threads or processes racing on one id, exactly one gets ``True``.
        """
        return self._create_session(checked_session(session_id, data), self.now())

    def replace_session(self, session_id: str, data: SessionData) -> bool:
        """Replace the session only if a live one has this id; ``False`` (nothing written) otherwise."""
        return self._replace_session(checked_session(session_id, data), self.now())

    def touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime | None = None
    ) -> bool:
        """Move a live session's ``expires_at`` (and ``last_activity``, default now) without
        rewriting its data; ``False`` if no live session has this id."""
        check_id(session_id, "session_id")
        expiry = None if expires_at is None else as_utc(expires_at, "expires_at")
        now = self.now()
        activity = now if last_activity is None else as_utc(last_activity, "last_activity")
        return self._touch_session(session_id, expiry, activity, now)

    def delete_user_sessions(self, user_id: str, *, keep: str | None = None) -> int:
        """Delete every session of the user, live or expired, except the id ``keep``;
        return how many were deleted ("log out everywhere [else]")."""
        check_id(user_id, "user_id")
        if keep is not None:
            check_id(keep, "keep")
        return self._delete_user_sessions(user_id, keep)

    def delete_user_tokens(self, user_id: str) -> int:
        """Delete every token of the user; return how many were deleted."""
        return self._delete_user_tokens(check_id(user_id, "user_id"))

    def add_kv(self, key: str, value: KvValue, ttl: float | timedelta | None = None) -> bool:
        """Store ``value`` only if no live entry has this key; ``True`` if it stored."""
        check_id(key, "key")
        data = checked_value(value)
        now = self.now()
        return self._add_kv(key, data, expires_after(now, ttl), now)

    def incr_kv(self, key: str, amount: int = 1, ttl: float | timedelta | None = None) -> int:
        """Add ``amount`` to the integer counter under ``key`` and return the new value.

        A missing or expired counter starts at 0 and gets ``ttl``; an existing
        one keeps its expiry (a fixed-window rate limiter).  Counters are
        signed 64-bit and read back through :meth:`get_kv` as ASCII decimal
        (``b"3"``).  A value that is not such a number, or a result outside
        the 64-bit range, is a ``ValueError`` and changes nothing.
        """
        check_id(key, "key")
        check_int64(amount, "amount")
        now = self.now()
        return self._incr_kv(key, amount, expires_after(now, ttl), now)

    def get_kv_entry(self, key: str) -> KvEntry | None:
        """The live entry's value and expiry, or ``None`` if missing or expired."""
        entry = self._get_kv_entry(check_id(key, "key"), self.now())
        return None if entry is None else KvEntry(entry[0], entry[1])

    def touch_kv(self, key: str, ttl: float | timedelta | None) -> bool:
        """Give a live entry a new ``ttl`` from now (``None``: no expiry); ``False`` if none is live."""
        check_id(key, "key")
        now = self.now()
        return self._touch_kv(key, expires_after(now, ttl), now)

    # -- maintenance ------------------------------------------------------

    def cleanup_expired(
        self,
        batch_size: int | None = None,
        progress: Callable[[CleanupReport], None] | None = None,
    ) -> CleanupReport:
        """Delete expired tokens, sessions and kv entries; return how many of each.

        Works in batches, each its own short transaction, so a cron job never
        holds a big lock and other writers interleave.  Batches are sized by
        time: they grow while a batch is quick and shrink when it is slow, so
        each statement takes about 20 ms whatever the database's speed;
        ``batch_size`` caps the records a batch looks at (so also those it deletes).  A record a
        concurrent write made live again is never deleted.  ``progress`` is
        called after every batch with the running totals.
        """
        cap = _CLEANUP_MAX_BATCH if batch_size is None else min(check_batch_size(batch_size), _CLEANUP_MAX_BATCH)
        now = self.now()
        total = CleanupReport()
        for kind in CLEANUP_KINDS:
            # Each kind its own walk (one table per statement on SQL), its batches sized
            # by its own statements' times: a wide table's rows cost more than a narrow one's.
            sizer = BatchSizer(_CLEANUP_TARGET_SECONDS, _CLEANUP_FIRST_BATCH, cap)
            cursor: object = None
            while cursor is not CLEANUP_DONE:
                started = time.perf_counter()
                batch, cursor = self._cleanup_batch(kind, now, sizer.size, cursor)
                sizer.record(time.perf_counter() - started)
                total += batch
                if progress is not None:
                    progress(total)
        return total

    def stats(self) -> dict[str, int]:
        """Record counts: ``tokens``/``sessions``/``kv``, each ``_live`` and ``_expired``.

        Expired counts are records still stored that ``cleanup_expired`` would delete.
        """
        return self._stats(self.now())

    def iter_token_ids(self, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[str]:
        """Every stored token id (expired ones included), fetched ``batch_size`` at a time.

        Order is the backend's own; ids stored or deleted during the walk may or
        may not be seen.  Used by maintenance jobs such as ``reencrypt()``.
        """
        return self._walk(self._token_id_page, batch_size)

    def iter_session_ids(self, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[str]:
        """Every stored session id (expired ones included), ``batch_size`` at a time."""
        return self._walk(self._session_id_page, batch_size)

    @staticmethod
    def _walk(page: Callable[[str | None, int], tuple[list[str], str | None]], batch_size: int) -> Iterator[str]:
        check_batch_size(batch_size)
        cursor: str | None = None
        while True:
            ids, cursor = page(cursor, batch_size)
            yield from ids
            if cursor is None:
                return

    @contextmanager
    def lock(self, name: str, timeout: float = 10.0, ttl: float = 30.0) -> Iterator[None]:
        """Hold the named lock for the ``with`` block, across every process sharing the store.

        Waits at most ``timeout`` seconds (``0`` tries once), then raises
        :class:`TimeoutError`.  A holder that dies without releasing loses the
        lock after ``ttl`` seconds.  Not re-entrant.  The body may use the
        storage freely: holding a lock keeps no connection busy.  What a lock
        guarantees across a server restart depends on the backend (see its docs).
        """
        check_id(name, "name")
        timeout_s, ttl_s = _check_timeouts(timeout, ttl)
        handle = _wait_for(lambda: self._try_lock(name, ttl_s), timeout_s)
        if handle is None:
            raise TimeoutError(f"lock {name!r} is held by another holder")
        try:
            yield
        finally:
            self._release_lock(name, handle)

    def close(self) -> None:  # noqa: B027 - a backend with nothing to release needs no override
        """Release connections; the storage must not be used afterwards."""

    def __enter__(self) -> AuthStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what a backend implements -----------------------------------------

    @abc.abstractmethod
    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        """Upsert valid tokens with distinct ids, atomically."""

    @abc.abstractmethod
    def _get_token(self, token_id: str) -> AuthToken | None: ...

    @abc.abstractmethod
    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None: ...

    @abc.abstractmethod
    def _update_token(self, token: AuthToken) -> None:
        """Replace an existing token, or raise ``NotFoundError``."""

    @abc.abstractmethod
    def _delete_tokens(self, token_ids: list[str]) -> None: ...

    @abc.abstractmethod
    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        """Sorted by ``(issued_at, token_id)``."""

    @abc.abstractmethod
    def _store_sessions(self, sessions: list[SessionData]) -> None:
        """Upsert valid sessions with distinct ids, atomically."""

    @abc.abstractmethod
    def _get_session(self, session_id: str, now: datetime) -> SessionData | None: ...

    @abc.abstractmethod
    def _delete_sessions(self, session_ids: list[str]) -> None: ...

    # EncryptedStorage's reads: the plain reads' records, but a sealed record's metadata/data
    # is always {}, which a backend may return without its JSON decoder (SQL does), leaving
    # the plain reads untouched.  A backend overriding a plain read overrides these or keeps them.

    def _get_sealed_token(self, token_id: str) -> AuthToken | None:
        return self._get_token(token_id)

    def _get_sealed_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        return self._get_token_by_access_token(access_token, now)

    def _get_sealed_session(self, session_id: str, now: datetime) -> SessionData | None:
        return self._get_session(session_id, now)

    @abc.abstractmethod
    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        """Live sessions sorted by ``(created_at, session_id)``."""

    @abc.abstractmethod
    def _count_active_sessions(self, now: datetime) -> int: ...

    @abc.abstractmethod
    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None: ...

    @abc.abstractmethod
    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        """The live value and its ``expires_at``, or ``None`` if missing or expired.

        The expiry comes with the value so wrappers (``CachedStorage``) never
        serve an entry past it, without a second round trip.
        """

    @abc.abstractmethod
    def _delete_kv(self, key: str) -> None: ...

    @abc.abstractmethod
    def _list_kv_keys(self, prefix: str, now: datetime) -> list[str]:
        """Live keys starting with ``prefix`` literally, in any order."""

    @abc.abstractmethod
    def _cleanup_batch(self, kind: str, now: datetime, limit: int, cursor: Any) -> tuple[CleanupReport, Any]:
        """One short step of the walk that deletes the expired records of ``kind``.

        ``kind`` is "tokens", "sessions" or "kv".  ``cursor`` is where the previous
        step of this walk stopped (``None`` for the first step): a backend that walks
        a table carries its position there, so no step rescans what an earlier one
        passed.  The step looks at no more than ``limit`` records.  Returns what it
        deleted (a backend may clean other kinds too) and the next step's cursor, or
        :data:`CLEANUP_DONE` when the walk is over.  The deleting statement itself
        tests expiry, so a record made live by a concurrent write is never deleted.
        """

    @abc.abstractmethod
    def _stats(self, now: datetime) -> dict[str, int]:
        """Counts keyed ``tokens_live``, ``tokens_expired``, ``sessions_live``, … ``kv_expired``."""

    @abc.abstractmethod
    def _token_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        """Up to ``limit`` token ids from ``cursor`` (``None``: the start) and the next
        cursor, ``None`` when there are no more.  The cursor's meaning is the backend's."""

    @abc.abstractmethod
    def _session_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        """Like :meth:`_token_id_page`, for sessions."""

    @abc.abstractmethod
    def _try_lock(self, name: str, ttl: float) -> Any:
        """Take the lock if it is free (or its holder's ``ttl`` ran out), without waiting.

        Returns a handle for :meth:`_release_lock` (anything but ``None``), or
        ``None`` when someone else holds it.  The base class does the waiting.
        """

    @abc.abstractmethod
    def _release_lock(self, name: str, handle: Any) -> None:
        """Release the lock taken as ``handle``, only if it is still ours."""

    # The atomic primitives: each ONE step on the server, never lock + read + write.

    @abc.abstractmethod
    def _create_session(self, session: SessionData, now: datetime) -> bool:
        """Store ``session`` unless a session live at ``now`` has its id."""

    @abc.abstractmethod
    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        """Store ``session`` only if a session live at ``now`` has its id."""

    @abc.abstractmethod
    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        """Set a live session's ``expires_at`` and ``last_activity``, nothing else."""

    @abc.abstractmethod
    def _touch_session_ip(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, ip_address: str | None,
        now: datetime,
    ) -> bool:
        """:meth:`_touch_session` that also sets ``ip_address``, in the same one step.

        For :class:`~authkit.storage.encrypted.EncryptedStorage`, which keeps a
        MAC of the session's expiry in that field (the ciphertext is in
        ``user_agent``): a touch through it stays one step on the server.
        """

    @abc.abstractmethod
    def _delete_user_sessions(self, user_id: str, keep: str | None) -> int: ...

    @abc.abstractmethod
    def _delete_user_tokens(self, user_id: str) -> int: ...

    @abc.abstractmethod
    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool: ...

    @abc.abstractmethod
    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        """Add ``amount`` (the caller checked it is int64); ``expires_at`` applies to a new counter.

        Raise ``ValueError`` (nothing changed) on a non-counter value or a
        result outside int64 (see ``_codec.parse_counter``/``counter_bounds``).
        """

    @abc.abstractmethod
    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool: ...

    # Pages of whole records, for the bulk rewrites (encrypt_existing, reencrypt).
    # These defaults read one record per id; SQL reads a page in one statement,
    # Redis in two round trips.

    def _token_page(self, cursor: str | None, limit: int) -> tuple[list[AuthToken], str | None]:
        """Up to ``limit`` tokens (expired ones too) from ``cursor`` on, in the order and
        with the cursor of :meth:`_token_id_page`; a token deleted meanwhile is left out."""
        ids, cursor = self._token_id_page(cursor, limit)
        return [t for t in map(self._get_token, ids) if t is not None], cursor

    def _session_page(self, cursor: str | None, limit: int, now: datetime) -> tuple[list[SessionData], str | None]:
        """Like :meth:`_token_page`, for the sessions live at ``now``."""
        ids, cursor = self._session_id_page(cursor, limit)
        return [s for s in (self._get_session(i, now) for i in ids) if s is not None], cursor

    def _kv_page(
        self, after: str | None, limit: int, now: datetime
    ) -> tuple[list[tuple[str, bytes, datetime | None]], str | None]:
        """Up to ``limit`` live kv entries ``(key, value, expires_at)`` with keys after ``after``
        (``None``: from the first), in key order (the backend's, which ``after`` follows),
        and the next ``after`` (``None`` when there are no more).

        This default (Redis, memory: no ordered kv index) lists the keys once per walk
        and pages through that snapshot while the walk goes on (each call continuing
        from the cursor the last one returned, within :data:`_KV_WALK_SECONDS` of the
        listing), so a walk costs one listing, not one per page; like SCAN, a key
        stored after the listing may be missed.
        """
        walk, listed = self._kv_walk, time.monotonic()
        if walk is not None and after is not None and walk[1] == after and listed - walk[2] < _KV_WALK_SECONDS:
            keys_all, listed = walk[0], walk[2]
        else:
            keys_all = sorted(self._list_kv_keys("", now))
        start = 0 if after is None else bisect.bisect_right(keys_all, after)
        keys = keys_all[start:start + limit]
        more = start + limit < len(keys_all)
        self._kv_walk = (keys_all, keys[-1], listed) if more else None
        entries = [(k, *e) for k, e in zip(keys, self._get_kv_entries(keys, now), strict=True) if e is not None]
        return entries, (keys[-1] if more else None)

    def _get_kv_entries(self, keys: list[str], now: datetime) -> list[tuple[bytes, datetime | None] | None]:
        """:meth:`_get_kv_entry` of each key, in order (Redis: one round trip)."""
        return [self._get_kv_entry(k, now) for k in keys]

    def _store_kv_entries(self, entries: list[tuple[str, bytes, datetime | None]]) -> None:
        """:meth:`_store_kv` of each ``(key, value, expires_at)``; SQL in one transaction,
        Redis in one script (the caller keeps a call's total size moderate)."""
        for key, value, expires_at in entries:
            self._store_kv(key, value, expires_at)

    def _drop_old_copies(self) -> None:  # noqa: B027 - most backends keep none
        """After a bulk rewrite (``encrypt_existing``, ``reencrypt``): drop the old versions
        of rewritten records that the backend itself still keeps (SQLite's WAL).

        Best effort; the default does nothing.
        """


def _as_list(items: object, name: str) -> list[Any]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(f"{name} must be an iterable of items")
    return list(items)


def _last_wins(items: Sequence[Any], key: Callable[[Any], str]) -> list[Any]:
    """One item per id, the last one given, as a sequence of single stores would leave it."""
    return list({key(item): item for item in items}.values())
