"""Search, describes, sObject extras, blobs, composite batch/tree/graph, Tooling, Apex REST against the fake org."""

from __future__ import annotations

import io
import json
import tracemalloc
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from authkit.errors import ApiError, MalformedQueryError, ResourceNotFoundError
from authkit.salesforce import SalesforceClient, StaticTokenAuth, format_sosl
from authkit.testing import FakeSalesforce
from authkit.testing.fake_rest import FakeRestApi
from tests.streams import Pipe

V = "/services/data/v62.0"
NOW = datetime.now(timezone.utc)


@pytest.fixture
def page_size() -> int:
    return 50


# -- search ------------------------------------------------------------------------------------------


def test_search_and_escaping(rest: FakeRestApi, sf: SalesforceClient) -> None:
    acme = rest.insert("Account", {"Name": "Acme & Sons (UK)"})
    rest.insert("Account", {"Name": "Globex"})
    contact = rest.insert("Contact", {"LastName": "Acme-Smith", "Email": "a@acme.example"})
    found = sf.search(format_sosl("FIND {{{}}} IN ALL FIELDS RETURNING Account(Id, Name)", "Acme & Sons (UK)"))
    assert [(r["attributes"]["type"], r["Id"], r["Name"]) for r in found] == [("Account", acme, "Acme & Sons (UK)")]
    both = sf.search(format_sosl("FIND {{{}}} RETURNING Account(Id), Contact(Id, LastName)", "acme"))
    assert {r["Id"] for r in both} == {acme, contact}
    assert len(sf.search("FIND {acme} RETURNING Account(Id), Contact(Id) LIMIT 1")) == 1
    with pytest.raises(MalformedQueryError) as info:
        sf.search("FIND acme")
    assert info.value.error_code == "MALFORMED_SEARCH"
    with pytest.raises(MalformedQueryError):
        sf.search("FIND {Acme & Sons} RETURNING Account")  # an unescaped operator
    with pytest.raises(ValueError):
        sf.search(" ")


