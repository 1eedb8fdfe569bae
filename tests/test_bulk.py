"""Bulk API 2.0 (``sf.bulk``) against FakeSalesforce's strict Bulk 2.0: every request goes over HTTP."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tracemalloc
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from authkit.errors import ApiError, MalformedQueryError, ResourceNotFoundError
from authkit.salesforce import Bulk, BulkJobError, BulkResult, SalesforceClient
from authkit.testing import FakeSalesforce
from authkit.testing._org_process import OrgProcess
from authkit.testing.fake_bulk import FakeBulkApi
from authkit.testing.fake_rest import FakeRestApi
from tests.streams import Pipe
from tests.threads import run_threads

V = "/services/data/v62.0"
TRICKY = [
    'comma, inside',
    'quote " inside and "quoted"',
    'new\nline',
    'crlf\r\nline',
    'non-ASCII: Zoë, 東京, emoji 🚀',
    '  spaces  ',
    '',  # empty: not set
]


class Clock:
    """A monotonic clock that ``sleep`` moves: waiting is tested without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake(org: FakeSalesforce, rest: FakeRestApi) -> FakeBulkApi:
    """The fresh Bulk API over ``rest`` (tests/salesforce_org.py)."""
    assert org.bulk is not None
    return org.bulk


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bulk(sf: SalesforceClient, clock: Clock) -> Bulk:
    return Bulk(sf, sleep=clock.sleep, clock=clock)


def records(org: FakeSalesforce, sobject: str = "Account", **kwargs: Any) -> list[dict[str, Any]]:
    assert org.rest is not None
    return org.rest.records(sobject, **kwargs)


def csv_bytes(rows: list[list[str]], newline: str = "\n") -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator=newline).writerows(rows)
    return out.getvalue().encode("utf-8")


# -- ingest ------------------------------------------------------------------------------


def test_insert_dicts_round_trip(org: FakeSalesforce, bulk: Bulk, fake: FakeBulkApi) -> None:
    result = bulk.insert("Account", [{"Name": "Acme", "Industry": "Energy"}, {"Name": "Globex", "Industry": None}])
    assert isinstance(result, BulkResult) and len(result.job_ids) == 1
    assert (result.records_processed, result.records_failed, result.records_successful) == (2, 0, 2)
    ok = list(result.successful)
    assert [list(row) for row in ok] == [["sf__Id", "sf__Created", "Name", "Industry"]] * 2
    assert [(r["Name"], r["Industry"], r["sf__Created"]) for r in ok] == [("Acme", "Energy", "true"),
                                                                          ("Globex", "#N/A", "true")]
    assert list(result.failed) == [] and list(result.unprocessed) == []
    stored = {r["Id"]: r for r in records(org)}
    assert stored[ok[0]["sf__Id"]]["Name"] == "Acme" and stored[ok[1]["sf__Id"]]["Industry"] is None
    assert (fake.jobs_created, fake.uploads) == (1, 1)
    # re-iterable: each loop downloads the results again
    assert len(list(result.successful)) == 2 and fake.result_requests == 4


def test_csv_edge_cases_round_trip(org: FakeSalesforce, bulk: Bulk) -> None:
    rows = [{"Name": f"n{i} {value}", "Description": value} for i, value in enumerate(TRICKY)]
    rows.append({"Name": "nulls", "Description": None, "Phone": None})
    result = bulk.insert("Account", rows, fields=["Name", "Description", "Phone"])
    assert result.records_processed == len(rows) and result.records_failed == 0
    stored = {r["Name"]: r for r in records(org)}
    for i, value in enumerate(TRICKY):
        record = stored[f"n{i} {value}"]
        if value:
            assert record["Description"] == value
        else:
            assert "Description" not in record  # an empty value is "not set"
    assert stored["nulls"]["Description"] is None and stored["nulls"]["Phone"] is None
    # the query sees the same values back: strings, "" for null
    rows_back = {r["Name"]: r for r in bulk.query("SELECT Name, Description, Phone FROM Account")}
    assert rows_back["n4 non-ASCII: Zoë, 東京, emoji 🚀"]["Description"] == "non-ASCII: Zoë, 東京, emoji 🚀"
    assert rows_back["n2 new\nline"]["Description"] == "new\nline"
    assert rows_back["n3 crlf\r\nline"]["Description"] == "crlf\r\nline"
    assert rows_back["nulls"] == {"Name": "nulls", "Description": "", "Phone": ""}


