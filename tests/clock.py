"""A clock tests can move, so expiry is tested without sleeping."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone


class FakeClock:
    """Real time plus an offset that only grows; ``advance()`` moves it forward.

    It follows real time (rather than standing still) because Redis expires
    keys by its own clock: a storage's clock must never run behind the server.
    """

    def __init__(self) -> None:
        self._offset = timedelta()
        self._mutex = threading.Lock()

    def __call__(self) -> datetime:
        with self._mutex:
            return datetime.now(timezone.utc) + self._offset

    def advance(self, seconds: float) -> None:
        with self._mutex:
            self._offset += timedelta(seconds=seconds)
