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

This module routes; the answers live by resource in ``authkit/testing/``: ``_fake_records.py``
(types, records and the checks on every write), ``_fake_sobjects.py``, ``_fake_query.py`` (query,
pages, search), ``_fake_composite.py``, ``_fake_apex.py`` (tooling, anonymous Apex, Apex REST).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from authkit.testing import _fake_composite
from authkit.testing._fake_apex import ApexHandler, apex_request, tooling
from authkit.testing._fake_errors import Raw, RestError, Result, allow, json_result, not_found, parse_body
from authkit.testing._fake_query import Cursor, next_page, parameterized_search, search, soql_query
from authkit.testing._fake_records import RecordStore
from authkit.testing._fake_sobjects import sobjects

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


class FakeRestApi(RecordStore):
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
        super().__init__(api_versions)
        self.page_size = page_size
        self.api_limit = api_limit
        self.handled_requests = 0
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._apex: dict[tuple[str, str], ApexHandler] = {}
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
        self._tooling_types.add("apexclass")

    def __repr__(self) -> str:
        with self._mutex:
            counts = {name: len(records) for name, records in self._records.items() if records}
        return f"FakeRestApi(records={counts}, page_size={self.page_size})"

    # -- test setup -----------------------------------------------------------

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
                    return apex_request(self, method, path[len("/services/apexrest"):], query, body)
                status, value = self._route(method.upper(), path, query, body)
            except RestError as exc:
                return json_result(exc.status, exc.body())
            finally:
                self._headers = {}
            if status in (204, 304):
                return status, {}, b""
            if isinstance(value, Raw):
                return status, {"Content-Type": value.content_type}, value.data
            return json_result(status, value)

    # -- routing ------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        if path.rstrip("/") == "/services/data":
            allow(method, "GET")
            return 200, [{"label": label, "url": f"/services/data/v{v}", "version": v}
                         for v, label in self.api_versions]
        match = re.match(r"^/services/data/v(\d+\.\d)(?:/(.*))?$", path)
        if match is None or match.group(1) not in {v for v, _ in self.api_versions}:
            raise not_found()
        version, rest = match.group(1), (match.group(2) or "").rstrip("/")
        parts = [unquote(p) for p in rest.split("/")] if rest else []
        if not parts:
            allow(method, "GET")
            base = f"/services/data/v{version}"
            return 200, {name: f"{base}/{name}" for name in ("sobjects", "query", "queryAll", "composite",
                                                             "limits")}
        head = parts[0]
        if head in ("query", "queryAll"):
            allow(method, "GET")
            if len(parts) == 2:
                return 200, next_page(self, parts[1])
            if len(parts) > 2:
                raise not_found()
            soql = (query.get("q") or [""])[-1]
            return 200, soql_query(self, soql, version, include_deleted=head == "queryAll")
        if head == "sobjects":
            return sobjects(self, method, parts[1:], query, body, version)
        if head == "composite":
            return self._composite(method, parts[1:], query, body, version)
        if head == "search" and len(parts) == 1:
            allow(method, "GET")
            return 200, search(self, (query.get("q") or [""])[-1], version)
        if head == "parameterizedSearch" and len(parts) == 1:
            allow(method, "GET", "POST")
            payload = parse_body(body) if method == "POST" else {k: v[-1] for k, v in query.items()}
            return 200, parameterized_search(self, payload, version)
        if head == "tooling":
            return tooling(self, method, parts[1:], query, body, version)
        if head == "limits" and len(parts) == 1:
            allow(method, "GET")
            used = self.handled_requests
            return 200, {
                "DailyApiRequests": {"Max": self.api_limit, "Remaining": max(self.api_limit - used, 0)},
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
                "DataStorageMB": {"Max": 5, "Remaining": 5},
                "FileStorageMB": {"Max": 20, "Remaining": 20},
                "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
            }
        raise not_found()

    # -- composite ----------------------------------------------------------

    def _composite(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes, version: str
    ) -> tuple[int, Any]:
        if not parts:
            allow(method, "POST")
            return 200, _fake_composite.composite(self, parse_body(body), version)
        if parts == ["batch"]:
            allow(method, "POST")
            return 200, _fake_composite.batch(self, parse_body(body))
        if parts == ["graph"]:
            allow(method, "POST")
            return 200, _fake_composite.graph(self, parse_body(body), version)
        if parts[0] == "tree" and len(parts) == 2:
            allow(method, "POST")
            return _fake_composite.tree(self, parts[1], parse_body(body))
        if parts[0] == "sobjects":
            payload = parse_body(body) if method in ("POST", "PATCH") else None
            return _fake_composite.collections(self, method, parts[1:], query, payload, version)
        raise not_found()
