"""Many operations per request in :class:`~authkit.testing.fake_rest.FakeRestApi`: ``composite``,
``composite/batch``, ``composite/graph``, ``composite/tree`` and sObject Collections
(``composite/sobjects``), with Salesforce's limits, answer shapes and error bodies.

Each function takes the API (its lock held by the caller) and the request, and
returns ``(status, JSON-able answer)`` or raises :class:`RestError`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from authkit.testing._fake_errors import RestError, allow

if TYPE_CHECKING:
    from authkit.testing._fake_records import SObjectType
    from authkit.testing.fake_rest import FakeRestApi

__all__ = ["composite", "batch", "graph", "tree", "collections"]

MAX_COMPOSITE = 25
MAX_BATCH = 25
MAX_GRAPH_NODES = 500
MAX_TREE = 200
MAX_COLLECTION = 200
MAX_COLLECTION_GET = 2000

_ROLLED_BACK = ("The transaction was rolled back since another operation in the same transaction failed.")
_ALL_OR_NONE = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request was using "
                           "AllOrNone header", "fields": []}


def _sub_response(ref: str, status: int, value: Any) -> dict[str, Any]:
    return {"body": value, "httpHeaders": {}, "httpStatusCode": status, "referenceId": ref}


# -- composite and graph ----------------------------------------------------------------------


def composite(api: FakeRestApi, payload: Any, version: str, limit: int = MAX_COMPOSITE,
              force_all_or_none: bool = False) -> dict[str, Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("compositeRequest"), list):
        raise RestError(400, "JSON_PARSER_ERROR", "compositeRequest is required")
    subrequests = payload["compositeRequest"]
    if not subrequests or len(subrequests) > limit:
        raise RestError(400, "INVALID_BATCH_REQUEST", f"composite request must have 1 to {limit} subrequests")
    collate = payload.get("collateSubrequests", False)
    if not isinstance(collate, bool):
        raise RestError(400, "JSON_PARSER_ERROR", "collateSubrequests must be a boolean")
    all_or_none = force_all_or_none or bool(payload.get("allOrNone", False))
    saved = api._snapshot() if all_or_none else None
    results: dict[str, Any] = {}
    responses: list[dict[str, Any]] = []
    failed = False
    for sub in subrequests:
        ref = str(sub.get("referenceId", ""))
        if failed and all_or_none:
            responses.append(_sub_response(ref, 400, [{"errorCode": "PROCESSING_HALTED", "message": _ROLLED_BACK}]))
            continue
        try:
            method = str(sub.get("method", "")).upper()
            url = _resolve(str(sub.get("url", "")), results)
            body = _resolve_value(sub.get("body"), results)
            parts = urlsplit(url)
            if not parts.path.startswith("/services/data/"):
                raise RestError(400, "INVALID_URL", f"Invalid URL: {url}")
            status, value = api._route(method, parts.path, parse_qs(parts.query),
                                       json.dumps(body).encode() if body is not None else b"")
        except RestError as exc:
            status, value = exc.status, exc.body()
        if status >= 300:
            failed = True
        else:
            results[ref] = value
        responses.append(_sub_response(ref, status, value))
    if failed and saved is not None:
        api._restore(saved)
        rolled_back = [{"errorCode": "PROCESSING_HALTED", "message": _ROLLED_BACK}]
        responses = [r if r["httpStatusCode"] >= 300 else _sub_response(r["referenceId"], 400, rolled_back)
                     for r in responses]
    return {"compositeResponse": responses}


def graph(api: FakeRestApi, payload: Any, version: str) -> dict[str, Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("graphs"), list) or not payload["graphs"]:
        raise RestError(400, "JSON_PARSER_ERROR", "graphs is required")
    total = sum(len(g.get("compositeRequest") or []) for g in payload["graphs"] if isinstance(g, dict))
    if total > MAX_GRAPH_NODES:
        raise RestError(400, "INVALID_REQUEST", f"A composite graph request can have at most {MAX_GRAPH_NODES} "
                                                f"nodes; this one has {total}")
    answers = []
    for item in payload["graphs"]:
        if not isinstance(item, dict) or "graphId" not in item:
            raise RestError(400, "JSON_PARSER_ERROR", "each graph needs a graphId and a compositeRequest")
        result = composite(api, {"compositeRequest": item.get("compositeRequest")}, version,
                           limit=MAX_GRAPH_NODES, force_all_or_none=True)
        ok = all(r["httpStatusCode"] < 300 for r in result["compositeResponse"])
        answers.append({"graphId": item["graphId"], "graphResponse": result, "isSuccessful": ok})
    return {"graphs": answers}


_REF_RE = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")


def _lookup(results: dict[str, Any], ref: str, path: str) -> Any:
    if ref not in results:
        raise RestError(400, "PROCESSING_HALTED",
                        f"Invalid reference specified. No value for {ref}{path} found in {ref}. Provided "
                        f"referenceId ('{ref}') must match the referenceId of a previous successful subrequest.")
    value = results[ref]
    for step in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", path):
        try:
            value = value[step[0]] if step[0] else value[int(step[1])]
        except (KeyError, IndexError, TypeError):
            raise RestError(400, "PROCESSING_HALTED",
                            f"Invalid reference specified. No value for {ref}{path} found in {ref}.") from None
    return value


def _resolve(text: str, results: dict[str, Any]) -> str:
    return _REF_RE.sub(lambda m: str(_lookup(results, m.group(1), m.group(2))), text)


def _resolve_value(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _REF_RE.fullmatch(value)
        return _lookup(results, whole.group(1), whole.group(2)) if whole else _resolve(value, results)
    if isinstance(value, dict):
        return {k: _resolve_value(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_value(v, results) for v in value]
    return value


# -- batch ---------------------------------------------------------------------------------------


def batch(api: FakeRestApi, payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("batchRequests"), list):
        raise RestError(400, "JSON_PARSER_ERROR", "batchRequests is required")
    subrequests = payload["batchRequests"]
    if not subrequests or len(subrequests) > MAX_BATCH:
        raise RestError(400, "INVALID_BATCH_REQUEST", f"A batch must have 1 to {MAX_BATCH} requests; this one has "
                                                      f"{len(subrequests)}")
    halt = bool(payload.get("haltOnError", False))
    results: list[dict[str, Any]] = []
    halted = False
    for sub in subrequests:
        if halted:
            results.append({"statusCode": 412, "result": [{"errorCode": "BATCH_PROCESSING_HALTED",
                                                           "message": "Batch processing halted per request"}]})
            continue
        url = str(sub.get("url", "")) if isinstance(sub, dict) else ""
        try:
            if not re.match(r"^v\d+\.\d/", url):
                raise RestError(400, "INVALID_URL", f"Invalid URL: {url}: batch URLs start with the version")
            parts = urlsplit("/services/data/" + url)
            body = sub.get("richInput")
            status, value = api._route(str(sub.get("method", "")).upper(), parts.path, parse_qs(parts.query),
                                       json.dumps(body).encode() if body is not None else b"")
        except RestError as exc:
            status, value = exc.status, exc.body()
        results.append({"statusCode": status, "result": value})
        if status >= 400 and halt:
            halted = True
    return {"hasErrors": any(r["statusCode"] >= 400 for r in results), "results": results}


# -- tree -------------------------------------------------------------------------------------------


def tree(api: FakeRestApi, sobject: str, payload: Any) -> tuple[int, Any]:
    root = api._type(sobject)
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list) or not payload["records"]:
        raise RestError(400, "JSON_PARSER_ERROR", "records is required")
    count = _tree_size(payload["records"])
    if count > MAX_TREE:
        raise RestError(400, "LIMIT_EXCEEDED", f"The request contains {count} records; a tree takes at most "
                                               f"{MAX_TREE}")
    saved = api._snapshot()
    created: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        _tree_insert(api, root, payload["records"], None, created, seen)
    except _TreeError as exc:
        api._restore(saved)
        return 400, {"hasErrors": True, "results": [{"referenceId": exc.ref, "errors": [exc.error.record_error()]}]}
    return 201, {"hasErrors": False, "results": created}


class _TreeError(Exception):
    def __init__(self, ref: str, error: RestError) -> None:
        super().__init__(error.message)
        self.ref = ref
        self.error = error


def _tree_size(records: Any) -> int:
    total = 0
    for record in records if isinstance(records, list) else []:
        total += 1
        if isinstance(record, dict):
            for value in record.values():
                if isinstance(value, dict) and "records" in value:
                    total += _tree_size(value["records"])
    return total


def _tree_insert(api: FakeRestApi, sobj: SObjectType, records: list[Any], parent: tuple[str, str] | None,
                 created: list[dict[str, Any]], seen: set[str]) -> None:
    for record in records:
        attributes = record.get("attributes") if isinstance(record, dict) else None
        ref = str(attributes.get("referenceId", "")) if isinstance(attributes, dict) else ""
        if not ref:
            raise _TreeError("", RestError(400, "INVALID_INPUT", "Include a reference ID for each record"))
        if ref in seen:
            raise _TreeError(ref, RestError(400, "INVALID_INPUT", f"Duplicate ReferenceId provided in the request: "
                                                                  f"{ref}"))
        seen.add(ref)
        kind = attributes.get("type") if isinstance(attributes, dict) else None
        if not isinstance(kind, str) or kind.lower() != sobj.name.lower():
            raise _TreeError(ref, RestError(400, "INVALID_INPUT", f"Expected type {sobj.name}, got {kind}"))
        fields: dict[str, Any] = {}
        children: list[list[Any]] = []
        for name, value in record.items():
            if name == "attributes":
                continue
            if isinstance(value, dict) and "records" in value:
                children.append(value["records"])
            else:
                fields[name] = value
        if parent is not None:
            parent_type, parent_id = parent
            link = sobj.field_name(parent_type + "Id")
            if link is not None:
                fields.setdefault(link, parent_id)
        try:
            new_id = api._create(sobj, fields)
        except RestError as exc:
            raise _TreeError(ref, exc) from None
        created.append({"referenceId": ref, "id": new_id})
        for child_records in children:
            if not child_records:
                continue
            first = child_records[0] if child_records and isinstance(child_records[0], dict) else {}
            child_type = (first.get("attributes") or {}).get("type", "")
            try:
                child = api._type(str(child_type))
            except RestError as exc:
                raise _TreeError(ref, exc) from None
            _tree_insert(api, child, child_records, (sobj.name, new_id), created, seen)


# -- sObject Collections ------------------------------------------------------------------------


def collections(api: FakeRestApi, method: str, parts: list[str], query: dict[str, list[str]], payload: Any,
                version: str) -> tuple[int, Any]:
    """``composite/sobjects[/T[/ExternalIdField]]``: ``parts`` are the path after ``composite/sobjects``."""
    if not parts:
        allow(method, "POST", "PATCH", "DELETE")
        if method == "DELETE":
            ids = [i for i in ",".join(query.get("ids") or []).split(",") if i]
            all_or_none = (query.get("allOrNone") or ["false"])[-1].lower() == "true"
            _check_count(len(ids), MAX_COLLECTION)
            return 200, _save_all(api, ids, all_or_none, lambda i: _delete_one(api, i))
        records, all_or_none = _records_payload(payload)
        if method == "POST":
            return 200, _save_all(api, records, all_or_none, lambda r: _create_one(api, r))
        return 200, _save_all(api, records, all_or_none, lambda r: _update_one(api, r))
    sobj = api._type(parts[0])
    if len(parts) == 1:
        allow(method, "GET", "POST")
        if method == "GET":
            ids = [i for i in ",".join(query.get("ids") or []).split(",") if i]
            names = [f for f in ",".join(query.get("fields") or []).split(",") if f]
        else:
            if not isinstance(payload, dict):
                raise RestError(400, "JSON_PARSER_ERROR", "The request body must have ids and fields")
            ids, names = list(payload.get("ids") or []), list(payload.get("fields") or [])
        if not ids or not names:
            raise RestError(400, "MISSING_ARGUMENT", "ids and fields are required")
        _check_count(len(ids), MAX_COLLECTION_GET)
        fields = api._fields_param(sobj, {"fields": [",".join(names)]})
        found: list[Any] = []
        for record_id in ids:
            try:
                record = api._get(sobj, str(record_id))
            except RestError:
                found.append(None)
            else:
                found.append(api._project(record, fields, sobj, version))
        return 200, found
    if len(parts) == 2:
        allow(method, "PATCH")
        ext = sobj.field_name(parts[1])
        if ext is None or ext not in sobj.external_ids:
            raise RestError(400, "INVALID_FIELD", f"Field name provided, {parts[1]} is not an External ID or "
                                                  f"indexed field for {sobj.name}", [parts[1]])
        records, all_or_none = _records_payload(payload)
        return 200, _save_all(api, records, all_or_none, lambda r: _upsert_one(api, sobj, ext, r))
    raise RestError(404, "NOT_FOUND", "The requested resource does not exist")


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise RestError(400, "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {limit} records "
                                                  "into this call")


def _records_payload(payload: Any) -> tuple[list[Any], bool]:
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        raise RestError(400, "JSON_PARSER_ERROR", "The request body must have a records list")
    _check_count(len(payload["records"]), MAX_COLLECTION)
    return payload["records"], bool(payload.get("allOrNone", False))


def _save_all(api: FakeRestApi, items: list[Any], all_or_none: bool, save: Any) -> list[dict[str, Any]]:
    saved = api._snapshot() if all_or_none else None
    results: list[dict[str, Any]] = []
    for item in items:
        try:
            results.append(save(item))
        except RestError as exc:
            result: dict[str, Any] = {"success": False, "errors": [exc.record_error()]}
            if isinstance(item, str):
                result["id"] = item
            elif isinstance(item, dict) and item.get("Id"):
                result["id"] = item["Id"]
            results.append(result)
    if saved is not None and any(not r["success"] for r in results):
        api._restore(saved)
        rolled = []
        for r in results:
            if r["success"]:
                r = {key: value for key, value in r.items() if key not in ("created",)}
                r.update(success=False, errors=[dict(_ALL_OR_NONE)])
                if "id" in r and isinstance(r["id"], str) and r.get("_new"):
                    r.pop("id")
            r.pop("_new", None)
            rolled.append(r)
        return rolled
    for r in results:
        r.pop("_new", None)
    return results


def _typed(api: FakeRestApi, record: Any) -> tuple[SObjectType, dict[str, Any]]:
    if not isinstance(record, dict):
        raise RestError(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
    attributes = record.get("attributes")
    if not isinstance(attributes, dict) or not attributes.get("type"):
        raise RestError(400, "INVALID_TYPE", "Must send a concrete entity type.")
    return api._type(str(attributes["type"])), {k: v for k, v in record.items() if k != "attributes"}


def _create_one(api: FakeRestApi, record: Any) -> dict[str, Any]:
    sobj, fields = _typed(api, record)
    if "Id" in fields or "id" in fields:
        raise RestError(400, "INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
    return {"id": api._create(sobj, fields), "success": True, "errors": [], "_new": True}


def _update_one(api: FakeRestApi, record: Any) -> dict[str, Any]:
    sobj, fields = _typed(api, record)
    record_id = fields.pop("Id", None) or fields.pop("id", None)
    if not record_id:
        raise RestError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
    try:
        current = api._get(sobj, str(record_id))
    except RestError as exc:
        if exc.error_code == "ENTITY_IS_DELETED":
            raise
        raise RestError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["Id"]) from None
    api._update(sobj, current, fields)
    return {"id": current["Id"], "success": True, "errors": []}


def _upsert_one(api: FakeRestApi, sobj: SObjectType, ext: str, record: Any) -> dict[str, Any]:
    kind, fields = _typed(api, {"attributes": {"type": sobj.name}, **record} if isinstance(record, dict) and
                          "attributes" not in record else record)
    if kind is not sobj:
        raise RestError(400, "INVALID_TYPE", f"Records must all be of type {sobj.name}")
    value = next((v for k, v in fields.items() if k.lower() == ext.lower()), None)
    if value in (None, ""):
        raise RestError(400, "MISSING_ARGUMENT", f"{ext} not specified", [ext])
    matches = [r for r in api._records[sobj.name].values() if r.get(ext) == value]
    if len(matches) > 1:
        raise RestError(300, "DUPLICATE_EXTERNAL_ID", f"{ext}: more than one record found for external id field: "
                                                      f"{[r['Id'] for r in matches]}", [ext])
    if matches:
        api._update(sobj, matches[0], fields)
        return {"id": matches[0]["Id"], "success": True, "errors": [], "created": False}
    return {"id": api._create(sobj, fields), "success": True, "errors": [], "created": True, "_new": True}


def _delete_one(api: FakeRestApi, record_id: str) -> dict[str, Any]:
    for sobj in api._types.values():
        if record_id[:3] == sobj.key_prefix:
            try:
                api._delete(sobj, api._get(sobj, record_id))
            except RestError as exc:
                if exc.error_code == "ENTITY_IS_DELETED":
                    raise
                break
            return {"id": record_id, "success": True, "errors": []}
    raise RestError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
