"""Queries in :class:`~authkit.testing.fake_rest.FakeRestApi`: ``query``/``queryAll`` (the SOQL
subset of :mod:`authkit.testing._fake_soql`) with ``nextRecordsUrl`` pages over a snapshot,
``search`` (SOSL subset) and ``parameterizedSearch``.

Like :mod:`authkit.testing._fake_composite`, each function takes the API (its lock held by the
caller) and the request, and returns the JSON-able answer or raises :class:`RestError`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authkit.testing._fake_errors import RestError
from authkit.testing._fake_soql import QueryError, Soql, parse_soql, parse_sosl

if TYPE_CHECKING:
    from authkit.testing.fake_rest import FakeRestApi

__all__ = ["Cursor", "soql_query", "next_page", "search", "parameterized_search", "parse_soql_or_error"]

MAX_CURSORS = 1000  # open query locators kept; the oldest is dropped, as Salesforce drops idle ones


@dataclass
class Cursor:
    """An open query locator: the matching records (a snapshot) and how to show them."""

    records: list[dict[str, Any]]  # snapshot of the matching records (shared, never mutated)
    fields: list[str]
    sobject: str
    version: str


def soql_query(api: FakeRestApi, soql: str, version: str, *, include_deleted: bool,
               tooling: bool = False) -> dict[str, Any]:
    parsed = parse_soql_or_error(soql)
    sobj = api._types.get(parsed.sobject.lower())
    if sobj is not None and (sobj.name.lower() in api._tooling_types) != tooling:
        sobj = None  # a Tooling type is not in the data API, nor the other way round
    if sobj is None:
        raise RestError(400, "INVALID_TYPE",
                        f"\n{soql}\n^\nERROR at Row:1:Column:1\nsObject type '{parsed.sobject}' is not "
                        "supported. If you are attempting to use a custom object, be sure to append the "
                        "'__c' after the entity name.")
    fields = []
    for name in parsed.fields:
        known = sobj.field_name(name)
        if known is None:
            raise RestError(400, "INVALID_FIELD", f"\n{soql}\n^\nERROR at Row:1:Column:1\nNo such column "
                            f"'{name}' on entity '{sobj.name}'. If you are attempting to use a custom field, "
                            "be sure to append the '__c' after the custom field name.", [name])
        fields.append(known)
    for cond in parsed.conditions:
        if sobj.field_name(cond.field) is None:
            raise RestError(400, "INVALID_FIELD", f"No such column '{cond.field}' on entity '{sobj.name}'",
                            [cond.field])
    rows: list[dict[str, Any]] = list(api._records[sobj.name].values())
    if include_deleted:
        rows += list(api._deleted[sobj.name].values())
    rows = [r for r in rows if parsed.matches(r, sobj.field_name)]
    if parsed.order_by is not None:
        key = sobj.field_name(parsed.order_by)
        if key is None:
            raise RestError(400, "INVALID_FIELD", f"No such column '{parsed.order_by}' on entity "
                            f"'{sobj.name}'", [parsed.order_by])
        # Salesforce sorts nulls first ascending, last descending.
        rows.sort(key=lambda r: (r.get(key) is not None, _sort_key(r.get(key))), reverse=parsed.descending)
    rows = rows[parsed.offset:]
    if parsed.limit is not None:
        rows = rows[: parsed.limit]
    if parsed.count:
        return {"totalSize": len(rows), "done": True, "records": []}
    cursor = Cursor(rows, fields, sobj.name, version)
    return _page(api, cursor, "01g" + secrets.token_hex(8).upper(), 0)


def _page(api: FakeRestApi, cursor: Cursor, locator: str, offset: int) -> dict[str, Any]:
    sobj = api._types[cursor.sobject.lower()]
    end = offset + api.page_size
    page = [api._project(r, cursor.fields, sobj, cursor.version) for r in cursor.records[offset:end]]
    result: dict[str, Any] = {"totalSize": len(cursor.records), "done": end >= len(cursor.records),
                              "records": page}
    if end < len(cursor.records):
        api._cursors[locator] = cursor
        api._cursors.move_to_end(locator)
        while len(api._cursors) > MAX_CURSORS:
            api._cursors.popitem(last=False)
        result["nextRecordsUrl"] = f"/services/data/v{cursor.version}/query/{locator}-{end}"
    else:
        api._cursors.pop(locator, None)
    return result


def next_page(api: FakeRestApi, token: str) -> dict[str, Any]:
    locator, _, offset = token.rpartition("-")
    cursor = api._cursors.get(locator)
    if cursor is None or not offset.isdigit() or int(offset) > len(cursor.records):
        raise RestError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    return _page(api, cursor, locator, int(offset))


def search(api: FakeRestApi, sosl: str, version: str) -> dict[str, Any]:
    try:
        parsed = parse_sosl(sosl)
    except QueryError as exc:
        raise RestError(400, "MALFORMED_SEARCH", str(exc)) from None
    returning = parsed.returning or [(t.name, []) for t in api._types.values()
                                     if t.name.lower() not in api._tooling_types]
    return {"searchRecords": _find(api, parsed.term, returning, parsed.limit, version)}


def _find(api: FakeRestApi, term: re.Pattern[str], returning: list[tuple[str, list[str]]], limit: int | None,
          version: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for type_name, names in returning:
        sobj = api._types.get(type_name.lower())
        if sobj is None:
            raise RestError(400, "INVALID_TYPE", f"sObject type '{type_name}' is not supported.")
        fields = api._fields_param(sobj, {"fields": [",".join(names)]}) if names else ["Id"]
        text_fields = [f for f, kind in sobj.fields.items()
                       if kind in ("string", "textarea", "email", "phone", "picklist", "url")]
        for record in api._records[sobj.name].values():
            if any(isinstance(record.get(f), str) and term.search(record[f]) for f in text_fields):
                found.append(api._project(record, fields, sobj, version))
    return found[:limit] if limit is not None else found


def parameterized_search(api: FakeRestApi, payload: Any, version: str) -> dict[str, Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("q"), str) or not payload["q"].strip():
        raise RestError(400, "MISSING_ARGUMENT", "q is required")
    term = re.compile(re.escape(payload["q"].strip()).replace("\\*", ".*"), re.IGNORECASE)
    default_fields = payload.get("fields")
    returning: list[tuple[str, list[str]]] = []
    for item in payload.get("sobjects") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RestError(400, "INVALID_INPUT", "each sobjects entry needs a name")
        returning.append((item["name"], list(item.get("fields") or default_fields or [])))
    if not returning:
        returning = [(t.name, list(default_fields or [])) for t in api._types.values()
                     if t.name.lower() not in api._tooling_types]
    limit = payload.get("overallLimit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise RestError(400, "INVALID_INPUT", "overallLimit must be a positive integer")
    return {"searchRecords": _find(api, term, returning, limit, version)}


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, "" if value is None else str(value).lower())


def parse_soql_or_error(soql: str) -> Soql:
    """:func:`~authkit.testing._fake_soql.parse_soql`, a bad query being the REST ``MALFORMED_QUERY``
    error (the fake's other APIs, e.g. Bulk, parse through this)."""
    try:
        return parse_soql(soql)
    except QueryError as exc:
        raise RestError(400, "MALFORMED_QUERY", str(exc)) from None
