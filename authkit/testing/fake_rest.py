"""``FakeRestApi``: the data API of :class:`~authkit.testing.FakeSalesforce`.

In-memory sObject records behind Salesforce's REST resources, answering with
Salesforce's own response and error bodies.  The org (``org.rest``) calls
:meth:`FakeRestApi.handle` for every bearer-checked request under
``/services/data`` and ``/services/apexrest``; tests set data up directly::

    with FakeSalesforce() as org:
        account_id = org.rest.insert("Account", {"Name": "Acme"})
        org.rest.page_size = 200                     # query pages of 200 records
        ...
        assert org.rest.records("Account")[0]["Name"] == "Acme"

What it serves (``vXX.X`` is any version :meth:`versions` lists):

- ``GET /services/data/`` (versions), ``GET /services/data/vXX.X/`` (resources);
- ``GET query?q=`` / ``queryAll?q=`` with ``nextRecordsUrl`` pages
  (``/services/data/vXX.X/query/<locator>-<offset>``) — the SOQL subset of
  :mod:`authkit.testing._fake_soql`;
- ``GET search?q=`` (SOSL subset) and ``GET|POST parameterizedSearch``;
- ``GET sobjects`` (describe global), ``GET|POST sobjects/T`` (POST as JSON or multipart with a
  blob), ``GET sobjects/T/describe`` (both describes answer ``304`` to an ``If-Modified-Since``
  at or after :attr:`metadata_modified`), ``GET sobjects/T/updated|deleted?start=&end=``,
  ``GET|PATCH|DELETE sobjects/T/<Id>`` (``?fields=``), ``GET sobjects/T/<Id>/<BlobField>``,
  ``GET|PATCH|DELETE sobjects/T/<ExternalIdField>/<value>`` (PATCH is an upsert);
- ``POST composite`` (``allOrNone``, ``collateSubrequests``, ``@{ref.field}`` references, 25
  subrequests), ``composite/batch``, ``composite/tree/T``, ``composite/graph`` and sObject
  Collections ``composite/sobjects[/T[/ExternalIdField]]`` — see :mod:`authkit.testing._fake_composite`;
- ``tooling/query``, ``tooling/sobjects/...`` (Tooling types such as ApexClass) and
  ``tooling/executeAnonymous``;
- ``GET limits``;
- ``/services/apexrest/...`` routes registered with :meth:`add_apex_route`.

Errors are Salesforce's: ``NOT_FOUND`` / ``ENTITY_IS_DELETED`` (404),
``MALFORMED_QUERY``, ``MALFORMED_SEARCH``, ``INVALID_FIELD``, ``INVALID_TYPE``,
``REQUIRED_FIELD_MISSING``, ``DUPLICATE_VALUE``, ``INVALID_FIELD_FOR_INSERT_UPDATE``,
``JSON_PARSER_ERROR``, ``INVALID_QUERY_LOCATOR``, ``EXCEEDED_ID_LIMIT``,
``INVALID_BATCH_REQUEST``, ``INVALID_MULTIPART_REQUEST``, ``INVALID_REPLICATION_DATE`` (400),
``MULTIPLE_CHOICES`` (300), ``METHOD_NOT_ALLOWED`` (405).

Known types are Account, Contact, Opportunity, Lead and Case (each with an
``External_Id__c`` external-id field), ContentVersion, ContentDocument, Document,
Attachment, EventLogFile and the Tooling type ApexClass; :meth:`define_sobject` adds more, and
:meth:`insert` of an unknown type defines an open one that accepts any field.
"""

from __future__ import annotations

import email.policy
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

from authkit.salesforce.sobject import blob_part_name
from authkit.testing import _fake_composite
from authkit.testing._fake_errors import Raw, Result
from authkit.testing._fake_errors import RestError as _RestError
from authkit.testing._fake_errors import fields_body as _fields_body
from authkit.testing._fake_errors import json_result as _json
from authkit.testing._fake_errors import not_found as _not_found
from authkit.testing._fake_errors import parse_body as _parse_body
from authkit.testing._fake_soql import QueryError, Soql, parse_soql, parse_sosl

__all__ = ["FakeRestApi", "ApexHandler", "DEFAULT_VERSIONS"]

#: ``(version, label)`` pairs served by ``GET /services/data/``, oldest first.
DEFAULT_VERSIONS: tuple[tuple[str, str], ...] = (
    ("58.0", "Summer '23"),
    ("59.0", "Winter '24"),
    ("60.0", "Spring '24"),
    ("61.0", "Summer '24"),
    ("62.0", "Winter '25"),
    ("63.0", "Spring '25"),
)

#: ``handler(method, path, query, body) -> (status, JSON-able body)`` for an Apex REST route.
ApexHandler = Callable[[str, str, dict[str, list[str]], bytes], tuple[int, Any]]

_SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_MAX_CURSORS = 1000  # open query locators kept; the oldest is dropped, as Salesforce drops idle ones


@dataclass
class _SObjectType:
    name: str
    key_prefix: str
    fields: dict[str, str]  # name -> Salesforce field type
    required: set[str] = field(default_factory=set)
    external_ids: set[str] = field(default_factory=set)
    open: bool = False  # an open type accepts (and learns) any field

    def field_name(self, name: str) -> str | None:
        """The field's canonical spelling (field names are case-insensitive), ``None`` if unknown."""
        for known in self.fields:
            if known.lower() == name.lower():
                return known
        return None


