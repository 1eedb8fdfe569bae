"""Checks on the names and ids that go into a REST path, so a value never changes the URL's shape."""

from __future__ import annotations

import re

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")


def check_name(name: object, what: str) -> str:
    """``name`` if it is an API name (letters, digits, ``_``); ``TypeError``/``ValueError`` otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str")
    if not _NAME_RE.fullmatch(name):  # fullmatch: "$" alone would let a trailing newline through
        raise ValueError(f"invalid {what} name {name!r}")
    return name


def check_id(record_id: object) -> str:
    """``record_id`` if it is a 15- or 18-character record id; ``TypeError``/``ValueError`` otherwise."""
    if type(record_id) is str and len(record_id) in (15, 18) and record_id.isascii() and record_id.isalnum():
        return record_id  # the common case, without the regex (collections check thousands per call)
    if not isinstance(record_id, str):
        raise TypeError("record id must be a str")
    if not _ID_RE.fullmatch(record_id):
        raise ValueError(f"invalid record id {record_id!r}: expected 15 or 18 letters and digits")
    return record_id
