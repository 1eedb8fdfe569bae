"""The records authkit stores: :class:`AuthToken`, :class:`SessionData`,
:class:`KvEntry` (what ``get_kv_entry`` returns), and the :class:`CleanupReport`
that ``cleanup_expired`` returns.

They are plain dataclasses.  Every datetime is timezone-aware (a naive one is
a :class:`ValueError`; an aware one in another zone is converted to UTC).
``metadata`` and ``data`` hold JSON values only; storages check that when a
record is stored (:class:`TypeError` otherwise).  Nothing is ever pickled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["AuthToken", "SessionData", "KvEntry", "CleanupReport", "utcnow", "check_json"]

MAX_JSON_DEPTH = 200
"""How deeply ``metadata``/``data`` may nest: deeper is a ``ValueError`` (JSON encoders and
decoders recurse, and would fail with ``RecursionError`` somewhere later)."""


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime, name: str) -> datetime:
    """``value`` converted to UTC; a naive datetime is a ``ValueError``."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got a naive datetime")
    return value.astimezone(timezone.utc)


def _as_optional_utc(value: datetime | None, name: str) -> datetime | None:
    return None if value is None else as_utc(value, name)


def check_json(value: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` is a JSON value that round-trips.

    Dict keys must be strings and floats finite: ``json.dumps`` would silently
    turn ``{1: x}`` into ``{"1": x}`` and write ``NaN``, which is not JSON.  A
    value that contains itself, or nests deeper than :data:`MAX_JSON_DEPTH`,
    is a ``ValueError`` — found in one pass, without recursion.
    """
    # Depth-first with an explicit stack; a negative depth marks "leaving" the
    # container whose id is the item, so ``on_path`` holds exactly the open
    # containers: meeting one of them again is a cycle (a shared, acyclic
    # sub-value is fine).
    stack: list[tuple[Any, int]] = [(value, 1)]
    on_path: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if depth < 0:
            on_path.discard(item)
            continue
        if item is None or isinstance(item, (str, bool, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise TypeError(f"{name} holds a non-finite float, which is not JSON")
            continue
        if isinstance(item, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{name} nests deeper than {MAX_JSON_DEPTH} levels")
            ident = id(item)
            if ident in on_path:
                raise ValueError(f"{name} contains itself, which JSON cannot represent")
            on_path.add(ident)
            stack.append((ident, -1))
            if isinstance(item, list):
                stack.extend((child, depth + 1) for child in item)
                continue
            for key, child in item.items():
                if not isinstance(key, str):
                    raise TypeError(f"{name} has a non-string key {type(key).__name__}; JSON keys are strings")
                stack.append((child, depth + 1))
            continue
        raise TypeError(f"{name} holds a {type(item).__name__}, which is not a JSON value")


@dataclass
class AuthToken:
    """An OAuth token as stored: ``repr()`` masks both tokens.

    >>> AuthToken("t1", "u1", "secret")
    AuthToken(token_id='t1', user_id='u1', access_token='***', ...)
    """

    token_id: str
    user_id: str
    access_token: str
    refresh_token: str | None = None
    token_type: str = "Bearer"
    scopes: list[str] = field(default_factory=list)
    issued_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
    client_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.issued_at = as_utc(self.issued_at, "issued_at")
        self.expires_at = _as_optional_utc(self.expires_at, "expires_at")

    def is_expired(self, now: datetime | None = None) -> bool:
        """True once ``expires_at`` has passed; a token without one never expires."""
        if self.expires_at is None:
            return False
        return self.expires_at <= (utcnow() if now is None else as_utc(now, "now"))

    def __repr__(self) -> str:
        return (
            f"AuthToken(token_id={self.token_id!r}, user_id={self.user_id!r}, access_token='***', "
            f"refresh_token={None if self.refresh_token is None else '***'!r}, "
            f"token_type={self.token_type!r}, scopes={self.scopes!r}, issued_at={self.issued_at!r}, "
            f"expires_at={self.expires_at!r}, client_id={self.client_id!r}, metadata=<{len(self.metadata)} keys>)"
        )


@dataclass
class SessionData:
    """A user session.  ``repr()`` shows how many ``data`` keys, not their values."""

    session_id: str
    user_id: str
    created_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
    last_activity: datetime = field(default_factory=utcnow)
    ip_address: str | None = None
    user_agent: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.created_at = as_utc(self.created_at, "created_at")
        self.expires_at = _as_optional_utc(self.expires_at, "expires_at")
        self.last_activity = as_utc(self.last_activity, "last_activity")

    def is_expired(self, now: datetime | None = None) -> bool:
        """True once ``expires_at`` has passed; a session without one never expires."""
        if self.expires_at is None:
            return False
        return self.expires_at <= (utcnow() if now is None else as_utc(now, "now"))

    def __repr__(self) -> str:
        return (
            f"SessionData(session_id={self.session_id!r}, user_id={self.user_id!r}, "
            f"created_at={self.created_at!r}, expires_at={self.expires_at!r}, "
            f"last_activity={self.last_activity!r}, ip_address={self.ip_address!r}, "
            f"user_agent={self.user_agent!r}, data=<{len(self.data)} keys>)"
        )


@dataclass(frozen=True)
class KvEntry:
    """A live kv entry as ``get_kv_entry`` returns it: the value and when it expires.

    >>> storage.store_kv("k", b"v", ttl=60)
    >>> storage.get_kv_entry("k")
    KvEntry(value=b'v', expires_at=datetime.datetime(...))
    """

    value: bytes
    expires_at: datetime | None = None


@dataclass(frozen=True)
class CleanupReport:
    """How many expired records ``cleanup_expired`` deleted, by kind."""

    tokens: int = 0
    sessions: int = 0
    kv: int = 0

    @property
    def total(self) -> int:
        return self.tokens + self.sessions + self.kv

    def __add__(self, other: CleanupReport) -> CleanupReport:
        return CleanupReport(self.tokens + other.tokens, self.sessions + other.sessions, self.kv + other.kv)
