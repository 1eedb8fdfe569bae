"""The fake org the SalesforceClient tests share (a pytest plugin, loaded by ``conftest.py``).

One running :class:`~authkit.testing.FakeSalesforce` per test module (``org``), a fresh, empty
data API and Bulk API on it for each test (``rest``, ``org.bulk``), and a client on them (``sf``)::

    def test_query(rest: FakeRestApi, sf: SalesforceClient) -> None:
        rest.insert("Account", {"Name": "Acme"})
        assert [r["Name"] for r in sf.query("SELECT Name FROM Account")] == ["Acme"]

A module that wants small query pages overrides ``page_size``; one that counts requests can
override ``sf`` to mint the token first (``def sf(sf)``: ``sf.get("limits")``, return it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from authkit.salesforce import JwtAuth, SalesforceClient
from authkit.testing import FakeSalesforce
from authkit.testing.fake_bulk import FakeBulkApi
from authkit.testing.fake_rest import FakeRestApi


@pytest.fixture(scope="module")
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as org:
        yield org


@pytest.fixture
def page_size() -> int:
    """Records per query page of ``rest`` (Salesforce's default); override it to exercise pagination."""
    return 2000


@pytest.fixture
def rest(org: FakeSalesforce, page_size: int) -> FakeRestApi:
    """A fresh, empty data API and Bulk API for each test (the org and its JWT app are shared by the module),
    with no injected error left over from the previous test."""
    org.rest = FakeRestApi(page_size=page_size)
    org.bulk = FakeBulkApi(org.rest)
    org.clear_injected_errors()
    return org.rest


@pytest.fixture
def auth(org: FakeSalesforce, rest: FakeRestApi) -> JwtAuth:
    return org.jwt_auth()


@pytest.fixture
def sf(auth: JwtAuth) -> Iterator[SalesforceClient]:
    """A client on ``rest``; ``backoff_factor=0``: retries never sleep."""
    with SalesforceClient(auth, backoff_factor=0) as client:
        yield client
