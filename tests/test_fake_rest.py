"""FakeRestApi on its own: ``handle()`` called directly, as FakeSalesforce calls it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from authkit.testing.fake_rest import FakeRestApi
from tests.threads import run_threads

V = "/services/data/v62.0"
INSTANCE = "http://127.0.0.1:1"


def call(api: FakeRestApi, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    parts = urlsplit(path)
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    status, headers, data = api.handle(method, parts.path, parse_qs(parts.query), payload, INSTANCE)
    assert isinstance(headers, dict)
    return status, json.loads(data) if data else None


def error_code(result: tuple[int, Any]) -> tuple[int, str]:
    status, body = result
    assert isinstance(body, list) and set(body[0]) >= {"message", "errorCode"}
    return status, body[0]["errorCode"]


@pytest.fixture
def api() -> FakeRestApi:
    return FakeRestApi(page_size=3)


def test_versions_and_resources(api: FakeRestApi) -> None:
    status, versions = call(api, "GET", "/services/data/")
    assert status == 200 and {"version": "62.0", "label": "Winter '25", "url": V} in versions
    status, resources = call(api, "GET", V + "/")
    assert status == 200 and resources["query"] == V + "/query"
    assert error_code(call(api, "GET", "/services/data/v99.0/limits")) == (404, "NOT_FOUND")
    assert error_code(call(api, "GET", V + "/nothing")) == (404, "NOT_FOUND")
    assert error_code(call(api, "PUT", V + "/limits")) == (405, "METHOD_NOT_ALLOWED")


def test_create_get_update_delete(api: FakeRestApi) -> None:
    status, created = call(api, "POST", V + "/sobjects/Account", {"Name": "Acme", "Industry": "Energy"})
    assert status == 201 and created["success"] is True and created["errors"] == []
    record_id = created["id"]
    assert len(record_id) == 18 and record_id.startswith("001")
    status, record = call(api, "GET", f"{V}/sobjects/Account/{record_id}?fields=Name,industry")
    assert status == 200
    assert record == {"attributes": {"type": "Account", "url": f"{V}/sobjects/Account/{record_id}"},
                      "Name": "Acme", "Industry": "Energy"}
    status, full = call(api, "GET", f"{V}/sobjects/account/{record_id[:15]}")  # names and 15-char ids work
    assert status == 200 and full["IsDeleted"] is False and full["CreatedDate"].endswith("+0000")
    assert call(api, "PATCH", f"{V}/sobjects/Account/{record_id}", {"Industry": "Retail"}) == (204, None)
    assert api.records("Account")[0]["Industry"] == "Retail"
    assert call(api, "DELETE", f"{V}/sobjects/Account/{record_id}") == (204, None)
    assert api.records("Account") == []
    assert api.records("Account", include_deleted=True)[0]["IsDeleted"] is True
    assert error_code(call(api, "GET", f"{V}/sobjects/Account/{record_id}")) == (404, "ENTITY_IS_DELETED")
    assert error_code(call(api, "GET", f"{V}/sobjects/Account/001000000000000AAA")) == (404, "NOT_FOUND")
    assert error_code(call(api, "GET", f"{V}/sobjects/Account/not-an-id")) == (404, "NOT_FOUND")
    assert error_code(call(api, "GET", f"{V}/sobjects/Nope/001000000000000AAA")) == (404, "NOT_FOUND")


def test_write_errors_are_salesforce_errors(api: FakeRestApi) -> None:
    url = V + "/sobjects/Account"
    status, body = call(api, "POST", url, {"Industry": "Energy"})
    assert status == 400 and body[0]["errorCode"] == "REQUIRED_FIELD_MISSING" and body[0]["fields"] == ["Name"]
    status, body = call(api, "POST", url, {"Name": "A", "Colour__c": "red"})
    assert status == 400 and body[0]["errorCode"] == "INVALID_FIELD" and body[0]["fields"] == ["Colour__c"]
    assert error_code(call(api, "POST", url, {"Name": "A", "Id": "001000000000000AAA"})) == (
        400, "INVALID_FIELD_FOR_INSERT_UPDATE")
    assert error_code(call(api, "POST", url, raw=b"{not json")) == (400, "JSON_PARSER_ERROR")
    assert error_code(call(api, "POST", url, [1, 2])) == (400, "JSON_PARSER_ERROR")
    api.insert("Account", {"Name": "A", "External_Id__c": "E1"})
    status, body = call(api, "POST", url, {"Name": "B", "External_Id__c": "E1"})
    assert status == 400 and body[0]["errorCode"] == "DUPLICATE_VALUE" and body[0]["fields"] == ["External_Id__c"]
    assert len(api.records("Account")) == 1


def test_upsert_by_external_id(api: FakeRestApi) -> None:
    url = V + "/sobjects/Account/External_Id__c/E-1"
    status, body = call(api, "PATCH", url, {"Name": "Created"})
    assert status == 201 and body["created"] is True
    status, again = call(api, "PATCH", url, {"Name": "Updated"})
    assert status == 200 and again == {"id": body["id"], "success": True, "errors": [], "created": False}
    assert [r["Name"] for r in api.records("Account")] == ["Updated"]
    status, record = call(api, "GET", url + "?fields=Name")
    assert status == 200 and record["Name"] == "Updated"
    assert error_code(call(api, "PATCH", url, {"External_Id__c": "E-1"})) == (400, "INVALID_FIELD")
    assert error_code(call(api, "PATCH", V + "/sobjects/Account/Name/x", {})) == (404, "NOT_FOUND")
    api.define_sobject("Thing__c", {"Code__c": "string"}, external_ids=["Code__c"])
    api.insert("Thing__c", {"Code__c": "dup"})
    # Two records with one external id (possible when the field was not unique before): 300 and the URLs.
    with api._mutex:
        record = next(iter(api._records["Thing__c"].values()))
        api._records["Thing__c"]["a0X000000000001AAA"] = {**record, "Id": "a0X000000000001AAA"}
    status, urls = call(api, "PATCH", V + "/sobjects/Thing__c/Code__c/dup", {})
    assert status == 300 and len(urls) == 2
    assert call(api, "DELETE", url) == (204, None)
    assert api.records("Account") == []


def test_describe(api: FakeRestApi) -> None:
    status, body = call(api, "GET", V + "/sobjects")
    assert status == 200 and "Account" in [s["name"] for s in body["sobjects"]]
    status, describe = call(api, "GET", V + "/sobjects/Contact/describe")
    fields = {f["name"]: f for f in describe["fields"]}
    assert status == 200 and describe["keyPrefix"] == "003"
    assert fields["LastName"]["nillable"] is False and fields["External_Id__c"]["externalId"] is True
    assert fields["Id"]["createable"] is False
    api.insert("Contact", {"LastName": "Doe"})
    status, info = call(api, "GET", V + "/sobjects/Contact")
    assert status == 200 and info["objectDescribe"]["name"] == "Contact" and len(info["recentItems"]) == 1


def test_insert_defines_open_types(api: FakeRestApi) -> None:
    record_id = api.insert("Widget__c", {"Size__c": 3})
    status, _ = call(api, "PATCH", f"{V}/sobjects/Widget__c/{record_id}", {"Colour__c": "red"})
    assert status == 204 and api.records("Widget__c")[0]["Colour__c"] == "red"
    with pytest.raises(ValueError, match="REQUIRED_FIELD_MISSING"):
        api.insert("Account", {"Industry": "x"})
    with pytest.raises(ValueError):
        api.define_sobject("Bad Name", ["x"])


def query(api: FakeRestApi, soql: str, resource: str = "query") -> tuple[int, Any]:
    return call(api, "GET", f"{V}/{resource}?" + "q=" + soql.replace(" ", "+").replace("%", "%25"))


def test_query_filters_order_limit(api: FakeRestApi) -> None:
    api.page_size = 100
    for name, employees in [("Acme", 10), ("Globex", 200), ("Initech", 50), ("Umbrella", None)]:
        api.insert("Account", {"Name": name, "NumberOfEmployees": employees})

    def names(soql: str) -> list[str]:
        status, body = query(api, soql)
        assert status == 200, body
        return [r["Name"] for r in body["records"]]

    assert names("SELECT Name FROM Account ORDER BY Name DESC") == ["Umbrella", "Initech", "Globex", "Acme"]
    assert names("SELECT Name FROM Account WHERE NumberOfEmployees > 20 ORDER BY Name") == ["Globex", "Initech"]
    assert names("SELECT Name FROM Account WHERE Name LIKE 'g%' OR Name = 'Acme' ORDER BY Name") == [
        "Acme", "Globex"]
    assert names("SELECT Name FROM Account WHERE Name IN ('Acme', 'Initech') ORDER BY Name") == ["Acme", "Initech"]
    assert names("SELECT Name FROM Account WHERE NumberOfEmployees = null") == ["Umbrella"]
    assert names("SELECT Name FROM Account WHERE NumberOfEmployees != null AND Name != 'Acme' ORDER BY "
                 "NumberOfEmployees") == ["Initech", "Globex"]
    assert names("SELECT Name FROM Account ORDER BY Name LIMIT 2 OFFSET 1") == ["Globex", "Initech"]
    status, body = query(api, "SELECT COUNT() FROM Account WHERE NumberOfEmployees >= 50")
    assert status == 200 and body == {"totalSize": 2, "done": True, "records": []}
    assert error_code(query(api, "SELECT FROM Account")) == (400, "MALFORMED_QUERY")
    assert error_code(query(api, "SELECT Name Account")) == (400, "MALFORMED_QUERY")
    assert error_code(query(api, "")) == (400, "MALFORMED_QUERY")
    assert error_code(query(api, "SELECT Name FROM Account WHERE")) == (400, "MALFORMED_QUERY")
    assert error_code(query(api, "SELECT Nope FROM Account")) == (400, "INVALID_FIELD")
    assert error_code(query(api, "SELECT Name FROM Account WHERE Nope = 1")) == (400, "INVALID_FIELD")
    assert error_code(query(api, "SELECT Id FROM Nope__c")) == (400, "INVALID_TYPE")


def test_query_pages_and_snapshot(api: FakeRestApi) -> None:
    ids = api.insert_many("Account", ({"Name": f"A{i:02d}"} for i in range(8)))
    status, page = query(api, "SELECT Id, Name FROM Account ORDER BY Name")
    assert status == 200 and page["totalSize"] == 8 and page["done"] is False and len(page["records"]) == 3
    # Changes after the query do not move the pages under the reader (a cursor is a snapshot).
    assert call(api, "PATCH", f"{V}/sobjects/Account/{ids[5]}", {"Name": "changed"})[0] == 204
    seen = [r["Name"] for r in page["records"]]
    while not page["done"]:
        assert page["nextRecordsUrl"].startswith(V + "/query/01g")
        status, page = call(api, "GET", page["nextRecordsUrl"])
        assert status == 200
        seen += [r["Name"] for r in page["records"]]
    assert seen == [f"A{i:02d}" for i in range(8)]
    assert api.open_cursors == 0  # the last page closes the locator
    assert error_code(call(api, "GET", V + "/query/01gNOPE-3")) == (400, "INVALID_QUERY_LOCATOR")


def test_query_all_includes_deleted(api: FakeRestApi) -> None:
    keep, gone = api.insert("Account", {"Name": "keep"}), api.insert("Account", {"Name": "gone"})
    assert call(api, "DELETE", f"{V}/sobjects/Account/{gone}")[0] == 204
    _, live = query(api, "SELECT Id FROM Account")
    _, everything = query(api, "SELECT Id, IsDeleted FROM Account ORDER BY Name", "queryAll")
    assert [r["Id"] for r in live["records"]] == [keep]
    assert [(r["Id"], r["IsDeleted"]) for r in everything["records"]] == [(gone, True), (keep, False)]


def test_composite_references_and_partial_success(api: FakeRestApi) -> None:
    status, body = call(api, "POST", V + "/composite", {"compositeRequest": [
        {"method": "POST", "url": V + "/sobjects/Account", "referenceId": "acc", "body": {"Name": "Acme"}},
        {"method": "POST", "url": V + "/sobjects/Contact", "referenceId": "con",
         "body": {"LastName": "Doe", "AccountId": "@{acc.id}"}},
        {"method": "GET", "url": V + "/sobjects/Account/@{acc.id}?fields=Name", "referenceId": "get"},
        {"method": "POST", "url": V + "/sobjects/Contact", "referenceId": "bad", "body": {"FirstName": "x"}},
        {"method": "GET", "url": V + "/sobjects/Account/@{bad.id}", "referenceId": "after"},
    ]})
    assert status == 200
    results = {r["referenceId"]: r for r in body["compositeResponse"]}
    assert [r["httpStatusCode"] for r in body["compositeResponse"]] == [201, 201, 200, 400, 400]
    assert results["get"]["body"]["Name"] == "Acme"
    assert results["bad"]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert results["after"]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    contact = api.records("Contact")[0]
    assert contact["AccountId"] == results["acc"]["body"]["id"]


def test_composite_all_or_none_rolls_back(api: FakeRestApi) -> None:
    existing = api.insert("Account", {"Name": "Before"})
    status, body = call(api, "POST", V + "/composite", {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": V + "/sobjects/Account", "referenceId": "a", "body": {"Name": "New"}},
        {"method": "PATCH", "url": f"{V}/sobjects/Account/{existing}", "referenceId": "b", "body": {"Name": "X"}},
        {"method": "DELETE", "url": f"{V}/sobjects/Account/{existing}", "referenceId": "c"},
        {"method": "POST", "url": V + "/sobjects/Account", "referenceId": "d", "body": {"Industry": "none"}},
        {"method": "POST", "url": V + "/sobjects/Account", "referenceId": "e", "body": {"Name": "never"}},
    ]})
    assert status == 200
    codes = [(r["httpStatusCode"], r["body"][0]["errorCode"]) for r in body["compositeResponse"]]
    assert codes == [(400, "PROCESSING_HALTED")] * 3 + [(400, "REQUIRED_FIELD_MISSING"), (400, "PROCESSING_HALTED")]
    assert [r["Name"] for r in api.records("Account")] == ["Before"]
    assert api.records("Account", include_deleted=True) == api.records("Account")


def test_composite_limits(api: FakeRestApi) -> None:
    sub = {"method": "GET", "url": V + "/limits", "referenceId": "x"}
    assert error_code(call(api, "POST", V + "/composite", {"compositeRequest": [sub] * 26})) == (
        400, "INVALID_BATCH_REQUEST")
    assert error_code(call(api, "POST", V + "/composite", {"nothing": 1})) == (400, "JSON_PARSER_ERROR")
    assert error_code(call(api, "GET", V + "/composite")) == (405, "METHOD_NOT_ALLOWED")


def test_limits_count_requests() -> None:
    api = FakeRestApi(api_limit=100)
    call(api, "GET", "/services/data/")
    status, body = call(api, "GET", V + "/limits")
    assert status == 200 and body["DailyApiRequests"] == {"Max": 100, "Remaining": 98}


def test_apex_routes() -> None:
    api = FakeRestApi()
    seen: list[bytes] = []

    def echo(method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        seen.append(body)
        return 200, {"method": method, "n": len(body), "q": query}

    api.add_apex_route("POST", "/echo", echo)
    status, _, data = api.handle("POST", "/services/apexrest/echo", {"a": ["1"]}, b"hello", INSTANCE)
    assert status == 200 and json.loads(data) == {"method": "POST", "n": 5, "q": {"a": ["1"]}} and seen == [b"hello"]
    status, _, data = api.handle("GET", "/services/apexrest/echo", {}, b"", INSTANCE)
    assert status == 404 and json.loads(data)[0]["errorCode"] == "NOT_FOUND"
    with pytest.raises(ValueError):
        api.add_apex_route("GET", "no-slash", echo)


def test_handle_is_thread_safe(api: FakeRestApi) -> None:
    def writer(n: int) -> None:
        for i in range(50):
            status, _ = call(api, "PATCH", f"{V}/sobjects/Account/External_Id__c/T{n}-{i}", {"Name": "x"})
            assert status == 201

    run_threads(writer, 8)
    records = api.records("Account")
    assert len(records) == 400 and len({r["Id"] for r in records}) == 400
    assert "Account" in repr(api)
