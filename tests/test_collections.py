"""sf.collections against FakeSalesforce: chunk boundaries, input order, all_or_none, error bodies."""

from __future__ import annotations

from typing import Any

import pytest

from authkit.errors import ApiError
from authkit.salesforce import SalesforceClient
from authkit.testing import FakeSalesforce
from authkit.testing.fake_rest import FakeRestApi

V = "/services/data/v62.0"


@pytest.fixture
def sf(sf: SalesforceClient) -> SalesforceClient:
    sf.get("limits")  # mint the token now, so request counts below are the calls' own
    return sf


def accounts(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"attributes": {"type": "Account"}, "Name": f"acct-{i:05d}"} for i in range(start, start + n)]


def calls(org: FakeSalesforce, path: str) -> int:
    return sum(1 for _, p, _ in org.requests_log if p == V + path)


@pytest.mark.parametrize(("n", "requests"), [(1, 1), (199, 1), (200, 1), (201, 2), (400, 2), (401, 3)])
def test_create_chunks_in_input_order(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient, n: int,
                                      requests: int) -> None:
    before = calls(org, "/composite/sobjects")
    results = sf.collections.create(iter(accounts(n)))  # any iterable, read a chunk at a time
    assert calls(org, "/composite/sobjects") - before == requests
    assert len(results) == n and all(r["success"] and r["errors"] == [] for r in results)
    by_id = {r["Id"]: r["Name"] for r in rest.records("Account")}
    assert [by_id[r["id"]] for r in results] == [f"acct-{i:05d}" for i in range(n)]


