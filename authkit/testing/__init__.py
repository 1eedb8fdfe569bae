"""Test helpers: :class:`FakeSalesforce`, a local org, and the ``fake_salesforce`` pytest fixture.

>>> from authkit.testing import FakeSalesforce
>>> with FakeSalesforce() as org:
...     token = org.jwt_auth().access_token()
"""

from __future__ import annotations

from authkit.testing.fake_salesforce import ConnectedApp, FakeSalesforce, FakeUser

__all__ = ["FakeSalesforce", "FakeUser", "ConnectedApp"]