@dataclass
class _Cursor:
    records: list[dict[str, Any]]  # snapshot of the matching records (shared, never mutated)
    fields: list[str]
    sobject: str
    version: str


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class FakeRestApi:
    """The org's data API: in-memory sObject records, SOQL-ish queries, composite, limits.

    ``page_size`` is the number of records per query page (Salesforce's
    default batch is 2000; tests use small pages to exercise pagination).
    ``api_limit`` is the ``DailyApiRequests`` maximum ``GET limits`` reports
    (its ``Remaining`` counts the requests this API answered: ``handled_requests``);
    ``api_versions`` the ``(version, label)`` pairs the org serves.
    All methods are thread-safe.
    """

    def __init__(
        self,
        *,
        page_size: int = 2000,
        api_versions: Sequence[tuple[str, str]] = DEFAULT_VERSIONS,
        api_limit: int = 15000,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.page_size = page_size
        self.api_limit = api_limit
        self.api_versions = tuple(api_versions)
        self.handled_requests = 0
        self._mutex = threading.RLock()
        self._types: dict[str, _SObjectType] = {}  # lower-case name -> type
        self._records: dict[str, dict[str, dict[str, Any]]] = {}  # type name -> id -> record
        self._deleted: dict[str, dict[str, dict[str, Any]]] = {}  # the recycle bin, for queryAll
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._apex: dict[tuple[str, str], ApexHandler] = {}
        self._blobs: dict[str, bytes] = {}  # "Type/Id/Field" -> the binary field's data
        self._headers: dict[str, str] = {}  # the headers of the request being answered (lower-case names)
        #: When the org's metadata last changed: ``If-Modified-Since`` on a describe is answered 304 after it.
        self.metadata_modified = datetime.now(timezone.utc).replace(microsecond=0)
        #: Every anonymous Apex body run through ``tooling/executeAnonymous``, in order.
        self.executed_apex: list[str] = []
        text = "string"
        self.define_sobject("Account", {"Name": text, "Industry": text, "AccountNumber": text, "Phone": text,
                                        "Website": text, "NumberOfEmployees": "int", "AnnualRevenue": "currency",
                                        "Description": "textarea", "External_Id__c": text},
                            required=["Name"], external_ids=["External_Id__c"], key_prefix="001")
        self.define_sobject("Contact", {"FirstName": text, "LastName": text, "Email": "email", "Phone": text,
                                        "AccountId": "reference", "External_Id__c": text},
                            required=["LastName"], external_ids=["External_Id__c"], key_prefix="003")
        self.define_sobject("Opportunity", {"Name": text, "StageName": "picklist", "CloseDate": "date",
                                            "Amount": "currency", "AccountId": "reference", "External_Id__c": text},
                            required=["Name", "StageName", "CloseDate"], external_ids=["External_Id__c"],
                            key_prefix="006")
        self.define_sobject("Lead", {"FirstName": text, "LastName": text, "Company": text, "Email": "email",
                                     "Status": "picklist", "External_Id__c": text},
                            required=["LastName", "Company"], external_ids=["External_Id__c"], key_prefix="00Q")
        self.define_sobject("Case", {"Subject": text, "Status": "picklist", "Priority": "picklist",
                                     "AccountId": "reference", "External_Id__c": text},
                            external_ids=["External_Id__c"], key_prefix="500")
        self.define_sobject("ContentVersion", {"Title": text, "PathOnClient": text, "Description": "textarea",
                                               "VersionData": "base64", "ContentDocumentId": "reference"},
                            required=["PathOnClient"], key_prefix="068")
        self.define_sobject("ContentDocument", {"Title": text}, key_prefix="069")
        self.define_sobject("Document", {"Name": text, "FolderId": "reference", "Body": "base64",
                                         "Description": "textarea"}, required=["Name"], key_prefix="015")
        self.define_sobject("Attachment", {"Name": text, "ParentId": "reference", "Body": "base64",
                                           "ContentType": text}, required=["Name"], key_prefix="00P")
        self.define_sobject("EventLogFile", {"EventType": text, "LogDate": "datetime", "LogFile": "base64",
                                             "LogFileLength": "double"}, key_prefix="0AT")
        # Tooling API types share the store (a fake keeps one namespace; tooling/* serves them).
        self.define_sobject("ApexClass", {"Name": text, "Body": "textarea", "Status": text, "ApiVersion": "double"},
                            required=["Name"], key_prefix="01p")
        self._tooling_types = {"apexclass"}

    def __repr__(self) -> str:
        with self._mutex:
            counts = {name: len(records) for name, records in self._records.items() if records}
        return f"FakeRestApi(records={counts}, page_size={self.page_size})"

    # -- test setup -----------------------------------------------------------

    def define_sobject(
        self,
        name: str,
        fields: dict[str, str] | Iterable[str],
        *,
        required: Iterable[str] = (),
        external_ids: Iterable[str] = (),
        key_prefix: str | None = None,
    ) -> None:
        """Define (or redefine, keeping records) an sObject type.

        ``fields`` maps field names to Salesforce types (``"string"``,
        ``"int"``, ...) or is a list of names (all ``"string"``).  The system
        fields (Id, IsDeleted, CreatedDate, LastModifiedDate, SystemModstamp)
        are always there.  ``external_ids`` may be used for upserts and are unique.
        """
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid sObject name {name!r}")
        types = dict(fields) if isinstance(fields, dict) else {f: "string" for f in fields}
        for f in types:
            if not _NAME_RE.match(f):
                raise ValueError(f"invalid field name {f!r}")
        all_fields = {"Id": "id", "IsDeleted": "boolean", "CreatedDate": "datetime",
                      "LastModifiedDate": "datetime", "SystemModstamp": "datetime", **types}
        sobject = _SObjectType(name, key_prefix or "a0" + secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ"), all_fields,
                               set(required), set(external_ids))
        for f in (*sobject.required, *sobject.external_ids):
            if f not in all_fields:
                raise ValueError(f"{f!r} is not a field of {name}")
        with self._mutex:
            self._types[name.lower()] = sobject
            self._records.setdefault(name, {})
            self._deleted.setdefault(name, {})

    def insert(self, sobject: str, fields: dict[str, Any]) -> str:
        """Create a record directly (test setup) and return its Id.

        An unknown ``sobject`` becomes an open type that accepts any field.
        """
        with self._mutex:
            if sobject.lower() not in self._types:
                self.define_sobject(sobject, list(fields))
                self._types[sobject.lower()].open = True
            try:
                return self._create(self._types[sobject.lower()], fields)
            except _RestError as exc:
                raise ValueError(f"{exc.error_code}: {exc.message}") from None

    def insert_many(self, sobject: str, rows: Iterable[dict[str, Any]]) -> list[str]:
        """:meth:`insert` each row; the Ids in order."""
        return [self.insert(sobject, row) for row in rows]

    def records(self, sobject: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Copies of the live records of ``sobject`` (and the deleted ones if asked), in creation order."""
        with self._mutex:
            sobj = self._types.get(sobject.lower())
            if sobj is None:
                return []
            found = list(self._records[sobj.name].values())
            if include_deleted:
                found += list(self._deleted[sobj.name].values())
            return [dict(r) for r in found]

    def set_blob(self, sobject: str, record_id: str, field_name: str, data: bytes) -> None:
        """Give record ``record_id`` a binary field (test setup), served at ``sobjects/T/Id/Field``."""
        with self._mutex:
            sobj = self._type(sobject)
            record = self._get(sobj, record_id)
            known = sobj.field_name(field_name)
            if known is None or sobj.fields[known] != "base64":
                raise ValueError(f"{field_name!r} is not a base64 field of {sobj.name}")
            self._store_blob(sobj, record, known, data)

    def add_apex_route(self, method: str, path: str, handler: ApexHandler) -> None:
        """Serve ``method /services/apexrest<path>`` with ``handler`` (an Apex REST class stand-in)."""
        if not path.startswith("/"):
            raise ValueError("path must start with '/' (it follows /services/apexrest)")
        with self._mutex:
            self._apex[(method.upper(), path)] = handler

    @property
    def open_cursors(self) -> int:
        """How many query locators are open (each holds a result snapshot)."""
        with self._mutex:
            return len(self._cursors)

    # -- the request entry point ------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, instance_url: str,
        headers: Mapping[str, str] | None = None,
    ) -> Result:
        """Answer one authenticated request under /services/data (path without the host,
        e.g. "/services/data/v62.0/query", query from urllib.parse.parse_qs, ``headers`` the
        request's). Returns (status, extra headers, body bytes). Thread-safe."""
        with self._mutex:
            self.handled_requests += 1
            self._headers = {k.lower(): v for k, v in (headers or {}).items()}
            try:
                if path.startswith("/services/apexrest"):
                    return self._apex_request(method, path[len("/services/apexrest"):], query, body)
                status, value = self._route(method.upper(), path, query, body)
            except _RestError as exc:
                return _json(exc.status, exc.body())
            finally:
                self._headers = {}
            if status in (204, 304):
                return status, {}, b""
            if isinstance(value, Raw):
                return status, {"Content-Type": value.content_type}, value.data
            return _json(status, value)

    # -- routing ------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        if path.rstrip("/") == "/services/data":
            self._allow(method, "GET")
            return 200, [{"label": label, "url": f"/services/data/v{v}", "version": v}
                         for v, label in self.api_versions]
        match = re.match(r"^/services/data/v(\d+\.\d)(?:/(.*))?$", path)
        if match is None or match.group(1) not in {v for v, _ in self.api_versions}:
            raise _not_found()
        version, rest = match.group(1), (match.group(2) or "").rstrip("/")
        parts = [unquote(p) for p in rest.split("/")] if rest else []
        if not parts:
            self._allow(method, "GET")
            base = f"/services/data/v{version}"
            return 200, {name: f"{base}/{name}" for name in ("sobjects", "query", "queryAll", "composite",
                                                             "limits")}
        head = parts[0]
        if head in ("query", "queryAll"):
            self._allow(method, "GET")
            if len(parts) == 2:
                return 200, self._next_page(parts[1])
            if len(parts) > 2:
                raise _not_found()
            soql = (query.get("q") or [""])[-1]
            return 200, self._query(soql, version, include_deleted=head == "queryAll")
        if head == "sobjects":
            return self._sobjects(method, parts[1:], query, body, version)
        if head == "composite":
            return self._composite(method, parts[1:], query, body, version)
        if head == "search" and len(parts) == 1:
            self._allow(method, "GET")
            return 200, self._search((query.get("q") or [""])[-1], version)
        if head == "parameterizedSearch" and len(parts) == 1:
            self._allow(method, "GET", "POST")
            payload = _parse_body(body) if method == "POST" else {k: v[-1] for k, v in query.items()}
            return 200, self._parameterized_search(payload, version)
        if head == "tooling":
            return self._tooling(method, parts[1:], query, body, version)
        if head == "limits" and len(parts) == 1:
            self._allow(method, "GET")
            used = self.handled_requests
            return 200, {
                "DailyApiRequests": {"Max": self.api_limit, "Remaining": max(self.api_limit - used, 0)},
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
                "DataStorageMB": {"Max": 5, "Remaining": 5},
                "FileStorageMB": {"Max": 20, "Remaining": 20},
                "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
            }
        raise _not_found()

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed and not (method == "HEAD" and "GET" in allowed):
            raise _RestError(405, "METHOD_NOT_ALLOWED",
                             f"HTTP Method '{method}' not allowed. Allowed are {','.join(allowed)}")

    def _type(self, name: str) -> _SObjectType:
        sobj = self._types.get(name.lower())
        if sobj is None:
            raise _RestError(404, "NOT_FOUND", "The requested resource does not exist")
        return sobj

    def _sobjects(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes, version: str,
        tooling: bool = False,
    ) -> tuple[int, Any]:
        if not parts:
            self._allow(method, "GET")
            if self._not_modified():
                return 304, None
            types = [t for t in self._types.values() if (t.name.lower() in self._tooling_types) == tooling]
            return 200, {"encoding": "UTF-8", "maxBatchSize": 200,
                         "sobjects": [self._describe_brief(t, version) for t in types]}
        sobj = self._type(parts[0])
        if (sobj.name.lower() in self._tooling_types) != tooling:
            raise _not_found()  # a Tooling type is not in the data API, nor the other way round
        if len(parts) == 1:
            self._allow(method, "GET", "POST")
            if method == "POST":
                if self._headers.get("content-type", "").lower().startswith("multipart/"):
                    return 201, self._create_multipart(sobj, body)
                new_id = self._create(sobj, _fields_body(body))
                return 201, {"id": new_id, "success": True, "errors": []}
            recent = [self._project(r, ["Id", *(["Name"] if "Name" in sobj.fields else [])], sobj, version)
                      for r in list(self._records[sobj.name].values())[-3:]]
            return 200, {"objectDescribe": self._describe_brief(sobj, version), "recentItems": recent}
        if len(parts) == 2 and parts[1] == "describe":
            self._allow(method, "GET")
            if self._not_modified():
                return 304, None
            return 200, self._describe(sobj, version)
        if len(parts) == 2 and parts[1] in ("updated", "deleted"):
            self._allow(method, "GET")
            return 200, self._changes(sobj, parts[1], query)
        if len(parts) == 2:
            self._allow(method, "GET", "PATCH", "DELETE")
            record_id = parts[1]
            if method == "GET":
                return 200, self._project(self._get(sobj, record_id), self._fields_param(sobj, query), sobj,
                                          version)
            if method == "PATCH":
                self._update(sobj, self._get(sobj, record_id), _fields_body(body))
                return 204, None
            self._delete(sobj, self._get(sobj, record_id))
            return 204, None
        if len(parts) == 3:
            blob_field = sobj.field_name(parts[2])
            if _ID_RE.match(parts[1]) and blob_field is not None and sobj.fields[blob_field] == "base64":
                self._allow(method, "GET")
                record = self._get(sobj, parts[1])
                data = self._blobs.get(f"{sobj.name}/{record['Id']}/{blob_field}")
                if data is None:
                    raise _not_found()
                return 200, Raw(data)
            self._allow(method, "GET", "PATCH", "DELETE")
            return self._by_external_id(method, sobj, parts[1], parts[2], query, body, version)
        raise _not_found()

    def _not_modified(self) -> bool:
        """Whether the request's ``If-Modified-Since`` is at or after the last metadata change."""
        header = self._headers.get("if-modified-since")
        if not header:
            return False
        try:
            since = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            return False
        return since >= self.metadata_modified

    def _changes(self, sobj: _SObjectType, kind: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """``sobjects/T/updated`` and ``sobjects/T/deleted``: what changed in ``[start, end]``."""
        window = []
        for name in ("start", "end"):
            text = (query.get(name) or [""])[-1]
            try:
                value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise _RestError(400, "MISSING_ARGUMENT" if not text else "INVALID_DATE_FORMAT",
                                 f"{name} must be an ISO 8601 date and time: {text!r}") from None
            if value.tzinfo is None:
                raise _RestError(400, "INVALID_DATE_FORMAT", f"{name} must have a time zone")
            window.append(value)
        start, end = window
        if start > end:
            raise _RestError(400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate")
        covered = end.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:00.000+0000")

        def within(stamp: str) -> bool:
            moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.000+0000").replace(tzinfo=timezone.utc)
            return start <= moment <= end

        if kind == "updated":
            ids = [r["Id"] for r in self._records[sobj.name].values() if within(r["LastModifiedDate"])]
            return {"ids": ids, "latestDateCovered": covered}
        gone = [{"id": r["Id"], "deletedDate": r["LastModifiedDate"]} for r in self._deleted[sobj.name].values()
                if within(r["LastModifiedDate"])]
        return {"deletedRecords": gone, "earliestDateAvailable": self.metadata_modified.strftime(
            "%Y-%m-%dT%H:%M:00.000+0000"), "latestDateCovered": covered}

    def _store_blob(self, sobj: _SObjectType, record: dict[str, Any], field_name: str, data: bytes) -> None:
        key = f"{sobj.name}/{record['Id']}/{field_name}"
        self._blobs[key] = data
        url = f"/services/data/v{self.api_versions[-1][0]}/sobjects/{key}"
        self._records[sobj.name][record["Id"]] = {**record, field_name: url}

    def _create_multipart(self, sobj: _SObjectType, body: bytes) -> dict[str, Any]:
        """A multipart insert: the JSON part (``entity_content``, ``entity_document``, ...) first,
        then the binary part named after the base64 field, with a filename."""
        content_type = self._headers.get("content-type", "")
        if "boundary=" not in content_type:
            raise _RestError(400, "INVALID_MULTIPART_REQUEST", "Multipart message must have a boundary")
        message = BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        parts = list(message.iter_parts()) if message.is_multipart() else []
        if len(parts) != 2:
            raise _RestError(400, "INVALID_MULTIPART_REQUEST",
                             "Multipart message must have exactly two parts: the JSON entity, then the binary data")
        entity, blob = parts
        expected = blob_part_name(sobj.name)
        if entity.get_param("name", header="content-disposition") != expected:
            raise _RestError(400, "INVALID_MULTIPART_REQUEST", f"The first part must be named {expected}")
        if entity.get_content_type() != "application/json":
            raise _RestError(400, "INVALID_MULTIPART_REQUEST", "The first part must be application/json")
        fields = _fields_body(_payload(entity))
        field_name = sobj.field_name(str(blob.get_param("name", header="content-disposition") or ""))
        if field_name is None or sobj.fields[field_name] != "base64":
            raise _RestError(400, "INVALID_MULTIPART_REQUEST", f"The binary part must be named after a base64 field "
                                                               f"of {sobj.name}")
        if not blob.get_filename():
            raise _RestError(400, "INVALID_MULTIPART_REQUEST", "The binary part must have a filename")
        if any(name.lower() == field_name.lower() for name in fields):
            raise _RestError(400, "INVALID_MULTIPART_REQUEST", f"{field_name} is in both parts")
        new_id = self._create(sobj, fields)
        self._store_blob(sobj, self._records[sobj.name][new_id], field_name, _payload(blob))
        return {"id": new_id, "success": True, "errors": []}

    # -- composite, search, tooling ----------------------------------------------------------

    def _composite(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes, version: str
    ) -> tuple[int, Any]:
        if not parts:
            self._allow(method, "POST")
            return 200, _fake_composite.composite(self, _parse_body(body), version)
        if parts == ["batch"]:
            self._allow(method, "POST")
            return 200, _fake_composite.batch(self, _parse_body(body))
        if parts == ["graph"]:
            self._allow(method, "POST")
            return 200, _fake_composite.graph(self, _parse_body(body), version)
        if parts[0] == "tree" and len(parts) == 2:
            self._allow(method, "POST")
            return _fake_composite.tree(self, parts[1], _parse_body(body))
        if parts[0] == "sobjects":
            payload = _parse_body(body) if method in ("POST", "PATCH") else None
            return _fake_composite.collections(self, method, parts[1:], query, payload, version)
        raise _not_found()

    def _search(self, sosl: str, version: str) -> dict[str, Any]:
        try:
            parsed = parse_sosl(sosl)
        except QueryError as exc:
            raise _RestError(400, "MALFORMED_SEARCH", str(exc)) from None
        returning = parsed.returning or [(t.name, []) for t in self._types.values()
                                         if t.name.lower() not in self._tooling_types]
        return {"searchRecords": self._find(parsed.term, returning, parsed.limit, version)}

    def _find(self, term: re.Pattern[str], returning: list[tuple[str, list[str]]], limit: int | None,
              version: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for type_name, names in returning:
            sobj = self._types.get(type_name.lower())
            if sobj is None:
                raise _RestError(400, "INVALID_TYPE", f"sObject type '{type_name}' is not supported.")
            fields = self._fields_param(sobj, {"fields": [",".join(names)]}) if names else ["Id"]
            text_fields = [f for f, kind in sobj.fields.items()
                           if kind in ("string", "textarea", "email", "phone", "picklist", "url")]
            for record in self._records[sobj.name].values():
                if any(isinstance(record.get(f), str) and term.search(record[f]) for f in text_fields):
                    found.append(self._project(record, fields, sobj, version))
        return found[:limit] if limit is not None else found

    def _parameterized_search(self, payload: Any, version: str) -> dict[str, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("q"), str) or not payload["q"].strip():
            raise _RestError(400, "MISSING_ARGUMENT", "q is required")
        term = re.compile(re.escape(payload["q"].strip()).replace("\\*", ".*"), re.IGNORECASE)
        default_fields = payload.get("fields")
        returning: list[tuple[str, list[str]]] = []
        for item in payload.get("sobjects") or []:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise _RestError(400, "INVALID_INPUT", "each sobjects entry needs a name")
            returning.append((item["name"], list(item.get("fields") or default_fields or [])))
        if not returning:
            returning = [(t.name, list(default_fields or [])) for t in self._types.values()
                         if t.name.lower() not in self._tooling_types]
        limit = payload.get("overallLimit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise _RestError(400, "INVALID_INPUT", "overallLimit must be a positive integer")
        return {"searchRecords": self._find(term, returning, limit, version)}

    def _tooling(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes, version: str
    ) -> tuple[int, Any]:
        if not parts:
            raise _not_found()
        head = parts[0]
        if head in ("query", "queryAll"):
            self._allow(method, "GET")
            if len(parts) == 2:
                return 200, self._next_page(parts[1])
            soql = (query.get("q") or [""])[-1]
            return 200, self._query(soql, version, include_deleted=head == "queryAll", tooling=True)
        if head == "sobjects":
            if len(parts) > 1 and parts[1].lower() not in self._tooling_types:
                raise _not_found()
            return self._sobjects(method, parts[1:], query, body, version, tooling=True)
        if head == "executeAnonymous" and len(parts) == 1:
            self._allow(method, "GET")
            return 200, self._execute_anonymous((query.get("anonymousBody") or [""])[-1])
        raise _not_found()

    def _execute_anonymous(self, apex: str) -> dict[str, Any]:
        """Anonymous Apex, as far as a fake can: it 'compiles' when it ends in ``;`` or ``}`` with
        balanced brackets, and 'throws' on a ``throw`` statement."""
        if not apex.strip():
            raise _RestError(400, "MISSING_ARGUMENT", "anonymousBody is required")
        self.executed_apex.append(apex)
        result: dict[str, Any] = {"line": -1, "column": -1, "compiled": True, "success": True,
                                  "compileProblem": None, "exceptionStackTrace": None, "exceptionMessage": None}
        text = apex.strip()
        balanced = all(text.count(a) == text.count(b) for a, b in ("()", "{}", "[]"))
        if not balanced or text[-1] not in ";}":
            lines = apex.splitlines() or [""]
            result.update(line=len(lines), column=len(lines[-1]) + 1, compiled=False, success=False,
                          compileProblem="Unexpected token '<EOF>'.")
        elif re.search(r"\bthrow\b", text):
            result.update(success=False, exceptionMessage="System.HandledException: thrown by anonymous Apex",
                          exceptionStackTrace="AnonymousBlock: line 1, column 1")
        return result

    # -- records ------------------------------------------------------------------

    def _check_fields(self, sobj: _SObjectType, fields: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "attributes":
                continue
            known = sobj.field_name(name)
            if known is None:
                if sobj.open and _NAME_RE.match(name):
                    sobj.fields[name] = "string"
                    known = name
                else:
                    raise _RestError(400, "INVALID_FIELD",
                                     f"No such column '{name}' on sobject of type {sobj.name}", [name])
            if known in _SYSTEM_FIELDS:
                action = "create" if creating else "update"
                raise _RestError(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                                 f"Unable to {action} fields: {known}. Please check the security settings of "
                                 "this field and verify that it is read/write for your profile or permission "
                                 "set.", [known])
            if isinstance(value, (dict, list)):
                raise _RestError(400, "JSON_PARSER_ERROR",
                                 f"Cannot deserialize instance of {sobj.fields[known]} from "
                                 f"{'START_OBJECT' if isinstance(value, dict) else 'START_ARRAY'} value")
            clean[known] = value
        return clean

    def _check_unique(self, sobj: _SObjectType, record: dict[str, Any]) -> None:
        for ext in sorted(sobj.external_ids):
            value = record.get(ext)
            if value is None:
                continue
            for other in self._records[sobj.name].values():
                if other["Id"] != record["Id"] and other.get(ext) == value:
                    raise _RestError(400, "DUPLICATE_VALUE",
                                     f"duplicate value found: {ext} duplicates value on record with id: "
                                     f"{other['Id']}", [ext])

    def _new_id(self, sobj: _SObjectType) -> str:
        while True:
            candidate = sobj.key_prefix + secrets.token_hex(8)[:12].upper() + "AAA"
            if candidate not in self._records[sobj.name] and candidate not in self._deleted[sobj.name]:
                return candidate

    def _create(self, sobj: _SObjectType, fields: dict[str, Any]) -> str:
        clean = self._check_fields(sobj, fields, creating=True)
        missing = sorted(f for f in sobj.required if clean.get(f) in (None, ""))
        if missing:
            raise _RestError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                             missing)
        now = _now()
        record = {"Id": self._new_id(sobj), "IsDeleted": False, "CreatedDate": now, "LastModifiedDate": now,
                  "SystemModstamp": now, **clean}
        self._check_unique(sobj, record)
        if sobj.name == "ContentVersion" and not record.get("ContentDocumentId"):
            # A first version creates its document, as Salesforce does.
            document = self._types["contentdocument"]
            record["ContentDocumentId"] = self._create(document, {"Title": record.get("Title") or
                                                                  record.get("PathOnClient")})
        self._records[sobj.name][record["Id"]] = record
        return str(record["Id"])

    def _get(self, sobj: _SObjectType, record_id: str) -> dict[str, Any]:
        if not _ID_RE.match(record_id):
            raise _not_found()
        live, deleted = self._records[sobj.name], self._deleted[sobj.name]
        if len(record_id) == 15:  # the case-sensitive form of an 18-character id
            record_id = next((i for i in (*live, *deleted) if i[:15] == record_id), record_id)
        if record_id in live:
            return live[record_id]
        if record_id in deleted:
            raise _RestError(404, "ENTITY_IS_DELETED", "entity is deleted")
        raise _not_found()

    def _update(self, sobj: _SObjectType, record: dict[str, Any], fields: dict[str, Any]) -> None:
        clean = self._check_fields(sobj, fields, creating=False)
        for f in sobj.required:
            if f in clean and clean[f] in (None, ""):
                raise _RestError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{f}]", [f])
        # Copy-on-write: open query cursors keep the snapshot they were given.
        updated = {**record, **clean, "LastModifiedDate": _now()}
        updated["SystemModstamp"] = updated["LastModifiedDate"]
        self._check_unique(sobj, updated)
        self._records[sobj.name][record["Id"]] = updated

    def _delete(self, sobj: _SObjectType, record: dict[str, Any]) -> None:
        del self._records[sobj.name][record["Id"]]
        self._deleted[sobj.name][record["Id"]] = {**record, "IsDeleted": True, "LastModifiedDate": _now()}
        if sobj.name == "ContentDocument":  # a document goes with all its versions
            versions = self._types["contentversion"]
            for version in list(self._records[versions.name].values()):
                if version.get("ContentDocumentId") == record["Id"]:
                    self._delete(versions, version)

    def _by_external_id(
        self, method: str, sobj: _SObjectType, field_name: str, value: str, query: dict[str, list[str]],
        body: bytes, version: str,
    ) -> tuple[int, Any]:
        known = sobj.field_name(field_name)
        if known is None or (known != "Id" and known not in sobj.external_ids):
            raise _RestError(404, "NOT_FOUND",
                             f"Provided external ID field does not exist or is not accessible: {field_name}")
        if known == "Id":
            matches = [r for r in self._records[sobj.name].values() if r["Id"] == value or r["Id"][:15] == value]
        else:
            matches = [r for r in self._records[sobj.name].values() if str(r.get(known)) == value]
        if len(matches) > 1:
            urls = [f"/services/data/v{version}/sobjects/{sobj.name}/{r['Id']}" for r in matches]
            return 300, urls
        if method == "GET":
            if not matches:
                raise _not_found()
            return 200, self._project(matches[0], self._fields_param(sobj, query), sobj, version)
        if method == "DELETE":
            if not matches:
                raise _not_found()
            self._delete(sobj, matches[0])
            return 204, None
        fields = _fields_body(body)
        if any(name.lower() == known.lower() for name in fields):
            raise _RestError(400, "INVALID_FIELD",
                             f"The field {known} is specified in the URL and in the body; remove it from the "
                             "body", [known])
        if matches:
            self._update(sobj, matches[0], fields)
            return 200, {"id": matches[0]["Id"], "success": True, "errors": [], "created": False}
        if known == "Id":
            raise _not_found()
        new_id = self._create(sobj, {**fields, known: value})
        return 201, {"id": new_id, "success": True, "errors": [], "created": True}

    @staticmethod
    def _fields_param(sobj: _SObjectType, query: dict[str, list[str]]) -> list[str]:
        wanted = (query.get("fields") or [""])[-1]
        if not wanted:
            return list(sobj.fields)
        names = []
        for name in (n.strip() for n in wanted.split(",")):
            known = sobj.field_name(name)
            if known is None:
                raise _RestError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobj.name}'", [name])
            names.append(known)
        return names

    @staticmethod
    def _project(record: dict[str, Any], fields: list[str], sobj: _SObjectType, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": {"type": sobj.name,
                                              "url": f"/services/data/v{version}/sobjects/{sobj.name}/{record['Id']}"}}
        for name in fields:
            out[name] = record.get(name)
        return out

    def _describe_brief(self, sobj: _SObjectType, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{sobj.name}"
        return {"name": sobj.name, "label": sobj.name.replace("__c", "").replace("_", " "),
                "keyPrefix": sobj.key_prefix, "custom": sobj.name.endswith("__c"), "createable": True,
                "updateable": True, "deletable": True, "queryable": True,
                "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"}}

    def _describe(self, sobj: _SObjectType, version: str) -> dict[str, Any]:
        fields = []
        for name, kind in sobj.fields.items():
            system = name in _SYSTEM_FIELDS
            fields.append({"name": name, "label": name, "type": kind, "nillable": name not in sobj.required and
                           not system, "createable": not system, "updateable": not system,
                           "externalId": name in sobj.external_ids, "unique": name in sobj.external_ids,
                           "idLookup": name == "Id" or name in sobj.external_ids, "custom": name.endswith("__c")})
        return {**self._describe_brief(sobj, version), "fields": fields}

    # -- SOQL -----------------------------------------------------------------------

    def _query(self, soql: str, version: str, *, include_deleted: bool, tooling: bool = False) -> dict[str, Any]:
        parsed = _parse_soql(soql)
        sobj = self._types.get(parsed.sobject.lower())
        if sobj is not None and (sobj.name.lower() in self._tooling_types) != tooling:
            sobj = None  # a Tooling type is not in the data API, nor the other way round
        if sobj is None:
            raise _RestError(400, "INVALID_TYPE",
                             f"\n{soql}\n^\nERROR at Row:1:Column:1\nsObject type '{parsed.sobject}' is not "
                             "supported. If you are attempting to use a custom object, be sure to append the "
                             "'__c' after the entity name.")
        fields = []
        for name in parsed.fields:
            known = sobj.field_name(name)
            if known is None:
                raise _RestError(400, "INVALID_FIELD", f"\n{soql}\n^\nERROR at Row:1:Column:1\nNo such column "
                                 f"'{name}' on entity '{sobj.name}'. If you are attempting to use a custom field, "
                                 "be sure to append the '__c' after the custom field name.", [name])
            fields.append(known)
        for cond in parsed.conditions:
            if sobj.field_name(cond.field) is None:
                raise _RestError(400, "INVALID_FIELD", f"No such column '{cond.field}' on entity '{sobj.name}'",
                                 [cond.field])
        rows: list[dict[str, Any]] = list(self._records[sobj.name].values())
        if include_deleted:
            rows += list(self._deleted[sobj.name].values())
        rows = [r for r in rows if parsed.matches(r, sobj.field_name)]
        if parsed.order_by is not None:
            key = sobj.field_name(parsed.order_by)
            if key is None:
                raise _RestError(400, "INVALID_FIELD", f"No such column '{parsed.order_by}' on entity "
                                 f"'{sobj.name}'", [parsed.order_by])
            # Salesforce sorts nulls first ascending, last descending.
            rows.sort(key=lambda r: (r.get(key) is not None, _sort_key(r.get(key))), reverse=parsed.descending)
        rows = rows[parsed.offset:]
        if parsed.limit is not None:
            rows = rows[: parsed.limit]
        if parsed.count:
            return {"totalSize": len(rows), "done": True, "records": []}
        cursor = _Cursor(rows, fields, sobj.name, version)
        return self._page(cursor, "01g" + secrets.token_hex(8).upper(), 0)

    def _page(self, cursor: _Cursor, locator: str, offset: int) -> dict[str, Any]:
        sobj = self._types[cursor.sobject.lower()]
        end = offset + self.page_size
        page = [self._project(r, cursor.fields, sobj, cursor.version) for r in cursor.records[offset:end]]
        result: dict[str, Any] = {"totalSize": len(cursor.records), "done": end >= len(cursor.records),
                                  "records": page}
        if end < len(cursor.records):
            self._cursors[locator] = cursor
            self._cursors.move_to_end(locator)
            while len(self._cursors) > _MAX_CURSORS:
                self._cursors.popitem(last=False)
            result["nextRecordsUrl"] = f"/services/data/v{cursor.version}/query/{locator}-{end}"
        else:
            self._cursors.pop(locator, None)
        return result

    def _next_page(self, token: str) -> dict[str, Any]:
        locator, _, offset = token.rpartition("-")
        cursor = self._cursors.get(locator)
        if cursor is None or not offset.isdigit() or int(offset) > len(cursor.records):
            raise _RestError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(cursor, locator, int(offset))

    # -- snapshots, for all-or-none rollbacks -----------------------------------------------

    def _snapshot(self) -> tuple[Any, Any, Any]:
        # Records are replaced, never mutated, so copying the maps is a full snapshot.
        return ({k: dict(v) for k, v in self._records.items()}, {k: dict(v) for k, v in self._deleted.items()},
                dict(self._blobs))

    def _restore(self, saved: tuple[Any, Any, Any]) -> None:
        records, deleted, blobs = saved
        self._records.clear()
        self._records.update(records)
        self._deleted.clear()
        self._deleted.update(deleted)
        self._blobs.clear()
        self._blobs.update(blobs)

    # -- Apex REST ----------------------------------------------------------------------

    def _apex_request(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Result:
        handler = self._apex.get((method.upper(), path))
        if handler is None:
            error = [{"errorCode": "NOT_FOUND", "message": f"Could not find a match for URL {path}"}]
            return _json(404, error)
        status, value = handler(method, path, query, body)
        if status == 204 or value is None:
            return status, {}, b""
        return _json(status, value)


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, "" if value is None else str(value).lower())


def _payload(part: Any) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _parse_soql(soql: str) -> Soql:
    """:func:`~authkit.testing._fake_soql.parse_soql`, a bad query being the REST ``MALFORMED_QUERY``
    error (the fake's other APIs, e.g. Bulk, parse through this)."""
    try:
        return parse_soql(soql)
    except QueryError as exc:
        raise _RestError(400, "MALFORMED_QUERY", str(exc)) from None
