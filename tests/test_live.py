"""The opt-in live check: every REST call of the client against a real org, cleaning up what it made.

Run it with ``pytest -m live`` and credentials in the environment (a developer org, never production):

- ``SF_INSTANCE_URL`` and ``SF_ACCESS_TOKEN`` (a session id, e.g. from ``sf org display``), or
- ``SF_CLIENT_ID``, ``SF_USERNAME``, ``SF_PRIVATE_KEY`` (a PEM path) and optionally ``SF_LOGIN_URL``
  for the JWT bearer flow;
- optionally ``SF_API_VERSION`` (default 62.0) and ``SF_APEX_PATH`` (a GET Apex REST resource to call).

Without ``-m live``, or without credentials, every test here is skipped.  The records are
named ``authkit-live-<random>`` and deleted at the end even when a test fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from authkit.errors import ResourceNotFoundError
from authkit.salesforce import AuthSession, JwtAuth, SalesforceClient, StaticTokenAuth, format_soql, format_sosl

pytestmark = pytest.mark.live


def _auth() -> AuthSession | None:
    env = os.environ
    if env.get("SF_INSTANCE_URL") and env.get("SF_ACCESS_TOKEN"):
        return StaticTokenAuth(env["SF_ACCESS_TOKEN"], env["SF_INSTANCE_URL"])
    if env.get("SF_CLIENT_ID") and env.get("SF_USERNAME") and env.get("SF_PRIVATE_KEY"):
        return JwtAuth(env["SF_CLIENT_ID"], env["SF_USERNAME"], env["SF_PRIVATE_KEY"],
                       login_url=env.get("SF_LOGIN_URL", "https://login.salesforce.com"))
    return None


@pytest.fixture(scope="module")
def sf(request: pytest.FixtureRequest) -> Iterator[SalesforceClient]:
    if "live" not in (request.config.getoption("-m") or ""):
        pytest.skip("the live check runs only with `pytest -m live`")
    auth = _auth()
    if auth is None:
        pytest.skip("no SF_* credentials: set SF_INSTANCE_URL + SF_ACCESS_TOKEN, or SF_CLIENT_ID + SF_USERNAME "
                    "+ SF_PRIVATE_KEY")
    with SalesforceClient(auth, api_version=os.environ.get("SF_API_VERSION", "62.0")) as client:
        yield client


@pytest.fixture(scope="module")
def tag() -> str:
    return f"authkit-live-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def made(sf: SalesforceClient) -> Iterator[list[str]]:
    """Ids of everything the live check creates; deleted at the end, whatever happened."""
    ids: list[str] = []
    yield ids
    if ids:
        sf.collections.delete(list(dict.fromkeys(ids)))


def test_query_count_and_format_soql(sf: SalesforceClient, tag: str, made: list[str]) -> None:
    name = f"{tag} O'Brien \\ 50%_"
    made.append(sf.sobject("Account").create({"Name": name})["id"])
    soql = format_soql("SELECT Id, Name FROM Account WHERE Name = {}", name)
    assert [r["Name"] for r in sf.query(soql)] == [name]
    like = format_soql("SELECT Id FROM Account WHERE Name LIKE {:like}", name)
    assert sf.query(like).total_size == 1
    assert sf.query(format_soql("SELECT COUNT() FROM Account WHERE Name = {}", name)).total_size == 1
    assert sf.query_all(format_soql("SELECT COUNT() FROM Account WHERE Name = {}", name)).total_size == 1
    # A datetime with milliseconds, a date, a list for IN, None and a bool: each quoted as SOQL reads it.
    soon = datetime.now(timezone.utc).replace(microsecond=123456) + timedelta(days=1)
    soql = format_soql("SELECT COUNT() FROM Account WHERE Name IN {names} AND CreatedDate < {soon} AND "
                       "CreatedDate > {day} AND Industry = {none} AND IsDeleted = {no}", names=[name, "x'y"],
                       soon=soon, day=(soon - timedelta(days=3)).date(), none=None, no=False)
    assert sf.query(soql).total_size == 1


def test_collections(sf: SalesforceClient, tag: str, made: list[str]) -> None:
    records = [{"attributes": {"type": "Account"}, "Name": f"{tag} c{i}"} for i in range(205)]
    results = sf.collections.create(records)
    ids = [r["id"] for r in results]
    made.extend(i for i in ids if i)
    assert all(r["success"] for r in results)
    updated = sf.collections.update({"attributes": {"type": "Account"}, "Id": i, "Description": "live"} for i in ids)
    assert all(r["success"] for r in updated)
    missing = ids[0][:3] + "000000000000AAA"
    found = sf.collections.get("Account", [ids[1], missing, ids[0]], ["Id", "Name"])
    assert found[0] is not None and found[0]["Id"] == ids[1] and found[1] is None
    failed = sf.collections.create([{"attributes": {"type": "Account"}, "Description": "no name"}])
    assert failed[0]["success"] is False and failed[0]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    deleted = sf.collections.delete(ids[:3])
    assert [r["id"] for r in deleted] == ids[:3] and all(r["success"] for r in deleted)


def test_search(sf: SalesforceClient, tag: str) -> None:
    # Search indexes new records asynchronously: the shapes are checked, not the hits.
    assert isinstance(sf.search(format_sosl("FIND {{{}}} RETURNING Account(Id, Name)", tag)), list)
    found = sf.parameterized_search(tag, sobjects=[{"name": "Account", "fields": ["Id", "Name"]}], overall_limit=5)
    assert isinstance(found, list)


def test_describes(sf: SalesforceClient) -> None:
    everything = sf.describe()
    assert everything is not None and "Account" in {s["name"] for s in everything["sobjects"]}
    later = datetime.now(timezone.utc) + timedelta(days=1)
    assert sf.describe(if_modified_since=later) is None
    assert sf.sobject("Account").describe(if_modified_since=later) is None
    assert sf.sobject("Account").describe(if_modified_since=datetime(2000, 1, 1, tzinfo=timezone.utc)) is not None


def test_sobject_extras(sf: SalesforceClient, tag: str, made: list[str]) -> None:
    accounts = sf.sobject("Account")
    record_id = accounts.create({"Name": f"{tag} extras"})["id"]
    made.append(record_id)
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    end = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert isinstance(accounts.updated(start, end)["ids"], list)
    assert isinstance(accounts.deleted(start, end)["deletedRecords"], list)
    described = accounts.describe()
    assert described is not None
    external = [f["name"] for f in described["fields"] if f.get("externalId")]
    if external:
        accounts.update(record_id, {external[0]: tag})
        assert accounts.get_by_external_id(external[0], tag, fields=["Id"])["Id"][:15] == record_id[:15]
    with pytest.raises(ResourceNotFoundError):
        accounts.get_by_external_id("Id", record_id[:3] + "000000000000AAA")


def test_blob_round_trip(sf: SalesforceClient, tag: str) -> None:
    data = secrets.token_bytes(200_000)
    created = sf.sobject("ContentVersion").create_with_blob(
        {"Title": tag, "PathOnClient": f"{tag}.bin"}, "VersionData", data, f"{tag}.bin")
    version = sf.sobject("ContentVersion").get(created["id"], fields=["ContentDocumentId", "VersionData"])
    try:
        assert sf.download(version["VersionData"]) == data
    finally:
        sf.sobject("ContentDocument").delete(version["ContentDocumentId"])


def test_composites(sf: SalesforceClient, tag: str, made: list[str]) -> None:
    answer = sf.composite([{"method": "POST", "url": "sobjects/Account", "referenceId": "a",
                            "body": {"Name": f"{tag} composite"}}], collate_subrequests=True)
    assert answer[0]["httpStatusCode"] == 201
    made.append(answer[0]["body"]["id"])
    batch = sf.composite_batch([{"method": "GET", "url": f"sobjects/Account/{answer[0]['body']['id']}"},
                                {"method": "GET", "url": "limits"}])
    assert [r["statusCode"] for r in batch] == [200, 200]
    tree = sf.composite_tree("Account", [{"attributes": {"type": "Account", "referenceId": "t1"},
                                          "Name": f"{tag} tree",
                                          "Contacts": {"records": [{"attributes": {"type": "Contact",
                                                                                   "referenceId": "t1c"},
                                                                    "LastName": tag}]}}])
    made.extend(r["id"] for r in reversed(tree))  # the contact first, then its account
    assert {r["referenceId"] for r in tree} == {"t1", "t1c"}
    graphs = sf.composite_graph([{"graphId": "g1", "compositeRequest": [
        {"method": "POST", "url": "sobjects/Account", "referenceId": "ga", "body": {"Name": f"{tag} graph"}}]}])
    assert graphs[0]["isSuccessful"]
    made.append(graphs[0]["graphResponse"]["compositeResponse"][0]["body"]["id"])


def test_tooling_and_apex(sf: SalesforceClient) -> None:
    assert sf.tooling.query("SELECT COUNT() FROM ApexClass").total_size >= 0
    # The Tooling guide lists no queryAll resource: this line is how we learn whether orgs serve it.
    assert sf.tooling.query_all("SELECT COUNT() FROM ApexClass").total_size >= 0
    result = sf.tooling.execute_anonymous("System.debug('authkit live check');")
    assert result["compiled"] and result["success"]
    broken = sf.tooling.execute_anonymous("System.debug(")
    assert not broken["compiled"] and broken["compileProblem"]
    path = os.environ.get("SF_APEX_PATH")
    if path:
        assert sf.apex("GET", path) is not None
