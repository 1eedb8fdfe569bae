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
    if type(value) is datetime and value.tzinfo is timezone.utc:
        return value  # already UTC (the usual case: every clock here gives it); immutable, so shared
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got a naive datetime")
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31 23:00 at UTC-5 is in the year 10000 in UTC
        raise ValueError(f"{name} is outside the years 1..9999 in UTC") from None


def _as_optional_utc(value: datetime | None, name: str) -> datetime | None:
    return None if value is None else as_utc(value, name)


def _has_passed(expires_at: datetime | None, now: datetime | None) -> bool:
    """Whether ``expires_at`` is set and not after ``now`` (default: the current time)."""
    if expires_at is None:
        return False
    return expires_at <= (utcnow() if now is None else as_utc(now, "now"))


def check_json(value: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` is a JSON value that round-trips.

    Dict keys must be strings and floats finite: ``json.dumps`` would silently
    turn ``{1: x}`` into ``{"1": x}`` and write ``NaN``, which is not JSON.  A
    value that contains itself, or nests deeper than :data:`MAX_JSON_DEPTH`,
    is a ``ValueError`` — found without recursion, in time linear in the value.
    """
    # Level by level, remembering every container: in a tree (the usual case) no
    # container comes twice, and a level's number is its nesting depth.  A container
    # seen twice is a cycle or a shared sub-value; the path-tracking walk tells which.
    level: list[Any] = [value]
    seen: set[int] = set()
    depth = 0
    while level:
        depth += 1
        below: list[Any] = []
        for item in level:
            if item is None or isinstance(item, (str, bool, int)):
                continue
            if isinstance(item, float):
                if not math.isfinite(item):
                    raise TypeError(f"{name} holds a non-finite float, which is not JSON")
                continue
            if isinstance(item, list):
                below.extend(item)
            elif isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str):
                        raise TypeError(f"{name} has a non-string key {type(key).__name__}; JSON keys are strings")
                below.extend(item.values())
            else:
                raise TypeError(f"{name} holds a {type(item).__name__}, which is not a JSON value")
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{name} nests deeper than {MAX_JSON_DEPTH} levels")
            size = len(seen)
            seen.add(id(item))
            if len(seen) == size:
                _check_json_paths(value, name)
                return
        level = below


_MAX_SHARED_NODES = 1 << 24
_END = object()


def _check_json_paths(value: Any, name: str) -> None:
    """:func:`check_json` for a value with shared containers.

    Depth-first and iterative, remembering each finished container's height
    and expanded size, so a container shared many times is walked once (a
    doubling chain ``a = [a, a]`` costs its length, not ``2**length``); a
    container met again while still open is a cycle.  Shared containers are
    written out once per reference, so the expanded size is bounded too.
    """
    done: dict[int, tuple[int, int]] = {}  # id -> (height, nodes), for finished containers
    open_ids: set[int] = set()
    # Frames: (container, its children still to visit, height so far, nodes so far).
    stack: list[list[Any]] = []

    def enter(item: Any) -> tuple[int, int] | None:
        """A scalar's or finished container's (height, nodes); None if a frame was pushed."""
        if item is None or isinstance(item, (str, bool, int)):
            return 0, 1
        if isinstance(item, float):
            if not math.isfinite(item):
                raise TypeError(f"{name} holds a non-finite float, which is not JSON")
            return 0, 1
        if not isinstance(item, (list, dict)):
            raise TypeError(f"{name} holds a {type(item).__name__}, which is not a JSON value")
        ident = id(item)
        if ident in done:
            return done[ident]
        if ident in open_ids:
            raise ValueError(f"{name} contains itself, which JSON cannot represent")
        if len(stack) >= MAX_JSON_DEPTH:
            raise ValueError(f"{name} nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise TypeError(f"{name} has a non-string key {type(key).__name__}; JSON keys are strings")
            children = iter(item.values())
        else:
            children = iter(item)
        open_ids.add(ident)
        stack.append([item, children, 0, 1])
        return None

    result = enter(value)
    while stack:
        frame = stack[-1]
        child = next(frame[1], _END)
        if child is not _END:
            result = enter(child)
            if result is None:
                continue
        else:
            stack.pop()
            ident = id(frame[0])
            open_ids.discard(ident)
            result = done[ident] = (frame[2], frame[3])
        if stack:
            parent = stack[-1]
            parent[2] = max(parent[2], result[0] + 1)
            parent[3] += result[1]
            if parent[3] > _MAX_SHARED_NODES:
                raise ValueError(f"{name} repeats shared values into more than {_MAX_SHARED_NODES:,} JSON values")


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
        return _has_passed(self.expires_at, now)

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
        return _has_passed(self.expires_at, now)

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
