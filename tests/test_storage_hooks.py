"""Conformance of the private hooks the wrappers build on, on every backend.

``_touch_session_ip`` (EncryptedStorage's one-step touch: the expiry and the
expiry tag it keeps in ``ip_address``) and the whole-record pages
(``_token_page``, ``_session_page``, ``_kv_page``, ``_get_kv_entries``) that
``encrypt_existing`` and ``reencrypt`` walk a store with; the sealed-record reads
(``_get_sealed_token``, ``_get_sealed_token_by_access_token``, ``_get_sealed_session``)
EncryptedStorage reads through.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from authkit.models import AuthToken, SessionData
from authkit.storage import AuthStorage
from tests.clock import FakeClock

UTC = timezone.utc


def _session(clock: FakeClock, user_id: str = "u1", **fields: object) -> SessionData:
    fields.setdefault("expires_at", clock() + timedelta(hours=1))
    return SessionData(session_id="", user_id=user_id, **fields)  # type: ignore[arg-type]


# Text that a naive splitter of a stored record would trip on (quotes, escapes, commas,
# a 'null' look-alike, non-ASCII).
AWKWARD = ['10.0.0.1', 'a "quoted", \\escaped\\ ip', 'null', ',,,', '\u00fc\u2603\U0001f600', '"']


@pytest.mark.parametrize("old_ip", [None, *AWKWARD])
def test_touch_session_ip_sets_expiry_activity_and_ip_only(storage: AuthStorage, clock: FakeClock,
                                                           old_ip: str | None) -> None:
    user = 'user "x", \\y\\'  # escapes in the field before the times
    session = _session(clock, user, ip_address=old_ip, user_agent="ua, \"agent\"", data={"cart": [1, "a,b"]})
    storage.store_session("s1", session)
    later = clock() + timedelta(days=2, microseconds=3)
    moment = datetime(2031, 2, 3, 4, 5, 6, 7, tzinfo=UTC)
    for new_ip in (*AWKWARD, None):
        assert storage._touch_session_ip("s1", later, moment, new_ip, clock()) is True
        got = storage.get_session("s1")
        assert got is not None
        assert (got.expires_at, got.last_activity, got.ip_address) == (later, moment, new_ip)
        assert (got.user_id, got.user_agent, got.data, got.created_at) == (
            user, "ua, \"agent\"", {"cart": [1, "a,b"]}, session.created_at)
    assert storage._touch_session_ip("s1", None, moment, "x", clock()) is True
    got = storage.get_session("s1")
    assert got is not None and got.expires_at is None and got.ip_address == "x"
    assert [s.session_id for s in storage.list_user_sessions(user)] == ["s1"]


def test_touch_session_ip_of_a_missing_or_expired_session_is_false(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_session("s1", _session(clock, expires_at=clock() + timedelta(seconds=10)))
    clock.advance(11)
    assert storage._touch_session_ip("s1", clock() + timedelta(hours=1), clock(), "ip", clock()) is False
    assert storage._touch_session_ip("missing", clock() + timedelta(hours=1), clock(), "ip", clock()) is False
    assert storage.get_session("s1") is None and storage.get_session("missing") is None


def test_token_pages_walk_every_token_once(storage: AuthStorage, clock: FakeClock) -> None:
    tokens = [AuthToken(f"t{i:02d}", f"u{i % 3}", f"access-{i}", refresh_token=f"r{i}", scopes=["api"],
                        expires_at=clock() + timedelta(seconds=5 if i % 4 == 0 else 3600), metadata={"i": i})
              for i in range(11)]
    storage.store_tokens_bulk(tokens)
    clock.advance(10)  # some have expired: pages hold them too (get_token still returns them)
    seen: list[AuthToken] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = storage._token_page(cursor, 4)
        assert len(page) <= 4
        seen += page
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen, key=lambda t: t.token_id) == tokens


def test_a_token_deleted_between_pages_is_left_out(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_tokens_bulk([AuthToken(f"t{i}", "u", f"a{i}") for i in range(6)])
    first, cursor = storage._token_page(None, 3)
    assert cursor is not None
    later = {t.token_id for t in storage.list_user_tokens("u")} - {t.token_id for t in first}
    storage.delete_token(sorted(later)[0])
    rest, end = storage._token_page(cursor, 3)
    assert end is None and len(rest) == 2 and not {t.token_id for t in rest} & {t.token_id for t in first}


def test_session_pages_hold_the_live_sessions(storage: AuthStorage, clock: FakeClock) -> None:
    for i in range(9):
        ttl = timedelta(seconds=5) if i % 3 == 0 else timedelta(hours=1)
        storage.store_session(f"s{i}", _session(clock, ip_address=f"10.0.0.{i}", data={"n": i},
                                                expires_at=clock() + ttl))
    clock.advance(10)
    seen: list[SessionData] = []
    cursor: str | None = None
    while True:
        page, cursor = storage._session_page(cursor, 2, clock())
        seen += page
        if cursor is None:
            break
    assert sorted(s.session_id for s in seen) == [f"s{i}" for i in range(9) if i % 3]
    for session in seen:
        assert session == storage.get_session(session.session_id)


def test_kv_pages_and_entries(storage: AuthStorage, clock: FakeClock) -> None:
    for i in range(7):
        storage.store_kv(f"k{i}", f"value-{i}".encode(), ttl=5 if i == 3 else None)
    storage.incr_kv("counter", 5, ttl=60)
    clock.advance(10)
    entries: list[tuple[str, bytes, datetime | None]] = []
    after: str | None = None
    while True:
        page, after = storage._kv_page(after, 3, clock())
        entries += page
        if after is None:
            break
    keys = [k for k, _, _ in entries if not k.startswith("authkit:")]  # (an encrypted store's marker)
    assert sorted(keys) == ["counter", "k0", "k1", "k2", "k4", "k5", "k6"] and len(set(keys)) == len(keys)
    by_key = {k: (v, e) for k, v, e in entries}
    assert by_key["k1"] == (b"value-1", None)
    assert by_key["counter"][0] == b"5" and by_key["counter"][1] is not None
    got = storage._get_kv_entries(["k2", "missing", "k3", "counter"], clock())
    assert got[0] == (b"value-2", None) and got[1] is None and got[2] is None
    assert got[3] is not None and got[3][0] == b"5"
    assert storage._get_kv_entries([], clock()) == []


def test_store_kv_entries_stores_each_with_its_expiry(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_kv("a", b"old", ttl=5)
    assert storage.get_kv("a") == b"old"  # (cached, where a cache is in front)
    later = clock() + timedelta(hours=1)
    big = bytes(range(256)) * 4096  # 1 MiB, binary
    storage._store_kv_entries([("a", b"new", None), ("b", b"", later), ("c/\u00fc*?", big, later)])
    storage._store_kv_entries([])
    clock.advance(10)
    assert storage.get_kv("a") == b"new"
    entry = storage.get_kv_entry("b")
    assert entry is not None and entry.value == b"" and entry.expires_at == later
    assert storage.get_kv("c/\u00fc*?") == big
    assert sorted(k for k in storage.list_kv_keys() if not k.startswith("authkit:")) == ["a", "b", "c/\u00fc*?"]
    clock.advance(3600)
    assert storage.get_kv("b") is None and storage.get_kv("a") == b"new"
    assert storage.cleanup_expired().kv == 2


def test_kv_page_continues_after_any_key(storage: AuthStorage, clock: FakeClock) -> None:
    for i in range(6):
        storage.store_kv(f"k{i}", b"v")
    storage._kv_page(None, 2, clock())  # a walk begins (a backend may keep its listing)
    storage.store_kv("k3a", b"new")
    page, after = storage._kv_page("k3", 10, clock())  # not where that walk was: listed afresh
    assert [k for k, _, _ in page] == ["k3a", "k4", "k5"] and after is None


@pytest.mark.parametrize("holder", [{}, {"a": [1, "{}"]}, {"": {}}])
def test_sealed_reads_return_what_the_plain_reads_return(storage: AuthStorage, clock: FakeClock,
                                                         holder: dict[str, object]) -> None:
    # An empty holder (every sealed record's) may skip the JSON decoder; any other is decoded.
    token = AuthToken(token_id="t1", user_id="u1", access_token="at-1", refresh_token="authkit:enc:00",
                      scopes=["api", ""], expires_at=clock() + timedelta(hours=1), client_id=None, metadata=holder)
    storage.store_token(token)
    storage.store_session("s1", _session(clock, user_agent="authkit:enc:00", data=holder))
    now = clock()
    plain = storage._get_token("t1")
    sealed = storage._get_sealed_token("t1")
    assert sealed is not None and plain is not None
    assert sealed == plain and sealed.metadata == holder and sealed is not plain
    assert sealed.metadata is not plain.metadata  # each read its own containers
    by_access = storage._get_sealed_token_by_access_token("at-1", now)
    assert by_access == storage._get_token_by_access_token("at-1", now) == plain
    session = storage._get_sealed_session("s1", now)
    assert session is not None and session == storage._get_session("s1", now) and session.data == holder
    session.data["x"] = 1  # a caller may change what it was given: the next read is unchanged
    assert storage._get_sealed_session("s1", now).data == holder  # type: ignore[union-attr]


def test_sealed_reads_of_missing_and_expired_records_are_none(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_token(AuthToken(token_id="t1", user_id="u1", access_token="at-1",
                                  expires_at=clock() + timedelta(seconds=10)))
    storage.store_session("s1", _session(clock, expires_at=clock() + timedelta(seconds=10)))
    clock.advance(11)
    now = clock()
    assert storage._get_sealed_token("missing") is None
    assert storage._get_sealed_token("t1") is not None  # an expired token is still read by id
    assert storage._get_sealed_token_by_access_token("at-1", now) is None
    assert storage._get_sealed_token_by_access_token("at-2", now) is None
    assert storage._get_sealed_session("s1", now) is None
    assert storage._get_sealed_session("missing", now) is None
