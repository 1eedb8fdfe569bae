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
import operator
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
        return self._save("POST", records, all_or_none, need_id=False)

    def update(self, records: Iterable[Mapping[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]:
        """Update ``records`` (each with ``attributes.type`` and ``Id``); one result per record."""
        return self._save("PATCH", records, all_or_none, need_id=True)

    def _save(
        self, method: str, records: Iterable[Mapping[str, Any]], all_or_none: bool, *, need_id: bool
    ) -> list[dict[str, Any]]:
        send = self._client._series()
        checked = _Checked()
        results: list[dict[str, Any]] = []
        for chunk in _chunks(records, CHUNK_SIZE, all_or_none):
            body = {"allOrNone": bool(all_or_none), "records": checked.records(chunk, need_id=need_id)}
            results += _results(send(method, "composite/sobjects", json=body), len(chunk))
        return results

    def upsert(
        self, sobject: str, external_id_field: str, records: Iterable[Mapping[str, Any]], all_or_none: bool = False
    ) -> list[dict[str, Any]]:
        """Create or update ``records`` of ``sobject`` matched on ``external_id_field`` (which each
        record carries); one result per record, with ``"created"``."""
        check_name(sobject, "sObject")
        check_name(external_id_field, "external id field")
        path = f"composite/sobjects/{sobject}/{external_id_field}"
        send = self._client._series()
        checked = _Checked()
        results: list[dict[str, Any]] = []
        for chunk in _chunks(records, CHUNK_SIZE, all_or_none):
            rows = checked.records(chunk, need_id=False, default_type=sobject)
            for row in rows:
                if row.get(external_id_field) in (None, ""):
                    raise ValueError(f"every upserted record needs a value for {external_id_field}")
            body = {"allOrNone": bool(all_or_none), "records": rows}
            results += _results(send("PATCH", path, json=body), len(chunk))
        return results

    def delete(self, ids: Iterable[str], all_or_none: bool = False) -> list[dict[str, Any]]:
        """Delete the records ``ids`` (any types); one result per id."""
        if isinstance(ids, str):
            raise TypeError("ids must be a list of record ids, not a str")
        send = self._client._series()
        results: list[dict[str, Any]] = []
        for chunk in _chunks(ids, CHUNK_SIZE, all_or_none):
            # Checked ids are letters and digits only: the query string needs no encoding.
            query = f"ids={','.join(_ids(chunk))}&allOrNone={'true' if all_or_none else 'false'}"
            results += _results(send("DELETE", f"composite/sobjects?{query}"), len(chunk))
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
        send = self._client._series()
        found: list[dict[str, Any] | None] = []
        for chunk in _chunks(ids, GET_CHUNK_SIZE, False):
            body = {"ids": _ids(chunk), "fields": names}
            # The POST form takes 2,000 ids; the GET form's URL would be too long past ~800.
            page = send("POST", f"composite/sobjects/{sobject}", json=body)
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


# C-level helpers for the checks over a whole chunk (one pass each, no Python frame per record).
_get_attributes = operator.methodcaller("get", "attributes")
_get_type = operator.methodcaller("get", "type")
_get_id = operator.methodcaller("get", "Id")
_ID_LENGTHS = frozenset({15, 18})


class _Checked:
    """The records of one call, checked chunk by chunk: names, types and ids.

    The records of one call share their fields and type, so the names seen are remembered and a
    chunk of plain dicts whose names were all seen is checked in a few C-level passes
    (:meth:`_plain`); anything else — a new name, a custom mapping, a bad record — goes record by
    record (:meth:`_record`), which says what is wrong with which record.
    """

    def __init__(self) -> None:
        self._fields = {"attributes"}  # field names checked so far
        self._types: set[str] = set()  # sObject names checked so far (a set of its own: no field name clashes)

    def records(self, chunk: list[Any], *, need_id: bool, default_type: str | None = None) -> list[Mapping[str, Any]]:
        """``chunk`` ready to send: the caller's own mappings when they need no change (they are
        only read, by the JSON encoder), else copies with the type added."""
        if default_type is None and self._plain(chunk, need_id):
            return chunk
        return [self._record(r, need_id=need_id, default_type=default_type) for r in chunk]

    def _plain(self, chunk: list[Any], need_id: bool) -> bool:
        """Whether every record of ``chunk`` is a dict with a dict ``attributes``, a known type, known
        field names and a valid ``Id`` (or none, with ``need_id`` false).  New names are checked
        here (an invalid one raises, as :meth:`_record` would); anything else answers False."""
        if set(map(type, chunk)) != {dict}:
            return False
        attributes = list(map(_get_attributes, chunk))
        if set(map(type, attributes)) != {dict}:
            return False
        types = list(map(_get_type, attributes))
        if set(map(type, types)) != {str}:
            return False
        kinds = set(types)  # usually one
        if not kinds <= self._types:
            for kind in kinds - self._types:
                self._types.add(check_name(kind, "sObject"))
        if not self._fields.issuperset(itertools.chain.from_iterable(chunk)):
            for name in set(itertools.chain.from_iterable(chunk)) - self._fields:
                self._fields.add(check_name(name, "field"))
        if need_id:
            return _plain_ids(list(map(_get_id, chunk)))
        return not any(map(operator.contains, chunk, itertools.repeat("Id")))

    def _record(self, record: Mapping[str, Any], *, need_id: bool, default_type: str | None) -> Mapping[str, Any]:
        """One record checked (names, type, Id) and ready to send (see :meth:`records`)."""
        if type(record) is not dict and not isinstance(record, Mapping):  # type() first: the ABC check is slow
            raise TypeError("each record must be a mapping of field name to value")
        attributes = record.get("attributes")
        if attributes is None and default_type is not None:
            attributes = {"type": default_type}
            record = {**record, "attributes": attributes}
        if type(attributes) is not dict and not isinstance(attributes, Mapping):
            raise ValueError('each record needs "attributes": {"type": "<sObject>"}')
        kind = attributes.get("type")
        if type(kind) is not str or kind not in self._types:
            if not isinstance(kind, str):
                raise ValueError('each record needs "attributes": {"type": "<sObject>"}')
            self._types.add(check_name(kind, "sObject"))
        if not self._fields.issuperset(record):  # one C call when every field was seen before
            for name in record:
                if name not in self._fields:
                    self._fields.add(check_name(name, "field"))
        if need_id:
            check_id(record.get("Id"))
        elif "Id" in record:
            raise ValueError("a record to create must not have an Id")
        if type(record) is not dict or type(attributes) is not dict:
            record = {**record, "attributes": dict(attributes)}  # a custom mapping: make it JSON-encodable
        return record


def _plain_ids(ids: list[Any]) -> bool:
    """Whether every one of ``ids`` is a 15- or 18-character record id (what :func:`check_id` accepts)."""
    if set(map(type, ids)) != {str} or not set(map(len, ids)) <= _ID_LENGTHS:
        return False
    joined = "".join(ids)
    return joined.isascii() and joined.isalnum()


def _ids(chunk: list[Any]) -> list[str]:
    """``chunk`` if every item is a record id, else the error :func:`check_id` raises for the first bad one."""
    if not _plain_ids(chunk):
        for record_id in chunk:
            check_id(record_id)
    return chunk


def _results(answer: Any, expected: int) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or len(answer) != expected:
        raise TypeError("unexpected sObject Collections answer: not one result per record")
    if (set(map(type, answer)) == {dict} and all(map(operator.contains, answer, itertools.repeat("id")))
            and all(map(operator.contains, answer, itertools.repeat("errors")))):
        return answer  # the usual answer: every item has its keys (checked without a Python frame per item)
    for n, item in enumerate(answer):
        # The answer was parsed for this call alone: its dicts can be completed in place.
        if type(item) is not dict:
            answer[n] = item = {"success": False, "errors": []}
        if "id" not in item:
            item["id"] = None
        if "errors" not in item:
            item["errors"] = []
    return answer
