"""SalesforceClient against a real local org (FakeSalesforce): every request goes over HTTP."""

from __future__ import annotations

import io
import itertools
import logging
import socket
import threading
import time
import tracemalloc
from typing import Any

import pytest
import requests

from authkit.errors import (
    ApiError,
    AuthKitError,
    DuplicateValueError,
    InsufficientAccessError,
    InvalidFieldError,
    MalformedQueryError,
    RequestLimitError,
    ResourceNotFoundError,
    SalesforceConnectionError,
    SessionExpiredError,
)
from authkit.salesforce import AuthSession, JwtAuth, SalesforceClient, StaticTokenAuth
from authkit.salesforce._responses import parse_usage as _parse_usage
from authkit.salesforce.client import ApiUsage, retrying_adapter
from authkit.testing import FakeSalesforce
from authkit.testing.fake_rest import FakeRestApi
from tests.streams import Pipe

V = "/services/data/v62.0"
FAST = {"backoff_factor": 0.01}  # tests never sleep on backoff


@pytest.fixture
def page_size() -> int:
    return 5  # small pages exercise pagination


class Echo:
    """An Apex REST route that records every body it receives."""

    def __init__(self, rest: FakeRestApi) -> None:
        self.bodies: list[bytes] = []
        rest.add_apex_route("POST", "/echo", self)

    def __call__(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        self.bodies.append(body)
        return 200, {"length": len(body)}


# -- paths and the host check ---------------------------------------------------------------


def test_path_building(org: FakeSalesforce, sf: SalesforceClient) -> None:
    base = org.instance_url
    assert sf.request("GET", "limits").url == f"{base}{V}/limits"
    assert sf.request("GET", "/services/data/").url == f"{base}/services/data/"
    assert sf.request("GET", f"{base}{V}/limits").url == f"{base}{V}/limits"
    assert sf.request("get", "sobjects", params={"a": "b"}).url == f"{base}{V}/sobjects?a=b"
    with SalesforceClient(sf.auth, api_version="v61.0") as older:
        assert older.api_version == "61.0"
        assert older.request("GET", "limits").url == f"{base}/services/data/v61.0/limits"
    for bad in ("62", "latest", "62.0.1", "", "62.0\n"):
        with pytest.raises(ValueError):
            SalesforceClient(sf.auth, api_version=bad)
    with pytest.raises(TypeError):
        SalesforceClient(sf.auth, api_version=62.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SalesforceClient("token")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sf.get("")
    with pytest.raises(ValueError):
        sf.request("BREW", "limits")
    with pytest.raises(TypeError):
        sf.request("GET", "limits", auth=("u", "p"))


def test_other_hosts_get_nothing(org: FakeSalesforce, sf: SalesforceClient) -> None:
    sf.get("limits")
    before = len(org.requests_log)
    port = org.port
    for url in (
        f"http://localhost:{port}{V}/limits",          # same machine, different host name
        f"http://127.0.0.1:{port + 1}{V}/limits",      # different port
        f"https://127.0.0.1:{port}{V}/limits",         # different scheme
        f"http://evil.example{V}/limits",
        f"http://user@127.0.0.1:{port}{V}/limits",     # credentials in the URL
        f"ftp://127.0.0.1:{port}/x",
    ):
        with pytest.raises(ValueError, match="only URLs on the instance"):
            sf.get(url)
    assert len(org.requests_log) == before
    # The default port counts as the port: https://host == https://host:443.
    static = StaticTokenAuth("00Dx!token-value", "https://acme.my.salesforce.com")
    client = SalesforceClient(static)
    assert client._url("https://ACME.my.salesforce.com:443/services/data/") == (
        "https://ACME.my.salesforce.com:443/services/data/")
    with pytest.raises(ValueError):
        client._url("https://acme.my.salesforce.com.evil.example/services/data/")


# -- 401: invalidate, retry once ---------------------------------------------------------------


def test_expired_session_is_refreshed_and_retried_once(org: FakeSalesforce, sf: SalesforceClient) -> None:
    assert sf.limits()["DailyApiRequests"]["Max"] == 15000
    tokens = org.token_requests
    org.expire_sessions()
    assert "DailyApiRequests" in sf.limits()
    assert org.token_requests == tokens + 1
    assert [status for _, path, status in org.requests_log[-3:] if path.endswith("/limits")] == [401, 200]


def test_static_token_is_not_retried(org: FakeSalesforce, auth: JwtAuth) -> None:
    static = StaticTokenAuth(auth.access_token(), org.instance_url)
    client = SalesforceClient(static)
    assert client.versions()
    org.expire_sessions()
    before = len(org.requests_log)
    with pytest.raises(SessionExpiredError, match="StaticTokenAuth cannot refresh") as info:
        client.get("limits")
    assert len(org.requests_log) == before + 1  # one request, no retry with the same token
    assert static.access_token() not in str(info.value)


def test_second_401_is_session_expired(org: FakeSalesforce, sf: SalesforceClient) -> None:
    sf.get("limits")
    tokens = org.token_requests
    org.inject_error(401, "INVALID_SESSION_ID", "Session expired or invalid", count=2)
    with pytest.raises(SessionExpiredError, match="again with a new token"):
        sf.get("limits")
    assert org.token_requests == tokens + 1  # exactly one new token, exactly one retry
    sf.get("limits")  # and the client goes on working


@pytest.mark.parametrize("kind", ["json", "form", "str", "bytes", "file", "file-at-offset", "generator", "pipe"])
def test_body_is_resent_intact_after_401(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient,
                                         kind: str) -> None:
    echo = Echo(rest)
    payload = b'{"Name": "' + b"x" * 50_000 + b'"}'
    expected = payload
    kwargs: dict[str, Any]
    if kind == "json":
        kwargs = {"json": {"a": 1, "b": "two"}}
        expected = b'{"a":1,"b":"two"}'  # compact JSON
    elif kind == "form":
        kwargs = {"data": {"a": "1", "b": "two words"}}
        expected = b"a=1&b=two+words"
    elif kind == "str":
        kwargs = {"data": payload.decode()}
    elif kind == "bytes":
        kwargs = {"data": payload}
    elif kind == "file":
        kwargs = {"data": io.BytesIO(payload)}
    elif kind == "file-at-offset":
        stream = io.BytesIO(b"skip" + payload)
        stream.seek(4)
        kwargs = {"data": stream}
    elif kind == "generator":
        kwargs = {"data": (payload[i:i + 1000] for i in range(0, len(payload), 1000))}
    else:
        kwargs = {"data": io.BufferedReader(Pipe(payload))}
    sf.get("limits")
    org.expire_sessions()
    assert sf.post("/services/apexrest/echo", **kwargs) == {"length": len(expected)}
    assert echo.bodies == [expected]  # the 401 never reached the route; the retry sent it all


def test_seekable_file_is_resent_after_401_on_a_real_file(org: FakeSalesforce, rest: FakeRestApi,
                                                        sf: SalesforceClient, tmp_path: Any) -> None:
    echo = Echo(rest)
    path = tmp_path / "body.json"
    path.write_bytes(b"0123456789" * 1000)
    sf.get("limits")
    org.expire_sessions()
    with path.open("rb") as fh:
        sf.post("/services/apexrest/echo", data=fh)
    assert echo.bodies == [path.read_bytes()]


def test_record_create_after_401_creates_exactly_one(org: FakeSalesforce, rest: FakeRestApi,
                                                     sf: SalesforceClient) -> None:
    sf.get("limits")
    org.expire_sessions()
    created = sf.sobject("Account").create({"Name": "Once"})
    assert [r["Id"] for r in rest.records("Account")] == [created["id"]]


def test_bad_data_type(sf: SalesforceClient) -> None:
    with pytest.raises(TypeError):
        sf.post("/services/apexrest/echo", data=12345)


def test_json_bodies_are_compact_and_bad_ones_are_argument_errors(org: FakeSalesforce, rest: FakeRestApi,
                                                                   sf: SalesforceClient) -> None:
    echo = Echo(rest)
    path = "/services/apexrest/echo"
    sent = [sf.request("POST", path, json={"a": [1, 2.5, None, True], "\u00e9": "\u00fc"}),
            sf.request("POST", path, json={"a": 1}, headers={"content-type": "application/vnd.x+json"}),
            sf.request("POST", path, json={"ignored": 1}, data=b"raw")]  # as in requests: data wins
    assert echo.bodies == [b'{"a":[1,2.5,null,true],"\\u00e9":"\\u00fc"}', b'{"a":1}', b"raw"]
    assert [r.request.headers.get("Content-Type") for r in sent] == [
        "application/json", "application/vnd.x+json", None]
    before = len(org.requests_log)
    circular: dict[str, Any] = {}
    circular["self"] = circular
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for bad in (float("nan"), float("-inf"), circular, deep):
        with pytest.raises(ValueError):  # requests raised its own InvalidJSONError for NaN
            sf.post(path, json={"value": bad})
    with pytest.raises(TypeError):
        sf.post(path, json={"value": object()})
    assert len(org.requests_log) == before  # nothing was sent


# -- transient failures --------------------------------------------------------------------------


def test_transient_5xx_retried_for_get(org: FakeSalesforce, sf: SalesforceClient) -> None:
    sf.get("limits")
    before = org.api_requests
    org.inject_error(503, "SERVER_UNAVAILABLE", count=2)
    assert "DailyApiRequests" in sf.limits()
    assert org.api_requests == before + 3
    org.inject_error(502, "BAD_GATEWAY", count=1)
    org.inject_error(504, "GATEWAY_TIMEOUT", count=1)
    assert sf.limits()


def test_transient_5xx_not_retried_for_post_or_patch(org: FakeSalesforce, rest: FakeRestApi,
                                                     sf: SalesforceClient) -> None:
    sf.get("limits")
    for method in ("POST", "PATCH"):
        before = org.api_requests
        org.inject_error(503, "SERVER_UNAVAILABLE", count=3)
        with pytest.raises(ApiError) as info:
            sf.request(method, "sobjects/Account", json={"Name": "x"})
        assert info.value.status_code == 503 and org.api_requests == before + 1
        assert org.clear_injected_errors() == 2  # the POST and PATCH were not retried
    assert rest.records("Account") == []


def test_retries_are_bounded(org: FakeSalesforce, auth: JwtAuth) -> None:
    with SalesforceClient(auth, retries=2, backoff_factor=0.01) as client:
        client.get("limits")
        before = org.api_requests
        org.inject_error(503, "SERVER_UNAVAILABLE", count=10)
        with pytest.raises(ApiError) as info:
            client.get("limits")
        assert info.value.status_code == 503 and info.value.error_code == "SERVER_UNAVAILABLE"
        assert org.api_requests == before + 3  # the first try and 2 retries
    assert org.pending_injected_errors == 7
    assert org.clear_injected_errors() == 7 and org.pending_injected_errors == 0


@pytest.mark.parametrize("off", [0, None])
def test_retries_off(org: FakeSalesforce, auth: JwtAuth, off: int | None) -> None:
    with SalesforceClient(auth, retries=off) as client:
        client.get("limits")
        before = org.api_requests
        org.inject_error(503, "SERVER_UNAVAILABLE", count=1)
        with pytest.raises(ApiError):
            client.get("limits")
        assert org.api_requests == before + 1


def test_retry_after_is_honoured(org: FakeSalesforce, sf: SalesforceClient) -> None:
    sf.get("limits")
    org.inject_error(429, "REQUEST_LIMIT_EXCEEDED", count=1, headers={"Retry-After": "1"})
    started = time.monotonic()
    assert sf.limits()
    assert time.monotonic() - started >= 0.95


def test_retry_after_too_long_gives_up_at_once(org: FakeSalesforce, auth: JwtAuth) -> None:
    with SalesforceClient(auth, max_retry_after=5, backoff_factor=0.01) as client:
        client.get("limits")
        before = org.api_requests
        org.inject_error(503, "SERVER_UNAVAILABLE", count=1, headers={"Retry-After": "3600"})
        started = time.monotonic()
        with pytest.raises(ApiError) as info:
            client.get("limits")
        # Far below the 3600 s asked for (a generous bound: it must not flake under load).
        assert time.monotonic() - started < 600 and info.value.status_code == 503
        assert org.api_requests == before + 1


class FlakyProxy:
    """A TCP proxy to the org that reads, then hangs up on, the first ``drop`` connections."""

    def __init__(self, target_port: int, drop: int) -> None:
        self.drop = drop
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.dropped = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.dropped < self.drop:
                self.dropped += 1
                conn.recv(65536)  # the request arrived ...
                conn.close()      # ... and no answer ever comes
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.listener.close()


class Via(AuthSession):
    """The org's tokens, but requests go to another origin (a proxy in front of the instance)."""

    def __init__(self, inner: AuthSession, instance_url: str) -> None:
        self.inner = inner
        self._url = instance_url

    def access_token(self) -> str:
        return self.inner.access_token()

    @property
    def instance_url(self) -> str:
        return self._url

    def invalidate(self, stale_token: str) -> None:
        self.inner.invalidate(stale_token)


def test_dropped_connection_retried_for_get_only(org: FakeSalesforce, rest: FakeRestApi, auth: JwtAuth) -> None:
    proxy = FlakyProxy(org.port, drop=2)
    try:
        with SalesforceClient(Via(auth, proxy.url), **FAST) as client:
            assert client.limits()  # two hang-ups, then through
            assert proxy.dropped == 2
    finally:
        proxy.close()
    proxy = FlakyProxy(org.port, drop=1)
    try:
        with SalesforceClient(Via(auth, proxy.url), **FAST) as client:
            before = org.api_requests
            with pytest.raises(SalesforceConnectionError) as info:
                client.post("sobjects/Account", json={"Name": "Maybe"})
            assert isinstance(info.value.__cause__, requests.ConnectionError)
            assert proxy.dropped == 1 and org.api_requests == before  # a POST is never sent twice
            assert rest.records("Account") == []
    finally:
        proxy.close()


def test_unreachable_instance(auth: JwtAuth) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with SalesforceClient(Via(auth, f"http://127.0.0.1:{port}"), retries=1, backoff_factor=0.01) as client:
        with pytest.raises(SalesforceConnectionError, match=r"POST .*sobjects/Account failed") as info:
            client.post("sobjects/Account", json={"Name": "x"})
        assert isinstance(info.value.__cause__, requests.ConnectionError)
        assert isinstance(info.value, AuthKitError)


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "MALFORMED_QUERY", MalformedQueryError),
    (400, "INVALID_QUERY_FILTER_OPERATOR", MalformedQueryError),
    (400, "DUPLICATE_VALUE", DuplicateValueError),
    (400, "DUPLICATES_DETECTED", DuplicateValueError),
    (400, "INVALID_FIELD", InvalidFieldError),
    (400, "INVALID_FIELD_FOR_INSERT_UPDATE", InvalidFieldError),
    (403, "INSUFFICIENT_ACCESS_OR_READONLY", InsufficientAccessError),
    (400, "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY", InsufficientAccessError),
    (403, "REQUEST_LIMIT_EXCEEDED", RequestLimitError),
    (429, "TOO_MANY_REQUESTS", RequestLimitError),
    (404, "NOT_FOUND", ResourceNotFoundError),
    (404, "SOMETHING_ELSE", ResourceNotFoundError),
    (400, "ENTITY_IS_DELETED", ResourceNotFoundError),
    (400, "STRING_TOO_LONG", ApiError),
    (500, "UNKNOWN_EXCEPTION", ApiError),
    (403, "API_DISABLED_FOR_ORG", ApiError),
])
def test_error_mapping(org: FakeSalesforce, auth: JwtAuth, status: int, code: str, cls: type[ApiError]) -> None:
    with SalesforceClient(auth, retries=0) as client:
        client.get("limits")
        org.inject_error(status, code, "it went wrong", count=1)
        with pytest.raises(cls) as info:
            client.post("sobjects/Account", json={"Name": "x"})
    error = info.value
    assert type(error) is cls
    assert (error.status_code, error.error_code, error.message) == (status, code, "it went wrong")
    assert error.fields == [] and isinstance(error.response, requests.Response)
    assert str(error) == f"{status} {code}: it went wrong"
    assert auth.access_token() not in str(error) and auth.access_token() not in repr(error)


