"""The in-memory org behind :class:`~authkit.testing.fake_rest.FakeRestApi`: sObject types and their
records, the recycle bin and binary fields, with Salesforce's checks on every write.

:class:`RecordStore` is what every part of the fake works on (REST resources, composite, Bulk API
2.0); its private methods raise :class:`~authkit.testing._fake_errors.RestError` with Salesforce's
error codes, so each API answers a bad write the same way.  Their caller holds ``_mutex``.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from authkit.testing._fake_errors import RestError, not_found

__all__ = ["RecordStore", "SObjectType", "SYSTEM_FIELDS", "ID_RE", "NAME_RE", "now"]

SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class SObjectType:
    name: str
    key_prefix: str
    fields: dict[str, str]  # name -> Salesforce field type
    required: set[str] = field(default_factory=set)
    external_ids: set[str] = field(default_factory=set)
    open: bool = False  # an open type accepts (and learns) any field

    def field_name(self, name: str) -> str | None:
        """The field's canonical spelling (field names are case-insensitive), ``None`` if unknown."""
        for known in self.fields:
            if known.lower() == name.lower():
                return known
        return None


def now() -> str:
    """A timestamp as Salesforce writes it: ``2024-05-01T12:00:00.000+0000``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class RecordStore:
    """sObject types and records; the base of :class:`~authkit.testing.fake_rest.FakeRestApi`.

    ``api_versions`` are the ``(version, label)`` pairs the org serves (a blob's URL names the
    newest).  The public methods are thread-safe.
    """

    def __init__(self, api_versions: Sequence[tuple[str, str]]) -> None:
        self.api_versions = tuple(api_versions)
        self._mutex = threading.RLock()
        self._types: dict[str, SObjectType] = {}  # lower-case name -> type
        self._records: dict[str, dict[str, dict[str, Any]]] = {}  # type name -> id -> record
        self._deleted: dict[str, dict[str, dict[str, Any]]] = {}  # the recycle bin, for queryAll
        self._blobs: dict[str, bytes] = {}  # "Type/Id/Field" -> the binary field's data
        self._tooling_types: set[str] = set()  # lower-case names tooling/* serves (the data API does not)

    # -- test setup -----------------------------------------------------------

    def define_sobject(
        self,
        name: str,
        fields: dict[str, str] | Iterable[str],
        *,
        required: Iterable[str] = (),
        external_ids: Iterable[str] = (),
        key_prefix: str | None = None,
    ) -> None:
        """Define (or redefine, keeping records) an sObject type.

        ``fields`` maps field names to Salesforce types (``"string"``,
        ``"int"``, ...) or is a list of names (all ``"string"``).  The system
        fields (Id, IsDeleted, CreatedDate, LastModifiedDate, SystemModstamp)
        are always there.  ``external_ids`` may be used for upserts and are unique.
        """
        if not NAME_RE.match(name):
            raise ValueError(f"invalid sObject name {name!r}")
        types = dict(fields) if isinstance(fields, dict) else {f: "string" for f in fields}
        for f in types:
            if not NAME_RE.match(f):
                raise ValueError(f"invalid field name {f!r}")
        all_fields = {"Id": "id", "IsDeleted": "boolean", "CreatedDate": "datetime",
                      "LastModifiedDate": "datetime", "SystemModstamp": "datetime", **types}
        sobject = SObjectType(name, key_prefix or "a0" + secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ"), all_fields,
                              set(required), set(external_ids))
        for f in (*sobject.required, *sobject.external_ids):
            if f not in all_fields:
                raise ValueError(f"{f!r} is not a field of {name}")
        with self._mutex:
            self._types[name.lower()] = sobject
            self._records.setdefault(name, {})
            self._deleted.setdefault(name, {})

    def insert(self, sobject: str, fields: dict[str, Any]) -> str:
        """Create a record directly (test setup) and return its Id.

        An unknown ``sobject`` becomes an open type that accepts any field.
        """
        with self._mutex:
            if sobject.lower() not in self._types:
                self.define_sobject(sobject, list(fields))
                self._types[sobject.lower()].open = True
            try:
                return self._create(self._types[sobject.lower()], fields)
            except RestError as exc:
                raise ValueError(f"{exc.error_code}: {exc.message}") from None

    def insert_many(self, sobject: str, rows: Iterable[dict[str, Any]]) -> list[str]:
        """:meth:`insert` each row; the Ids in order."""
        return [self.insert(sobject, row) for row in rows]

    def records(self, sobject: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Copies of the live records of ``sobject`` (and the deleted ones if asked), in creation order."""
        with self._mutex:
            sobj = self._types.get(sobject.lower())
            if sobj is None:
                return []
            found = list(self._records[sobj.name].values())
            if include_deleted:
                found += list(self._deleted[sobj.name].values())
            return [dict(r) for r in found]

    def set_blob(self, sobject: str, record_id: str, field_name: str, data: bytes) -> None:
        """Give record ``record_id`` a binary field (test setup), served at ``sobjects/T/Id/Field``."""
        with self._mutex:
            sobj = self._type(sobject)
            record = self._get(sobj, record_id)
            known = sobj.field_name(field_name)
            if known is None or sobj.fields[known] != "base64":
                raise ValueError(f"{field_name!r} is not a base64 field of {sobj.name}")
            self._store_blob(sobj, record, known, data)

    def _type(self, name: str) -> SObjectType:
        sobj = self._types.get(name.lower())
        if sobj is None:
            raise not_found()
        return sobj

    # -- writes, as Salesforce checks them ------------------------------------------

    def _check_fields(self, sobj: SObjectType, fields: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "attributes":
                continue
            known = sobj.field_name(name)
            if known is None:
                if sobj.open and NAME_RE.match(name):
                    sobj.fields[name] = "string"
                    known = name
                else:
                    raise RestError(400, "INVALID_FIELD",
                                    f"No such column '{name}' on sobject of type {sobj.name}", [name])
            if known in SYSTEM_FIELDS:
                action = "create" if creating else "update"
                raise RestError(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                                f"Unable to {action} fields: {known}. Please check the security settings of "
                                "this field and verify that it is read/write for your profile or permission "
                                "set.", [known])
            if isinstance(value, (dict, list)):
                raise RestError(400, "JSON_PARSER_ERROR",
                                f"Cannot deserialize instance of {sobj.fields[known]} from "
                                f"{'START_OBJECT' if isinstance(value, dict) else 'START_ARRAY'} value")
            clean[known] = value
        return clean

    def _check_unique(self, sobj: SObjectType, record: dict[str, Any]) -> None:
        for ext in sorted(sobj.external_ids):
            value = record.get(ext)
            if value is None:
                continue
            for other in self._records[sobj.name].values():
                if other["Id"] != record["Id"] and other.get(ext) == value:
                    raise RestError(400, "DUPLICATE_VALUE",
                                    f"duplicate value found: {ext} duplicates value on record with id: "
                                    f"{other['Id']}", [ext])

    def _new_id(self, sobj: SObjectType) -> str:
        while True:
            candidate = sobj.key_prefix + secrets.token_hex(8)[:12].upper() + "AAA"
            if candidate not in self._records[sobj.name] and candidate not in self._deleted[sobj.name]:
                return candidate

    def _create(self, sobj: SObjectType, fields: dict[str, Any]) -> str:
        clean = self._check_fields(sobj, fields, creating=True)
        missing = sorted(f for f in sobj.required if clean.get(f) in (None, ""))
        if missing:
            raise RestError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                            missing)
        stamp = now()
        record = {"Id": self._new_id(sobj), "IsDeleted": False, "CreatedDate": stamp, "LastModifiedDate": stamp,
                  "SystemModstamp": stamp, **clean}
        self._check_unique(sobj, record)
        if sobj.name == "ContentVersion" and not record.get("ContentDocumentId"):
            # A first version creates its document, as Salesforce does.
            document = self._types["contentdocument"]
            record["ContentDocumentId"] = self._create(document, {"Title": record.get("Title") or
                                                                  record.get("PathOnClient")})
        self._records[sobj.name][record["Id"]] = record
        return str(record["Id"])

    def _get(self, sobj: SObjectType, record_id: str) -> dict[str, Any]:
        if not ID_RE.match(record_id):
            raise not_found()
        live, deleted = self._records[sobj.name], self._deleted[sobj.name]
        if len(record_id) == 15:  # the case-sensitive form of an 18-character id
            record_id = next((i for i in (*live, *deleted) if i[:15] == record_id), record_id)
        if record_id in live:
            return live[record_id]
        if record_id in deleted:
            raise RestError(404, "ENTITY_IS_DELETED", "entity is deleted")
        raise not_found()

    def _update(self, sobj: SObjectType, record: dict[str, Any], fields: dict[str, Any]) -> None:
        clean = self._check_fields(sobj, fields, creating=False)
        for f in sobj.required:
            if f in clean and clean[f] in (None, ""):
                raise RestError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{f}]", [f])
        # Copy-on-write: open query cursors keep the snapshot they were given.
        updated = {**record, **clean, "LastModifiedDate": now()}
        updated["SystemModstamp"] = updated["LastModifiedDate"]
        self._check_unique(sobj, updated)
        self._records[sobj.name][record["Id"]] = updated

    def _delete(self, sobj: SObjectType, record: dict[str, Any]) -> None:
        del self._records[sobj.name][record["Id"]]
        self._deleted[sobj.name][record["Id"]] = {**record, "IsDeleted": True, "LastModifiedDate": now()}
        if sobj.name == "ContentDocument":  # a document goes with all its versions
            versions = self._types["contentversion"]
            for version in list(self._records[versions.name].values()):
                if version.get("ContentDocumentId") == record["Id"]:
                    self._delete(versions, version)

    def _store_blob(self, sobj: SObjectType, record: dict[str, Any], field_name: str, data: bytes) -> None:
        key = f"{sobj.name}/{record['Id']}/{field_name}"
        self._blobs[key] = data
        url = f"/services/data/v{self.api_versions[-1][0]}/sobjects/{key}"
        self._records[sobj.name][record["Id"]] = {**record, field_name: url}

    # -- reads ----------------------------------------------------------------------

    @staticmethod
    def _fields_param(sobj: SObjectType, query: dict[str, list[str]]) -> list[str]:
        wanted = (query.get("fields") or [""])[-1]
        if not wanted:
            return list(sobj.fields)
        names = []
        for name in (n.strip() for n in wanted.split(",")):
            known = sobj.field_name(name)
            if known is None:
                raise RestError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobj.name}'", [name])
            names.append(known)
        return names

    @staticmethod
    def _project(record: dict[str, Any], fields: list[str], sobj: SObjectType, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": {"type": sobj.name,
                                              "url": f"/services/data/v{version}/sobjects/{sobj.name}/{record['Id']}"}}
        for name in fields:
            out[name] = record.get(name)
        return out

    # -- snapshots, for all-or-none rollbacks -----------------------------------------------

    def _snapshot(self) -> tuple[Any, Any, Any]:
        # Records are replaced, never mutated, so copying the maps is a full snapshot.
        return ({k: dict(v) for k, v in self._records.items()}, {k: dict(v) for k, v in self._deleted.items()},
                dict(self._blobs))

    def _restore(self, saved: tuple[Any, Any, Any]) -> None:
        records, deleted, blobs = saved
        self._records.clear()
        self._records.update(records)
        self._deleted.clear()
        self._deleted.update(deleted)
        self._blobs.clear()
        self._blobs.update(blobs)