def test_parameterized_search(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    ids = rest.insert_many("Account", [{"Name": f"Widget {i}"} for i in range(4)])
    rest.insert("Contact", {"LastName": "Widget"})
    found = sf.parameterized_search("widget", sobjects=[{"name": "Account", "fields": ["Id", "Name"]}],
                                    overall_limit=3)
    assert [r["Id"] for r in found] == ids[:3] and all("Name" in r for r in found)
    assert len(sf.parameterized_search("Widget", fields=["Id"])) == 5
    assert sf.parameterized_search("nothing here") == []
    with pytest.raises(ApiError) as info:
        sf.parameterized_search("widget", overall_limit=0)
    assert info.value.status_code == 400
    with pytest.raises(ValueError):
        sf.parameterized_search("x")
    with pytest.raises(TypeError):
        sf.parameterized_search("widget", q="again")


def test_search_option_names() -> None:
    from authkit.salesforce.client import _search_option

    assert _search_option("overall_limit") == "overallLimit"
    assert _search_option("in_") == "in"
    assert _search_option("network_ids") == "netWorkIds"
    assert _search_option("sobjects") == "sobjects"
    assert _search_option("spell_correction") == "spellCorrection"


# -- describes -------------------------------------------------------------------------------------


def test_describes_and_if_modified_since(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    everything = sf.describe()
    assert everything is not None and "Account" in {s["name"] for s in everything["sobjects"]}
    assert "ApexClass" not in {s["name"] for s in everything["sobjects"]}
    later = rest.metadata_modified + timedelta(seconds=1)
    earlier = rest.metadata_modified - timedelta(days=1)
    assert sf.describe(if_modified_since=later) is None
    assert sf.describe(if_modified_since=earlier) is not None
    accounts = sf.sobject("Account")
    assert accounts.describe(if_modified_since=later) is None
    described = accounts.describe(if_modified_since=earlier)
    assert described is not None and "External_Id__c" in {f["name"] for f in described["fields"]}
    assert accounts.describe() is not None
    with pytest.raises(ValueError):
        sf.describe(if_modified_since=datetime(2024, 1, 1))  # naive
    with pytest.raises(TypeError):
        sf.describe(if_modified_since="yesterday")  # type: ignore[arg-type]


# -- sObject extras ----------------------------------------------------------------------------------


def test_get_by_external_id(rest: FakeRestApi, sf: SalesforceClient) -> None:
    record_id = rest.insert("Account", {"Name": "Ext", "External_Id__c": "A/1 ?x"})
    found = sf.sobject("Account").get_by_external_id("External_Id__c", "A/1 ?x", fields=["Name"])
    assert found["Name"] == "Ext" and found["attributes"]["url"].endswith(record_id)
    with pytest.raises(ResourceNotFoundError):
        sf.sobject("Account").get_by_external_id("External_Id__c", "missing")
    with pytest.raises(ValueError):
        sf.sobject("Account").get_by_external_id("Bad Field", "x")


def test_updated_and_deleted(rest: FakeRestApi, sf: SalesforceClient) -> None:
    keep = rest.insert("Account", {"Name": "keep"})
    drop = rest.insert("Account", {"Name": "drop"})
    sf.sobject("Account").delete(drop)
    start, end = NOW - timedelta(hours=1), datetime.now(timezone.utc) + timedelta(hours=1)
    updated = sf.sobject("Account").updated(start, end)
    assert updated["ids"] == [keep] and "latestDateCovered" in updated
    deleted = sf.sobject("Account").deleted(start, end)
    assert [d["id"] for d in deleted["deletedRecords"]] == [drop]
    assert {"earliestDateAvailable", "latestDateCovered"} <= set(deleted)
    assert sf.sobject("Account").updated(start - timedelta(days=2), start - timedelta(days=1))["ids"] == []
    with pytest.raises(ValueError):
        sf.sobject("Account").updated(end, start)
    with pytest.raises(ValueError):
        sf.sobject("Account").deleted(datetime(2024, 1, 1), datetime(2024, 1, 2))
    with pytest.raises(ApiError) as info:
        sf.get("sobjects/Account/updated/", params={"start": "2024-02-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"})
    assert info.value.error_code == "INVALID_REPLICATION_DATE"


def test_create_with_blob_and_download(rest: FakeRestApi, sf: SalesforceClient, tmp_path: Any) -> None:
    data = bytes(range(256)) * 100 + b"\r\n--not-a-boundary\r\n"
    created = sf.sobject("ContentVersion").create_with_blob(
        {"Title": "Q1", "PathOnClient": "q1.bin"}, "VersionData", data, "q1.bin")
    assert created["success"]
    record = sf.sobject("ContentVersion").get(created["id"], fields=["Title", "VersionData"])
    assert record["Title"] == "Q1" and record["VersionData"].endswith(f"/{created['id']}/VersionData")
    assert sf.download(record["VersionData"]) == data
    path = tmp_path / "out.bin"
    with open(path, "wb") as out:
        assert sf.download(f"sobjects/ContentVersion/{created['id']}/VersionData", out) == len(data)
    assert path.read_bytes() == data
    doc = sf.sobject("Document").create_with_blob({"Name": "d"}, "Body", io.BytesIO(b"pdf"), "d.pdf",
                                                  "application/pdf")
    assert sf.download(f"sobjects/Document/{doc['id']}/Body") == b"pdf"
    with pytest.raises(ValueError):
        sf.sobject("ContentVersion").create_with_blob({}, "VersionData", b"x", 'a"b')
    with pytest.raises(TypeError):
        sf.sobject("ContentVersion").create_with_blob({}, "VersionData", "text", "a.txt")  # type: ignore[arg-type]
    with pytest.raises(ResourceNotFoundError):
        sf.download(f"sobjects/ContentVersion/{'068' + '0' * 15}/VersionData")


def test_fake_validates_multipart(sf: SalesforceClient) -> None:
    def post(files: Any) -> ApiError:
        with pytest.raises(ApiError) as info:
            sf.post("sobjects/ContentVersion", files=files)
        return info.value

    entity = ("entity_content", (None, json.dumps({"PathOnClient": "a"}), "application/json"))
    blob = ("VersionData", ("a.bin", b"x", "application/octet-stream"))
    assert post([entity]).error_code == "INVALID_MULTIPART_REQUEST"
    assert post([("entity_document", entity[1]), blob]).error_code == "INVALID_MULTIPART_REQUEST"
    assert post([entity, ("Title", ("a.bin", b"x", "text/plain"))]).error_code == "INVALID_MULTIPART_REQUEST"
    assert post([entity, ("VersionData", (None, b"x", "application/octet-stream"))]).status_code == 400
    assert sf.post("sobjects/ContentVersion", files=[entity, blob])["success"]


class _Counter(io.RawIOBase):
    """A sink that keeps only a count, so memory measured is the client's own."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.count += len(b)
        return len(b)


def test_download_streams_in_bounded_memory(rest: FakeRestApi, sf: SalesforceClient) -> None:
    size = 24 * 1024 * 1024
    log_id = rest.insert("EventLogFile", {"EventType": "API"})
    rest.set_blob("EventLogFile", log_id, "LogFile", b"x" * size)
    sf.get("limits")  # the token is minted before measuring
    sink = _Counter()
    tracemalloc.start()
    try:
        written = sf.download(f"sobjects/EventLogFile/{log_id}/LogFile", sink, chunk_size=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == sink.count == size
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte body"
    with pytest.raises(ValueError):
        sf.download("sobjects/x", sink, chunk_size=0)
    with pytest.raises(TypeError):
        sf.download("sobjects/x", "not a file")  # type: ignore[call-overload]


# -- composite -------------------------------------------------------------------------------------


def test_composite_collate_and_limit(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    subs = [{"method": "POST", "url": "sobjects/Account", "referenceId": f"a{i}", "body": {"Name": f"c{i}"}}
            for i in range(3)]
    answer = sf.composite(subs, collate_subrequests=True)
    assert [r["httpStatusCode"] for r in answer] == [201, 201, 201]
    before = len(org.requests_log)
    with pytest.raises(ValueError):
        sf.composite(subs * 9)
    assert len(org.requests_log) == before


def test_composite_batch(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    record_id = rest.insert("Account", {"Name": "batch"})
    results = sf.composite_batch([
        {"method": "GET", "url": f"sobjects/Account/{record_id}?fields=Name"},
        {"method": "PATCH", "url": f"v62.0/sobjects/Account/{record_id}", "richInput": {"Name": "patched"}},
        {"method": "GET", "url": f"{V}/sobjects/Account/001000000000000AAA"},
        {"method": "GET", "url": "limits"},
    ])
    assert [r["statusCode"] for r in results] == [200, 204, 404, 200]
    assert results[0]["result"]["Name"] == "batch"
    assert results[2]["result"][0]["errorCode"] == "NOT_FOUND"
    assert rest.records("Account")[0]["Name"] == "patched"
    halted = sf.composite_batch([{"method": "GET", "url": "sobjects/Account/001000000000000AAA"},
                                 {"method": "GET", "url": "limits"}], halt_on_error=True)
    assert [r["statusCode"] for r in halted] == [404, 412]
    assert halted[1]["result"][0]["errorCode"] == "BATCH_PROCESSING_HALTED"
    before = len(org.requests_log)
    for bad in ([], [{"method": "GET", "url": "limits"}] * 26):
        with pytest.raises(ValueError):
            sf.composite_batch(bad)
    assert len(org.requests_log) == before
    with pytest.raises(ApiError) as info:
        sf.post("composite/batch", json={"batchRequests": [{"method": "GET", "url": "v62.0/limits"}] * 26})
    assert info.value.error_code == "INVALID_BATCH_REQUEST"


def tree_records(n: int, contacts: int = 0) -> list[dict[str, Any]]:
    return [{"attributes": {"type": "Account", "referenceId": f"acc{i}"}, "Name": f"tree {i}",
             "Contacts": {"records": [{"attributes": {"type": "Contact", "referenceId": f"c{i}-{j}"},
                                       "LastName": f"L{j}"} for j in range(contacts)]}}
            for i in range(n)]


def test_composite_tree(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient) -> None:
    results = sf.composite_tree("Account", tree_records(2, contacts=2))
    assert [r["referenceId"] for r in results] == ["acc0", "c0-0", "c0-1", "acc1", "c1-0", "c1-1"]
    ids = {r["referenceId"]: r["id"] for r in results}
    contacts = {c["Id"]: c for c in rest.records("Contact")}
    assert contacts[ids["c1-0"]]["AccountId"] == ids["acc1"]

    bad = tree_records(2)
    del bad[1]["Name"]
    failed = sf.composite_tree("Account", bad)
    assert failed == [{"referenceId": "acc1", "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                                          "message": "Required fields are missing: [Name]",
                                                          "fields": ["Name"]}]}]
    assert len(rest.records("Account")) == 2  # all or nothing: acc0 of the failed tree was rolled back

    assert len(sf.composite_tree("Account", tree_records(40, contacts=4))) == 200
    before = len(org.requests_log)
    with pytest.raises(ValueError, match="200"):
        sf.composite_tree("Account", tree_records(40, contacts=4) + tree_records(1))
    with pytest.raises(ValueError):
        sf.composite_tree("Account", [{"Name": "no attributes"}])
    assert len(org.requests_log) == before
    with pytest.raises(ApiError) as info:
        sf.post("composite/tree/Account", json={"records": tree_records(201)})
    assert info.value.status_code == 400


def test_composite_graph(rest: FakeRestApi, sf: SalesforceClient) -> None:
    good = {"graphId": "g1", "compositeRequest": [
        {"method": "POST", "url": "sobjects/Account", "referenceId": "acct", "body": {"Name": "graph"}},
        {"method": "POST", "url": "sobjects/Contact", "referenceId": "con",
         "body": {"LastName": "G", "AccountId": "@{acct.id}"}},
    ]}
    bad = {"graphId": "g2", "compositeRequest": [
        {"method": "POST", "url": "sobjects/Account", "referenceId": "ok", "body": {"Name": "rolled back"}},
        {"method": "POST", "url": "sobjects/Account", "referenceId": "bad", "body": {"Industry": "no name"}},
    ]}
    graphs = sf.composite_graph([good, bad])
    assert [(g["graphId"], g["isSuccessful"]) for g in graphs] == [("g1", True), ("g2", False)]
    assert [r["httpStatusCode"] for r in graphs[0]["graphResponse"]["compositeResponse"]] == [201, 201]
    assert [a["Name"] for a in rest.records("Account")] == ["graph"]
    with pytest.raises(ValueError):
        sf.composite_graph([{"graphId": "big", "compositeRequest": good["compositeRequest"] * 251}])
    with pytest.raises(ValueError):
        sf.composite_graph([{"compositeRequest": []}])


# -- Tooling and Apex REST ---------------------------------------------------------------------------


def test_tooling(rest: FakeRestApi, sf: SalesforceClient) -> None:
    created = sf.tooling.sobject("ApexClass").create({"Name": "Hello", "Body": "public class Hello {}"})
    assert created["success"]
    found = list(sf.tooling.query("SELECT Id, Name FROM ApexClass"))
    assert [r["Name"] for r in found] == ["Hello"]
    assert sf.tooling.query("SELECT COUNT() FROM ApexClass").total_size == 1
    assert sf.tooling.query_all("SELECT Id FROM ApexClass").total_size == 1
    assert sf.tooling.get(f"sobjects/ApexClass/{created['id']}")["Name"] == "Hello"
    assert "ApexClass" in {s["name"] for s in sf.tooling.describe()["sobjects"]}
    with pytest.raises(ApiError):
        list(sf.query("SELECT Id FROM ApexClass"))  # a Tooling type, not in the data API
    with pytest.raises(ApiError):
        list(sf.tooling.query("SELECT Id FROM Account"))
    with pytest.raises(ResourceNotFoundError):
        sf.sobject("ApexClass").get(created["id"])
    with pytest.raises(ResourceNotFoundError):
        sf.tooling.sobject("Account").describe()
    ok = sf.tooling.execute_anonymous("System.debug('hi');")
    assert ok["compiled"] and ok["success"]
    broken = sf.tooling.execute_anonymous("System.debug('hi'")
    assert not broken["compiled"] and broken["compileProblem"]
    thrown = sf.tooling.execute_anonymous("throw new MyException();")
    assert thrown["compiled"] and not thrown["success"] and thrown["exceptionMessage"]
    assert rest.executed_apex[0] == "System.debug('hi');"
    with pytest.raises(ValueError):
        sf.tooling.execute_anonymous(" ")


def test_apex(rest: FakeRestApi, sf: SalesforceClient) -> None:
    seen: list[tuple[str, str, dict[str, list[str]], bytes]] = []

    def handler(method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        seen.append((method, path, query, body))
        return 200, {"ok": True, "echo": json.loads(body) if body else None}

    rest.add_apex_route("POST", "/orders/submit", handler)
    rest.add_apex_route("GET", "/orders", lambda m, p, q, b: (200, "plain text"))
    assert sf.apex("POST", "orders/submit", json={"n": 1}, params={"dry": "1"}) == {"ok": True, "echo": {"n": 1}}
    assert seen[0][2] == {"dry": ["1"]}
    assert sf.apex("GET", "/orders") == "plain text"
    with pytest.raises(ResourceNotFoundError):
        sf.apex("GET", "missing")
    for bad in ("https://evil.example/x", "/services/data/v62.0/limits"):
        with pytest.raises(ValueError):
            sf.apex("GET", bad)


def test_fake_graph_and_composite_limits(sf: SalesforceClient) -> None:
    node = {"method": "GET", "url": f"{V}/limits", "referenceId": "n"}
    with pytest.raises(ApiError) as info:
        sf.post("composite/graph", json={"graphs": [{"graphId": "g", "compositeRequest": [node] * 501}]})
    assert info.value.status_code == 400
    with pytest.raises(ApiError) as info:
        sf.post("composite", json={"compositeRequest": [node] * 26})
    assert info.value.error_code == "INVALID_BATCH_REQUEST"
    with pytest.raises(ApiError) as info:
        sf.post("composite", json={"compositeRequest": [node], "collateSubrequests": "yes"})
    assert info.value.error_code == "JSON_PARSER_ERROR"


# -- uploads stream ---------------------------------------------------------------------------------


class _Drain(BaseAdapter):
    """Reads each request body a chunk at a time and keeps only its size, head and tail."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.head = self.tail = b""

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: object = None,
             verify: object = True, cert: object = None, proxies: object = None) -> requests.Response:
        body: Any = request.body
        size, last = 0, b""
        while True:
            chunk = body.read(65536)
            if not chunk:
                break
            if size == 0:
                self.head = chunk[:2048]
            size += len(chunk)
            last = (last + chunk)[-64:]
        self.sizes.append(size)
        self.tail = last
        assert int(request.headers["Content-Length"]) == size
        response = requests.Response()
        response.status_code = 201
        response._content = b'{"id": "0680000000000001AAA", "success": true, "errors": []}'
        response.request = request
        return response

    def close(self) -> None:
        return None


def test_create_with_blob_streams_a_file_in_bounded_memory(tmp_path: Any) -> None:
    size = 24 * 1024 * 1024
    path = tmp_path / "big.bin"
    with open(path, "wb") as out:
        for _ in range(size // (1024 * 1024)):
            out.write(b"z" * (1024 * 1024))
    drain = _Drain()
    session = requests.Session()
    session.mount("http://", drain)
    sf = SalesforceClient(StaticTokenAuth("00Dx!token", "http://127.0.0.1:9"), session=session)
    with open(path, "rb") as data:
        tracemalloc.start()
        try:
            result = sf.sobject("ContentVersion").create_with_blob({"PathOnClient": "big.bin"}, "VersionData",
                                                                   data, "big.bin")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result["success"]
    assert drain.sizes[0] > size and b'name="entity_content"' in drain.head
    assert b'name="VersionData"; filename="big.bin"' in drain.head and drain.tail.endswith(b"--\r\n")
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte upload"


def test_multipart_body_reads_and_rewinds() -> None:
    from authkit.salesforce._multipart import MultipartBody

    data = io.BytesIO(b"skip" + bytes(range(256)) * 40)
    data.seek(4)  # a file is sent from where it stands
    body = MultipartBody("entity_content", '{"Title": "t"}', "VersionData", "f.bin", "application/pdf", data)
    whole = body.read()
    assert len(whole) == len(body) and body.read() == b""
    body.seek(0)
    pieces = []
    while piece := body.read(777):
        pieces.append(piece)
    assert b"".join(pieces) == whole
    assert bytes(range(256)) * 40 in whole and b"skip" not in whole
    assert whole.startswith(f"--{body.boundary}\r\n".encode()) and whole.endswith(f"--{body.boundary}--\r\n".encode())
    body.seek(-10, io.SEEK_END)
    assert body.read() == whole[-10:]
    assert body.tell() == len(body)


def test_blob_upload_is_resent_whole_after_a_401(org: FakeSalesforce, rest: FakeRestApi, sf: SalesforceClient,
                                                 tmp_path: Any) -> None:
    path = tmp_path / "doc.bin"
    path.write_bytes(b"0123456789" * 5000)
    sf.get("limits")
    for source in ("file", "pipe"):
        org.expire_sessions()
        with open(path, "rb") as handle:
            data: Any = handle if source == "file" else Pipe(handle.read())
            created = sf.sobject("ContentVersion").create_with_blob({"PathOnClient": "doc.bin"}, "VersionData",
                                                                    data, "doc.bin")
        assert sf.download(f"sobjects/ContentVersion/{created['id']}/VersionData") == path.read_bytes(), source
