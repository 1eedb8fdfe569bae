"""Reading the instance's answers: the JSON (or text) body, a REST error as the
:class:`~authkit.errors.ApiError` subclass for its ``errorCode``, the org's API usage from
``Sforce-Limit-Info``, and an unwanted answer released so its connection goes back to the pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import requests

from authkit.errors import (
    ApiError,
    DuplicateValueError,
    InsufficientAccessError,
    InvalidFieldError,
    MalformedQueryError,
    RequestLimitError,
    ResourceNotFoundError,
)

__all__ = ["ApiUsage", "parse_usage", "api_error", "body", "discard"]

#: Salesforce ``errorCode`` -> the exception raised for it.  Codes not listed fall back
#: to ``_STATUS_CLASSES`` by HTTP status, then to :class:`ApiError`.
_ERROR_CLASSES: dict[str, type[ApiError]] = {
    "REQUEST_LIMIT_EXCEEDED": RequestLimitError,
    "NOT_FOUND": ResourceNotFoundError,
    "ENTITY_IS_DELETED": ResourceNotFoundError,
    "DUPLICATE_VALUE": DuplicateValueError,
    "DUPLICATES_DETECTED": DuplicateValueError,
    "MALFORMED_QUERY": MalformedQueryError,
    "MALFORMED_SEARCH": MalformedQueryError,
    "INVALID_QUERY_FILTER_OPERATOR": MalformedQueryError,
    "INVALID_FIELD": InvalidFieldError,
    "INVALID_FIELD_FOR_INSERT_UPDATE": InvalidFieldError,
    "INSUFFICIENT_ACCESS": InsufficientAccessError,
    "INSUFFICIENT_ACCESS_OR_READONLY": InsufficientAccessError,
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": InsufficientAccessError,
}
_STATUS_CLASSES: dict[int, type[ApiError]] = {404: ResourceNotFoundError, 429: RequestLimitError}


@dataclass(frozen=True)
class ApiUsage:
    """The org's API usage from the last ``Sforce-Limit-Info`` header.

    ``used``/``limit`` are the org's daily API requests (``api-usage=25/15000``);
    ``app_used``/``app_limit``/``app_name`` the connected app's share when the org
    reports it (``per-app-api-usage=17/250(appName=etl)``), else ``None``.
    """

    used: int
    limit: int
    app_used: int | None = None
    app_limit: int | None = None
    app_name: str | None = None

    @property
    def remaining(self) -> int:
        """Daily API requests left for the org."""
        return max(self.limit - self.used, 0)


_USAGE_RE = re.compile(r"(?:^|[\s;,])api-usage=(\d+)/(\d+)")
_APP_USAGE_RE = re.compile(r"per-app-api-usage=(\d+)/(\d+)(?:\(appName=([^)]*)\))?")


def parse_usage(header: str) -> ApiUsage | None:
    org = _USAGE_RE.search(header)
    if org is None:
        return None
    app = _APP_USAGE_RE.search(header)
    if app is None:
        return ApiUsage(int(org.group(1)), int(org.group(2)))
    return ApiUsage(int(org.group(1)), int(org.group(2)), int(app.group(1)), int(app.group(2)), app.group(3))


def discard(response: requests.Response) -> None:
    """Read and release a response we will not return, so its connection goes back to the pool."""
    try:
        _ = response.content
    except requests.RequestException:
        pass
    response.close()


def body(response: requests.Response) -> Any:
    """The parsed JSON body; ``None`` when empty; the text when it is not JSON."""
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text  # an Apex REST resource may answer text


def api_error(response: requests.Response) -> ApiError:
    """The :class:`ApiError` subclass for a REST error answer (a list or one object of errors)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    item = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else body
    status = response.status_code
    if isinstance(item, dict) and ("errorCode" in item or "message" in item):
        code = item.get("errorCode")
        message = str(item.get("message") or "")
        fields = [str(f) for f in item.get("fields") or []]
    elif status == 300:  # an upsert matched several records: the body lists their URLs
        code, fields = "MULTIPLE_CHOICES", []
        message = f"more than one record matches: {', '.join(str(u) for u in body or [])}"
    else:
        code, fields = None, []
        message = response.reason or f"HTTP {status}"
    cls = _ERROR_CLASSES.get(code or "") or _STATUS_CLASSES.get(status, ApiError)
    return cls(message, status_code=status, error_code=code, fields=fields, response=response)


_SEARCH_OPTIONS = {"in_": "in", "network_ids": "netWorkIds"}
