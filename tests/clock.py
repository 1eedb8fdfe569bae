"""A clock tests can move: the one users get, :class:`authkit.testing.MovableClock`."""

from __future__ import annotations

from authkit.testing import MovableClock as FakeClock

__all__ = ["FakeClock"]