def test_value_types(org: FakeSalesforce, bulk: Bulk) -> None:
    org.rest.define_sobject("Typed__c", ["Name", "Flag__c", "Count__c", "Ratio__c", "Day__c", "At__c"])
    bulk.insert("Typed__c", [{"Name": "t", "Flag__c": True, "Count__c": 12, "Ratio__c": 0.5,
                              "Day__c": date(2024, 2, 29),
                              "At__c": datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)}])
    record = records(org, "Typed__c")[0]
    assert (record["Flag__c"], record["Count__c"], record["Ratio__c"], record["Day__c"], record["At__c"]) == (
        "true", "12", "0.5", "2024-02-29", "2024-01-02T03:04:05.006Z")
    with pytest.raises(ValueError, match="naive"):
        bulk.insert("Typed__c", [{"Name": "t", "At__c": datetime(2024, 1, 1)}])
    with pytest.raises(TypeError, match="bytes"):
        bulk.insert("Typed__c", [{"Name": b"raw"}])
    with pytest.raises(ValueError):
        bulk.insert("Typed__c", [{"Name": "t", "Ratio__c": float("nan")}])


def test_update_blank_keeps_and_none_nulls(org: FakeSalesforce, bulk: Bulk) -> None:
    ids = org.rest.insert_many("Account", [{"Name": "A", "Industry": "Energy", "Phone": "1"},
                                           {"Name": "B", "Industry": "Retail", "Phone": "2"}])
    result = bulk.update("Account", [{"Id": ids[0], "Industry": "", "Phone": None},
                                     {"Id": ids[1], "Industry": "Media", "Phone": "3"}])
    assert result.records_processed == 2 and [r["sf__Created"] for r in result.successful] == ["false", "false"]
    stored = {r["Id"]: r for r in records(org)}
    assert (stored[ids[0]]["Industry"], stored[ids[0]]["Phone"]) == ("Energy", None)
    assert (stored[ids[1]]["Industry"], stored[ids[1]]["Phone"]) == ("Media", "3")


def test_update_unknown_id_is_a_failed_row(org: FakeSalesforce, bulk: Bulk) -> None:
    result = bulk.update("Account", [{"Id": "001000000000000AAA", "Name": "x"}])
    failed = list(result.failed)
    assert result.records_failed == 1 and failed[0]["sf__Error"].startswith("INVALID_CROSS_REFERENCE_KEY")
    assert list(failed[0]) == ["sf__Id", "sf__Error", "Id", "Name"]


def test_upsert_creates_and_updates(org: FakeSalesforce, bulk: Bulk) -> None:
    org.rest.insert("Account", {"Name": "Old", "External_Id__c": "E1"})
    result = bulk.upsert("Account", "External_Id__c", [{"External_Id__c": "E1", "Name": "Renamed"},
                                                       {"External_Id__c": "E2", "Name": "New"}])
    assert [(r["External_Id__c"], r["sf__Created"]) for r in result.successful] == [("E1", "false"), ("E2", "true")]
    assert sorted(r["Name"] for r in records(org)) == ["New", "Renamed"]
    with pytest.raises(ApiError) as info:
        bulk.upsert("Account", "Name", [{"Name": "x"}])
    assert info.value.error_code == "INVALIDJOB" and "Name" in info.value.message


