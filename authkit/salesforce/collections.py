"""sObject Collections: many records per request (``sf.collections``).

::

    results = sf.collections.create(
        {"attributes": {"type": "Account"}, "Name": f"Acme {n}"} for n in range(10_000)
    )                                                  # 50 requests of 200 records
    failed = [r for r in results if not r["success"]]  # one result per record, in input order
    sf.collections.update([{"attributes": {"type": "Account"}, "Id": i, "Industry": "Energy"} for i in ids])
    sf.collections.upsert("Account", "External_Id__c", [{"External_Id__c": "A-1", "Name": "Acme"}])
    sf.collections.delete(ids)
    sf.collections.get("Account", ids, ["Name"])       # records in input order, None for a missing id

Every call takes any number of records (an iterable, read one chunk at a time)
and sends them in chunks of 200 (2,000 ids for :meth:`Collections.get`), one
after the other.  Results come back as Salesforce gives them, one dict per
record in input order — ``{"id", "success", "errors"}`` (plus ``"created"`` for
an upsert; ``"id"`` is ``None`` for a record that was not saved).  A record
that fails does not raise: read its ``errors`` (``[{"statusCode", "message",
"fields"}]``).  A whole request that fails (a bad session, a limit) raises as
any other call does, after the chunks before it were applied.

``all_or_none=True`` makes Salesforce roll back the whole request if one
record fails; it can only hold within one request, so it is a ``ValueError``
when the records do not fit in one chunk (nothing is sent).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from authkit.salesforce._names import check_id, check_name

if TYPE_CHECKING:
    from authkit.salesforce.client import SalesforceClient

__all__ = ["Collections", "CHUNK_SIZE", "GET_CHUNK_SIZE"]

#: Records per create/update/upsert/delete request (Salesforce's limit).
CHUNK_SIZE = 200
#: Ids per :meth:`Collections.get` request (Salesforce's limit for the POST form).
GET_CHUNK_SIZE = 2000


class Collections:
    """sObject Collections on one client (``sf.collections``).  See the module docstring."""

    def __init__(self, client: SalesforceClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return "Collections()"

    def create(self, records: Iterable[Mapping[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]:
        """Create ``records`` (each with ``attributes.type``, no ``Id``); one result per record."""
        known = {"attributes"}  # names already checked (records of one call share their fields)
        results: list[dict[str, Any]] = []
        for chunk in _chunks(records, CHUNK_SIZE, all_or_none):
            body = {"allOrNone": bool(all_or_none), "records": [_record(r, known, need_id=False) for r in chunk]}
            results += _results(self._client.post("composite/sobjects", json=body), len(chunk))
        return results

    def update(self, records: Iterable[Mapping[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]:
        """Update ``records`` (each with ``attributes.type`` and ``Id``); one result per record."""
        known = {"attributes"}  # names already checked (records of one call share their fields)
        results: list[dict[str, Any]] = []
        for chunk in _chunks(records, CHUNK_SIZE, all_or_none):
            body = {"allOrNone": bool(all_or_none), "records": [_record(r, known, need_id=True) for r in chunk]}
            results += _results(self._client.patch("composite/sobjects", json=body), len(chunk))
        return results

    def upsert(
        self, sobject: str, external_id_field: str, records: Iterable[Mapping[str, Any]], all_or_none: bool = False
    ) -> list[dict[str, Any]]:
        """Create or update ``records`` of ``sobject`` matched on ``external_id_field`` (which each
        record carries); one result per record, with ``"created"``."""
        check_name(sobject, "sObject")
        check_name(external_id_field, "external id field")
        path = f"composite/sobjects/{sobject}/{external_id_field}"
        known = {"attributes"}  # names already checked (records of one call share their fields)
        results: list[dict[str, Any]] = []
        for chunk in _chunks(records, CHUNK_SIZE, all_or_none):
            rows = []
            for record in chunk:
                row = _record(record, known, need_id=False, default_type=sobject)
                if row.get(external_id_field) in (None, ""):
                    raise ValueError(f"every upserted record needs a value for {external_id_field}")
                rows.append(row)
            body = {"allOrNone": bool(all_or_none), "records": rows}
            results += _results(self._client.patch(path, json=body), len(chunk))
        return results

    def delete(self, ids: Iterable[str], all_or_none: bool = False) -> list[dict[str, Any]]:
        """Delete the records ``ids`` (any types); one result per id."""
        if isinstance(ids, str):
            raise TypeError("ids must be a list of record ids, not a str")
        results: list[dict[str, Any]] = []
        for chunk in _chunks(ids, CHUNK_SIZE, all_or_none):
            # Checked ids are letters and digits only: the query string needs no encoding.
            query = f"ids={','.join(check_id(i) for i in chunk)}&allOrNone={'true' if all_or_none else 'false'}"
            results += _results(self._client.delete(f"composite/sobjects?{query}"), len(chunk))
        return results

    def get(self, sobject: str, ids: Iterable[str], fields: Iterable[str]) -> list[dict[str, Any] | None]:
        """The records ``ids`` of ``sobject`` with ``fields``, in input order (``None`` for an id
        that does not exist or cannot be read)."""
        check_name(sobject, "sObject")
        if isinstance(ids, str) or isinstance(fields, str):
            raise TypeError("ids and fields must be lists, not a str")
        names = [check_name(f, "field") for f in fields]
        if not names:
            raise ValueError("fields must name at least one field")
        found: list[dict[str, Any] | None] = []
        for chunk in _chunks(ids, GET_CHUNK_SIZE, False):
            body = {"ids": [check_id(i) for i in chunk], "fields": names}
            # The POST form takes 2,000 ids; the GET form's URL would be too long past ~800.
            page = self._client.post(f"composite/sobjects/{sobject}", json=body)
            if not isinstance(page, list) or len(page) != len(chunk):
                raise TypeError("unexpected sObject Collections answer: not one record per id")
            found += [dict(r) if isinstance(r, dict) else None for r in page]
        return found


def _chunks(items: Iterable[Any], size: int, all_or_none: bool) -> Iterator[list[Any]]:
    """``items`` in lists of ``size``; with ``all_or_none`` a second chunk is a ``ValueError``,
    found before the first is handed out (so nothing is sent)."""
    if isinstance(items, Mapping):
        raise TypeError("pass a list (or any iterable) of records, not one record")
    iterator = iter(items)
    first = list(itertools.islice(iterator, size))
    if all_or_none:
        if next(iterator, _END) is not _END:
            raise ValueError(
                f"all_or_none=True needs at most {size} records: more are sent in several requests, "
                "which Salesforce cannot roll back together"
            )
    if first:
        yield first
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


_END = object()


def _record(
    record: Mapping[str, Any], known: set[str], *, need_id: bool, default_type: str | None = None
) -> Mapping[str, Any]:
    """``record`` checked (names, type, Id) and ready to send: the caller's own mapping when it
    needs no change (it is only read, by the JSON encoder), else a copy with the type added."""
    if type(record) is not dict and not isinstance(record, Mapping):  # type() first: the ABC check is slow
        raise TypeError("each record must be a mapping of field name to value")
    attributes = record.get("attributes")
    if attributes is None and default_type is not None:
        attributes = {"type": default_type}
        record = {**record, "attributes": attributes}
    if type(attributes) is not dict and not isinstance(attributes, Mapping):
        raise ValueError('each record needs "attributes": {"type": "<sObject>"}')
    kind = attributes.get("type")
    if type(kind) is not str or "." + kind not in known:  # "." starts no field name: no clash
        if not isinstance(kind, str):
            raise ValueError('each record needs "attributes": {"type": "<sObject>"}')
        check_name(kind, "sObject")
        known.add("." + kind)
    if not known.issuperset(record):  # one C call when every field was seen before
        for name in record:
            if name not in known:
                check_name(name, "field")
                known.add(name)
    if need_id:
        check_id(record.get("Id"))
    elif "Id" in record:
        raise ValueError("a record to create must not have an Id")
    if type(record) is not dict or type(attributes) is not dict:
        record = {**record, "attributes": dict(attributes)}  # a custom mapping: make it JSON-encodable
    return record


def _results(answer: Any, expected: int) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or len(answer) != expected:
        raise TypeError("unexpected sObject Collections answer: not one result per record")
    for n, item in enumerate(answer):
        # The answer was parsed for this call alone: its dicts can be completed in place.
        if type(item) is not dict:
            answer[n] = item = {"success": False, "errors": []}
        if "id" not in item:
            item["id"] = None
        if "errors" not in item:
            item["errors"] = []
    return answer
