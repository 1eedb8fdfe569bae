"""What ``AuthStorage``'s public methods check of the records and values they are given.

Each returns the record a backend may trust (ids and text checked, JSON checked,
datetimes in UTC), so the checks run once, for every backend::

    token = checked_token(token)        # TypeError / ValueError when malformed
    session = checked_session(session_id, data)
    value = checked_value(b"bytes-like")
"""

from __future__ import annotations

from authkit.models import AuthToken, SessionData, as_utc, check_json
from authkit.storage._codec import check_id, check_text
from authkit.storage._copy import new_record

__all__ = ["checked_session", "checked_token", "checked_value"]


def _check_optional_str(value: object, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
    check_text(value, name)


def checked_token(token: object) -> AuthToken:
    """A validated copy of ``token`` with its datetimes in UTC (sharing its lists and dicts)."""
    if not isinstance(token, AuthToken):
        raise TypeError(f"expected an AuthToken, not {type(token).__name__}")
    check_id(token.token_id, "token_id")
    check_id(token.user_id, "user_id")
    if not isinstance(token.access_token, str):
        raise TypeError("access_token must be a str")
    if not token.access_token:
        raise ValueError("access_token must not be empty")
    check_text(token.access_token, "access_token")
    _check_optional_str(token.refresh_token, "refresh_token")
    if not isinstance(token.token_type, str):
        raise TypeError("token_type must be a str")
    check_text(token.token_type, "token_type")
    _check_optional_str(token.client_id, "client_id")
    if not isinstance(token.scopes, list) or not all(isinstance(s, str) for s in token.scopes):
        raise TypeError("scopes must be a list of str")
    for scope in token.scopes:
        check_text(scope, "scopes")
    if not isinstance(token.metadata, dict):
        raise TypeError("metadata must be a dict")
    check_json(token.metadata, "metadata")
    # The dataclass may have been mutated after construction: check again.  The copy
    # shares scopes and metadata: a backend keeping the object copies them (memory.py).
    checked = new_record(token)
    checked.issued_at = as_utc(token.issued_at, "issued_at")
    checked.expires_at = None if token.expires_at is None else as_utc(token.expires_at, "expires_at")
    return checked


def checked_session(session_id: object, data: object) -> SessionData:
    """A validated copy of ``data`` whose ``session_id`` is ``session_id`` (sharing its ``data`` dict)."""
    check_id(session_id, "session_id")
    assert isinstance(session_id, str)
    if not isinstance(data, SessionData):
        raise TypeError(f"expected a SessionData, not {type(data).__name__}")
    if data.session_id and data.session_id != session_id:
        raise ValueError("data.session_id differs from the session_id argument")
    check_id(data.user_id, "user_id")
    _check_optional_str(data.ip_address, "ip_address")
    _check_optional_str(data.user_agent, "user_agent")
    if not isinstance(data.data, dict):
        raise TypeError("data must be a dict")
    check_json(data.data, "data")
    checked = new_record(data)
    checked.session_id = session_id
    checked.created_at = as_utc(data.created_at, "created_at")
    checked.last_activity = as_utc(data.last_activity, "last_activity")
    checked.expires_at = None if data.expires_at is None else as_utc(data.expires_at, "expires_at")
    return checked


def checked_value(value: object) -> bytes:
    if isinstance(value, str):
        raise TypeError("kv values are bytes; encode the str first (e.g. value.encode())")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"kv values must be bytes-like, not {type(value).__name__}")
    return bytes(value)
