"""``FakeBulkApi``: Bulk API 2.0 for :class:`~authkit.testing.FakeSalesforce` (``org.bulk``).

Ingest and query jobs over the same in-memory sObject records as
:class:`~authkit.testing.fake_rest.FakeRestApi` (``org.rest``), so a bulk
insert is visible to a REST query and the other way round::

    with FakeSalesforce() as org:
        org.bulk.polls_to_complete = 2        # a job reports InProgress twice, then finishes
        org.bulk.upload_limit = 10_000        # bytes per upload: splitting testable with small data
        sf = SalesforceClient(org.jwt_auth())
        sf.bulk.insert("Account", [{"Name": "Acme"}])
        assert org.bulk.uploads == 1 and org.bulk.jobs_created == 1

What it serves under ``/services/data/vXX.X/jobs``, strictly in Salesforce's shapes:

- ``POST ingest`` (``object``, ``operation`` insert/update/upsert/delete/hardDelete,
  ``externalIdFieldName``, ``contentType`` CSV, ``columnDelimiter``, ``lineEnding``) -> job info, state ``Open``;
- ``PUT ingest/<id>/batches`` (``Content-Type: text/csv``, once per job, at most
  ``upload_limit`` bytes) -> ``201``;
- ``PATCH ingest/<id>`` ``{"state": "UploadComplete" | "Aborted"}``; ``GET`` / ``DELETE ingest/<id>``;
- ``GET ingest/<id>/successfulResults`` (``sf__Id``, ``sf__Created``, fields),
  ``failedResults`` (``sf__Id``, ``sf__Error``, fields), ``unprocessedrecords`` (fields);
- ``POST query`` (``operation`` query/queryAll, ``query``) -> state ``UploadComplete``;
  ``GET query/<id>``, ``PATCH`` (abort), ``DELETE``;
  ``GET query/<id>/results?locator=&maxRecords=`` -> a CSV page (header on every page),
  ``Sforce-Locator`` (``null`` on the last page) and ``Sforce-NumberOfRecords``;
- ``GET ingest`` / ``GET query``: every job, ``records`` pages with ``nextRecordsUrl``.

States move Open -> UploadComplete -> InProgress -> JobComplete / Failed, or
Aborted from any non-terminal state; anything else is ``INVALIDJOBSTATE``.  A
job is processed ``polls_to_complete`` job-info requests after it was closed
(``0``: at once), so backoff and timeouts are testable.  Values follow the bulk
CSV rules: an empty value is "not set", ``#N/A`` sets the field to null.

Test hooks: :meth:`fail_next_job` (the next processed job ends ``Failed``,
optionally after some rows, leaving the rest unprocessed), :meth:`reject_next_upload`
(the next upload is read and answered ``401 INVALID_SESSION_ID``, as when a
session dies mid-upload), and counters (``jobs_created``, ``uploads``,
``job_polls``, ``result_requests``, ``upload_bytes``, ``upload_log``).

Error codes for wrong transitions and bad uploads follow Salesforce's body shape
(``[{"errorCode", "message"}]``); the exact wording of some messages is this
fake's own.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from authkit.testing._fake_errors import RestError as _RestError
from authkit.testing._fake_query import parse_soql_or_error
from authkit.testing._fake_records import SYSTEM_FIELDS, SObjectType, now
from authkit.testing.fake_rest import FakeRestApi

__all__ = ["FakeBulkApi", "JOBS_PATH_RE", "DEFAULT_UPLOAD_LIMIT"]

#: Salesforce accepts 150 MB of base64-encoded CSV per job, i.e. about 100 MB of raw data.
DEFAULT_UPLOAD_LIMIT = 100 * 1024 * 1024

#: Paths this module answers (``/services/data/vXX.X/jobs/...``).
JOBS_PATH_RE = re.compile(r"^/services/data/v(\d+\.\d)/jobs/(ingest|query)(?:/([^/]*))?(?:/([^/]*))?/?$")

Result = tuple[int, dict[str, str], bytes]

_DELIMITERS = {"COMMA": ",", "TAB": "\t", "SEMICOLON": ";", "PIPE": "|", "CARET": "^", "BACKQUOTE": "`"}
_LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
_TERMINAL = ("JobComplete", "Failed", "Aborted")
_CSV = "text/csv; charset=UTF-8"


@dataclass
class _Job:
    id: str
    kind: str  # "ingest" | "query"
    operation: str
    sobject: str
    version: str
    delimiter: str
    line_ending: str
    external_id: str | None = None
    soql: str | None = None
    state: str = "Open"
    created: str = field(default_factory=now)
    modstamp: str = field(default_factory=now)
    data: bytes | None = None
    polls_left: int = 0
    processed: int = 0
    failed: int = 0
    error_message: str | None = None
    fail: tuple[str, int | None] | None = None  # (message, rows before failing) from fail_next_job
    header: list[str] = field(default_factory=list)
    successful: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Created, fields...
    failures: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Error, fields...
    unprocessed: list[list[str]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # query results

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "operation": self.operation, "object": self.sobject,
            "createdById": "005000000000000AAA", "createdDate": self.created, "systemModstamp": self.modstamp,
            "state": self.state, "concurrencyMode": "Parallel", "contentType": "CSV",
            "apiVersion": float(self.version), "lineEnding": self.line_ending, "columnDelimiter": self.delimiter,
        }
        if self.kind == "ingest":
            out["jobType"] = "V2Ingest"
            out["contentUrl"] = f"services/data/v{self.version}/jobs/ingest/{self.id}/batches"
            if self.external_id:
                out["externalIdFieldName"] = self.external_id
            out.update(numberRecordsProcessed=self.processed, numberRecordsFailed=self.failed, retries=0,
                       totalProcessingTime=0, apiActiveProcessingTime=0, apexProcessingTime=0)
        else:
            out["jobType"] = "V2Query"
            out["query"] = self.soql
            out.update(numberRecordsProcessed=self.processed, retries=0, totalProcessingTime=0)
        if self.error_message is not None:
            out["errorMessage"] = self.error_message
        return out


def _error(status: int, code: str, message: str) -> _RestError:
    return _RestError(status, code, message)


def _job_state_error(job: _Job, wanted: str) -> _RestError:
    return _error(400, "INVALIDJOBSTATE", f"Invalid job state transition from {job.state} to {wanted} "
                                          f"for job {job.id}")


class FakeBulkApi:
    """Bulk API 2.0 over ``rest``'s records.  See the module docstring.

    ``upload_limit`` (bytes per upload), ``polls_to_complete`` (job-info
    requests a closed job stays in progress), ``default_max_records`` (query
    result rows per page when the request gives no ``maxRecords``) and
    ``jobs_page_size`` (jobs per ``GET ingest`` page) may be changed at any time.
    """

    def __init__(
        self,
        rest: FakeRestApi,
        *,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        polls_to_complete: int = 0,
        default_max_records: int = 10_000,
        jobs_page_size: int = 1000,
    ) -> None:
        self.rest = rest
        self.upload_limit = upload_limit
        self.polls_to_complete = polls_to_complete
        self.default_max_records = default_max_records
        self.jobs_page_size = jobs_page_size
        self.jobs_created = 0
        self.uploads = 0
        self.upload_bytes = 0
        self.job_polls = 0
        self.result_requests = 0
        self.requests = 0
        #: One ``(job_id, bytes, sha256 hex, accepted)`` per upload attempt.
        self.upload_log: list[tuple[str, int, str, bool]] = []
        self._jobs: dict[str, _Job] = {}
        self._fail_next: list[tuple[str, int | None]] = []
        self._reject_uploads = 0
        self._stamp = now()
        self._stem, self._serial = secrets.token_hex(3).upper(), 0
        self._mutex = threading.RLock()

    def __repr__(self) -> str:
        return f"FakeBulkApi(jobs={len(self._jobs)}, upload_limit={self.upload_limit})"

    # -- test hooks ----------------------------------------------------------------

    def fail_next_job(self, message: str = "InternalServerError : An unexpected error occurred",
                      after_rows: int | None = None) -> None:
        """The next job to be processed ends ``Failed`` with ``errorMessage`` ``message``.

        ``after_rows``: an ingest job first processes that many rows (they show in the
        successful/failed results), the rest are left in ``unprocessedrecords``.
        """
        with self._mutex:
            self._fail_next.append((message, after_rows))

    def reject_next_upload(self, count: int = 1) -> None:
        """Read the next ``count`` uploads completely, then answer ``401 INVALID_SESSION_ID``."""
        with self._mutex:
            self._reject_uploads += count

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's info, as ``GET`` answers it (without counting as a poll)."""
        with self._mutex:
            found = self._jobs.get(job_id)
            if found is None:
                raise KeyError(job_id)
            return found.info()

    @property
    def job_ids(self) -> list[str]:
        with self._mutex:
            return list(self._jobs)

    # -- the request entry point -----------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
               content_type: str | None = None) -> Result:
        """Answer one authenticated request under ``/services/data/vXX.X/jobs``."""
        match = JOBS_PATH_RE.match(path)
        if match is None:
            return _json(404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
        version, kind, job_id, sub = match.groups()
        with self.rest._mutex, self._mutex:
            self.requests += 1
            try:
                return self._route(method.upper(), version, kind, job_id or None, sub or None, query, body,
                                   content_type)
            except _RestError as exc:
                return _json(exc.status, exc.body())

    def _route(self, method: str, version: str, kind: str, job_id: str | None, sub: str | None,
               query: dict[str, list[str]], body: bytes, content_type: str | None) -> Result:
        if job_id is None:
            if method == "POST":
                return self._create(kind, version, body)
            if method == "GET":
                return self._list(kind, version, query)
            raise _not_allowed(method, "GET,POST")
        job = self._jobs.get(job_id)
        if job is None or job.kind != kind:
            raise _error(404, "NOT_FOUND", f"Job with id {job_id} not found")
        if sub is None:
            if method == "GET":
                self.job_polls += 1
                self._advance(job)
                return _json(200, job.info())
            if method == "PATCH":
                return self._patch(job, body)
            if method == "DELETE":
                # Salesforce deletes only a closed job: UploadComplete or a terminal state.
                if job.state not in ("UploadComplete", *_TERMINAL):
                    raise _job_state_error(job, "Deleted")
                del self._jobs[job.id]
                return 204, {}, b""
            raise _not_allowed(method, "GET,PATCH,DELETE")
        if kind == "ingest" and sub == "batches":
            if method != "PUT":
                raise _not_allowed(method, "PUT")
            return self._upload(job, body, content_type)
        if kind == "ingest" and sub in ("successfulResults", "failedResults", "unprocessedrecords"):
            if method != "GET":
                raise _not_allowed(method, "GET")
            return self._ingest_results(job, sub)
        if kind == "query" and sub == "results":
            if method != "GET":
                raise _not_allowed(method, "GET")
            if version != job.version:  # Salesforce: results only through the job's own API version
                raise _error(409, "INVALID_API_VERSION", f"Job {job.id} was created with API version "
                                                         f"{job.version}; get its results with that version")
            return self._query_results(job, query)
        raise _error(404, "NOT_FOUND", "The requested resource does not exist")

    # -- jobs ------------------------------------------------------------------------

    def _create(self, kind: str, version: str, body: bytes) -> Result:
        try:
            spec = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            raise _error(400, "JSON_PARSER_ERROR", "Unexpected character in the request body") from None
        if not isinstance(spec, dict):
            raise _error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        delimiter = str(spec.get("columnDelimiter", "COMMA"))
        line_ending = str(spec.get("lineEnding", "LF"))
        if spec.get("contentType", "CSV") != "CSV":
            raise _error(400, "INVALIDJOB", f"Unsupported contentType: {spec.get('contentType')}")
        if delimiter not in _DELIMITERS:
            raise _error(400, "INVALIDJOB", f"Unsupported columnDelimiter: {delimiter}")
        if line_ending not in _LINE_ENDINGS:
            raise _error(400, "INVALIDJOB", f"Unsupported lineEnding: {line_ending}")
        job_id = "750" + secrets.token_hex(6).upper()[:12] + "AAA"
        if kind == "ingest":
            operation = str(spec.get("operation", ""))
            if operation not in _OPERATIONS:
                raise _error(400, "INVALIDJOB", f"Invalid operation: {operation}")
            name = str(spec.get("object", ""))
            sobj = self.rest._types.get(name.lower())
            if sobj is None:
                raise _error(400, "INVALIDJOB", f"Entity '{name}' is not supported by the Bulk API.")
            external_id = spec.get("externalIdFieldName")
            if operation == "upsert":
                known = sobj.field_name(str(external_id or ""))
                if known is None or (known != "Id" and known not in sobj.external_ids):
                    raise _error(400, "INVALIDJOB", f"InvalidJob : Field name provided, {external_id} does not "
                                                    f"match an External ID, Salesforce Id, or indexed field for "
                                                    f"{sobj.name}")
                external_id = known
            elif external_id is not None:
                raise _error(400, "INVALIDJOB", "externalIdFieldName is only valid for upsert")
            job = _Job(job_id, "ingest", operation, sobj.name, version, delimiter, line_ending,
                       external_id=external_id)
        else:
            operation = str(spec.get("operation", ""))
            if operation not in ("query", "queryAll"):
                raise _error(400, "INVALIDJOB", f"Invalid operation: {operation}")
            soql = str(spec.get("query", ""))
            parsed = parse_soql_or_error(soql)  # MALFORMED_QUERY now, as Salesforce answers a bad query at creation
            if parsed.count:
                raise _error(400, "INVALIDJOB", "Aggregate queries are not supported by Bulk API 2.0")
            sobj = self.rest._types.get(parsed.sobject.lower())
            if sobj is None:
                raise _error(400, "INVALID_TYPE", f"sObject type '{parsed.sobject}' is not supported.")
            job = _Job(job_id, "query", operation, sobj.name, version, delimiter, line_ending, soql=soql,
                       state="UploadComplete", polls_left=self.polls_to_complete)
        self._jobs[job.id] = job
        self.jobs_created += 1
        return _json(200, job.info())

    def _list(self, kind: str, version: str, query: dict[str, list[str]]) -> Result:
        jobs = [j for j in self._jobs.values() if j.kind == kind]
        start_text = (query.get("queryLocator") or ["0"])[-1] or "0"
        try:
            start = int(base64.b64decode(start_text + "==").decode()) if start_text != "0" else 0
        except ValueError:
            raise _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator") from None
        end = start + self.jobs_page_size
        page = [j.info() for j in jobs[start:end]]
        done = end >= len(jobs)
        next_url = None
        if not done:
            locator = base64.b64encode(str(end).encode()).decode().rstrip("=")
            next_url = f"/services/data/v{version}/jobs/{kind}?queryLocator={locator}"
        return _json(200, {"done": done, "records": page, "nextRecordsUrl": next_url})

    def _patch(self, job: _Job, body: bytes) -> Result:
        try:
            spec = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            raise _error(400, "JSON_PARSER_ERROR", "Unexpected character in the request body") from None
        wanted = spec.get("state") if isinstance(spec, dict) else None
        if wanted == "Aborted":
            if job.state in _TERMINAL:
                raise _job_state_error(job, "Aborted")
            if job.kind == "ingest" and job.data is not None and job.state != "JobComplete":
                job.header, rows = self._parse(job)
                job.unprocessed = rows
            job.state = "Aborted"
        elif wanted == "UploadComplete" and job.kind == "ingest":
            if job.state != "Open":
                raise _job_state_error(job, "UploadComplete")
            job.state = "UploadComplete"
            job.polls_left = self.polls_to_complete
            if self._fail_next:
                job.fail = self._fail_next.pop(0)
        else:
            raise _error(400, "INVALIDJOBSTATE", f"Invalid state for a {job.kind} job update: {wanted}")
        job.modstamp = now()
        self._advance(job, poll=False)
        return _json(200, job.info())

    def _advance(self, job: _Job, poll: bool = True) -> None:
        """Move a closed job on: InProgress while polls are left, then process it."""
        if job.state not in ("UploadComplete", "InProgress"):
            return
        if job.polls_left > 0:
            if poll:
                job.polls_left -= 1
                job.state = "InProgress"
            return
        if job.kind == "query" and job.fail is None and self._fail_next:
            job.fail = self._fail_next.pop(0)
        if job.fail is not None and (job.kind == "query" or job.fail[1] is None):
            job.state = "Failed"
            job.error_message = job.fail[0]
            if job.kind == "ingest" and job.data is not None:
                job.header, job.unprocessed = self._parse_or_empty(job)
            return
        if job.kind == "query":
            self._run_query(job)
        else:
            self._run_ingest(job)
        job.modstamp = now()

    # -- ingest --------------------------------------------------------------------------

    def _upload(self, job: _Job, body: bytes, content_type: str | None) -> Result:
        digest = hashlib.sha256(body).hexdigest()
        if self._reject_uploads > 0:
            self._reject_uploads -= 1
            self.upload_log.append((job.id, len(body), digest, False))
            return 401, {"WWW-Authenticate": "Token"}, json.dumps(
                [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]).encode()
        if (content_type or "").split(";")[0].strip().lower() != "text/csv":
            raise _error(400, "INVALIDCONTENTTYPE", f"Content-Type {content_type or '(none)'} is not supported "
                                                    "for job data; use text/csv")
        if job.state != "Open":
            raise _error(400, "INVALIDJOBSTATE", f"Job {job.id} is not in the Open state; data can only be "
                                                 "uploaded to an Open job")
        if job.data is not None:
            raise _error(400, "BULK_API_ERROR", f"Found multiple contents for job: <{job.id}>, please 'Close' / "
                                                "'Abort' / 'Delete' the current Job then create a new Job and "
                                                "make sure you only do 'PUT' once on a given Job.")
        if len(body) > self.upload_limit:
            raise _error(413, "REQUEST_ENTITY_TOO_LARGE", f"The job data exceeds the maximum of "
                                                          f"{self.upload_limit} bytes per upload")
        if not body:
            raise _error(400, "BULK_API_ERROR", "No content uploaded for the job")
        self.upload_log.append((job.id, len(body), digest, True))
        self.uploads += 1
        self.upload_bytes += len(body)
        job.data = body
        return 201, {}, b""

    def _parse(self, job: _Job) -> tuple[list[str], list[list[str]]]:
        """The upload's header and rows, or a job failure (``_JobFailure``) for bad CSV."""
        assert job.data is not None
        try:
            text = job.data.decode("utf-8")
        except UnicodeDecodeError:
            raise _JobFailure("InvalidBatch : Unable to parse the data as UTF-8") from None
        newline = _LINE_ENDINGS[job.line_ending]
        first = text.find("\n")
        header_line = text[: first + 1] if first >= 0 else text
        if job.line_ending == "LF" and header_line.endswith("\r\n"):
            raise _JobFailure("ClientInputError : LineEnding is invalid on user data. Current LineEnding setting "
                              "is LF")
        if job.line_ending == "CRLF" and first >= 0 and not header_line.endswith(newline):
            raise _JobFailure("ClientInputError : LineEnding is invalid on user data. Current LineEnding setting "
                              "is CRLF")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=_DELIMITERS[job.delimiter], strict=True)
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise _JobFailure(f"InvalidBatch : Failed to parse CSV: {exc}") from None
        if not rows or not rows[0]:
            raise _JobFailure("InvalidBatch : No header found in the CSV data")
        header = rows[0]
        body = [r for r in rows[1:] if r != []]
        for number, row in enumerate(body, 2):
            if len(row) != len(header):
                raise _JobFailure(f"ClientInputError : Row {number} has {len(row)} columns, the header "
                                  f"{len(header)}")
        return header, body

    def _parse_or_empty(self, job: _Job) -> tuple[list[str], list[list[str]]]:
        try:
            return self._parse(job)
        except _JobFailure:
            return [], []

    def _run_ingest(self, job: _Job) -> None:
        if job.data is None:
            job.state = "Failed"
            job.error_message = "InvalidBatch : No data was uploaded for this job"
            return
        try:
            header, rows = self._parse(job)
            fields = self._check_header(job, header)
        except _JobFailure as exc:
            job.state = "Failed"
            job.error_message = str(exc)
            return
        job.header = header
        sobj = self.rest._types[job.sobject.lower()]
        limit = job.fail[1] if job.fail is not None else None
        index = self._external_index(sobj, job.external_id) if job.operation == "upsert" else None
        self._stamp = now()  # one timestamp for the records a job creates
        self._stem, self._serial = secrets.token_hex(3).upper(), 0
        for position, row in enumerate(rows):
            if limit is not None and position >= limit:
                job.unprocessed = rows[position:]
                break
            try:
                record_id, created = self._apply(job, sobj, fields, row, index)
            except _RestError as exc:
                job.failed += 1
                names = ",".join(exc.fields)
                job.failures.append(["", f"{exc.error_code}:{exc.message}:{names} --", *row])
            else:
                job.successful.append([record_id, "true" if created else "false", *row])
            job.processed += 1
        if job.fail is not None:
            job.state = "Failed"
            job.error_message = job.fail[0]
        else:
            job.state = "JobComplete"

    def _check_header(self, job: _Job, header: list[str]) -> list[str]:
        sobj = self.rest._types[job.sobject.lower()]
        fields = []
        for name in header:
            known = sobj.field_name(name)
            if known is None:
                if sobj.open and re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name):
                    sobj.fields[name] = "string"
                    known = name
                else:
                    raise _JobFailure(f"InvalidBatch : Field name not found : {name}")
            if known in SYSTEM_FIELDS and known != "Id":
                raise _JobFailure(f"InvalidBatch : Field name not found : {name}")
            fields.append(known)
        if len(set(fields)) != len(fields):
            raise _JobFailure("InvalidBatch : Duplicate field names in the header")
        if job.operation in ("delete", "hardDelete") and fields != ["Id"]:
            raise _JobFailure("InvalidBatch : The 'delete' batch must contain only ids")
        if job.operation == "update" and "Id" not in fields:
            raise _JobFailure("InvalidBatch : Field name not found : Id")
        if job.operation == "insert" and "Id" in fields:
            raise _JobFailure("InvalidBatch : Id field is not allowed for insert")
        if job.operation == "upsert" and job.external_id not in fields:
            raise _JobFailure(f"InvalidBatch : Field name not found : {job.external_id}")
        return fields

    def _external_index(self, sobj: SObjectType, external_id: str | None) -> dict[str, dict[str, Any]]:
        records = self.rest._records[sobj.name]
        if external_id == "Id" or external_id is None:
            return dict(records)
        return {str(r[external_id]): r for r in records.values() if r.get(external_id) is not None}

    def _apply(self, job: _Job, sobj: SObjectType, fields: list[str], row: list[str],
               index: dict[str, dict[str, Any]] | None) -> tuple[str, bool]:
        values: dict[str, Any] = {}
        for name, value in zip(fields, row, strict=True):
            if value == "":
                continue  # an empty value leaves the field as it is
            values[name] = None if value == "#N/A" else value
        rest = self.rest
        if job.operation in ("delete", "hardDelete"):
            record = self._existing(sobj, values.get("Id"))
            if job.operation == "delete":
                rest._delete(sobj, record)
            else:
                del rest._records[sobj.name][record["Id"]]
            return str(record["Id"]), False
        if job.operation == "update":
            record = self._existing(sobj, values.pop("Id", None))
            rest._update(sobj, record, values)
            return str(record["Id"]), False
        if job.operation == "upsert":
            assert index is not None and job.external_id is not None
            key = values.get(job.external_id)
            if key is None:
                raise _RestError(400, "MISSING_ARGUMENT", f"{job.external_id} not specified", [job.external_id])
            found = index.get(str(key))
            if job.external_id == "Id":
                values.pop("Id")
                if found is None:
                    raise _RestError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["Id"])
            if found is not None:
                rest._update(sobj, found, values)
                index[str(key)] = rest._records[sobj.name][found["Id"]]
                return str(found["Id"]), False
            new_id = self._insert(sobj, values)
            index[str(key)] = rest._records[sobj.name][new_id]
            return new_id, True
        return self._insert(sobj, values), True

    def _insert(self, sobj: SObjectType, values: dict[str, Any]) -> str:
        """``FakeRestApi._create`` for a row whose field names the header check already made canonical."""
        if sobj.required:
            missing = sorted(f for f in sobj.required if values.get(f) in (None, ""))
            if missing:
                raise _RestError(400, "REQUIRED_FIELD_MISSING",
                                 f"Required fields are missing: [{', '.join(missing)}]", missing)
        stamp = self._stamp
        store = self.rest._records[sobj.name]
        # Ids from a per-job random stem and a counter: unique, and far cheaper than a random id per record.
        self._serial += 1
        record_id = f"{sobj.key_prefix}{self._stem}{self._serial:06X}AAA"
        if record_id in store or record_id in self.rest._deleted[sobj.name] or len(record_id) != 18:
            record_id = self.rest._new_id(sobj)
        record = {"Id": record_id, "IsDeleted": False, "CreatedDate": stamp, "LastModifiedDate": stamp,
                  "SystemModstamp": stamp, **values}
        if sobj.external_ids and any(values.get(name) is not None for name in sobj.external_ids):
            self.rest._check_unique(sobj, record)
        store[record_id] = record
        return record_id

    def _existing(self, sobj: SObjectType, record_id: Any) -> dict[str, Any]:
        if not record_id:
            raise _RestError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        try:
            return self.rest._get(sobj, str(record_id))
        except _RestError as exc:
            if exc.error_code == "ENTITY_IS_DELETED":
                raise _RestError(400, "ENTITY_IS_DELETED", "entity is deleted", []) from None
            raise _RestError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", []) from None

    def _ingest_results(self, job: _Job, which: str) -> Result:
        self.result_requests += 1
        if which != "unprocessedrecords" and job.state not in ("JobComplete", "Failed", "Aborted"):
            raise _error(400, "INVALIDJOBSTATE", f"Job {job.id} is not complete; results are available once "
                                                 "it is JobComplete, Failed or Aborted")
        if which == "successfulResults":
            head, rows = ["sf__Id", "sf__Created", *job.header], job.successful
        elif which == "failedResults":
            head, rows = ["sf__Id", "sf__Error", *job.header], job.failures
        else:
            head, rows = list(job.header), job.unprocessed
        return 200, {"Content-Type": _CSV}, _csv_bytes(head, rows, job)

    # -- query ---------------------------------------------------------------------------

    def _run_query(self, job: _Job) -> None:
        assert job.soql is not None
        rest = self.rest
        parsed = parse_soql_or_error(job.soql)
        sobj = rest._types[parsed.sobject.lower()]
        fields = []
        for name in parsed.fields:
            known = sobj.field_name(name)
            if known is None:
                job.state = "Failed"
                job.error_message = f"INVALID_FIELD: No such column '{name}' on entity '{sobj.name}'"
                return
            fields.append(known)
        records: list[dict[str, Any]] = list(rest._records[sobj.name].values())
        if job.operation == "queryAll":
            records += list(rest._deleted[sobj.name].values())
        if parsed.conditions:
            records = [r for r in records if parsed.matches(r, sobj)]
        if parsed.order_by is not None:
            key = sobj.field_name(parsed.order_by) or parsed.order_by
            records.sort(key=lambda r: (r.get(key) is not None, str(r.get(key) or "").lower()),
                         reverse=parsed.descending)
        records = records[parsed.offset:]
        if parsed.limit is not None:
            records = records[: parsed.limit]
        job.header = fields
        job.rows = [[_text(r.get(f)) for f in fields] for r in records]
        job.processed = len(job.rows)
        job.state = "JobComplete"

    def _query_results(self, job: _Job, query: dict[str, list[str]]) -> Result:
        self.result_requests += 1
        if job.state != "JobComplete":
            raise _error(400, "INVALIDJOBSTATE", f"Job {job.id} is not complete (state {job.state}); results are "
                                                 "available once it is JobComplete")
        locator = (query.get("locator") or [""])[-1]
        start = 0
        if locator:
            try:
                start = int(base64.b64decode(locator + "=" * (-len(locator) % 4)).decode())
            except ValueError:
                raise _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator") from None
            if not 0 < start <= len(job.rows):
                raise _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        size_text = (query.get("maxRecords") or [""])[-1]
        if size_text and (not size_text.isdigit() or int(size_text) < 1):
            raise _error(400, "INVALIDFIELD", f"maxRecords must be a positive integer, got {size_text}")
        size = int(size_text) if size_text else self.default_max_records
        end = min(start + size, len(job.rows))
        rows = job.rows[start:end]
        next_locator = base64.b64encode(str(end).encode()).decode().rstrip("=") if end < len(job.rows) else "null"
        headers = {"Content-Type": _CSV, "Sforce-Locator": next_locator, "Sforce-NumberOfRecords": str(len(rows))}
        return 200, headers, _csv_bytes(job.header, rows, job)


class _JobFailure(Exception):
    """A job's data is unusable: the job ends Failed with this ``errorMessage``."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv_bytes(header: list[str], rows: Iterable[list[str]], job: _Job) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=_DELIMITERS[job.delimiter], lineterminator=_LINE_ENDINGS[job.line_ending],
                        quoting=csv.QUOTE_ALL)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _json(status: int, value: Any) -> Result:
    return status, {}, json.dumps(value).encode()


def _not_allowed(method: str, allowed: str) -> _RestError:
    return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}")