def test_update_upsert_delete_round_trip(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    ids = [r["id"] for r in sf.collections.create(accounts(201))]
    results = sf.collections.update([{"attributes": {"type": "Account"}, "Id": i, "Industry": "Energy"} for i in ids])
    assert [r["id"] for r in results] == ids and all(r["success"] for r in results)
    assert {r["Industry"] for r in rest.records("Account")} == {"Energy"}

    rows = [{"External_Id__c": f"X-{i}", "Name": f"x{i}"} for i in range(3)]
    first = sf.collections.upsert("Account", "External_Id__c", rows)
    assert [r["created"] for r in first] == [True, True, True]
    again = sf.collections.upsert("Account", "External_Id__c", [{**rows[1], "Name": "renamed"}, rows[0]])
    assert [r["created"] for r in again] == [False, False]
    assert [r["id"] for r in again] == [first[1]["id"], first[0]["id"]]

    deleted = sf.collections.delete([*ids, first[0]["id"]])
    assert [r["id"] for r in deleted] == [*ids, first[0]["id"]] and all(r["success"] for r in deleted)
    assert len(rest.records("Account")) == 2


def test_partial_failure_keeps_order_and_error_bodies(rest: FakeRestApi, sf: SalesforceClient) -> None:
    records = [*accounts(2), {"attributes": {"type": "Account"}, "Industry": "no name"}, *accounts(1, start=2)]
    results = sf.collections.create(records)
    assert [r["success"] for r in results] == [True, True, False, True]
    assert results[2]["id"] is None
    assert results[2]["errors"] == [{"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are "
                                     "missing: [Name]", "fields": ["Name"]}]
    assert len(rest.records("Account")) == 3

    gone = rest.insert("Account", {"Name": "gone"})
    sf.collections.delete([gone])
    again = sf.collections.delete([gone, results[0]["id"]])
    assert again[0] == {"id": gone, "success": False,
                        "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}]}
    assert again[1]["success"]


def test_all_or_none_rolls_back_within_a_call(rest: FakeRestApi, sf: SalesforceClient) -> None:
    records = [*accounts(2), {"attributes": {"type": "Account"}, "Industry": "no name"}]
    results = sf.collections.create(records, all_or_none=True)
    assert [r["success"] for r in results] == [False, False, False]
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert rest.records("Account") == []
    assert all(r["success"] for r in sf.collections.create(accounts(200), all_or_none=True))


@pytest.mark.parametrize("call", ["create", "update", "delete", "upsert"])
def test_all_or_none_across_chunks_is_refused_before_sending(org: FakeSalesforce, rest: FakeRestApi,
                                                              sf: SalesforceClient, call: str) -> None:
    before = len(org.requests_log)
    ids = [f"001{i:012d}AAA" for i in range(201)]
    with pytest.raises(ValueError, match="all_or_none"):
        if call == "create":
            sf.collections.create(accounts(201), all_or_none=True)
        elif call == "update":
            sf.collections.update([{"attributes": {"type": "Account"}, "Id": i} for i in ids], all_or_none=True)
        elif call == "delete":
            sf.collections.delete(ids, all_or_none=True)
        else:
            sf.collections.upsert("Account", "External_Id__c", [{"External_Id__c": str(i)} for i in range(201)],
                                  all_or_none=True)
    assert len(org.requests_log) == before


@pytest.mark.parametrize(("n", "requests"), [(1999, 1), (2000, 1), (2001, 2)])
def test_get_chunks_of_2000_in_input_order_with_none(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient,
                                                     n: int, requests: int) -> None:
    ids = rest.insert_many("Account", [{"Name": f"g{i}"} for i in range(5)])
    missing = "001000000000000AAA"
    wanted = [ids[i % 5] if i % 7 else missing for i in range(n)]
    wanted.reverse()
    before = calls(org, "/composite/sobjects/Account")
    found = sf.collections.get("Account", wanted, ["Id", "Name"])
    assert calls(org, "/composite/sobjects/Account") - before == requests
    assert len(found) == n
    for record_id, record in zip(wanted, found, strict=True):
        if record_id == missing:
            assert record is None
        else:
            assert record is not None and record["Id"] == record_id and "Name" in record


def test_fake_refuses_over_the_limits(rest: FakeRestApi, sf: SalesforceClient) -> None:
    with pytest.raises(ApiError) as info:
        sf.post("composite/sobjects", json={"records": accounts(201)})
    assert info.value.status_code == 400 and info.value.error_code == "EXCEEDED_ID_LIMIT"
    with pytest.raises(ApiError) as info:
        sf.post("composite/sobjects/Account", json={"ids": ["001000000000000AAA"] * 2001, "fields": ["Name"]})
    assert info.value.error_code == "EXCEEDED_ID_LIMIT"
    answer = sf.post("composite/sobjects", json={"records": [{"Name": "untyped"}]})
    assert answer == [{"success": False, "errors": [{"statusCode": "INVALID_TYPE",
                                                     "message": "Must send a concrete entity type.", "fields": []}]}]
    with pytest.raises(ApiError) as info:
        sf.patch("composite/sobjects/Account/Name", json={"records": []})
    assert info.value.error_code == "INVALID_FIELD"


def test_bad_arguments(sf: SalesforceClient) -> None:
    with pytest.raises(ValueError, match="attributes"):
        sf.collections.create([{"Name": "no type"}])
    with pytest.raises(ValueError, match="Id"):
        sf.collections.create([{"attributes": {"type": "Account"}, "Id": "001000000000000AAA"}])
    with pytest.raises(TypeError):
        sf.collections.update([{"attributes": {"type": "Account"}, "Name": "no id"}])
    with pytest.raises(ValueError):
        sf.collections.delete(["not an id"])
    with pytest.raises(TypeError):
        sf.collections.delete("001000000000000AAA")
    with pytest.raises(TypeError):
        sf.collections.create({"attributes": {"type": "Account"}, "Name": "one record"})
    with pytest.raises(ValueError):
        sf.collections.get("Account", ["001000000000000AAA"], [])
    with pytest.raises(ValueError, match="External_Id__c"):
        sf.collections.upsert("Account", "External_Id__c", [{"Name": "no key"}])
    with pytest.raises(ValueError):
        sf.collections.create([{"attributes": {"type": "Account"}, "Name; DROP": "x"}])
    assert sf.collections.create([]) == []


ID = "001000000000000AAA"


@pytest.mark.parametrize(("call", "records", "error"), [
    # A trailing newline passed the old checks ("$" matches before one).
    ("delete", [ID, ID + "\n"], ValueError),
    ("delete", [ID, ID[:15] + "\n"], ValueError),
    ("delete", [ID, 1], TypeError),
    ("update", [{"attributes": {"type": "Account"}, "Id": ID + "\n"}], ValueError),
    ("create", [{"attributes": {"type": "Account\n"}, "Name": "x"}], ValueError),
    ("create", [{"attributes": {"type": "Account"}, "Name\n": "x"}], ValueError),
    # A field named after a type checked before: names and types are kept apart.
    ("create", [{"attributes": {"type": "Account"}, ".Account": "x"}], ValueError),
    ("create", [{"attributes": {"type": "Account"}, "Name": "x"}, {"attributes": {"type": ["Account"]}}], ValueError),
    ("create", [{"attributes": {"type": "Account"}, "Name": "x"}, {"attributes": "Account"}], ValueError),
    ("create", [{"attributes": {"type": "Account"}, "Name": "x"}, ["Name", "x"]], TypeError),
])
def test_a_bad_record_anywhere_in_a_chunk_sends_nothing(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient,
                                                        call: str, records: list[Any], error: type[Exception]) -> None:
    good: list[Any] = [ID] * 150 if call == "delete" else [
        {"attributes": {"type": "Account"}, "Name": f"n{i}", **({"Id": ID} if call == "update" else {})}
        for i in range(150)]
    before = len(org.requests_log)
    with pytest.raises(error):
        getattr(sf.collections, call)([*good, *records, *good])  # checked in the first request's chunk
    assert len(org.requests_log) == before


def test_a_bad_record_in_a_later_chunk_stops_before_its_request(org: FakeSalesforce, rest: FakeRestApi,
                                                                 sf: SalesforceClient) -> None:
    records = [*accounts(250), {"attributes": {"type": "Account"}, "Bad Name": "x"}]
    with pytest.raises(ValueError, match="Bad Name"):
        sf.collections.create(records)
    assert len(rest.records("Account")) == 200  # the first chunk was applied, as documented


def test_chunks_mixing_plain_dicts_and_other_mappings(rest: FakeRestApi, sf: SalesforceClient) -> None:
    from collections import OrderedDict
    from types import MappingProxyType

    records: list[Any] = accounts(450)
    records[10] = OrderedDict(records[10])
    records[220] = MappingProxyType({"attributes": MappingProxyType({"type": "Account"}), "Name": "proxied"})
    records[300] = {"attributes": {"type": "Contact"}, "LastName": "new type and field in a later chunk"}
    results = sf.collections.create(records)
    assert len(results) == 450 and all(r["success"] for r in results)
    assert len(rest.records("Account")) == 449 and [c["LastName"] for c in rest.records("Contact")] == [
        "new type and field in a later chunk"]
    ids = [r["id"] for r in results]
    updated = sf.collections.update([{"attributes": {"type": "Contact" if n == 300 else "Account"}, "Id": i}
                                     for n, i in enumerate(ids)])
    assert all(r["success"] for r in updated)


def test_environment_is_read_once_per_call_and_still_honoured(org: FakeSalesforce, rest: FakeRestApi,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    from authkit.errors import SalesforceConnectionError

    class CountingSession(requests.Session):
        reads = 0

        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            CountingSession.reads += 1
            return super().merge_environment_settings(*args, **kwargs)

    session = CountingSession()
    with SalesforceClient(org.jwt_auth(), session=session) as client:
        client.get("limits")
        CountingSession.reads = 0
        ids = [r["id"] for r in client.collections.create(accounts(401))]
        assert CountingSession.reads == 1  # three requests, one look at the environment
        client.collections.delete(ids)
        assert CountingSession.reads == 2 and rest.records("Account") == []
        # The environment still counts: a proxy that is not there fails the next call.
        from tests.ports import free_port

        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # claimed, nothing listens
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.setenv("no_proxy", "")
        with pytest.raises(SalesforceConnectionError):
            client.collections.create(accounts(1))


def test_records_are_not_changed_and_any_mapping_works(rest: FakeRestApi, sf: SalesforceClient) -> None:
    import copy
    from types import MappingProxyType

    records = accounts(3)
    before = copy.deepcopy(records)
    sf.collections.create(records)
    assert records == before
    frozen = MappingProxyType({"attributes": MappingProxyType({"type": "Account"}), "Name": "read-only"})
    assert sf.collections.create([frozen])[0]["success"]
    upserts = [{"External_Id__c": "K-1", "Name": "k"}]
    sf.collections.upsert("Account", "External_Id__c", upserts)
    assert upserts == [{"External_Id__c": "K-1", "Name": "k"}]  # the type was added to a copy
    assert sorted(r["Name"] for r in rest.records("Account")) == ["acct-00000", "acct-00001", "acct-00002", "k",
                                                                   "read-only"]


def test_threads_share_one_client(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    from tests.threads import run_threads

    results: dict[int, list[dict[str, Any]]] = {}

    def worker(n: int) -> None:
        created = sf.collections.create(accounts(250, start=n * 1000))
        assert [r["success"] for r in created] == [True] * 250
        found = sf.collections.get("Account", [r["id"] for r in created], ["Id", "Name"])
        assert [f["Name"] for f in found if f] == [f"acct-{i:05d}" for i in range(n * 1000, n * 1000 + 250)]
        results[n] = created

    org.expire_sessions()  # every thread meets the 401 on its first request: one re-login for all
    run_threads(worker, 6)
    assert len(rest.records("Account")) == 1500
    assert sorted(results) == list(range(6))
