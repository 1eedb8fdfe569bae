"""A request budget shared by a whole fleet: every process, on every host, that shares one store.

Salesforce gives an org a daily allocation of API requests, and 50 cron workers each with its
own retry loop can spend it by noon.  A :class:`RequestBudget` held in any
:class:`~authkit.storage.AuthStorage` (Redis, PostgreSQL, ...) caps what all of them send together::

    from datetime import timedelta
    from authkit import open_storage
    from authkit.salesforce import RequestBudget, SalesforceClient

    store = open_storage("redis://cache:6379/0")
    budget = RequestBudget(store, limit=50_000, window=timedelta(days=1),   # half the org's allocation
                           max_concurrent=20, wait=30)                      # wait up to 30 s for room
    sf = SalesforceClient(auth, budget=budget)
    sf.get("limits")   # counted against the budget before anything is sent

How it works:

- **Requests per window**: fixed windows of ``window`` seconds, aligned on the Unix epoch and
  decided by the storage's clock (``storage.now()``).  Each request is one ``incr_kv`` on the
  window's counter (one atomic step on the server); the request is sent only if the new value is
  at most ``limit``, so no more than ``limit`` requests are ever granted in one window, whatever
  the number of processes (a request counts in the window it was granted in: one granted at a
  window's end may reach Salesforce in the next).  A refused attempt also counts (the counter
  passes ``limit``), which is harmless: only the first ``limit`` increments are granted.  A call
  that waits costs one more ``incr_kv`` per full window it passes over.  An increment that reaches the store after
  its window ended (a slow round trip, a server restart) counts again in the current window:
  the old window's counter may have expired and restarted, and would grant a request on top of
  the current window's limit.
- **Concurrent requests** (``max_concurrent``): that many lease slots, each an ``add_kv`` key
  with a ``lease_ttl``; a request holds one while it is in flight and deletes it afterwards.
  A crashed process's slot frees itself after ``lease_ttl``, so ``lease_ttl`` must be longer
  than your longest request (the client's read timeout).
- **When spent**: the call reserves its request in the first later window that has room and
  starts before ``wait`` runs out (one ``incr_kv`` on that window's counter), sleeps until that
  window starts and sends.  A reservation counts in its window like a request, so waiters are
  served in the order they were refused, ahead of callers that arrive later, and none is
  starved by newcomers.  With no such window the call raises
  :class:`~authkit.errors.RequestLimitError` (``status_code`` 429, ``error_code``
  ``"BUDGET_EXCEEDED"``, ``response`` ``None``) **before sending anything**, without sleeping.
  Waiters for a concurrency slot poll (with backoff up to 250 ms): they are not queued.
- **Fails closed**: if the store cannot be reached the call raises the storage's
  :class:`~authkit.errors.StorageUnavailableError` and nothing is sent.

Every attempt the client makes counts: the resend after a 401 and the resends of
``UNABLE_TO_LOCK_ROW``/``500`` are requests too.  The transport-level retries of the client's
own adapter (429/502/503/504 and connection failures, inside one ``session.send``) are not
counted again; Salesforce does not count a 429/503 against the allocation either.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from authkit.errors import RequestLimitError
from authkit.storage.base import AuthStorage

__all__ = ["RequestBudget"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)
#: How long a waiter for a concurrency slot sleeps at first, and at most (it doubles in between).
_SLOT_POLL = (0.005, 0.25)
#: How many times a call counts again after its increment outlived its window, before giving up.
_RECOUNTS = 3


class RequestBudget:
    """At most ``limit`` requests per ``window`` (and ``max_concurrent`` in flight) for a fleet.

    ``storage`` any :class:`~authkit.storage.AuthStorage` every process shares; ``name`` tells
    budgets in one store apart (one per org, say); ``window`` seconds (int/float) or
    ``timedelta``; ``wait`` the longest a call waits for room before it raises
    :class:`~authkit.errors.RequestLimitError` (0: never wait).  ``sleep`` exists for tests.

    ``budget.acquire()`` is the context manager :class:`SalesforceClient` wraps every send in;
    ``budget.used()`` the requests granted in the current window.
    """

    def __init__(
        self,
        storage: AuthStorage,
        *,
        limit: int,
        window: float | timedelta = 86400.0,
        max_concurrent: int | None = None,
        wait: float = 0.0,
        lease_ttl: float = 300.0,
        name: str = "salesforce",
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not isinstance(storage, AuthStorage):
            raise TypeError("storage must be an authkit AuthStorage")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError("limit must be an int")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        seconds = window.total_seconds() if isinstance(window, timedelta) else window
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError("window must be seconds (int/float) or a timedelta")
        if not math.isfinite(seconds) or seconds < 0.001:
            raise ValueError("window must be at least 1 ms")
        if max_concurrent is not None:
            if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
                raise TypeError("max_concurrent must be an int or None")
            if max_concurrent < 1:
                raise ValueError("max_concurrent must be at least 1")
        for label, value in (("wait", wait), ("lease_ttl", lease_ttl)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{label} must be seconds (int/float)")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{label} must be a finite number of seconds >= 0")
        if lease_ttl <= 0:
            raise ValueError("lease_ttl must be > 0")
        if not isinstance(name, str) or not name or len(name) > 100 or "\x00" in name:
            raise ValueError("name must be a non-empty str of at most 100 characters")
        self._storage = storage
        self._limit = limit
        self._window_us = max(1, round(seconds * 1_000_000))
        self._max_concurrent = max_concurrent
        self._wait = float(wait)
        self._lease_ttl = float(lease_ttl)
        self._key = f"authkit:budget:{name}:"
        self._sleep = sleep

    def __repr__(self) -> str:
        return (f"RequestBudget(limit={self._limit}, window={self._window_us / 1e6:g}s, "
                f"max_concurrent={self._max_concurrent}, wait={self._wait:g}s)")

    @property
    def limit(self) -> int:
        return self._limit

    def used(self) -> int:
        """Requests granted in the current window (by every process), at most ``limit``."""
        index, _ = self._window(self._storage.now())
        raw = self._storage.get_kv(self._window_key(index))
        return min(int(raw), self._limit) if raw is not None else 0

    @contextmanager
    def acquire(self) -> Iterator[datetime]:
        """Hold one request of the budget (and a concurrency slot) for the ``with`` body.

        Yields the start of the window the request counts in.  Raises
        :class:`~authkit.errors.RequestLimitError` when there is no room within ``wait``.
        """
        deadline = self._storage.now() + timedelta(seconds=self._wait)
        start = self._reserve(deadline)
        while True:  # sleep until the reserved window starts (a no-op for the current one)
            early = (start - self._storage.now()).total_seconds()
            if early <= 0:
                break
            self._sleep(early + 0.001)
        slot = self._take_slot(deadline)
        try:
            yield start
        finally:
            if slot is not None:
                self._release_slot(*slot)

    # -- internals -----------------------------------------------------------------

    def _reserve(self, deadline: datetime) -> datetime:
        """Count one request in the current window, or else the first later one with room that
        starts by ``deadline``; the start of that window.  Every attempt is one ``incr_kv``."""
        now = self._storage.now()
        index, left_us = self._window(now)
        recounts = 0
        while True:
            # The counter lives until its window is over (plus a window, for clock skew between hosts).
            ttl = (left_us + self._window_us) / 1_000_000
            granted = self._storage.incr_kv(self._window_key(index), 1, ttl=ttl) <= self._limit
            later = self._storage.now()
            if self._window(later)[0] > index:
                # The window ended while the increment was on its way: if the counter had expired
                # meanwhile, the increment restarted it and "granted" a request in a window that
                # is over, on top of the current one's limit.  Count again, from now.
                recounts += 1
                if recounts > _RECOUNTS:
                    raise self._error(f"the store answers slower than a window ({self._window_us / 1e6:g}s)")
                now = later
                index, left_us = self._window(now)
                continue
            if granted:
                return _EPOCH + index * self._window_us * _MICRO
            # Full: try the next window, if it starts before the wait is over.
            index += 1
            left_us += self._window_us
            if now + (left_us - self._window_us) * _MICRO > deadline:
                raise self._error(f"{self._limit} requests per {self._window_us / 1e6:g}s spent")

    def _window(self, now: datetime) -> tuple[int, int]:
        """The window's index and the microseconds left in it, in integers (no float drift)."""
        micros = (now - _EPOCH) // _MICRO
        index = micros // self._window_us
        return index, (index + 1) * self._window_us - micros

    def _window_key(self, index: int) -> str:
        return f"{self._key}w:{index}"

    def _take_slot(self, deadline: datetime) -> tuple[str, bytes] | None:
        """A concurrency slot's (key, owner), or ``None`` without ``max_concurrent``; waits until ``deadline``."""
        if self._max_concurrent is None:
            return None
        owner = uuid.uuid4().hex.encode()
        pause = _SLOT_POLL[0]
        while True:
            # Start at a random slot so that racers spread out instead of all fighting for slot 0.
            start = random.randrange(self._max_concurrent)
            for n in range(self._max_concurrent):
                key = f"{self._key}slot:{(start + n) % self._max_concurrent}"
                if self._storage.add_kv(key, owner, ttl=self._lease_ttl):
                    return key, owner
            left = (deadline - self._storage.now()).total_seconds()
            if left <= 0:
                raise self._error(f"{self._max_concurrent} concurrent requests in flight")
            self._sleep(min(pause, left))
            pause = min(pause * 2, _SLOT_POLL[1])

    def _release_slot(self, key: str, owner: bytes) -> None:
        # Delete only our own lease: if it outlived lease_ttl another request may hold the slot now.
        # (Read-then-delete is not atomic; the gap only matters to a request that overran lease_ttl.)
        if self._storage.get_kv(key) == owner:
            self._storage.delete_kv(key)

    def _error(self, what: str) -> RequestLimitError:
        return RequestLimitError(f"fleet request budget: {what}; nothing was sent",
                                 status_code=429, error_code="BUDGET_EXCEEDED")
