"""Bulk API 2.0: load and extract millions of records in bounded memory (``sf.bulk``).

::

    sf = SalesforceClient(auth)
    result = sf.bulk.insert("Account", ({"Name": f"Acme {n}"} for n in range(1_000_000)))
    print(result.records_processed, result.records_failed)
    for row in result.failed:                       # streamed from the failedResults CSVs
        print(row["sf__Error"], row["Name"])

    sf.bulk.upsert("Contact", "External_Id__c", "contacts.csv")    # a CSV file: sent as it is
    for row in sf.bulk.query("SELECT Id, Name FROM Account"):       # every Sforce-Locator page, lazily
        ...
    sf.bulk.query_to_file("SELECT Id, Email FROM Contact", "contacts.csv")

How it keeps memory flat:

- dict records are written as CSV into temporary files (the whole input is
  checked and spooled before the first job is created, so a record with an
  unknown field is a ``ValueError`` before anything is sent); a CSV file is
  never copied: each job's upload is the header plus a byte range of the file,
  cut at row boundaries (quoted newlines respected).  A pipe is spooled job by job;
- an input bigger than ``max_upload_bytes`` (100 MiB: Salesforce takes at most
  150 MB per job *after* base64, which adds a third) is split into several jobs;
- uploads are streamed from those files, so the client's one retry after a ``401``
  re-reads the same bytes: the job gets the upload intact, never half of it;
- results (``successful``, ``failed``, ``unprocessed``) and query pages are
  parsed from the response stream as they arrive; nothing holds a whole result set.

Jobs are polled with backoff (``poll_interval`` growing by half each time up to
``max_poll_interval``) until they end or ``timeout`` seconds pass
(:class:`TimeoutError`, the jobs keep running).  A job that ends ``Failed`` or
``Aborted`` is a :class:`BulkJobError` naming it, raised once every job of the
call has ended, with the :class:`BulkResult` attached.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Literal, Union, overload

from authkit.errors import ApiError, ResourceNotFoundError
from authkit.salesforce._bulk_csv import (
    _BLOCK,
    _Body,
    _csv_rows,
    _each_then_close,
    _file_uploads,
    _spool_records,
)
from authkit.salesforce._names import check_name

if TYPE_CHECKING:
    import requests

    from authkit.salesforce.client import SalesforceClient

__all__ = ["Bulk", "BulkResult", "BulkJobError", "MAX_UPLOAD_BYTES"]

#: Raw CSV bytes per job: Salesforce's 150 MB limit applies after base64 (x 4/3).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024

#: A record source: an iterable of dicts, a CSV path, or a binary file object holding CSV.
Records = Union[Iterable[Mapping[str, Any]], str, "os.PathLike[str]", IO[bytes]]

_TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})
_DELIMITERS = {"COMMA": ",", "TAB": "\t", "SEMICOLON": ";", "PIPE": "|", "CARET": "^", "BACKQUOTE": "`"}
_JOB_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_CSV_HEADERS = {"Content-Type": "text/csv", "Accept": "application/json"}

logger = logging.getLogger("authkit.salesforce")


class BulkJobError(ApiError):
    """A bulk job ended ``Failed`` or ``Aborted``.

    ``job_id``, ``state`` and ``job`` (the job's info dict) name it; ``result``
    is the :class:`BulkResult` of every job of the call (``None`` for a query),
    so rows that did go through, and ``failed``/``unprocessed`` ones, can still be read.
    """

    def __init__(self, job: Mapping[str, Any], result: BulkResult | None = None) -> None:
        self.job_id = str(job.get("id"))
        self.state = str(job.get("state"))
        self.job = dict(job)
        self.result = result
        reason = job.get("errorMessage") or ("aborted" if self.state == "Aborted" else "no reason given")
        what = f"{job.get('operation', '?')} {job.get('object', '?')}"
        super().__init__(f"bulk job {self.job_id} ({what}) ended {self.state}: {reason}", status_code=200,
                         error_code="BULK_JOB_" + self.state.upper())


class BulkResult:
    """What a bulk load did: ``job_ids``, ``jobs`` (final info dicts), counts, and row streams.

    ``successful``, ``failed`` and ``unprocessed`` are re-iterable: each loop
    downloads the jobs' result CSVs again and yields one dict per row, keys in
    Salesforce's column order (``sf__Id``, ``sf__Created`` / ``sf__Error``, then
    the fields as uploaded); values are the CSV's strings.
    """

    def __init__(self, bulk: Bulk, jobs: Sequence[Mapping[str, Any]]) -> None:
        self.jobs = [dict(job) for job in jobs]
        self.job_ids = [str(job["id"]) for job in self.jobs]
        self.records_processed = sum(int(job.get("numberRecordsProcessed") or 0) for job in self.jobs)
        self.records_failed = sum(int(job.get("numberRecordsFailed") or 0) for job in self.jobs)
        self.successful = _ResultRows(bulk, self.jobs, "successfulResults")
        self.failed = _ResultRows(bulk, self.jobs, "failedResults")
        self.unprocessed = _ResultRows(bulk, self.jobs, "unprocessedrecords")

    @property
    def records_successful(self) -> int:
        return self.records_processed - self.records_failed

    def __repr__(self) -> str:
        return (f"BulkResult(job_ids={self.job_ids!r}, records_processed={self.records_processed}, "
                f"records_failed={self.records_failed})")


class _ResultRows:
    """One kind of ingest result across jobs, streamed anew on each iteration."""

    def __init__(self, bulk: Bulk, jobs: list[dict[str, Any]], resource: str) -> None:
        self._bulk = bulk
        self._jobs = jobs
        self._resource = resource

    def __iter__(self) -> Iterator[dict[str, str]]:
        for job in self._jobs:
            response = self._bulk._client.request(
                "GET", f"jobs/ingest/{job['id']}/{self._resource}", stream=True, headers={"Accept": "text/csv"})
            yield from _csv_rows(response, _delimiter(job))

    def __repr__(self) -> str:
        return f"<{self._resource} of {len(self._jobs)} bulk job(s)>"


class Bulk:
    """Bulk API 2.0 through ``client`` (usually reached as ``sf.bulk``).  See the module docstring.

    ``max_upload_bytes`` caps one job's upload (more input means more jobs);
    ``poll_interval`` / ``max_poll_interval`` (seconds) shape the backoff while
    waiting; ``sleep`` and ``clock`` (``time.sleep`` / ``time.monotonic``) are
    injectable for tests.
    """

    def __init__(
        self,
        client: SalesforceClient,
        *,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        poll_interval: float = 0.5,
        max_poll_interval: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(max_upload_bytes, int) or isinstance(max_upload_bytes, bool) or max_upload_bytes < 64:
            raise ValueError("max_upload_bytes must be an int >= 64")
        for name, value in (("poll_interval", poll_interval), ("max_poll_interval", max_poll_interval)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a finite number of seconds >= 0")
        self._client = client
        self.max_upload_bytes = max_upload_bytes
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), float(poll_interval))
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        return f"Bulk({self._client!r}, max_upload_bytes={self.max_upload_bytes})"

    # -- ingest ----------------------------------------------------------------------------

    @overload
    def insert(self, sobject: str, records: Records, *, fields: Sequence[str] | None = ...,
               wait: Literal[True] = ..., timeout: float | None = ..., column_delimiter: str = ...,
               progress: Callable[[int], None] | None = ...) -> BulkResult: ...

    @overload
    def insert(self, sobject: str, records: Records, *, fields: Sequence[str] | None = ...,
               wait: Literal[False], timeout: float | None = ..., column_delimiter: str = ...,
               progress: Callable[[int], None] | None = ...) -> list[str]: ...

    def insert(self, sobject: str, records: Records, *, fields: Sequence[str] | None = None, wait: bool = True,
               timeout: float | None = None, column_delimiter: str = "COMMA",
               progress: Callable[[int], None] | None = None) -> BulkResult | list[str]:
        """Create records: ``records`` is an iterable of dicts or CSV (a path or a binary file).

        ``fields`` fixes the CSV header for dict records (default: the first
        record's keys; a later record with another key is a ``ValueError``).  A
        value ``None`` sets the field to null (``#N/A``), a missing key or ``""``
        leaves it unset.  ``column_delimiter`` names a CSV input's delimiter
        (``COMMA``, ``TAB``, ``SEMICOLON``, ``PIPE``, ``CARET``, ``BACKQUOTE``).
        ``progress`` is called with the bytes uploaded so far.  Waits (see
        :meth:`wait`) and returns a :class:`BulkResult`; ``wait=False`` returns
        the job ids at once.
        """
        return self._ingest("insert", sobject, records, None, fields, wait, timeout, column_delimiter, progress)

    @overload
    def update(self, sobject: str, records: Records, *, fields: Sequence[str] | None = ...,
               wait: Literal[True] = ..., timeout: float | None = ..., column_delimiter: str = ...,
               progress: Callable[[int], None] | None = ...) -> BulkResult: ...

    @overload
    def update(self, sobject: str, records: Records, *, fields: Sequence[str] | None = ...,
               wait: Literal[False], timeout: float | None = ..., column_delimiter: str = ...,
               progress: Callable[[int], None] | None = ...) -> list[str]: ...

    def update(self, sobject: str, records: Records, *, fields: Sequence[str] | None = None, wait: bool = True,
               timeout: float | None = None, column_delimiter: str = "COMMA",
               progress: Callable[[int], None] | None = None) -> BulkResult | list[str]:
        """Update records by ``Id`` (each record has an ``Id`` column); otherwise as :meth:`insert`."""
        return self._ingest("update", sobject, records, None, fields, wait, timeout, column_delimiter, progress)

    @overload
    def upsert(self, sobject: str, external_id_field: str, records: Records, *,
               fields: Sequence[str] | None = ..., wait: Literal[True] = ..., timeout: float | None = ...,
               column_delimiter: str = ..., progress: Callable[[int], None] | None = ...) -> BulkResult: ...

    @overload
    def upsert(self, sobject: str, external_id_field: str, records: Records, *,
               fields: Sequence[str] | None = ..., wait: Literal[False], timeout: float | None = ...,
               column_delimiter: str = ..., progress: Callable[[int], None] | None = ...) -> list[str]: ...

    def upsert(self, sobject: str, external_id_field: str, records: Records, *,
               fields: Sequence[str] | None = None, wait: bool = True, timeout: float | None = None,
               column_delimiter: str = "COMMA",
               progress: Callable[[int], None] | None = None) -> BulkResult | list[str]:
        """Update the record whose ``external_id_field`` matches, or create it (``sf__Created`` says which)."""
        check_name(external_id_field, "external_id_field")
        return self._ingest("upsert", sobject, records, external_id_field, fields, wait, timeout, column_delimiter,
                            progress)

    @overload
    def delete(self, sobject: str, records: Records | Iterable[str], *, wait: Literal[True] = ...,
               timeout: float | None = ..., progress: Callable[[int], None] | None = ...) -> BulkResult: ...

    @overload
    def delete(self, sobject: str, records: Records | Iterable[str], *, wait: Literal[False],
               timeout: float | None = ..., progress: Callable[[int], None] | None = ...) -> list[str]: ...

    def delete(self, sobject: str, records: Records | Iterable[str], *, wait: bool = True,
               timeout: float | None = None,
               progress: Callable[[int], None] | None = None) -> BulkResult | list[str]:
        """Delete records (to the recycle bin): dicts with only ``Id``, plain id strings, or an ``Id`` CSV."""
        return self._ingest("delete", sobject, _ids(records), None, ["Id"], wait, timeout, "COMMA", progress)

    @overload
    def hard_delete(self, sobject: str, records: Records | Iterable[str], *, wait: Literal[True] = ...,
                    timeout: float | None = ..., progress: Callable[[int], None] | None = ...) -> BulkResult: ...

    @overload
    def hard_delete(self, sobject: str, records: Records | Iterable[str], *, wait: Literal[False],
                    timeout: float | None = ..., progress: Callable[[int], None] | None = ...) -> list[str]: ...

    def hard_delete(self, sobject: str, records: Records | Iterable[str], *, wait: bool = True,
                    timeout: float | None = None,
                    progress: Callable[[int], None] | None = None) -> BulkResult | list[str]:
        """Delete records for good, bypassing the recycle bin (needs the "Bulk API Hard Delete" permission)."""
        return self._ingest("hardDelete", sobject, _ids(records), None, ["Id"], wait, timeout, "COMMA", progress)

    def _ingest(self, operation: str, sobject: str, records: Any, external_id: str | None,
                fields: Sequence[str] | None, wait: bool, timeout: float | None, column_delimiter: str,
                progress: Callable[[int], None] | None) -> BulkResult | list[str]:
        check_name(sobject, "sObject")
        _check_timeout(timeout)
        if column_delimiter not in _DELIMITERS:
            raise ValueError(f"column_delimiter must be one of {', '.join(_DELIMITERS)}")
        uploads = self._uploads(records, fields, operation, column_delimiter)
        job_ids: list[str] = []
        sent = 0
        try:
            for upload in uploads:
                with upload:
                    spec: dict[str, Any] = {"object": sobject, "operation": operation, "contentType": "CSV",
                                            "columnDelimiter": upload.delimiter, "lineEnding": upload.line_ending}
                    if external_id is not None:
                        spec["externalIdFieldName"] = external_id
                    job_id = str(self._client.post("jobs/ingest", json=spec)["id"])
                    job_ids.append(job_id)
                    try:
                        if progress is not None:
                            upload.on_read = _Counter(progress, sent)
                        self._client.request("PUT", f"jobs/ingest/{job_id}/batches", data=upload, headers=_CSV_HEADERS)
                        self._client.patch(f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
                    except BaseException:
                        self._abort_quietly("ingest", job_id)  # never leave an Open job behind
                        raise
                    sent += len(upload)
                    if progress is not None:
                        progress(sent)
        finally:
            close = getattr(uploads, "close", None)
            if close is not None:
                close()  # removes any spooled files not yet sent
        if not wait:
            return job_ids
        return self.wait(job_ids, timeout=timeout)

    def _uploads(self, records: Any, fields: Sequence[str] | None, operation: str,
                 delimiter: str) -> Iterator[_Body]:
        limit = self.max_upload_bytes
        if isinstance(records, (str, os.PathLike)):
            return _file_uploads(os.fspath(records), None, limit, delimiter)
        if isinstance(records, (bytes, bytearray, memoryview)):
            raise TypeError("records must be dicts, a CSV path or a binary file object, not bytes "
                            "(wrap CSV bytes in io.BytesIO)")
        if hasattr(records, "read"):
            if isinstance(records, io.TextIOBase):
                raise TypeError("open the CSV file in binary mode ('rb')")
            return _file_uploads(None, records, limit, delimiter)
        if isinstance(records, Mapping) or not isinstance(records, Iterable):
            raise TypeError("records must be an iterable of dicts, a CSV path or a binary file object")
        return _each_then_close(_spool_records(records, fields, limit))

    def _abort_quietly(self, kind: str, job_id: str) -> None:
        try:
            self._client.patch(f"jobs/{kind}/{job_id}", json={"state": "Aborted"})
        except Exception as exc:  # the original failure is what the caller needs to see
            logger.debug("could not abort bulk job %s: %s", job_id, type(exc).__name__)

    # -- waiting ------------------------------------------------------------------------

    def wait(self, job_ids: Iterable[str], *, timeout: float | None = None) -> BulkResult:
        """Wait for ingest jobs (e.g. from ``wait=False``) to end; their :class:`BulkResult`.

        Raises :class:`BulkJobError` (with ``.result``) if one ended ``Failed`` or
        ``Aborted``, :class:`TimeoutError` after ``timeout`` seconds.
        """
        ids = [_check_job_id(job_id) for job_id in job_ids]
        _check_timeout(timeout)
        deadline = None if timeout is None else self._clock() + timeout
        jobs = [self._wait_one("ingest", job_id, deadline, timeout) for job_id in ids]
        result = BulkResult(self, jobs)
        for job in jobs:
            if job.get("state") != "JobComplete":
                raise BulkJobError(job, result)
        return result

    def _wait_one(self, kind: str, job_id: str, deadline: float | None, timeout: float | None) -> dict[str, Any]:
        interval = self.poll_interval
        while True:
            job: dict[str, Any] = self._client.get(f"jobs/{kind}/{job_id}")
            if job.get("state") in _TERMINAL:
                return job
            pause = interval
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    raise TimeoutError(f"bulk job {job_id} is still {job.get('state')} after {timeout:g} s; it "
                                       f"keeps running (sf.bulk.{kind}_job({job_id!r}) shows it, sf.bulk.abort "
                                       "stops it)")
                pause = min(pause, left)
            self._sleep(pause)
            interval = min(interval * 1.5, self.max_poll_interval)

    # -- query -----------------------------------------------------------------------------

    def query(self, soql: str, include_deleted: bool = False, *, max_records: int | None = None,
              timeout: float | None = None) -> Iterator[dict[str, str]]:
        """Every row ``soql`` selects, as dicts of the CSV's strings (``""`` for null).

        The job is created when iteration starts; result pages (``Sforce-Locator``,
        ``max_records`` rows each, default Salesforce's choice) are fetched and parsed
        as you go, so memory stays flat.  ``include_deleted=True`` runs ``queryAll``.
        """
        _check_query(soql, max_records, timeout)
        return self._query_rows(soql, include_deleted, max_records, timeout)

    def _query_rows(self, soql: str, include_deleted: bool, max_records: int | None,
                    timeout: float | None) -> Iterator[dict[str, str]]:
        for response, delimiter in self._query_pages(soql, include_deleted, max_records, timeout):
            yield from _csv_rows(response, delimiter)

    def query_to_file(self, soql: str, file: str | os.PathLike[str] | IO[bytes], include_deleted: bool = False,
                      *, max_records: int | None = None, timeout: float | None = None) -> int:
        """Write every row of ``soql`` as one CSV (one header) to ``file`` (a path or a binary
        file object) without parsing it; returns the number of rows.  A path is removed again
        if the extract fails part way."""
        _check_query(soql, max_records, timeout)
        if isinstance(file, (str, os.PathLike)):
            try:
                with open(file, "wb") as handle:
                    return self._query_to(handle, soql, include_deleted, max_records, timeout)
            except BaseException:
                os.unlink(file)  # no half extract left behind to be mistaken for a whole one
                raise
        if not hasattr(file, "write") or isinstance(file, io.TextIOBase):
            raise TypeError("file must be a path or a binary file object")
        return self._query_to(file, soql, include_deleted, max_records, timeout)

    def _query_to(self, out: IO[bytes], soql: str, include_deleted: bool, max_records: int | None,
                  timeout: float | None) -> int:
        count = 0
        for page, (response, _) in enumerate(self._query_pages(soql, include_deleted, max_records, timeout)):
            count += int(response.headers.get("Sforce-NumberOfRecords") or 0)
            skip = page > 0  # every page repeats the header row
            try:
                for chunk in response.iter_content(_BLOCK):
                    if skip:
                        end = chunk.find(b"\n")
                        if end < 0:
                            continue
                        chunk, skip = chunk[end + 1:], False
                    out.write(chunk)
            finally:
                response.close()
        return count

    def _query_pages(self, soql: str, include_deleted: bool, max_records: int | None,
                     timeout: float | None) -> Iterator[tuple[requests.Response, str]]:
        deadline = None if timeout is None else self._clock() + timeout
        spec = {"operation": "queryAll" if include_deleted else "query", "query": soql, "contentType": "CSV",
                "columnDelimiter": "COMMA", "lineEnding": "LF"}
        job_id = str(self._client.post("jobs/query", json=spec)["id"])
        job = self._wait_one("query", job_id, deadline, timeout)
        if job.get("state") != "JobComplete":
            raise BulkJobError(job)
        delimiter = _delimiter(job)
        locator: str | None = None
        while True:
            params: dict[str, Any] = {}
            if locator:
                params["locator"] = locator
            if max_records is not None:
                params["maxRecords"] = max_records
            response = self._client.request("GET", f"jobs/query/{job_id}/results", params=params or None,
                                            stream=True, headers={"Accept": "text/csv"})
            locator = response.headers.get("Sforce-Locator")
            yield response, delimiter
            if not locator or locator == "null":
                return

    # -- job control --------------------------------------------------------------------

    def ingest_job(self, job_id: str) -> dict[str, Any]:
        """An ingest job's info (``state``, ``numberRecordsProcessed``, ``errorMessage``, ...)."""
        return dict(self._client.get(f"jobs/ingest/{_check_job_id(job_id)}"))

    def query_job(self, job_id: str) -> dict[str, Any]:
        """A query job's info."""
        return dict(self._client.get(f"jobs/query/{_check_job_id(job_id)}"))

    def abort(self, job_id: str) -> dict[str, Any]:
        """Abort an ingest or query job that has not ended; its info."""
        return self._either("PATCH", _check_job_id(job_id), json={"state": "Aborted"}) or {}

    def delete_job(self, job_id: str) -> None:
        """Delete a job that has ended (or been closed) and its data at Salesforce."""
        self._either("DELETE", _check_job_id(job_id))

    def jobs(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Info dicts of the org's jobs (``kind`` ``"ingest"`` or ``"query"``; default both), page by page."""
        if kind not in (None, "ingest", "query"):
            raise ValueError("kind must be 'ingest', 'query' or None")
        for which in ((kind,) if kind else ("ingest", "query")):
            page = self._client.get(f"jobs/{which}")
            while True:
                yield from page.get("records") or []
                next_url = page.get("nextRecordsUrl")
                if page.get("done", True) or not next_url:
                    break
                page = self._client.get(next_url)

    def _either(self, method: str, job_id: str, **kwargs: Any) -> Any:
        """``method`` on the ingest job ``job_id``, or on the query job if there is no such ingest job."""
        try:
            return _json_or_none(self._client.request(method, f"jobs/ingest/{job_id}", **kwargs))
        except ResourceNotFoundError:
            return _json_or_none(self._client.request(method, f"jobs/query/{job_id}", **kwargs))


# -- uploads ---------------------------------------------------------------------------------


class _Counter:
    """Reports ``base + bytes read`` to a progress callback."""

    def __init__(self, callback: Callable[[int], None], base: int) -> None:
        self._callback = callback
        self._base = base

    def __call__(self, position: int) -> None:
        self._callback(self._base + position)


def _ids(records: Any) -> Any:
    """Delete input: plain id strings become ``{"Id": id}``; other input passes through."""
    if isinstance(records, (str, os.PathLike)) or hasattr(records, "read") or not isinstance(records, Iterable):
        return records
    if isinstance(records, Mapping):
        return records
    return ({"Id": item} if isinstance(item, str) else item for item in records)


# -- helpers ----------------------------------------------------------------------------


def _delimiter(job: Mapping[str, Any]) -> str:
    return _DELIMITERS.get(str(job.get("columnDelimiter") or "COMMA"), ",")


def _json_or_none(response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


# -- argument checks --------------------------------------------------------------------

def _check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str):
        raise TypeError("job id must be a str")
    if not _JOB_ID_RE.fullmatch(job_id):  # fullmatch: "$" alone would let a trailing newline through
        raise ValueError(f"invalid job id {job_id!r}: expected 15 or 18 letters and digits")
    return job_id


def _check_timeout(timeout: object) -> None:
    if timeout is None:
        return
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < float("inf"):
        raise ValueError("timeout must be a finite number of seconds > 0, or None")


def _check_query(soql: object, max_records: object, timeout: object) -> None:
    if not isinstance(soql, str):
        raise TypeError("soql must be a str")
    if not soql.strip():
        raise ValueError("soql must not be empty")
    if max_records is not None and (not isinstance(max_records, int) or isinstance(max_records, bool)
                                    or max_records < 1):
        raise ValueError("max_records must be an int >= 1, or None")
    _check_timeout(timeout)
