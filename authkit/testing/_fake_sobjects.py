"""The ``sobjects`` resources of :class:`~authkit.testing.fake_rest.FakeRestApi`: describe (global
and per type, ``If-Modified-Since`` answered ``304``), record CRUD by Id or by external id (PATCH by
external id is an upsert), the ``updated``/``deleted`` windows, binary fields and multipart inserts.

Like :mod:`authkit.testing._fake_composite`, each function takes the API (its lock held by the
caller) and the request, and returns ``(status, JSON-able answer)`` or raises :class:`RestError`.
"""

from __future__ import annotations

import email.policy
from datetime import datetime, timezone
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from authkit.salesforce.sobject import blob_part_name
from authkit.testing._fake_errors import Raw, RestError, allow, fields_body, not_found
from authkit.testing._fake_records import ID_RE, SYSTEM_FIELDS, SObjectType

if TYPE_CHECKING:
    from authkit.testing.fake_rest import FakeRestApi

__all__ = ["sobjects"]


def sobjects(
    api: FakeRestApi, method: str, parts: list[str], query: dict[str, list[str]], body: bytes, version: str,
    tooling: bool = False,
) -> tuple[int, Any]:
    if not parts:
        allow(method, "GET")
        if _not_modified(api):
            return 304, None
        types = [t for t in api._types.values() if (t.name.lower() in api._tooling_types) == tooling]
        return 200, {"encoding": "UTF-8", "maxBatchSize": 200,
                     "sobjects": [describe_brief(t, version) for t in types]}
    sobj = api._type(parts[0])
    if (sobj.name.lower() in api._tooling_types) != tooling:
        raise not_found()  # a Tooling type is not in the data API, nor the other way round
    if len(parts) == 1:
        allow(method, "GET", "POST")
        if method == "POST":
            if api._headers.get("content-type", "").lower().startswith("multipart/"):
                return 201, _create_multipart(api, sobj, body)
            new_id = api._create(sobj, fields_body(body))
            return 201, {"id": new_id, "success": True, "errors": []}
        recent = [api._project(r, ["Id", *(["Name"] if "Name" in sobj.fields else [])], sobj, version)
                  for r in list(api._records[sobj.name].values())[-3:]]
        return 200, {"objectDescribe": describe_brief(sobj, version), "recentItems": recent}
    if len(parts) == 2 and parts[1] == "describe":
        allow(method, "GET")
        if _not_modified(api):
            return 304, None
        return 200, _describe(sobj, version)
    if len(parts) == 2 and parts[1] in ("updated", "deleted"):
        allow(method, "GET")
        return 200, _changes(api, sobj, parts[1], query)
    if len(parts) == 2:
        allow(method, "GET", "PATCH", "DELETE")
        record_id = parts[1]
        if method == "GET":
            return 200, api._project(api._get(sobj, record_id), api._fields_param(sobj, query), sobj,
                                     version)
        if method == "PATCH":
            api._update(sobj, api._get(sobj, record_id), fields_body(body))
            return 204, None
        api._delete(sobj, api._get(sobj, record_id))
        return 204, None
    if len(parts) == 3:
        blob_field = sobj.field_name(parts[2])
        if ID_RE.match(parts[1]) and blob_field is not None and sobj.fields[blob_field] == "base64":
            allow(method, "GET")
            record = api._get(sobj, parts[1])
            data = api._blobs.get(f"{sobj.name}/{record['Id']}/{blob_field}")
            if data is None:
                raise not_found()
            return 200, Raw(data)
        allow(method, "GET", "PATCH", "DELETE")
        return _by_external_id(api, method, sobj, parts[1], parts[2], query, body, version)
    raise not_found()


def _not_modified(api: FakeRestApi) -> bool:
    """Whether the request's ``If-Modified-Since`` is at or after the last metadata change."""
    header = api._headers.get("if-modified-since")
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        return False
    return since >= api.metadata_modified


