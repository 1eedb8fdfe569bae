"""The ``fake_salesforce`` pytest fixture, registered through the ``pytest11`` entry point.

After ``pip install authkit-sf`` every test can ask for it::

    def test_sync(fake_salesforce):
        auth = fake_salesforce.jwt_auth()
        fake_salesforce.rest.insert("Account", {"Name": "Acme"})
        assert my_sync(auth) == 1          # your code, talking to a real local HTTP org
        assert fake_salesforce.token_requests == 1
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from authkit.testing.fake_salesforce import FakeSalesforce

__all__ = ["fake_salesforce"]


@pytest.fixture
def fake_salesforce() -> Iterator[FakeSalesforce]:
    """A running :class:`~authkit.testing.FakeSalesforce`, fresh for each test, stopped afterwards."""
    with FakeSalesforce() as org:
        yield org
