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

import csv
import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any, Literal, Union, overload

from authkit.errors import ApiError, ResourceNotFoundError

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
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_JOB_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_BLOCK = 1024 * 1024  # bytes read from a CSV source at a time
_BATCH = 1000  # dict records encoded together
_CSV_HEADERS = {"Content-Type": "text/csv", "Accept": "application/json"}
_BOM = b"\xef\xbb\xbf"

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
        _check_name(external_id_field, "external_id_field")
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
        _check_name(sobject, "sObject")
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
        file object) without parsing it; returns the number of rows."""
        _check_query(soql, max_records, timeout)
        if isinstance(file, (str, os.PathLike)):
            with open(file, "wb") as handle:
                return self._query_to(handle, soql, include_deleted, max_records, timeout)
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


# -- upload bodies ------------------------------------------------------------------------


class _Counter:
    """Reports ``base + bytes read`` to a progress callback."""

    def __init__(self, callback: Callable[[int], None], base: int) -> None:
        self._callback = callback
        self._base = base

    def __call__(self, position: int) -> None:
        self._callback(self._base + position)


class _Body(io.RawIOBase):
    """One job's upload: ``header`` then bytes ``start:end`` of ``file``, re-readable from the start.

    It is what the client streams; on a ``401`` the client seeks it back to 0 and
    sends the same bytes again.  It seeks ``file`` before every read, so several
    bodies (and the scanner cutting them) can share one open file.
    """

    def __init__(self, file: IO[bytes], header: bytes, start: int, end: int, *, delimiter: str,
                 line_ending: str, owned: bool = False) -> None:
        super().__init__()
        self._file = file
        self._header = header
        self._start = start
        self._end = end
        self._pos = 0
        self._owned = owned
        self.delimiter = delimiter
        self.line_ending = line_ending
        self.on_read: Callable[[int], None] | None = None

    def __len__(self) -> int:
        return len(self._header) + self._end - self._start

    def __enter__(self) -> _Body:
        return self

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self)}[whence]
        self._pos = max(0, min(base + offset, len(self)))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), len(self) - self._pos)
        if wanted <= 0:
            return 0
        done = 0
        if self._pos < len(self._header):
            part = self._header[self._pos:self._pos + wanted]
            view[:len(part)] = part
            done = len(part)
        if done < wanted:
            offset = self._start + self._pos + done - len(self._header)
            self._file.seek(offset)
            data = self._file.read(wanted - done)
            view[done:done + len(data)] = data
            done += len(data)
        self._pos += done
        if self.on_read is not None:
            self.on_read(self._pos)
        return done

    def close(self) -> None:
        if self._owned and not self._file.closed:
            self._file.close()
        super().close()


def _spool_records(records: Iterable[Any], fields: Sequence[str] | None, limit: int) -> list[_Body]:
    """Write dict records as CSV into temporary files of at most ``limit`` bytes each.

    Everything is checked and written before the first job is created.  Files are
    removed when their body is closed (and all of them if this fails).
    """
    bodies: list[_Body] = []
    try:
        rows = iter(records)
        first = next(rows, None)
        if first is None:
            raise ValueError("records is empty: nothing to load")
        header = _header(first, fields)
        allowed = frozenset(header)
        blanks = ("",) * len(header)  # the value of a missing key: not set
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        header_bytes = buffer.getvalue().encode("utf-8")
        if len(header_bytes) + 1 > limit:
            raise ValueError("the CSV header alone is larger than the upload limit")
        current: IO[bytes] | None = None
        size = 0

        def flush_batch(batch: list[list[str]]) -> None:
            nonlocal current, size
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(batch)
            data = buffer.getvalue().encode("utf-8")
            if current is not None and size + len(data) <= limit:
                current.write(data)
                size += len(data)
                return
            if len(batch) > 1:  # it does not fit whole: place the rows one by one
                for row in batch:
                    flush_batch([row])
                return
            if len(header_bytes) + len(data) > limit:
                raise ValueError(f"a record of {len(data)} bytes does not fit in one upload of {limit} bytes")
            if bodies:
                bodies[-1]._end = size  # the previous file is full
            current = tempfile.TemporaryFile()
            bodies.append(_Body(current, b"", 0, 0, delimiter="COMMA", line_ending="LF", owned=True))
            current.write(header_bytes + data)
            size = len(header_bytes) + len(data)
            bodies[-1]._end = size

        batch: list[list[str]] = []
        record: Any = first
        while record is not None:
            batch.append(_row(record, header, allowed, blanks))
            if len(batch) >= _BATCH:
                flush_batch(batch)
                batch = []
            record = next(rows, None)
        if batch:
            flush_batch(batch)
        bodies[-1]._end = size
        for body in bodies:
            body._file.flush()
        return bodies
    except BaseException:
        for body in bodies:
            body.close()
        raise


def _each_then_close(bodies: list[_Body]) -> Iterator[_Body]:
    """The bodies one by one; closing the iterator early closes (and so deletes) the rest."""
    try:
        yield from bodies
    finally:
        for body in bodies:
            body.close()


def _header(first: Any, fields: Sequence[str] | None) -> list[str]:
    if fields is not None:
        if isinstance(fields, str):
            raise TypeError("fields must be a list of field names, not a str")
        header = list(fields)
    else:
        if not isinstance(first, Mapping):
            raise TypeError(f"records must be dicts, got {type(first).__name__}")
        header = list(first)
    if not header:
        raise ValueError("no fields: the first record is empty and fields= is not given")
    for name in header:
        _check_name(name, "field")
    if len({name.lower() for name in header}) != len(header):
        raise ValueError("field names must be unique (they are case-insensitive)")
    return header


def _row(record: Any, header: list[str], allowed: frozenset[str], blanks: tuple[str, ...]) -> list[str]:
    if record.__class__ is not dict and not isinstance(record, Mapping):
        raise TypeError(f"records must be dicts, got {type(record).__name__}")
    if not allowed.issuperset(record):
        unknown = sorted(str(k) for k in record if k not in allowed)
        raise ValueError(f"a record has field(s) {', '.join(unknown)} not in the header ({', '.join(header)}); "
                         "pass fields= with every field")
    # The common case, a str, skips the call: this runs once per value of millions of rows.
    return [value if value.__class__ is str else _cell(value) for value in map(record.get, header, blanks)]


def _cell(value: Any) -> str:
    if value.__class__ is str:
        return str(value)
    if value is None:
        return "#N/A"  # Bulk API: set to null (an empty value leaves the field unchanged)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} cannot be loaded into Salesforce")
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: give it a timezone (Salesforce stores UTC)")
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} into a bulk CSV; give str, numbers, bools, dates "
                    "or None")


def _ids(records: Any) -> Any:
    """Delete input: plain id strings become ``{"Id": id}``; other input passes through."""
    if isinstance(records, (str, os.PathLike)) or hasattr(records, "read") or not isinstance(records, Iterable):
        return records
    if isinstance(records, Mapping):
        return records
    return ({"Id": item} if isinstance(item, str) else item for item in records)


def _file_uploads(path: str | None, stream: IO[bytes] | None, limit: int, delimiter: str) -> Iterator[_Body]:
    """A CSV file cut into uploads at row boundaries: byte ranges of the file when it can be
    re-read (a path, a seekable file), spooled pieces when it cannot (a pipe)."""
    handle: IO[bytes]
    if path is not None:
        handle = open(path, "rb")
    else:
        assert stream is not None
        handle = stream
    try:
        seekable = _seekable(handle)
        position = handle.tell() if seekable else 0
        scanner = _RowScanner(handle, position if seekable else None)
        header = scanner.first_row()
        if header.startswith(_BOM):
            header = header[len(_BOM):]
        if not header.strip():
            raise ValueError("the CSV input is empty: it needs a header row")
        if not header.endswith(b"\n"):
            header += b"\n"
        line_ending = "CRLF" if header.endswith(b"\r\n") else "LF"
        capacity = limit - len(header)
        if capacity <= 0:
            raise ValueError("the CSV header alone is larger than the upload limit")
        while True:
            start = scanner.offset
            size = 0
            spool: IO[bytes] | None = None if seekable else tempfile.TemporaryFile()
            try:
                while size < capacity:
                    piece = scanner.next_piece(min(capacity - size, _BLOCK))
                    if piece is None:
                        if size == 0:
                            raise ValueError(f"a CSV row does not fit in one upload of {limit} bytes")
                        break
                    if not piece:
                        break
                    if spool is not None:
                        spool.write(piece)
                    size += len(piece)
            except BaseException:
                if spool is not None:
                    spool.close()
                raise
            if size == 0:
                if spool is not None:
                    spool.close()
                return
            if spool is None:
                yield _Body(handle, header, start, start + size, delimiter=delimiter, line_ending=line_ending)
            else:
                yield _Body(spool, header, 0, size, delimiter=delimiter, line_ending=line_ending, owned=True)
    finally:
        if path is not None:
            handle.close()


def _seekable(handle: IO[bytes]) -> bool:
    try:
        if not handle.seekable():
            return False
        handle.tell()
        return True
    except (OSError, ValueError, AttributeError):
        return False


class _RowScanner:
    """Reads CSV bytes and hands them out in pieces that end at row boundaries.

    A newline ends a row unless it is inside quotes; since an escaped quote is
    written twice, "inside" is "after an odd number of quotes since the row began".
    Every piece starts at a row boundary, so the parity starts even each time.
    """

    def __init__(self, handle: IO[bytes], position: int | None) -> None:
        self._handle = handle
        self._position = position  # where to seek before each read; None for a stream
        self._buffer = b""
        self._eof = False
        self.offset = position or 0  # file offset of the first byte not yet handed out

    def _read(self, size: int) -> bytes:
        if self._position is not None:
            self._handle.seek(self._position)
        data = self._handle.read(size)
        if data is None:
            data = b""
        if not isinstance(data, bytes):
            raise TypeError("the CSV file must be opened in binary mode ('rb')")
        if self._position is not None:
            self._position += len(data)
        return data

    def _fill(self, size: int) -> None:
        while not self._eof and len(self._buffer) < size:
            data = self._read(max(size - len(self._buffer), _BLOCK))
            if data:
                self._buffer += data
            else:
                self._eof = True

    def _take(self, end: int) -> bytes:
        piece, self._buffer = self._buffer[:end], self._buffer[end:]
        self.offset += len(piece)
        return piece

    def first_row(self) -> bytes:
        size = _BLOCK
        while True:
            self._fill(size)
            end = _first_boundary(self._buffer)
            if end or self._eof:
                return self._take(end or len(self._buffer))
            size *= 2

    def next_piece(self, max_bytes: int) -> bytes | None:
        """Up to ``max_bytes`` of whole rows; ``b""`` at the end; ``None`` if the next row is longer."""
        self._fill(max_bytes + 1)
        if not self._buffer:
            return b""
        if self._eof and len(self._buffer) <= max_bytes:
            rest = self._take(len(self._buffer))
            return rest if rest.strip() else b""
        end = _last_boundary(self._buffer[:max_bytes])
        return self._take(end) if end else None


def _first_boundary(data: bytes) -> int:
    """Index just past the first row-ending newline in ``data`` (0 if none)."""
    offset = 0
    for i, part in enumerate(data.split(b'"')):
        if i % 2 == 0:
            found = part.find(b"\n")
            if found >= 0:
                return offset + found + 1
        offset += len(part) + 1
    return 0


def _last_boundary(data: bytes) -> int:
    """Index just past the last row-ending newline in ``data`` (0 if none)."""
    if b'"' not in data:
        return data.rfind(b"\n") + 1
    parts = data.split(b'"')
    offset = len(data) + 1
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        offset -= len(part) + 1
        if i % 2 == 0:
            found = part.rfind(b"\n")
            if found >= 0:
                return offset + found + 1
    return 0


# -- reading result CSVs ------------------------------------------------------------------


class _ResponseStream(io.RawIOBase):
    """A streamed response body as a file (decompressed, as ``iter_content`` gives it)."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__()
        self._chunks = response.iter_content(_BLOCK)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _csv_rows(response: requests.Response, delimiter: str) -> Iterator[dict[str, str]]:
    try:
        text = io.TextIOWrapper(io.BufferedReader(_ResponseStream(response), _BLOCK), encoding="utf-8",
                                newline="")
        reader = csv.reader(text, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        for row in reader:
            if row:
                yield dict(zip(header, row, strict=False))
    finally:
        response.close()


def _delimiter(job: Mapping[str, Any]) -> str:
    return _DELIMITERS.get(str(job.get("columnDelimiter") or "COMMA"), ",")


def _json_or_none(response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


# -- argument checks --------------------------------------------------------------------


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str")
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid {what} name {name!r}")
    return name


def _check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str):
        raise TypeError("job id must be a str")
    if not _JOB_ID_RE.match(job_id):
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
