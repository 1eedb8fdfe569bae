"""What every part of :class:`~authkit.testing.fake_rest.FakeRestApi` answers with: Salesforce's error
bodies, and request bodies read as Salesforce reads them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RestError", "Raw", "Result", "not_found", "allow", "parse_body", "fields_body", "json_result"]

#: ``(status, extra headers, body bytes)``: one answer of the fake org.
Result = tuple[int, dict[str, str], bytes]


class RestError(Exception):
    """One REST error answer: ``status`` and a Salesforce error body."""

    def __init__(self, status: int, error_code: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = list(fields)

    def body(self) -> list[dict[str, Any]]:
        """The top-level error body: ``[{"message", "errorCode", "fields"}]``."""
        return [{"message": self.message, "errorCode": self.error_code, "fields": self.fields}]

    def record_error(self) -> dict[str, Any]:
        """The per-record error inside a save result: ``{"statusCode", "message", "fields"}``."""
        return {"statusCode": self.error_code, "message": self.message, "fields": self.fields}


@dataclass(frozen=True)
class Raw:
    """A non-JSON answer body (a blob), sent as it is."""

    data: bytes
    content_type: str = "application/octet-stream"


def not_found() -> RestError:
    return RestError(404, "NOT_FOUND", "The requested resource does not exist")


def allow(method: str, *allowed: str) -> None:
    """``METHOD_NOT_ALLOWED`` unless ``method`` is one of ``allowed`` (``HEAD`` goes where ``GET`` does)."""
    if method not in allowed and not (method == "HEAD" and "GET" in allowed):
        raise RestError(405, "METHOD_NOT_ALLOWED",
                        f"HTTP Method '{method}' not allowed. Allowed are {','.join(allowed)}")


def json_result(status: int, value: Any) -> Result:
    return status, {}, json.dumps(value).encode()


def parse_body(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        raise RestError(400, "JSON_PARSER_ERROR", "Unexpected character in the request body") from None


def fields_body(body: bytes) -> dict[str, Any]:
    value = parse_body(body)
    if not isinstance(value, dict):
        raise RestError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object of field values")
    return value