def _changes(api: FakeRestApi, sobj: SObjectType, kind: str, query: dict[str, list[str]]) -> dict[str, Any]:
    """``sobjects/T/updated`` and ``sobjects/T/deleted``: what changed in ``[start, end]``."""
    window = []
    for name in ("start", "end"):
        text = (query.get(name) or [""])[-1]
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RestError(400, "MISSING_ARGUMENT" if not text else "INVALID_DATE_FORMAT",
                            f"{name} must be an ISO 8601 date and time: {text!r}") from None
        if value.tzinfo is None:
            raise RestError(400, "INVALID_DATE_FORMAT", f"{name} must have a time zone")
        window.append(value)
    start, end = window
    if start > end:
        raise RestError(400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate")
    covered = end.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:00.000+0000")

    def within(stamp: str) -> bool:
        moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.000+0000").replace(tzinfo=timezone.utc)
        return start <= moment <= end

    if kind == "updated":
        ids = [r["Id"] for r in api._records[sobj.name].values() if within(r["LastModifiedDate"])]
        return {"ids": ids, "latestDateCovered": covered}
    gone = [{"id": r["Id"], "deletedDate": r["LastModifiedDate"]} for r in api._deleted[sobj.name].values()
            if within(r["LastModifiedDate"])]
    return {"deletedRecords": gone, "earliestDateAvailable": api.metadata_modified.strftime(
        "%Y-%m-%dT%H:%M:00.000+0000"), "latestDateCovered": covered}


def _create_multipart(api: FakeRestApi, sobj: SObjectType, body: bytes) -> dict[str, Any]:
    """A multipart insert: the JSON part (``entity_content``, ``entity_document``, ...) first,
    then the binary part named after the base64 field, with a filename."""
    content_type = api._headers.get("content-type", "")
    if "boundary=" not in content_type:
        raise RestError(400, "INVALID_MULTIPART_REQUEST", "Multipart message must have a boundary")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = list(message.iter_parts()) if message.is_multipart() else []
    if len(parts) != 2:
        raise RestError(400, "INVALID_MULTIPART_REQUEST",
                        "Multipart message must have exactly two parts: the JSON entity, then the binary data")
    entity, blob = parts
    expected = blob_part_name(sobj.name)
    if entity.get_param("name", header="content-disposition") != expected:
        raise RestError(400, "INVALID_MULTIPART_REQUEST", f"The first part must be named {expected}")
    if entity.get_content_type() != "application/json":
        raise RestError(400, "INVALID_MULTIPART_REQUEST", "The first part must be application/json")
    fields = fields_body(_payload(entity))
    field_name = sobj.field_name(str(blob.get_param("name", header="content-disposition") or ""))
    if field_name is None or sobj.fields[field_name] != "base64":
        raise RestError(400, "INVALID_MULTIPART_REQUEST", f"The binary part must be named after a base64 field "
                                                           f"of {sobj.name}")
    if not blob.get_filename():
        raise RestError(400, "INVALID_MULTIPART_REQUEST", "The binary part must have a filename")
    if any(name.lower() == field_name.lower() for name in fields):
        raise RestError(400, "INVALID_MULTIPART_REQUEST", f"{field_name} is in both parts")
    new_id = api._create(sobj, fields)
    api._store_blob(sobj, api._records[sobj.name][new_id], field_name, _payload(blob))
    return {"id": new_id, "success": True, "errors": []}


def _by_external_id(
    api: FakeRestApi, method: str, sobj: SObjectType, field_name: str, value: str, query: dict[str, list[str]],
    body: bytes, version: str,
) -> tuple[int, Any]:
    known = sobj.field_name(field_name)
    if known is None or (known != "Id" and known not in sobj.external_ids):
        raise RestError(404, "NOT_FOUND",
                        f"Provided external ID field does not exist or is not accessible: {field_name}")
    if known == "Id":
        matches = [r for r in api._records[sobj.name].values() if r["Id"] == value or r["Id"][:15] == value]
    else:
        matches = [r for r in api._records[sobj.name].values() if str(r.get(known)) == value]
    if len(matches) > 1:
        urls = [f"/services/data/v{version}/sobjects/{sobj.name}/{r['Id']}" for r in matches]
        return 300, urls
    if method == "GET":
        if not matches:
            raise not_found()
        return 200, api._project(matches[0], api._fields_param(sobj, query), sobj, version)
    if method == "DELETE":
        if not matches:
            raise not_found()
        api._delete(sobj, matches[0])
        return 204, None
    fields = fields_body(body)
    if any(name.lower() == known.lower() for name in fields):
        raise RestError(400, "INVALID_FIELD",
                        f"The field {known} is specified in the URL and in the body; remove it from the "
                        "body", [known])
    if matches:
        api._update(sobj, matches[0], fields)
        return 200, {"id": matches[0]["Id"], "success": True, "errors": [], "created": False}
    if known == "Id":
        raise not_found()
    new_id = api._create(sobj, {**fields, known: value})
    return 201, {"id": new_id, "success": True, "errors": [], "created": True}


def describe_brief(sobj: SObjectType, version: str) -> dict[str, Any]:
    base = f"/services/data/v{version}/sobjects/{sobj.name}"
    return {"name": sobj.name, "label": sobj.name.replace("__c", "").replace("_", " "),
            "keyPrefix": sobj.key_prefix, "custom": sobj.name.endswith("__c"), "createable": True,
            "updateable": True, "deletable": True, "queryable": True,
            "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"}}


def _describe(sobj: SObjectType, version: str) -> dict[str, Any]:
    fields = []
    for name, kind in sobj.fields.items():
        system = name in SYSTEM_FIELDS
        fields.append({"name": name, "label": name, "type": kind, "nillable": name not in sobj.required and
                       not system, "createable": not system, "updateable": not system,
                       "externalId": name in sobj.external_ids, "unique": name in sobj.external_ids,
                       "idLookup": name == "Id" or name in sobj.external_ids, "custom": name.endswith("__c")})
    return {**describe_brief(sobj, version), "fields": fields}


def _payload(part: Any) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""
