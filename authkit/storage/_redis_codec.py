"""How :class:`~authkit.storage.redis.RedisStorage` lays records out in Redis: key names,
JSON records, scores and TTL arguments.

The encoding rules themselves (times, JSON, digests) are :mod:`authkit.storage._codec`'s,
shared by every backend; this module only arranges them the Redis way.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta
from typing import Any

from authkit.errors import StorageError
from authkit.models import AuthToken, SessionData
from authkit.storage._codec import digest as _sha256
from authkit.storage._codec import dumps as _json_dumps
from authkit.storage._codec import dumps_checked, loads, micros, moment, optional_moment

HEADER = struct.Struct(">q")  # the kv expiry in microseconds; -1 = never
NO_EXPIRY = -1
INF_SCORE = b"+inf"  # the expiry score of a record that never expires
_MICROSECOND = timedelta(microseconds=1)
FORMAT = 1  # first element of every stored JSON record, so the layout can evolve

# The marker key: its presence says "an authkit store lives under this prefix in this database".
MARKER = b"schema"
MARKER_VALUE = b"authkit redis store, layout 1"


def enc(text: str) -> bytes:
    # surrogatepass: ids are any str without NUL, lone surrogates included.
    return text.encode("utf-8", "surrogatepass")


def dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def score(expires_at: datetime | None) -> bytes:
    return INF_SCORE if expires_at is None else str(micros(expires_at)).encode()


def dumps(value: Any) -> bytes:
    # UTF-8, not ASCII escapes: 8 MiB of "ü" stays 8 MiB instead of 24.  A lone
    # surrogate in a JSON value is escaped (the codec), so Redis holds valid UTF-8.
    return _json_dumps(value).encode("utf-8")


def digest(access_token: str) -> bytes:
    """The hex SHA-256 of an access token: the name of its lookup key."""
    return _sha256(access_token).hex().encode()


def token_record(token: AuthToken) -> bytes:
    # A checked token (or one read back from the store): dumps_checked applies.
    return dumps_checked([
        FORMAT, token.token_id, token.user_id, token.access_token, token.refresh_token, token.token_type,
        token.scopes, micros(token.issued_at), None if token.expires_at is None else micros(token.expires_at),
        token.client_id, token.metadata,
    ]).encode("utf-8")


def unreadable(kind: str, exc: Exception) -> StorageError:
    # Never the data itself in the message: it may hold tokens.
    return StorageError(f"a stored {kind} is unreadable ({type(exc).__name__}); not written by RedisStorage?")


def token_from(data: bytes) -> AuthToken:
    try:
        return _parse_token(data)
    except (ValueError, TypeError, OverflowError) as exc:  # also json and UTF-8 errors
        raise unreadable("token", exc) from exc


def _parse_token(data: bytes) -> AuthToken:
    record = loads(dec(data))
    (_, token_id, user_id, access, refresh, token_type, scopes, issued, expires, client_id, metadata) = record
    # Built without __init__, as the SQL rows are: the record was validated when
    # stored and moment() gives aware UTC datetimes, so re-checking costs time per read.
    token: AuthToken = object.__new__(AuthToken)
    token.__dict__.update(
        token_id=token_id, user_id=user_id, access_token=access, refresh_token=refresh, token_type=token_type,
        scopes=scopes, issued_at=moment(issued), expires_at=optional_moment(expires),
        client_id=client_id, metadata=metadata,
    )
    return token


def session_record(session: SessionData) -> bytes:
    expires = session.expires_at
    return session_json(session, None if expires is None else micros(expires))


def session_json(session: SessionData, expires: int | None) -> bytes:
    """:func:`session_record` with the expiry already in microseconds (the caller needs it too)."""
    # A checked session (or one read back from the store): dumps_checked applies.
    return dumps_checked([
        FORMAT, session.user_id, micros(session.created_at), expires, micros(session.last_activity),
        session.ip_address, session.user_agent, session.data,
    ]).encode("utf-8")


def session_from(session_id: str, data: bytes) -> SessionData:
    try:
        return _parse_session(session_id, data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise unreadable("session", exc) from exc


def _parse_session(session_id: str, data: bytes) -> SessionData:
    (_, user_id, created, expires, last, ip, agent, payload) = loads(dec(data))
    session: SessionData = object.__new__(SessionData)  # see _parse_token
    session.__dict__.update(
        session_id=session_id, user_id=user_id, created_at=moment(created),
        expires_at=optional_moment(expires), last_activity=moment(last),
        ip_address=ip, user_agent=agent, data=payload,
    )
    return session


def glob_escape(data: bytes) -> bytes:
    """``data`` as a SCAN MATCH pattern that matches only itself."""
    out = bytearray()
    for byte in data:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def base(prefix: str) -> bytes:
    """The prefix plus a hash tag, so every key of this storage is in one cluster slot.

    A prefix that already holds a hash tag (``"app:{tenant1}:"``) is the
    caller's choice of slot and is used as it is.
    """
    start = prefix.find("{")
    if start != -1:
        end = prefix.find("}", start + 1)
        if end == start + 1:
            raise ValueError("prefix contains an empty hash tag '{}', which Redis Cluster ignores")
        if end != -1:
            return enc(prefix)
    tag = prefix.replace("{", "").replace("}", "").rstrip(":") or "authkit"
    return enc(f"{prefix}{{{tag}}}:")


def ms(seconds: float) -> bytes:
    """A PX argument: whole milliseconds, at least 1 (Redis refuses 0)."""
    return str(max(1, int(seconds * 1000 + 0.999))).encode()


def px(expires_at: datetime | None, now: datetime) -> bytes:
    """The native TTL (a PX argument, ``b""`` for none) of a record expiring at ``expires_at``.

    Relative to the storage clock's ``now`` (PX, not PEXPIREAT) so Redis counts
    the TTL on its own clock: a client clock that is off by some seconds does
    not shorten it.
    """
    if expires_at is None:
        return b""
    return b"%d" % _ms_left((expires_at - now) // _MICROSECOND)


def px_micros(expires: int | None, now: int) -> bytes | int:
    """:func:`px` from microseconds since 1970 (a caller that has them already)."""
    if expires is None:
        return b""
    return _ms_left(expires - now)


def _ms_left(micros_left: int) -> int:
    """A TTL in whole milliseconds, rounded up, at least 1 (Redis refuses 0)."""
    return max(1, -(-micros_left // 1000))


def kv_header(expires_at: datetime | None) -> bytes:
    """The 8-byte expiry header in front of every kv value."""
    return HEADER.pack(NO_EXPIRY if expires_at is None else micros(expires_at))
