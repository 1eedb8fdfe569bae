"""Test helpers: :class:`FakeSalesforce`, a local org; :class:`MovableClock`, a clock tests move;
and the ``fake_salesforce`` pytest fixture.

>>> from authkit.testing import FakeSalesforce, MovableClock
>>> clock = MovableClock()
>>> with FakeSalesforce(clock=clock) as org:
...     token = org.jwt_auth().access_token()
...     org.inject_error(503, "SERVER_UNAVAILABLE", count=2)   # the next two REST calls fail
...     org.clear_injected_errors()                             # ...or not, after all
...     clock.advance(3600)                                     # sessions idle for an hour expire
"""

from __future__ import annotations

from authkit.testing.clock import MovableClock
from authkit.testing.fake_salesforce import ConnectedApp, FakeSalesforce, FakeUser

__all__ = ["FakeSalesforce", "FakeUser", "ConnectedApp", "MovableClock"]