def test_delete_and_hard_delete(org: FakeSalesforce, bulk: Bulk) -> None:
    ids = org.rest.insert_many("Account", [{"Name": f"A{i}"} for i in range(4)])
    result = bulk.delete("Account", ids[:2])  # plain id strings
    assert result.records_processed == 2 and records(org, include_deleted=True)[2:] != []
    assert {r["Id"] for r in records(org)} == set(ids[2:])
    deleted = {r["Id"] for r in bulk.query("SELECT Id FROM Account WHERE IsDeleted = true", include_deleted=True)}
    assert deleted == set(ids[:2])
    bulk.hard_delete("Account", [{"Id": ids[2]}])
    assert {r["Id"] for r in records(org, include_deleted=True)} == {ids[0], ids[1], ids[3]}
    with pytest.raises(ValueError, match="Name"):
        bulk.delete("Account", [{"Id": ids[3], "Name": "x"}])


def test_header_from_first_record_and_unknown_field_before_anything_is_sent(
    org: FakeSalesforce, bulk: Bulk, fake: FakeBulkApi
) -> None:
    requests_before = org.api_requests
    rows = [{"Name": "a"}, {"Name": "b"}, {"Name": "c", "Phone": "1"}]
    with pytest.raises(ValueError, match="Phone"):
        bulk.insert("Account", rows)
    with pytest.raises(ValueError, match="Phone"):  # also when the bad record is far past the first job
        Bulk(bulk._client, max_upload_bytes=64).insert("Account", [*([{"Name": "x"}] * 50), {"Phone": "1"}])
    assert fake.jobs_created == 0 and org.api_requests == requests_before
    result = bulk.insert("Account", rows, fields=["Name", "Phone"])
    assert result.records_processed == 3


def test_failed_rows_stream_from_failed_results(org: FakeSalesforce, bulk: Bulk) -> None:
    result = bulk.insert("Account", [{"Name": "ok", "Phone": "1"}, {"Name": "", "Phone": "2"},
                                     {"Name": "ok2", "Phone": "3"}])
    assert (result.records_processed, result.records_failed) == (3, 1)
    failed = list(result.failed)
    assert failed == [{"sf__Id": "", "sf__Error": "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --",
                       "Name": "", "Phone": "2"}]


