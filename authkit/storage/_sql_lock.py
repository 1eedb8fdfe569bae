"""``SqlStorage.lock()``: a lease row per held lock, renewed in the background.

A lock is a row in ``<prefix>locks`` (name, holder, expires_at), on every
database alike.  Taking it is one ``INSERT`` that only succeeds if no row has the
name (an expired row is deleted first); no connection stays checked out while
the ``with`` body runs, so the body has the whole pool to itself and many
threads holding locks cannot starve it.

While the lock is held a keeper thread (one per storage) moves ``expires_at``
forward every ``ttl / 3``; a holder that dies stops renewing and its lock frees
itself ``ttl`` after the last renewal.  The row is committed data, so a server
restart keeps the lock: exclusion survives it.  If the lease cannot be renewed
before it expires (the server stayed away longer than ``ttl``) or was taken
over, the holder has lost it: its next storage call on that thread, still inside
the ``with`` block, raises :class:`~authkit.errors.StorageError` ("lock ... was
lost"), and so does leaving the block.  Expiry is decided by the storage's clock
(``clock=``), so hosts sharing a store need clocks that agree (NTP) to well
within ``ttl``.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from authkit.errors import StorageError

if TYPE_CHECKING:
    from authkit.storage.sql import SqlStorage

__all__ = ["Lease", "LeaseKeeper", "lost_lock_error"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _rowcount(cursor: Any, sql: str, params: dict[str, Any]) -> int:
    cursor.execute(sql, params)
    return int(cursor.rowcount)


@dataclass(eq=False)
class Lease:
    """One held lock: who holds it and until when (storage-clock microseconds)."""

    name: str
    owner: str
    ttl: float
    expires_at: int
    renew_at: float  # time.monotonic() of the next renewal
    lost: bool = False


def lost_lock_error(lease: Lease) -> StorageError:
    return StorageError(
        f"lock {lease.name!r} was lost while held (not renewed within its ttl of {lease.ttl:g}s, "
        "or taken over): another holder may be running; this block must not go on as if it held it"
    )


class LeaseKeeper:
    """Takes, renews and releases lease rows for one ``SqlStorage``."""

    def __init__(self, storage: SqlStorage) -> None:
        self._storage = storage
        self._leases: set[Lease] = set()
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._held = threading.local()  # the leases the current thread holds, for guard()
        # How many leases threads hold (changed under _changed, see _count): while none is
        # held anywhere, the storage's calls do not call guard() at all.
        self._holding = 0

    def close(self) -> None:
        """Stop renewing: every lease still held runs out after its ttl."""
        with self._changed:
            for lease in self._leases:
                lease.lost = True
            self._leases.clear()
            self._changed.notify()

    def after_fork(self) -> None:
        # The parent's leases are the parent's: the child holds none and renews none.
        self._leases = set()
        self._changed = threading.Condition(threading.Lock())
        self._thread = None
        self._held = threading.local()
        self._holding = 0
        self._storage._runner.before_call = None

    # -- taking and releasing ------------------------------------------------------

    def try_take(self, name: str, ttl: float) -> Lease | None:
        storage = self._storage
        owner = uuid.uuid4().hex
        now = _micros(storage.now())
        expires_at = now + int(ttl * 1e6)
        row: dict[str, Any] = {"name": name, "owner": owner, "expires_at": expires_at}
        take, clear = storage._sql.lock_take, storage._sql.lock_clear

        def attempt(cursor: Any) -> bool:
            cursor.execute(take, row)
            if int(cursor.rowcount) == 1:
                return True
            # Held, or held by a holder whose lease ran out (or by this very attempt, if
            # a first try's connection died after the INSERT): clear those and try again.
            cursor.execute(clear, {"lock": name, "now": now, "owner": owner})
            if int(cursor.rowcount) == 0:
                return False
            cursor.execute(take, row)
            return int(cursor.rowcount) == 1

        if not storage._run(attempt):
            return None
        lease = Lease(name, owner, ttl, expires_at, time.monotonic() + ttl / 3)
        with self._changed:
            self._leases.add(lease)
            self._count(1)
            if self._thread is None:
                self._thread = threading.Thread(target=self._keep, name=f"authkit-locks-{id(self):x}", daemon=True)
                self._thread.start()
            self._changed.notify()
        self._mine().append(lease)
        return lease

    def release(self, lease: Lease) -> None:
        mine = self._mine()
        with self._changed:
            if lease in mine:
                mine.remove(lease)
                self._count(-1)
            self._leases.discard(lease)
            self._changed.notify()
        storage = self._storage
        params = {"lock": lease.name, "owner": lease.owner}
        deleted = storage._run(lambda cursor: _rowcount(cursor, storage._sql.lock_release, params))
        if lease.lost or deleted == 0:
            raise lost_lock_error(lease)

    # -- the holder's guard -------------------------------------------------------------

    def _count(self, change: int) -> None:
        """Count a lease taken or released (under ``_changed``): guard() runs before each call while any is held."""
        self._holding += change
        self._storage._runner.before_call = self.guard if self._holding else None

    def _mine(self) -> list[Lease]:
        mine: list[Lease] | None = getattr(self._held, "leases", None)
        if mine is None:
            mine = self._held.leases = []
        return mine

    def guard(self) -> None:
        """Raise if the calling thread is inside a lock it can no longer prove it holds."""
        if not self._holding:  # a thread holding a lease counts itself until it releases it
            return
        mine: list[Lease] | None = getattr(self._held, "leases", None)
        if not mine:
            return
        now = _micros(self._storage.now())
        for lease in mine:
            if lease.lost or lease.expires_at <= now:
                lease.lost = True
                raise lost_lock_error(lease)

    # -- renewal --------------------------------------------------------------------------

    def _keep(self) -> None:
        storage = self._storage
        while True:
            with self._changed:
                while True:
                    if not self._leases:
                        self._thread = None
                        return
                    due = min(lease.renew_at for lease in self._leases)
                    wait = due - time.monotonic()
                    if wait <= 0:
                        break
                    self._changed.wait(wait)
                leases = [lease for lease in self._leases if lease.renew_at <= time.monotonic()]
            for lease in leases:
                self._renew(storage, lease)

    def _renew(self, storage: SqlStorage, lease: Lease) -> None:
        now = _micros(storage.now())
        if lease.expires_at <= now:
            lease.lost = True  # too late: someone may have taken it meanwhile
        else:
            expires_at = now + int(lease.ttl * 1e6)
            params = {"lock": lease.name, "owner": lease.owner, "until": expires_at}
            try:
                renewed = storage._run(lambda cursor: _rowcount(cursor, storage._sql.lock_renew, params))
            except StorageError:
                # The server is away: try again soon, until the lease runs out.
                lease.renew_at = time.monotonic() + min(lease.ttl / 10, 1.0)
                return
            if renewed == 1:
                lease.expires_at = expires_at
                lease.renew_at = time.monotonic() + lease.ttl / 3
                return
            lease.lost = True  # the row is gone or someone else's
        with self._changed:
            self._leases.discard(lease)
