"""``SObject``: the record operations of one sObject type (``sf.sobject("Account")``).

::

    accounts = sf.sobject("Account")
    result = accounts.create({"Name": "Acme"})          # {"id": "001...", "success": True, "errors": []}
    accounts.get(result["id"], fields=["Name"])
    accounts.get_by_external_id("External_Id__c", "ACME-1", fields=["Name"])
    accounts.update(result["id"], {"Industry": "Energy"})
    accounts.upsert("External_Id__c", "ACME-1", {"Name": "Acme"})   # {"id", "created": bool, ...}
    accounts.delete(result["id"])
    accounts.describe()["fields"]
    accounts.describe(if_modified_since=last_seen)      # None: unchanged since then (304)
    accounts.updated(start, end)["ids"]                 # changed in [start, end]
    accounts.deleted(start, end)["deletedRecords"]
    sf.sobject("ContentVersion").create_with_blob(
        {"Title": "Q1", "PathOnClient": "q1.pdf"}, "VersionData", pdf_bytes, "q1.pdf", "application/pdf")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from authkit.salesforce._multipart import MultipartBody
from authkit.salesforce._names import check_id, check_name

if TYPE_CHECKING:
    from authkit.salesforce.client import SalesforceClient

__all__ = ["SObject", "blob_part_name"]

# The JSON part of a multipart insert is named after the object (Salesforce's "Insert or Update Blob Data").
_ENTITY_PARTS = {"contentversion": "entity_content", "document": "entity_document",
                 "attachment": "entity_attachment"}


def blob_part_name(sobject: str) -> str:
    """The name of the JSON part in a multipart insert of ``sobject`` (``entity_content`` for ContentVersion)."""
    return _ENTITY_PARTS.get(sobject.lower(), "entity_" + sobject.lower())


class SObject:
    """Record operations on one sObject type (from :meth:`SalesforceClient.sobject`).  See the module docstring."""

    def __init__(self, client: SalesforceClient, name: str, *, base: str = "sobjects") -> None:
        if not isinstance(name, str):
            raise TypeError("sObject name must be a str")
        check_name(name, "sObject")
        self._client = client
        self.name = name
        self._path = f"{base}/{name}"

    def __repr__(self) -> str:
        return f"SObject({self.name!r})"

    def create(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create a record: ``{"id": ..., "success": True, "errors": []}``."""
        return dict(self._client.post(self._path, json=_fields(fields)))

    def get(self, record_id: str, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The record ``record_id`` (all fields, or just ``fields``)."""
        return dict(self._client.get(f"{self._path}/{check_id(record_id)}", params=_fields_param(fields)))

    def get_by_external_id(self, field: str, value: str | int, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The record whose external id ``field`` is ``value`` (``ResourceNotFoundError`` if none;
        an ``ApiError`` with status 300 if several match)."""
        return dict(self._client.get(self._external_path(field, value), params=_fields_param(fields)))

    def update(self, record_id: str, fields: Mapping[str, Any]) -> None:
        """Change some fields of ``record_id``."""
        self._client.patch(f"{self._path}/{check_id(record_id)}", json=_fields(fields))

    def upsert(self, ext_id_field: str, value: str | int, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """Update the record whose ``ext_id_field`` is ``value``, or create it.

        Returns ``{"id": ..., "created": True|False, ...}`` (``None`` from API versions
        that answer an update with 204).  More than one match is an ``ApiError``
        with status 300 and ``error_code`` ``"MULTIPLE_CHOICES"``.
        """
        result = self._client.patch(self._external_path(ext_id_field, value), json=_fields(fields))
        return dict(result) if result is not None else None

    def delete(self, record_id: str) -> None:
        """Delete ``record_id`` (it goes to the recycle bin: ``query_all`` still finds it)."""
        self._client.delete(f"{self._path}/{check_id(record_id)}")

    def describe(self, if_modified_since: datetime | None = None) -> dict[str, Any] | None:
        """The type's metadata: fields, their types, what may be created and updated.

        With ``if_modified_since`` (an aware datetime) Salesforce answers ``304 Not
        Modified`` when the metadata has not changed since, and this returns ``None``.
        """
        return self._client._describe(f"{self._path}/describe", if_modified_since)

    def updated(self, start: datetime, end: datetime) -> dict[str, Any]:
        """Ids of the records changed between ``start`` and ``end`` (aware datetimes):
        ``{"ids": [...], "latestDateCovered": "..."}`` (Salesforce keeps 30 days)."""
        return dict(self._client.get(f"{self._path}/updated/", params=_window(start, end)))

    def deleted(self, start: datetime, end: datetime) -> dict[str, Any]:
        """Records deleted between ``start`` and ``end``: ``{"deletedRecords": [{"id", "deletedDate"}],
        "earliestDateAvailable": ..., "latestDateCovered": ...}``."""
        return dict(self._client.get(f"{self._path}/deleted/", params=_window(start, end)))

    def create_with_blob(
        self,
        fields: Mapping[str, Any],
        blob_field: str,
        data: bytes | IO[bytes],
        filename: str,
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        """Create a record with a binary field (ContentVersion ``VersionData``, Document ``Body``,
        Attachment ``Body``) in one multipart request: ``{"id", "success", "errors"}``.

        ``data`` is bytes or a binary file. A seekable file (one opened with
        ``open(path, "rb")``) is streamed from where it stands, in bounded memory —
        Salesforce takes up to 2 GB this way (37.5 MB base64 in plain JSON); a pipe
        is read into memory first, so that a resend after a 401 sends all of it.
        """
        check_name(blob_field, "blob field")
        if not isinstance(filename, str) or not filename or any(c in filename for c in '"\r\n'):
            raise ValueError("filename must be a non-empty str without quotes or line breaks")
        if not isinstance(content_type, str) or "\n" in content_type or "\r" in content_type:
            raise ValueError("content_type must be a single-line str")
        if not isinstance(data, (bytes, bytearray)) and not hasattr(data, "read"):
            raise TypeError("data must be bytes or a binary file object")
        body = MultipartBody(blob_part_name(self.name), json.dumps(_fields(fields)), blob_field, filename,
                             content_type, data)
        return dict(self._client.post(self._path, data=body, headers={"Content-Type": body.content_type}))

    def _external_path(self, field: str, value: str | int) -> str:
        check_name(field, "external id field")
        if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
            raise ValueError("value must be a non-empty str or an int")
        return f"{self._path}/{field}/{quote(str(value), safe='')}"


def _fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(fields, Mapping):
        raise TypeError("fields must be a mapping of field name to value")
    for name in fields:
        check_name(name, "field")
    return dict(fields)


def _fields_param(fields: Iterable[str] | None) -> dict[str, str] | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        raise TypeError("fields must be a list of field names, not a str")
    return {"fields": ",".join(check_name(name, "field") for name in fields)}


def _window(start: datetime, end: datetime) -> dict[str, str]:
    params = {}
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, datetime):
            raise TypeError(f"{name} must be a datetime")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware")
        params[name] = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    if params["start"] > params["end"]:
        raise ValueError("start must not be after end")
    return params


def http_date(value: datetime) -> str:
    """``value`` (aware) as an HTTP date for ``If-Modified-Since``."""
    if not isinstance(value, datetime):
        raise TypeError("if_modified_since must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("if_modified_since must be timezone-aware")
    return format_datetime(value.astimezone(timezone.utc), usegmt=True)