def test_error_bodies_from_the_org(sf: SalesforceClient, rest: FakeRestApi) -> None:
    rest.insert("Account", {"Name": "A", "External_Id__c": "E"})
    with pytest.raises(DuplicateValueError) as dup:
        sf.sobject("Account").create({"Name": "B", "External_Id__c": "E"})
    assert dup.value.fields == ["External_Id__c"] and "duplicate value found" in dup.value.message
    with pytest.raises(MalformedQueryError):
        list(sf.query("SELECT FROM Account"))
    with pytest.raises(InvalidFieldError) as bad:
        sf.sobject("Account").create({"Name": "x", "Colour__c": "red"})
    assert bad.value.fields == ["Colour__c"]
    with pytest.raises(ResourceNotFoundError):
        sf.sobject("Account").get("001000000000000AAA")
    with pytest.raises(ApiError) as required:
        sf.sobject("Account").create({})
    assert required.value.error_code == "REQUIRED_FIELD_MISSING" and required.value.fields == ["Name"]


def test_error_body_shapes(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    answers = {
        "/object": (400, {"errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "no", "fields": ["A"]}),
        "/text": (502, "<html>bad gateway</html>"),
        "/empty-list": (400, []),
    }
    for path, answer in answers.items():
        rest.add_apex_route("POST", path, lambda m, p, q, b, a=answer: a)
    with pytest.raises(ApiError) as one:
        sf.post("/services/apexrest/object")
    assert (one.value.error_code, one.value.message, one.value.fields) == (
        "FIELD_CUSTOM_VALIDATION_EXCEPTION", "no", ["A"])
    with pytest.raises(ApiError) as text:
        sf.post("/services/apexrest/text")
    assert text.value.status_code == 502 and text.value.error_code is None
    with pytest.raises(ApiError) as empty:
        sf.post("/services/apexrest/empty-list")
    assert empty.value.status_code == 400 and empty.value.error_code is None


# -- the data API --------------------------------------------------------------------------------------


def test_crud(rest: FakeRestApi, sf: SalesforceClient) -> None:
    accounts = sf.sobject("Account")
    created = accounts.create({"Name": "Acme", "NumberOfEmployees": 10})
    assert created["success"] is True
    record_id = created["id"]
    assert accounts.get(record_id, fields=["Name", "NumberOfEmployees"])["NumberOfEmployees"] == 10
    assert accounts.update(record_id, {"Industry": "Energy"}) is None
    assert accounts.get(record_id)["Industry"] == "Energy"
    upserted = accounts.upsert("External_Id__c", "ACME/1", {"Name": "Slash"})
    assert upserted is not None and upserted["created"] is True
    again = accounts.upsert("External_Id__c", "ACME/1", {"Name": "Slash 2"})
    assert again is not None and (again["created"], again["id"]) == (False, upserted["id"])
    assert accounts.describe()["name"] == "Account"
    assert accounts.delete(record_id) is None
    with pytest.raises(ResourceNotFoundError) as gone:
        accounts.get(record_id)
    assert gone.value.error_code == "ENTITY_IS_DELETED"
    assert sorted(r["Name"] for r in rest.records("Account")) == ["Slash 2"]
    for bad in ("", "Bad Name", "a/b"):
        with pytest.raises(ValueError):
            sf.sobject(bad)
    with pytest.raises(ValueError):
        accounts.get("../../limits")
    with pytest.raises(TypeError):
        accounts.get(record_id, fields="Name")
    with pytest.raises(ValueError):
        accounts.get(record_id, fields=["Name,Id"])
    with pytest.raises(TypeError):
        accounts.create([("Name", "x")])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        accounts.upsert("External_Id__c", "", {})
    assert repr(accounts) == "SObject('Account')"


def test_upsert_multiple_matches(rest: FakeRestApi, sf: SalesforceClient) -> None:
    rest.define_sobject("Thing__c", {"Code__c": "string"}, external_ids=["Code__c"])
    first = rest.insert("Thing__c", {"Code__c": "a"})
    with rest._mutex:  # two records with one external id: what an org has after the field became unique
        rest._records["Thing__c"]["a0X000000000001AAA"] = {**rest._records["Thing__c"][first],
                                                            "Id": "a0X000000000001AAA"}
    with pytest.raises(ApiError) as info:
        sf.sobject("Thing__c").upsert("Code__c", "a", {})
    assert (info.value.status_code, info.value.error_code) == (300, "MULTIPLE_CHOICES")


def test_query_is_lazy_across_many_pages(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    rest.page_size = 200
    rest.insert_many("Account", ({"Name": f"A{i:05d}"} for i in range(10_000)))
    sf.get("limits")
    before = org.api_requests
    records = sf.query("SELECT Id, Name FROM Account ORDER BY Name")
    assert org.api_requests == before  # nothing sent before the first record is asked for
    first = list(itertools.islice(records, 200))
    assert org.api_requests == before + 1
    next(records)
    assert org.api_requests == before + 2
    names = [r["Name"] for r in first] + ["A00200"] + [r["Name"] for r in records]
    assert names == [f"A{i:05d}" for i in range(10_000)]
    assert org.api_requests == before + 50


def test_query_memory_is_one_page(rest: FakeRestApi, sf: SalesforceClient) -> None:
    rest.page_size = 200
    rest.insert_many("Account", ({"Name": f"A{i:05d}", "Description": "d" * 200} for i in range(10_000)))
    soql = "SELECT Id, Name, Description FROM Account"
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        count = sum(1 for _ in sf.query(soql))
        _, lazy_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        everything = list(sf.query(soql))
        _, list_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(everything) == 10_000
    # Iterating holds one page (plus the server's own page); a list holds all 50 pages.
    assert lazy_peak * 5 < list_peak, (lazy_peak, list_peak)


def test_query_all_and_include_deleted(rest: FakeRestApi, sf: SalesforceClient) -> None:
    keep = rest.insert("Account", {"Name": "keep"})
    gone = rest.insert("Account", {"Name": "gone"})
    sf.sobject("Account").delete(gone)
    soql = "SELECT Id, IsDeleted FROM Account ORDER BY Name"
    assert [r["Id"] for r in sf.query(soql)] == [keep]
    assert [(r["Id"], r["IsDeleted"]) for r in sf.query_all(soql)] == [(gone, True), (keep, False)]
    assert list(sf.query(soql, include_deleted=True)) == list(sf.query_all(soql))
    with pytest.raises(ValueError):
        sf.query("  ")
    with pytest.raises(TypeError):
        sf.query(None)  # type: ignore[arg-type]


def test_query_pages_survive_a_401(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    rest.insert_many("Account", ({"Name": f"A{i:02d}"} for i in range(12)))
    records = sf.query("SELECT Name FROM Account ORDER BY Name")
    first = [next(records)["Name"] for _ in range(5)]
    org.expire_sessions()
    assert first + [r["Name"] for r in records] == [f"A{i:02d}" for i in range(12)]


def test_composite(rest: FakeRestApi, sf: SalesforceClient) -> None:
    responses = sf.composite([
        {"method": "POST", "url": "sobjects/Account", "referenceId": "acc", "body": {"Name": "Acme"}},
        {"method": "POST", "url": f"{V}/sobjects/Contact", "referenceId": "con",
         "body": {"LastName": "Doe", "AccountId": "@{acc.id}"}},
    ])
    assert [r["httpStatusCode"] for r in responses] == [201, 201]
    assert rest.records("Contact")[0]["AccountId"] == responses[0]["body"]["id"]
    failed = sf.composite([
        {"method": "POST", "url": "sobjects/Account", "referenceId": "ok", "body": {"Name": "Rolled back"}},
        {"method": "POST", "url": "sobjects/Account", "referenceId": "bad", "body": {}},
    ], all_or_none=True)
    assert [r["httpStatusCode"] for r in failed] == [400, 400]
    assert [r["Name"] for r in rest.records("Account")] == ["Acme"]
    with pytest.raises(ValueError):
        sf.composite([])
    with pytest.raises(ValueError):
        sf.composite([{"method": "GET", "url": "limits", "referenceId": "x"}] * 26)
    with pytest.raises(ValueError, match="referenceId"):
        sf.composite([{"method": "GET", "url": "limits"}])
    with pytest.raises(TypeError):
        sf.composite(["GET limits"])  # type: ignore[list-item]


def test_limits_versions_and_api_usage(org: FakeSalesforce, sf: SalesforceClient) -> None:
    assert sf.api_usage is None
    limits = sf.limits()
    assert limits["DailyApiRequests"]["Max"] == 15000
    usage = sf.api_usage
    assert usage is not None and usage.limit == org.api_limit and usage.used == org.api_requests
    assert usage.remaining == usage.limit - usage.used and usage.app_used is None
    assert "62.0" in [v["version"] for v in sf.versions()]
    sf.get("limits")
    assert sf.api_usage is not None and sf.api_usage.used == usage.used + 2


def test_api_usage_header_formats() -> None:
    assert _parse_usage("api-usage=25/15000") == ApiUsage(25, 15000)
    assert _parse_usage("api-usage=18/5000; per-app-api-usage=17/250(appName=sample-connected-app)") == (
        ApiUsage(18, 5000, 17, 250, "sample-connected-app"))
    assert _parse_usage("per-app-api-usage=1/2, api-usage=3/4") == ApiUsage(3, 4, 1, 2, None)
    assert _parse_usage("nonsense") is None
    assert ApiUsage(20000, 15000).remaining == 0


def test_get_post_return_json_or_none(rest: FakeRestApi, sf: SalesforceClient) -> None:
    rest.add_apex_route("POST", "/nothing", lambda m, p, q, b: (204, None))
    rest.add_apex_route("POST", "/text", lambda m, p, q, b: (200, "plain"))
    assert sf.post("/services/apexrest/nothing") is None
    assert sf.post("/services/apexrest/text") == "plain"
    record_id = rest.insert("Account", {"Name": "x"})
    assert sf.patch(f"sobjects/Account/{record_id}", json={"Name": "y"}) is None
    assert sf.delete(f"sobjects/Account/{record_id}") is None
    with pytest.raises(ApiError) as info:
        sf.put(f"sobjects/Account/{record_id}", json={})
    assert info.value.status_code == 405


# -- sessions, logs, lifecycle ------------------------------------------------------------------------


def test_own_session_is_closed_yours_is_not(auth: JwtAuth) -> None:
    client = SalesforceClient(auth, pool_maxsize=4)
    client.get("limits")
    client.close()
    client.close()
    with pytest.raises(ValueError, match="closed"):
        client.get("limits")
    assert "closed" in repr(client)

    mine = requests.Session()
    mine.headers["X-Trace"] = "abc"
    mine.mount("http://", retrying_adapter(retries=1, backoff_factor=0.01))
    with SalesforceClient(auth, session=mine) as shared:
        response = shared.request("GET", "limits")
        assert response.request.headers["X-Trace"] == "abc" and shared.session is mine
    # Still open, and the token was never put on it: a plain request is unauthenticated.
    assert "Authorization" not in mine.headers
    assert mine.get(f"{auth.instance_url}/services/data/").status_code == 401
    mine.close()
    with pytest.raises(ValueError, match="retrying_adapter"):
        SalesforceClient(auth, session=requests.Session(), retries=2)
    with pytest.raises(TypeError):
        SalesforceClient(auth, session="not a session")  # type: ignore[arg-type]
    for bad in ({"retries": -1}, {"pool_maxsize": 0}, {"backoff_factor": -1}, {"timeout": 0},
                {"timeout": (1, 2, 3)}):
        with pytest.raises(ValueError):
            SalesforceClient(auth, **bad)


def test_no_token_in_logs_reprs_or_errors(org: FakeSalesforce, auth: JwtAuth,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with SalesforceClient(auth, **FAST) as client:
        client.limits()
        org.expire_sessions()
        list(client.query("SELECT Id FROM Account WHERE Name = 'secret-customer'"))
        with pytest.raises(ApiError) as info:
            client.get("sobjects/Nope")
        response = client.request("GET", "limits")
        texts = [caplog.text, repr(client), str(info.value), repr(info.value), repr(response.request.headers)]
    token = auth.access_token()
    for text in texts:
        assert token not in text and "Bearer" not in text
    lines = [r.getMessage() for r in caplog.records if r.name == "authkit.salesforce" and " -> " in r.getMessage()]
    assert any(line.startswith(f"GET {V}/query?q=... -> 401 (") for line in lines)
    assert any(line.startswith(f"GET {V}/query?q=... -> 200 (") and line.endswith(" ms)") for line in lines)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("authkit"))
    assert "secret-customer" not in ours  # (urllib3's own DEBUG lines do show full URLs)


def test_sixteen_threads_share_one_client_through_expiries(org: FakeSalesforce, rest: FakeRestApi) -> None:
    """The org kills every session each ~300 requests; nobody fails, and each expiry costs one token."""
    org.rest.page_size = 5
    record_id = rest.insert("Account", {"Name": "Shared"})
    auth = org.client_credentials_auth()
    client = SalesforceClient(auth, **FAST)
    threads, per_thread, every = 16, 150, 300
    done = [0] * threads
    finished = [False] * threads
    errors: list[BaseException] = []
    tokens_before = org.token_requests

    def worker(n: int) -> None:
        try:
            for _ in range(per_thread):
                assert client.sobject("Account").get(record_id, fields=["Name"])["Name"] == "Shared"
                done[n] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            finished[n] = True

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    expiries = 0
    client.get("limits")  # the first token
    deadline = time.monotonic() + 120
    while not all(finished) and time.monotonic() < deadline:
        mark = org.api_requests
        while org.api_requests < mark + every and not all(finished):
            time.sleep(0.002)
        if all(finished):
            break
        org.expire_sessions()
        expiries += 1
        # Before the next expiry, let every thread finish the request it had in flight (and its
        # retry) plus one more: a request still holding a token two expiries old would fail by design.
        seen = list(done)
        while not all(finished[n] or done[n] >= seen[n] + 2 for n in range(threads)):
            time.sleep(0.002)
    for t in pool:
        t.join(timeout=60)
    client.close()
    assert errors == []
    assert sum(done) == threads * per_thread
    assert expiries >= 5
    assert org.token_requests - tokens_before == expiries + 1

