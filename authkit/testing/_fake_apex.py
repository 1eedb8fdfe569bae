"""Apex in :class:`~authkit.testing.fake_rest.FakeRestApi`: the Tooling API (``tooling/query``,
``tooling/sobjects/...`` for Tooling types such as ApexClass, ``tooling/executeAnonymous``) and the
``/services/apexrest`` routes tests register with :meth:`~authkit.testing.fake_rest.FakeRestApi.add_apex_route`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from authkit.testing._fake_errors import RestError, Result, allow, json_result, not_found
from authkit.testing._fake_query import next_page, soql_query
from authkit.testing._fake_sobjects import sobjects

if TYPE_CHECKING:
    from authkit.testing.fake_rest import FakeRestApi

__all__ = ["ApexHandler", "tooling", "apex_request"]

#: ``handler(method, path, query, body) -> (status, JSON-able body)`` for an Apex REST route.
ApexHandler = Callable[[str, str, dict[str, list[str]], bytes], tuple[int, Any]]


def tooling(
    api: FakeRestApi, method: str, parts: list[str], query: dict[str, list[str]], body: bytes, version: str
) -> tuple[int, Any]:
    if not parts:
        raise not_found()
    head = parts[0]
    if head in ("query", "queryAll"):
        allow(method, "GET")
        if len(parts) == 2:
            return 200, next_page(api, parts[1])
        soql = (query.get("q") or [""])[-1]
        return 200, soql_query(api, soql, version, include_deleted=head == "queryAll", tooling=True)
    if head == "sobjects":
        if len(parts) > 1 and parts[1].lower() not in api._tooling_types:
            raise not_found()
        return sobjects(api, method, parts[1:], query, body, version, tooling=True)
    if head == "executeAnonymous" and len(parts) == 1:
        allow(method, "GET")
        return 200, _execute_anonymous(api, (query.get("anonymousBody") or [""])[-1])
    raise not_found()


def _execute_anonymous(api: FakeRestApi, apex: str) -> dict[str, Any]:
    """Anonymous Apex, as far as a fake can: it 'compiles' when it ends in ``;`` or ``}`` with
    balanced brackets, and 'throws' on a ``throw`` statement."""
    if not apex.strip():
        raise RestError(400, "MISSING_ARGUMENT", "anonymousBody is required")
    api.executed_apex.append(apex)
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


def apex_request(api: FakeRestApi, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Result:
    handler = api._apex.get((method.upper(), path))
    if handler is None:
        error = [{"errorCode": "NOT_FOUND", "message": f"Could not find a match for URL {path}"}]
        return json_result(404, error)
    status, value = handler(method, path, query, body)
    if status == 204 or value is None:
        return status, {}, b""
    return json_result(status, value)