def test_csv_file_path_and_crlf(org: FakeSalesforce, bulk: Bulk, fake: FakeBulkApi, tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    body = csv_bytes([["Name", "Description"], *[[f"n{i}", v] for i, v in enumerate(TRICKY)]], newline="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + body)  # a BOM, as spreadsheets write it
    result = bulk.insert("Account", path)
    assert result.records_processed == len(TRICKY) and result.records_failed == 0
    assert fake.job(result.job_ids[0])["lineEnding"] == "CRLF"
    stored = {r["Name"]: r.get("Description") for r in records(org)}
    assert stored == {f"n{i}": (v or None) for i, v in enumerate(TRICKY)} | {"n6": None}


def test_csv_semicolon_delimiter(org: FakeSalesforce, bulk: Bulk) -> None:
    data = b'Name;Description\n"a;b";"x, y"\n'
    result = bulk.insert("Account", io.BytesIO(data), column_delimiter="SEMICOLON")
    assert result.records_processed == 1
    assert [(r["Name"], r["Description"]) for r in result.successful] == [("a;b", "x, y")]


def test_csv_file_errors(bulk: Bulk, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="binary"):
        bulk.insert("Account", io.StringIO("Name\nx\n"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="BytesIO"):
        bulk.insert("Account", b"Name\nx\n")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        bulk.insert("Account", io.BytesIO(b""))
    with pytest.raises(ValueError, match="empty"):
        bulk.insert("Account", [])
    with pytest.raises(FileNotFoundError):
        bulk.insert("Account", tmp_path / "missing.csv")


@pytest.mark.parametrize("source", ["dicts", "path", "file", "pipe"])
def test_split_across_jobs_under_the_upload_limit(
    org: FakeSalesforce, sf: SalesforceClient, clock: Clock, fake: FakeBulkApi, tmp_path: Path, source: str
) -> None:
    fake.upload_limit = 300  # the fake refuses anything bigger
    bulk = Bulk(sf, max_upload_bytes=300, sleep=clock.sleep, clock=clock)
    values = [f"row {i}, " + ("é" * (i % 7)) + ("\nsecond line" if i % 5 == 0 else "") for i in range(60)]
    table = [["Name", "Description"], *[[f"N{i:02d}", v] for i, v in enumerate(values)]]
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes(table))
    data: Any = {"dicts": [dict(zip(table[0], row, strict=True)) for row in table[1:]], "path": path,
                 "file": io.BytesIO(path.read_bytes()), "pipe": Pipe(path.read_bytes())}[source]
    result = bulk.insert("Account", data)
    assert len(result.job_ids) == fake.uploads > 3
    assert all(size <= 300 for _, size, _, _ in fake.upload_log)
    assert result.records_processed == 60 and result.records_failed == 0
    assert sorted((r["Name"], r["Description"]) for r in records(org)) == [tuple(row) for row in table[1:]]
    assert [r["Name"] for r in result.successful] == [f"N{i:02d}" for i in range(60)]


def test_a_row_bigger_than_the_limit(sf: SalesforceClient) -> None:
    bulk = Bulk(sf, max_upload_bytes=100)
    with pytest.raises(ValueError, match="does not fit"):
        bulk.insert("Account", [{"Name": "x" * 200}])
    with pytest.raises(ValueError, match="does not fit"):
        bulk.insert("Account", io.BytesIO(b"Name\nshort\n" + b"y" * 200 + b"\n"))


def test_progress_reports_bytes(sf: SalesforceClient, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes([["Name"], *[[f"N{i}"] for i in range(100)]]))
    seen: list[int] = []
    Bulk(sf, max_upload_bytes=200).insert("Account", path, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] >= path.stat().st_size


# -- 401 in the middle of an upload ---------------------------------------------------------


@pytest.mark.parametrize("source", ["dicts", "path", "pipe"])
def test_upload_rejected_with_401_is_sent_again_intact(
    org: FakeSalesforce, bulk: Bulk, fake: FakeBulkApi, tmp_path: Path, source: str
) -> None:
    table = [["Name", "Description"], *[[f"N{i}", f"v{i}\n\"q\""] for i in range(20)]]
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes(table))
    data: Any = {"dicts": [dict(zip(table[0], row, strict=True)) for row in table[1:]], "path": path,
                 "pipe": Pipe(path.read_bytes())}[source]
    bulk._client.auth.access_token()
    tokens_before = org.token_requests
    fake.reject_next_upload()
    result = bulk.insert("Account", data)
    assert result.records_processed == 20 and result.records_failed == 0
    (job, size, digest, accepted), (job2, size2, digest2, accepted2) = fake.upload_log
    assert (job, size, digest, accepted) == (job2, size2, digest2, not accepted2) and not accepted
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert org.token_requests == tokens_before + 1  # the one retry minted a new token
    assert sorted(r["Description"] for r in records(org)) == sorted(row[1] for row in table[1:])


# -- waiting --------------------------------------------------------------------------------


def test_backoff_grows_to_the_cap(sf: SalesforceClient, clock: Clock, fake: FakeBulkApi) -> None:
    fake.polls_to_complete = 8
    bulk = Bulk(sf, poll_interval=1.0, max_poll_interval=4.0, sleep=clock.sleep, clock=clock)
    result = bulk.insert("Account", [{"Name": "a"}])
    assert result.records_processed == 1
    assert clock.sleeps == [1.0, 1.5, 2.25, 3.375, 4.0, 4.0, 4.0, 4.0]
    assert fake.job_polls == 9


def test_timeout_leaves_the_job_running(bulk: Bulk, clock: Clock, fake: FakeBulkApi) -> None:
    fake.polls_to_complete = 1000
    with pytest.raises(TimeoutError) as info:
        bulk.insert("Account", [{"Name": "a"}], timeout=5)
    job_id = fake.job_ids[0]
    assert job_id in str(info.value) and sum(clock.sleeps) == pytest.approx(5)
    assert bulk.ingest_job(job_id)["state"] == "InProgress"
    with pytest.raises(TimeoutError):
        list(bulk.query("SELECT Id FROM Account", timeout=1))


def test_wait_false_returns_job_ids(org: FakeSalesforce, bulk: Bulk, fake: FakeBulkApi) -> None:
    fake.polls_to_complete = 2
    job_ids = bulk.insert("Account", [{"Name": "a"}, {"Name": "b"}], wait=False)
    assert isinstance(job_ids, list) and job_ids == fake.job_ids
    assert fake.job(job_ids[0])["state"] == "UploadComplete" and records(org) == []
    result = bulk.wait(job_ids)
    assert result.records_processed == 2 and len(records(org)) == 2


def test_failed_job_is_an_api_error_naming_the_job(bulk: Bulk, fake: FakeBulkApi) -> None:
    fake.fail_next_job("InternalServerError : the org fell over")
    with pytest.raises(BulkJobError) as info:
        bulk.insert("Account", [{"Name": "a"}])
    error = info.value
    assert isinstance(error, ApiError) and error.job_id in str(error) and "fell over" in str(error)
    assert error.state == "Failed" and error.error_code == "BULK_JOB_FAILED"
    assert error.result is not None and [r["Name"] for r in error.result.unprocessed] == ["a"]


def test_failed_job_with_partial_processing(org: FakeSalesforce, bulk: Bulk, fake: FakeBulkApi) -> None:
    fake.fail_next_job("Job failed midway", after_rows=2)
    with pytest.raises(BulkJobError) as info:
        bulk.insert("Account", [{"Name": f"n{i}"} for i in range(5)])
    result = info.value.result
    assert result is not None and result.records_processed == 2
    assert [r["Name"] for r in result.successful] == ["n0", "n1"]
    assert [r["Name"] for r in result.unprocessed] == ["n2", "n3", "n4"]
    assert len(records(org)) == 2


def test_bad_csv_header_fails_the_job(bulk: Bulk) -> None:
    with pytest.raises(BulkJobError, match="Field name not found : Nope"):
        bulk.insert("Account", io.BytesIO(b"Name,Nope\na,b\n"))


def test_abort(org: FakeSalesforce, bulk: Bulk, fake: FakeBulkApi) -> None:
    fake.polls_to_complete = 5
    (job_id,) = bulk.insert("Account", [{"Name": "a"}, {"Name": "b"}], wait=False)
    info = bulk.abort(job_id)
    assert info["state"] == "Aborted"
    with pytest.raises(BulkJobError) as caught:
        bulk.wait([job_id])
    assert caught.value.state == "Aborted" and caught.value.result is not None
    assert [r["Name"] for r in caught.value.result.unprocessed] == ["a", "b"] and records(org) == []
    with pytest.raises(ApiError) as again:
        bulk.abort(job_id)
    assert again.value.error_code == "INVALIDJOBSTATE"
    query_id = bulk._client.post("jobs/query", json={"operation": "query", "query": "SELECT Id FROM Account"})["id"]
    assert bulk.abort(query_id)["state"] == "Aborted"


# -- query -------------------------------------------------------------------------------------


def test_query_pages_with_locator(org: FakeSalesforce, bulk: Bulk, fake: FakeBulkApi) -> None:
    org.rest.insert_many("Account", [{"Name": f"A{i:02d}", "Phone": str(i)} for i in range(10)])
    rows = bulk.query("SELECT Name, Phone FROM Account ORDER BY Name", max_records=3)
    assert fake.jobs_created == 0  # nothing is sent before iteration starts
    assert list(rows) == [{"Name": f"A{i:02d}", "Phone": str(i)} for i in range(10)]
    assert fake.result_requests == 4  # 3 + 3 + 3 + 1
    fake.default_max_records = 4
    assert len(list(bulk.query("SELECT Id FROM Account"))) == 10 and fake.result_requests == 7


def test_query_to_file(org: FakeSalesforce, bulk: Bulk, tmp_path: Path) -> None:
    org.rest.insert_many("Account", [{"Name": f"A{i}", "Description": TRICKY[i % len(TRICKY)]} for i in range(9)])
    path = tmp_path / "out.csv"
    assert bulk.query_to_file("SELECT Name, Description FROM Account", path, max_records=2) == 9
    with path.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["Name", "Description"] and len(table) == 10
    assert table[1:] == [[f"A{i}", TRICKY[i % len(TRICKY)]] for i in range(9)]
    buffer = io.BytesIO()
    assert bulk.query_to_file("SELECT Name FROM Account WHERE Name = 'nobody'", buffer) == 0
    assert buffer.getvalue() == b'"Name"\n'
    with pytest.raises(TypeError):
        bulk.query_to_file("SELECT Name FROM Account", io.StringIO())  # type: ignore[arg-type]
    with pytest.raises(MalformedQueryError):
        bulk.query_to_file("SELEKT Name FROM Account", tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_query_errors(bulk: Bulk, fake: FakeBulkApi) -> None:
    with pytest.raises(MalformedQueryError):
        list(bulk.query("SELEKT Id FROM Account"))
    with pytest.raises(ValueError):
        bulk.query("  ")
    with pytest.raises(ValueError):
        bulk.query("SELECT Id FROM Account", max_records=0)
    fake.fail_next_job("QUERY_TIMEOUT: took too long")
    with pytest.raises(BulkJobError, match="QUERY_TIMEOUT") as info:
        list(bulk.query("SELECT Id FROM Account"))
    assert info.value.result is None


# -- job control ---------------------------------------------------------------------------------


def test_job_control(bulk: Bulk, fake: FakeBulkApi) -> None:
    fake.jobs_page_size = 1  # every job on its own page: nextRecordsUrl is followed
    result = bulk.insert("Account", [{"Name": "a"}])
    assert isinstance(result, BulkResult)
    other = bulk.insert("Account", [{"Name": "b"}])
    assert isinstance(other, BulkResult)
    list(bulk.query("SELECT Id FROM Account"))
    infos = list(bulk.jobs())
    assert [i["jobType"] for i in infos] == ["V2Ingest", "V2Ingest", "V2Query"]
    assert [i["id"] for i in bulk.jobs("ingest")] == result.job_ids + other.job_ids
    assert bulk.ingest_job(result.job_ids[0])["numberRecordsProcessed"] == 1
    query_id = infos[2]["id"]
    assert bulk.query_job(query_id)["state"] == "JobComplete"
    bulk.delete_job(result.job_ids[0])
    bulk.delete_job(query_id)
    assert fake.job_ids == other.job_ids
    with pytest.raises(ResourceNotFoundError):
        bulk.ingest_job(result.job_ids[0])
    with pytest.raises(ValueError):
        bulk.ingest_job("not an id")
    with pytest.raises(ValueError):
        list(bulk.jobs("batch"))
    open_job = bulk._client.post("jobs/ingest", json={"object": "Account", "operation": "insert"})["id"]
    with pytest.raises(ApiError) as info:  # an Open job cannot be deleted: abort it first
        bulk.delete_job(open_job)
    assert info.value.error_code == "INVALIDJOBSTATE" and open_job in fake.job_ids


def test_argument_errors(bulk: Bulk, sf: SalesforceClient) -> None:
    with pytest.raises(ValueError):
        bulk.insert("Bad Name", [{"Name": "a"}])
    with pytest.raises(TypeError):
        bulk.insert("Account", {"Name": "a"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bulk.insert("Account", [{"Name": "a"}], timeout=0)
    with pytest.raises(ValueError):
        bulk.insert("Account", [{"Name": "a"}], column_delimiter="SPACE")
    with pytest.raises(ValueError):
        bulk.insert("Account", [{"Bad Field": "a"}])
    with pytest.raises(ValueError):
        Bulk(sf, max_upload_bytes=10)
    with pytest.raises(ValueError):
        Bulk(sf, poll_interval=-1)
    assert isinstance(sf.bulk, Bulk)


# -- the fake, strictly --------------------------------------------------------------------------


def test_fake_rejects_wrong_uploads_and_transitions(sf: SalesforceClient, fake: FakeBulkApi) -> None:
    job = sf.post("jobs/ingest", json={"object": "Account", "operation": "insert", "lineEnding": "LF"})
    assert job["state"] == "Open" and job["contentUrl"].endswith(f"jobs/ingest/{job['id']}/batches")
    batches = f"jobs/ingest/{job['id']}/batches"
    with pytest.raises(ApiError) as info:
        sf.request("PUT", batches, data=b"Name\na\n", headers={"Content-Type": "application/json"})
    assert info.value.error_code == "INVALIDCONTENTTYPE"
    fake.upload_limit = 10
    with pytest.raises(ApiError) as info:
        sf.request("PUT", batches, data=b"Name\n" + b"a" * 20 + b"\n", headers={"Content-Type": "text/csv"})
    assert info.value.status_code == 413
    fake.upload_limit = 1000
    sf.request("PUT", batches, data=b"Name\r\na\r\n", headers={"Content-Type": "text/csv"})
    with pytest.raises(ApiError) as info:
        sf.request("PUT", batches, data=b"Name\nb\n", headers={"Content-Type": "text/csv"})
    assert info.value.error_code == "BULK_API_ERROR" and "only do 'PUT' once" in info.value.message
    with pytest.raises(ApiError) as info:
        sf.get(f"jobs/ingest/{job['id']}/successfulResults")
    assert info.value.error_code == "INVALIDJOBSTATE"
    done = sf.patch(f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    assert done["state"] == "Failed" and "LineEnding is invalid" in done["errorMessage"]
    with pytest.raises(ApiError) as info:
        sf.patch(f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    assert info.value.error_code == "INVALIDJOBSTATE"
    with pytest.raises(ApiError) as info:
        sf.post("jobs/ingest", json={"object": "Nope", "operation": "insert"})
    assert info.value.error_code == "INVALIDJOB"
    with pytest.raises(ApiError):
        sf.post("jobs/ingest", json={"object": "Account", "operation": "merge"})
    with pytest.raises(ApiError):
        sf.post("jobs/query", json={"operation": "query", "query": "SELECT COUNT() FROM Account"})
    empty = sf.post("jobs/ingest", json={"object": "Account", "operation": "insert"})
    closed = sf.patch(f"jobs/ingest/{empty['id']}", json={"state": "UploadComplete"})
    assert closed["state"] == "Failed" and "No data" in closed["errorMessage"]


def test_fake_query_results_need_a_complete_job(sf: SalesforceClient, fake: FakeBulkApi) -> None:
    fake.polls_to_complete = 1
    job = sf.post("jobs/query", json={"operation": "query", "query": "SELECT Id FROM Account"})
    assert job["state"] == "UploadComplete"
    with pytest.raises(ApiError) as info:
        sf.request("GET", f"jobs/query/{job['id']}/results")
    assert info.value.error_code == "INVALIDJOBSTATE"
    assert sf.get(f"jobs/query/{job['id']}")["state"] == "InProgress"
    assert sf.get(f"jobs/query/{job['id']}")["state"] == "JobComplete"
    response = sf.request("GET", f"jobs/query/{job['id']}/results")
    assert response.headers["Sforce-Locator"] == "null" and response.headers["Sforce-NumberOfRecords"] == "0"
    assert response.content == b'"Id"\n'
    with pytest.raises(ApiError) as info:
        sf.request("GET", f"jobs/query/{job['id']}/results", params={"locator": "bm9wZQ"})
    assert info.value.error_code == "INVALID_QUERY_LOCATOR"
    with pytest.raises(ApiError) as info:
        sf.request("GET", f"/services/data/v61.0/jobs/query/{job['id']}/results")
    assert info.value.status_code == 409


# -- memory -----------------------------------------------------------------------------------


def _peak(fn: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        value = fn()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def big_org() -> Iterator[OrgProcess]:
    """An org in another process (so tracemalloc measures the client only), 200,000 records preloaded."""
    with OrgProcess(rows=200_000) as org:
        yield org


def test_large_extract_in_bounded_memory(big_org: OrgProcess) -> None:
    with SalesforceClient(big_org.auth()) as sf:
        def extract(limit: int) -> int:
            return sum(1 for _ in sf.bulk.query(f"SELECT Id, Name, Value__c FROM Item__c LIMIT {limit}"))

        small, small_peak = _peak(lambda: extract(10_000))
        large, large_peak = _peak(lambda: extract(200_000))
    assert (small, large) == (10_000, 200_000)
    # Ten times the rows, about the same memory: one response chunk and one row at a time.
    assert large_peak < 4 * 1024 * 1024 and large_peak < small_peak * 1.5 + 1024 * 1024


def test_large_load_in_bounded_memory(big_org: OrgProcess, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes(csv_bytes([["Name", "Value__c"], *([f"File {n}", f"{n},\n\"{n}\""] for n in range(200_000))]))
    with SalesforceClient(big_org.auth()) as sf:
        bulk = Bulk(sf, poll_interval=0.05)

        def load(count: int) -> BulkResult:
            rows = ({"Name": f"Load {n}", "Value__c": str(n)} for n in range(count))
            return bulk.insert("Item__c", rows)

        small, small_peak = _peak(lambda: load(10_000))
        large, large_peak = _peak(lambda: load(200_000))
        from_file, file_peak = _peak(lambda: bulk.insert("Item__c", path))
    assert (small.records_processed, large.records_processed, from_file.records_processed) == (
        10_000, 200_000, 200_000)
    assert large_peak < 4 * 1024 * 1024 and large_peak < small_peak * 1.5 + 1024 * 1024
    assert file_peak < 4 * 1024 * 1024  # a CSV file is cut, never read whole
    assert big_org.count() == 610_000


def test_a_refused_upload_aborts_its_job_and_frees_the_spool(sf: SalesforceClient, fake: FakeBulkApi) -> None:
    bulk = Bulk(sf, max_upload_bytes=300)
    bulk.insert("Account", [{"Name": "warm-up"}])  # the token and the pooled connection, opened once
    fds_before = len(os.listdir("/proc/self/fd"))
    fake.upload_limit = 150  # smaller than the client's 300: the first upload is refused
    with pytest.raises(ApiError) as info:
        bulk.insert("Account", [{"Name": f"Account number {i}"} for i in range(60)])
    assert info.value.status_code == 413
    job_id = fake.job_ids[-1]
    assert fake.job(job_id)["state"] == "Aborted"  # never left Open
    assert len(os.listdir("/proc/self/fd")) == fds_before  # every spooled file closed


def test_one_bulk_shared_by_threads(org: FakeSalesforce, bulk: Bulk) -> None:
    def load(n: int) -> None:
        result = bulk.insert("Account", [{"Name": f"t{n}-{i}"} for i in range(30)])
        assert result.records_processed == 30
        assert sorted(r["Name"] for r in result.successful) == sorted(f"t{n}-{i}" for i in range(30))
        assert sum(1 for r in bulk.query(f"SELECT Name FROM Account WHERE Name LIKE 't{n}-%'")) == 30

    run_threads(load, 6)
    assert len(records(org)) == 180


def test_update_and_delete_from_csv_files(org: FakeSalesforce, bulk: Bulk, tmp_path: Path) -> None:
    ids = org.rest.insert_many("Account", [{"Name": f"A{i}", "Phone": "0"} for i in range(3)])
    updates = tmp_path / "updates.csv"
    updates.write_bytes(csv_bytes([["Id", "Phone"], [ids[0], "#N/A"], [ids[1], ""], [ids[2], "+1 (555) 0100"]]))
    result = bulk.update("Account", updates)
    assert result.records_processed == 3 and result.records_failed == 0
    assert [r.get("Phone") for r in records(org)] == [None, "0", "+1 (555) 0100"]
    deletes = tmp_path / "deletes.csv"
    deletes.write_bytes(csv_bytes([["Id"], [ids[0]], [ids[2]]]))
    assert bulk.delete("Account", deletes).records_processed == 2
    assert [r["Id"] for r in records(org)] == [ids[1]]
