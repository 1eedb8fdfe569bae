"""A clock tests can move, so expiry is tested without sleeping.

>>> from authkit.testing import MovableClock
>>> clock = MovableClock()
>>> storage = open_storage("sqlite:///test.db", clock=clock)
>>> storage.store_session("s1", SessionData("s1", "u1", expires_at=clock() + timedelta(minutes=5)))
>>> clock.advance(timedelta(minutes=6))
>>> storage.get_session("s1") is None
True

Every storage, ``FakeSalesforce`` and the Salesforce flows take a ``clock=``:
give them the same one and move it.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta, timezone

__all__ = ["MovableClock"]


class MovableClock:
    """Real time plus an offset that only grows; :meth:`advance` moves it forward.

    It follows real time (rather than standing still) because servers such as
    Redis expire keys by their own clocks: a storage's clock must never run
    behind the server's, so this one never goes back.  Thread-safe; call it
    to read the time (aware UTC), as every ``clock=`` option expects.
    """

    def __init__(self) -> None:
        self._offset = timedelta()
        self._mutex = threading.Lock()

    def __call__(self) -> datetime:
        with self._mutex:
            return datetime.now(timezone.utc) + self._offset

    def __repr__(self) -> str:
        return f"MovableClock(offset={self._offset.total_seconds():g}s)"

    def advance(self, delta: float | timedelta) -> None:
        """Move the clock forward by ``delta`` (seconds, or a ``timedelta``); never backwards."""
        if isinstance(delta, bool) or not isinstance(delta, (int, float, timedelta)):
            raise TypeError("delta must be seconds (int or float) or a timedelta")
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if isinstance(delta, float) and not math.isfinite(delta):
            raise ValueError("delta must be finite")
        if step < timedelta():
            raise ValueError("a MovableClock never goes back: delta must be >= 0")
        with self._mutex:
            self._offset += step

    @property
    def offset(self) -> timedelta:
        """How far ahead of real time the clock is."""
        with self._mutex:
            return self._offset
