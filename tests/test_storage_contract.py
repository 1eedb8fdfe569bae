"""The storage contract (DESIGN.md, "Storage contract"), run on every backend.

Each test gets a fresh, empty storage of one backend (``tests/backends.py``)
and a ``FakeClock`` that the storage reads, so expiry is tested by moving time
rather than sleeping.
"""

from __future__ import annotations

import threading
import unicodedata
from datetime import datetime, timedelta, timezone

import pytest

from authkit.errors import NotFoundError
from authkit.models import AuthToken, CleanupReport, KvEntry, SessionData
from authkit.storage import AuthStorage
from tests.clock import FakeClock
from tests.threads import run_threads

UTC = timezone.utc


def make_token(token_id: str = "tok-1", user_id: str = "user-1", **fields: object) -> AuthToken:
    fields.setdefault("access_token", f"access-{token_id}")
    return AuthToken(token_id=token_id, user_id=user_id, **fields)  # type: ignore[arg-type]


def make_session(session_id: str = "", user_id: str = "user-1", **fields: object) -> SessionData:
    return SessionData(session_id=session_id, user_id=user_id, **fields)  # type: ignore[arg-type]


def full_token(clock: FakeClock, token_id: str = "tok-full") -> AuthToken:
    now = clock()
    return AuthToken(
        token_id=token_id,
        user_id="user-ü",
        access_token="00Dxx!AQ4AQ.secret-access",
        refresh_token="5Aep861-secret-refresh",
        token_type="Bearer",
        scopes=["api", "refresh_token", "web"],
        issued_at=now.replace(microsecond=123456),
        expires_at=now + timedelta(hours=1, microseconds=7),
        client_id="3MVG9-client",
        metadata={"instance_url": "https://acme.my.salesforce.com", "n": [1, 2.5, None, True], "d": {"x": "y"}},
    )


# -- tokens -----------------------------------------------------------------


def test_token_round_trips_every_field(storage: AuthStorage, clock: FakeClock) -> None:
    token = full_token(clock)
    storage.store_token(token)
    assert storage.get_token(token.token_id) == token
    assert storage.get_token_by_access_token(token.access_token) == token


def test_store_token_replaces_by_id(storage: AuthStorage) -> None:
    storage.store_token(make_token(access_token="old-access", user_id="u1"))
    storage.store_token(make_token(access_token="new-access", user_id="u2"))
    got = storage.get_token("tok-1")
    assert got is not None and got.access_token == "new-access" and got.user_id == "u2"
    assert storage.get_token_by_access_token("old-access") is None
    assert storage.get_token_by_access_token("new-access") == got
    assert storage.list_user_tokens("u1") == []
    assert [t.token_id for t in storage.list_user_tokens("u2")] == ["tok-1"]


def test_missing_token_is_none(storage: AuthStorage) -> None:
    assert storage.get_token("nope") is None
    assert storage.get_token_by_access_token("nope") is None


def test_get_token_returns_expired_token_until_cleanup(storage: AuthStorage, clock: FakeClock) -> None:
    token = make_token(refresh_token="refresh", expires_at=clock() + timedelta(seconds=30))
    storage.store_token(token)
    clock.advance(31)
    assert storage.get_token("tok-1") == token
    assert storage.get_token_by_access_token(token.access_token) is None
    assert storage.cleanup_expired().tokens == 1
    assert storage.get_token("tok-1") is None


def test_token_expiry_boundary(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_token(make_token(expires_at=clock() + timedelta(seconds=5)))
    assert storage.get_token_by_access_token("access-tok-1") is not None
    clock.advance(5)
    assert storage.get_token_by_access_token("access-tok-1") is None


def test_token_without_expiry_never_expires(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_token(make_token())
    clock.advance(10 * 365 * 86400)
    assert storage.get_token_by_access_token("access-tok-1") is not None
    assert storage.cleanup_expired() == CleanupReport(0, 0, 0)


def test_update_token(storage: AuthStorage) -> None:
    storage.store_token(make_token(access_token="a1"))
    updated = make_token(access_token="a2", scopes=["api"], metadata={"v": 2})
    storage.update_token(updated)
    assert storage.get_token("tok-1") == updated
    assert storage.get_token_by_access_token("a1") is None
    assert storage.get_token_by_access_token("a2") == updated


def test_update_missing_token_is_not_found(storage: AuthStorage) -> None:
    with pytest.raises(NotFoundError):
        storage.update_token(make_token())
    assert storage.get_token("tok-1") is None


def test_update_expired_but_stored_token_is_an_update(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_token(make_token(expires_at=clock() - timedelta(seconds=1)))
    fresh = make_token(access_token="fresh", expires_at=clock() + timedelta(hours=1))
    storage.update_token(fresh)
    assert storage.get_token_by_access_token("fresh") == fresh


def test_delete_token_is_idempotent(storage: AuthStorage) -> None:
    storage.store_token(make_token())
    storage.delete_token("tok-1")
    storage.delete_token("tok-1")
    assert storage.get_token("tok-1") is None
    assert storage.get_token_by_access_token("access-tok-1") is None
    assert storage.list_user_tokens("user-1") == []


def test_list_user_tokens_order_and_expired_included(storage: AuthStorage, clock: FakeClock) -> None:
    base = clock().replace(microsecond=0)
    storage.store_token(make_token("b", issued_at=base + timedelta(seconds=2)))
    storage.store_token(make_token("c", issued_at=base + timedelta(seconds=1)))
    storage.store_token(make_token("a", issued_at=base + timedelta(seconds=2)))
    storage.store_token(make_token("x", issued_at=base, expires_at=base))  # expired, still listed
    storage.store_token(make_token("other", user_id="user-2"))
    assert [t.token_id for t in storage.list_user_tokens("user-1")] == ["x", "c", "a", "b"]
    assert storage.list_user_tokens("nobody") == []


def test_store_tokens_bulk(storage: AuthStorage) -> None:
    tokens = [make_token(f"t{i}", user_id=f"u{i % 3}") for i in range(50)]
    storage.store_tokens_bulk(tokens)
    for token in tokens:
        assert storage.get_token(token.token_id) == token
        assert storage.get_token_by_access_token(token.access_token) == token
    storage.store_tokens_bulk([])
    storage.store_tokens_bulk(iter([make_token("t0", access_token="replaced")]))
    got = storage.get_token("t0")
    assert got is not None and got.access_token == "replaced"


def test_store_tokens_bulk_duplicate_ids_last_wins(storage: AuthStorage) -> None:
    storage.store_tokens_bulk([make_token(access_token="first"), make_token(access_token="second")])
    got = storage.get_token("tok-1")
    assert got is not None and got.access_token == "second"
    assert storage.get_token_by_access_token("first") is None


def test_store_tokens_bulk_is_all_or_nothing(storage: AuthStorage) -> None:
    bad = make_token("bad")
    bad.token_id = ""
    with pytest.raises(ValueError):
        storage.store_tokens_bulk([make_token("good1"), bad, make_token("good2")])
    assert storage.get_token("good1") is None and storage.get_token("good2") is None
    with pytest.raises(TypeError):
        storage.store_tokens_bulk([make_token("good1"), make_token("m", metadata={"x": object()})])
    assert storage.get_token("good1") is None


def test_delete_tokens_bulk(storage: AuthStorage) -> None:
    storage.store_tokens_bulk([make_token(f"t{i}") for i in range(10)])
    storage.delete_tokens_bulk(["t1", "t2", "t2", "missing"])
    assert storage.get_token("t1") is None and storage.get_token("t2") is None
    assert storage.get_token("t3") is not None
    storage.delete_tokens_bulk([])
    with pytest.raises(ValueError):
        storage.delete_tokens_bulk(["t3", ""])
    assert storage.get_token("t3") is not None


# -- sessions ---------------------------------------------------------------


def test_session_round_trips_every_field(storage: AuthStorage, clock: FakeClock) -> None:
    now = clock()
    session = SessionData(
        session_id="s1",
        user_id="u1",
        created_at=now.replace(microsecond=1),
        expires_at=now + timedelta(hours=2),
        last_activity=now.replace(microsecond=999999),
        ip_address="2001:db8::1",
        user_agent="Mozilla/5.0 ☃",
        data={"cart": [1, 2, {"sku": "x"}], "flag": False, "nested": {"a": None}, "pi": 3.14159},
    )
    storage.store_session("s1", session)
    assert storage.get_session("s1") == session


def test_store_session_takes_the_argument_id(storage: AuthStorage) -> None:
    storage.store_session("s1", make_session(session_id=""))
    got = storage.get_session("s1")
    assert got is not None and got.session_id == "s1"
    with pytest.raises(ValueError):
        storage.store_session("s2", make_session(session_id="other"))
    assert storage.get_session("s2") is None


def test_store_session_replaces(storage: AuthStorage) -> None:
    storage.store_session("s1", make_session(user_id="u1", data={"v": 1}))
    storage.store_session("s1", make_session(user_id="u2", data={"v": 2}))
    got = storage.get_session("s1")
    assert got is not None and got.data == {"v": 2}
    assert storage.list_user_sessions("u1") == []
    assert [s.session_id for s in storage.list_user_sessions("u2")] == ["s1"]
    assert storage.count_active_sessions() == 1


def test_expired_session_is_none(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_session("s1", make_session(expires_at=clock() + timedelta(seconds=60)))
    assert storage.get_session("s1") is not None
    clock.advance(60)
    assert storage.get_session("s1") is None
    assert storage.list_user_sessions("user-1") == []
    assert storage.count_active_sessions() == 0


def test_delete_session_is_idempotent(storage: AuthStorage) -> None:
    storage.store_session("s1", make_session())
    storage.delete_session("s1")
    storage.delete_session("s1")
    assert storage.get_session("s1") is None
    assert storage.count_active_sessions() == 0
    assert storage.list_user_sessions("user-1") == []


def test_list_user_sessions_live_and_ordered(storage: AuthStorage, clock: FakeClock) -> None:
    base = clock().replace(microsecond=0)
    storage.store_session("b", make_session(created_at=base + timedelta(seconds=1)))
    storage.store_session("a", make_session(created_at=base + timedelta(seconds=1)))
    storage.store_session("c", make_session(created_at=base))
    storage.store_session("dead", make_session(created_at=base, expires_at=base - timedelta(seconds=1)))
    storage.store_session("other", make_session(user_id="user-2"))
    assert [s.session_id for s in storage.list_user_sessions("user-1")] == ["c", "a", "b"]


def test_count_active_sessions(storage: AuthStorage, clock: FakeClock) -> None:
    assert storage.count_active_sessions() == 0
    now = clock()
    storage.store_sessions_bulk(
        [(f"s{i}", make_session(expires_at=now + timedelta(seconds=10 if i % 2 else 1000))) for i in range(10)]
        + [("forever", make_session())]
    )
    assert storage.count_active_sessions() == 11
    clock.advance(10)
    assert storage.count_active_sessions() == 6


def test_sessions_bulk(storage: AuthStorage) -> None:
    storage.store_sessions_bulk([(f"s{i}", make_session(user_id=f"u{i % 2}", data={"i": i})) for i in range(20)])
    for i in range(20):
        got = storage.get_session(f"s{i}")
        assert got is not None and got.data == {"i": i} and got.session_id == f"s{i}"
    storage.delete_sessions_bulk([f"s{i}" for i in range(10)] + ["missing"])
    assert storage.count_active_sessions() == 10
    assert storage.get_session("s3") is None and storage.get_session("s13") is not None


def test_sessions_bulk_is_all_or_nothing(storage: AuthStorage) -> None:
    with pytest.raises(ValueError):
        storage.store_sessions_bulk([("ok", make_session()), ("x" * 256, make_session())])
    with pytest.raises(TypeError):
        storage.store_sessions_bulk([("ok", make_session()), ("ok2", make_session(data={"s": {1, 2}}))])
    with pytest.raises(TypeError):
        storage.store_sessions_bulk([("ok", make_session()), "not-a-pair"])  # type: ignore[list-item]
    assert storage.get_session("ok") is None
    assert storage.count_active_sessions() == 0


# -- key-value --------------------------------------------------------------


def test_kv_round_trip_bytes_like(storage: AuthStorage) -> None:
    storage.store_kv("b", b"\x00\xffbytes")
    storage.store_kv("ba", bytearray(b"bytearray"))
    storage.store_kv("mv", memoryview(b"memoryview"))
    storage.store_kv("empty", b"")
    assert storage.get_kv("b") == b"\x00\xffbytes"
    assert storage.get_kv("ba") == b"bytearray"
    assert storage.get_kv("mv") == b"memoryview"
    assert storage.get_kv("empty") == b""
    assert type(storage.get_kv("ba")) is bytes
    assert storage.get_kv("missing") is None


def test_kv_rejects_str_and_bad_ttl(storage: AuthStorage) -> None:
    with pytest.raises(TypeError):
        storage.store_kv("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        storage.store_kv("k", 123)  # type: ignore[arg-type]
    for ttl in (0, -1, 0.0, timedelta(0), timedelta(seconds=-5), float("nan"), float("inf")):
        with pytest.raises(ValueError):
            storage.store_kv("k", b"v", ttl=ttl)
    with pytest.raises(TypeError):
        storage.store_kv("k", b"v", ttl="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        storage.store_kv("k", b"v", ttl=True)
    assert storage.get_kv("k") is None


def test_kv_ttl(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_kv("secs", b"1", ttl=30)
    storage.store_kv("float", b"2", ttl=30.5)
    storage.store_kv("delta", b"3", ttl=timedelta(minutes=1))
    storage.store_kv("forever", b"4")
    clock.advance(29)
    assert storage.get_kv("secs") == b"1"
    clock.advance(1.6)
    assert storage.get_kv("secs") is None
    assert storage.get_kv("float") is None
    assert storage.get_kv("delta") == b"3"
    clock.advance(31)
    assert storage.get_kv("delta") is None
    assert storage.get_kv("forever") == b"4"


def test_kv_overwrite_replaces_value_and_ttl(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_kv("k", b"v1", ttl=10)
    storage.store_kv("k", b"v2")
    clock.advance(20)
    assert storage.get_kv("k") == b"v2"
    storage.store_kv("k", b"v3", ttl=5)
    clock.advance(6)
    assert storage.get_kv("k") is None


def test_delete_kv_is_idempotent(storage: AuthStorage) -> None:
    storage.store_kv("k", b"v")
    storage.delete_kv("k")
    storage.delete_kv("k")
    assert storage.get_kv("k") is None
    assert storage.list_kv_keys() == []


def test_list_kv_keys_sorted_and_live(storage: AuthStorage, clock: FakeClock) -> None:
    for key in ("b", "a", "c/1", "c/2", "short"):
        storage.store_kv(key, b"x")
    storage.store_kv("expiring", b"x", ttl=5)
    assert storage.list_kv_keys() == ["a", "b", "c/1", "c/2", "expiring", "short"]
    assert storage.list_kv_keys("c/") == ["c/1", "c/2"]
    assert storage.list_kv_keys("zzz") == []
    clock.advance(6)
    assert "expiring" not in storage.list_kv_keys()


@pytest.mark.parametrize("special", ["%", "_", "*", "?", "[", "]", "\\", "[a-z]", "\\%", "^", "{", "}"])
def test_list_kv_keys_prefix_is_literal(storage: AuthStorage, special: str) -> None:
    keys = [f"p{special}1", f"p{special}2", "pX1", "pab", "p1", "p\\x", "p%x", "p_x", "p*x", "p?x", "p[x"]
    for key in keys:
        storage.store_kv(key, b"x")
    expected = sorted({k for k in keys if k.startswith(f"p{special}")})
    assert storage.list_kv_keys(f"p{special}") == expected


def test_list_kv_keys_code_point_order(storage: AuthStorage) -> None:
    keys = ["a", "B", "b", "é", "e\u0301", "\uffff", "\U0001f600", "z", "Z", "a ", "a\t", "~", "0"]
    for key in keys:
        storage.store_kv(key, b"x")
    assert storage.list_kv_keys() == sorted(keys)


def test_large_values_round_trip(storage: AuthStorage) -> None:
    big = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    storage.store_kv("big", big)
    assert storage.get_kv("big") == big
    text = "ü" * (4 * 1024 * 1024 - 16)  # 8 MiB of UTF-8
    storage.store_session("big", make_session(data={"blob": text}))
    got = storage.get_session("big")
    assert got is not None and got.data["blob"] == text


# -- ids, keys and values ----------------------------------------------------


BAD_IDS = ["", "x" * 256, "a\x00b"]


@pytest.mark.parametrize("bad", BAD_IDS, ids=["empty", "256-chars", "nul"])
def test_bad_ids_are_value_errors_everywhere(storage: AuthStorage, bad: str) -> None:
    calls = [
        lambda: storage.get_token(bad),
        lambda: storage.delete_token(bad),
        lambda: storage.list_user_tokens(bad),
        lambda: storage.store_token(make_token(token_id=bad)),
        lambda: storage.store_token(make_token(user_id=bad)),
        lambda: storage.update_token(make_token(token_id=bad)),
        lambda: storage.delete_tokens_bulk([bad]),
        lambda: storage.store_session(bad, make_session(session_id="")),
        lambda: storage.store_session("ok", make_session(session_id="", user_id=bad)),
        lambda: storage.get_session(bad),
        lambda: storage.delete_session(bad),
        lambda: storage.list_user_sessions(bad),
        lambda: storage.delete_sessions_bulk([bad]),
        lambda: storage.store_kv(bad, b"v"),
        lambda: storage.get_kv(bad),
        lambda: storage.delete_kv(bad),
        lambda: storage.lock(bad).__enter__(),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert storage.stats() == dict.fromkeys(
        ["tokens_live", "tokens_expired", "sessions_live", "sessions_expired", "kv_live", "kv_expired"], 0
    )


def test_non_str_ids_are_type_errors(storage: AuthStorage) -> None:
    with pytest.raises(TypeError):
        storage.get_token(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        storage.get_kv(b"key")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        storage.store_token("not a token")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        storage.store_session("s", {"user_id": "u"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        storage.list_kv_keys(None)  # type: ignore[arg-type]


def test_255_character_ids_work(storage: AuthStorage) -> None:
    long_id = "é" * 255
    storage.store_token(make_token(long_id, user_id=long_id))
    storage.store_session(long_id, make_session(user_id=long_id))
    storage.store_kv(long_id, b"v")
    assert storage.get_token(long_id) is not None
    assert storage.get_session(long_id) is not None
    assert storage.get_kv(long_id) == b"v"
    assert storage.list_kv_keys() == [long_id]


def test_ids_are_compared_exactly(storage: AuthStorage) -> None:
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    variants = ["abc", "ABC", "Abc", "abc ", " abc", "abc\t", nfc, nfd, "cafe", "straße", "strasse", "ǆ", "ǅ"]
    for i, key in enumerate(variants):
        storage.store_kv(key, str(i).encode())
        storage.store_token(make_token(key, user_id=key, access_token=f"access-{i}"))
        storage.store_session(key, make_session(user_id=key, data={"i": i}))
    for i, key in enumerate(variants):
        assert storage.get_kv(key) == str(i).encode()
        token = storage.get_token(key)
        assert token is not None and token.token_id == key and token.access_token == f"access-{i}"
        assert [t.token_id for t in storage.list_user_tokens(key)] == [key]
        session = storage.get_session(key)
        assert session is not None and session.data == {"i": i}
        assert [s.session_id for s in storage.list_user_sessions(key)] == [key]
    assert storage.list_kv_keys() == sorted(variants)
    assert storage.list_kv_keys("abc") == sorted(["abc", "abc ", "abc\t"])


def test_access_tokens_are_compared_exactly(storage: AuthStorage) -> None:
    storage.store_token(make_token("t1", access_token="Token"))
    storage.store_token(make_token("t2", access_token="token"))
    storage.store_token(make_token("t3", access_token="token "))
    for token_id, access in (("t1", "Token"), ("t2", "token"), ("t3", "token ")):
        got = storage.get_token_by_access_token(access)
        assert got is not None and got.token_id == token_id
    assert storage.get_token_by_access_token("TOKEN") is None


def test_naive_datetimes_are_value_errors(storage: AuthStorage) -> None:
    naive = datetime(2030, 1, 1)
    with pytest.raises(ValueError):
        make_token(expires_at=naive)
    with pytest.raises(ValueError):
        make_session(created_at=naive)
    token = make_token()
    token.expires_at = naive  # mutated after construction: caught at store time
    with pytest.raises(ValueError):
        storage.store_token(token)
    session = make_session()
    session.last_activity = naive
    with pytest.raises(ValueError):
        storage.store_session("s1", session)
    with pytest.raises(ValueError):
        storage.store_tokens_bulk([make_token("ok"), token])
    assert storage.get_token("tok-1") is None and storage.get_token("ok") is None
    assert storage.get_session("s1") is None


def test_non_json_values_are_type_errors(storage: AuthStorage) -> None:
    for bad in ({"x": object()}, {"x": b"bytes"}, {1: "int key"}, {"x": float("nan")}, {"x": {1, 2}}, {"x": (1, 2)}):
        with pytest.raises(TypeError):
            storage.store_token(make_token(metadata=bad))
        with pytest.raises(TypeError):
            storage.store_session("s1", make_session(data=bad))
    assert storage.get_token("tok-1") is None
    assert storage.get_session("s1") is None


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, 654321, tzinfo=UTC),
        datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=str,
)
def test_datetimes_round_trip(storage: AuthStorage, moment: datetime) -> None:
    token = make_token(issued_at=moment, expires_at=moment)
    storage.store_token(token)
    assert storage.get_token("tok-1") == token
    session = make_session("s1", created_at=moment, last_activity=moment, expires_at=datetime(9999, 12, 31, tzinfo=UTC))
    storage.store_session("s1", session)
    assert storage.get_session("s1") == session


def test_other_time_zones_are_converted_to_utc(storage: AuthStorage) -> None:
    plus2 = timezone(timedelta(hours=2))
    moment = datetime(2031, 5, 6, 7, 8, 9, 10, tzinfo=plus2)
    storage.store_token(make_token(issued_at=moment))
    got = storage.get_token("tok-1")
    assert got is not None and got.issued_at == moment and got.issued_at.utcoffset() == timedelta(0)


# -- aliasing ---------------------------------------------------------------


def test_stored_and_returned_objects_never_alias(storage: AuthStorage) -> None:
    token = make_token(scopes=["api"], metadata={"list": [1]})
    storage.store_token(token)
    token.scopes.append("mutated")
    token.metadata["list"].append(2)
    got = storage.get_token("tok-1")
    assert got is not None and got.scopes == ["api"] and got.metadata == {"list": [1]}
    got.metadata["list"].append(3)
    again = storage.get_token("tok-1")
    assert again is not None and again.metadata == {"list": [1]}

    session = make_session(data={"cart": []})
    storage.store_session("s1", session)
    session.data["cart"].append("x")
    assert session.session_id == ""  # the caller's object is not rewritten
    got_session = storage.get_session("s1")
    assert got_session is not None and got_session.data == {"cart": []}
    got_session.data["cart"].append("y")
    again_session = storage.get_session("s1")
    assert again_session is not None and again_session.data == {"cart": []}

    buffer = bytearray(b"abc")
    storage.store_kv("k", buffer)
    buffer[0] = ord("X")
    assert storage.get_kv("k") == b"abc"


# -- cleanup and stats ------------------------------------------------------


def test_cleanup_expired(storage: AuthStorage, clock: FakeClock) -> None:
    now = clock()
    storage.store_tokens_bulk(
        [make_token(f"dead{i}", expires_at=now + timedelta(seconds=1)) for i in range(3)]
        + [make_token("live", expires_at=now + timedelta(hours=1)), make_token("forever")]
    )
    storage.store_sessions_bulk(
        [(f"dead{i}", make_session(expires_at=now + timedelta(seconds=1))) for i in range(2)]
        + [("live", make_session(expires_at=now + timedelta(hours=1))), ("forever", make_session())]
    )
    for i in range(4):
        storage.store_kv(f"dead{i}", b"x", ttl=1)
    storage.store_kv("live", b"x", ttl=3600)
    storage.store_kv("forever", b"x")
    clock.advance(2)
    assert storage.stats() == {
        "tokens_live": 2,
        "tokens_expired": 3,
        "sessions_live": 2,
        "sessions_expired": 2,
        "kv_live": 2,
        "kv_expired": 4,
    }
    report = storage.cleanup_expired()
    assert report == CleanupReport(tokens=3, sessions=2, kv=4)
    assert report.total == 9
    assert storage.get_token("dead0") is None and storage.get_token("live") is not None
    assert storage.get_token("forever") is not None
    assert storage.get_session("live") is not None and storage.get_session("forever") is not None
    assert storage.list_kv_keys() == ["forever", "live"]
    assert storage.cleanup_expired() == CleanupReport(0, 0, 0)
    assert storage.stats()["tokens_expired"] == 0


def test_cleanup_works_in_batches(storage: AuthStorage, clock: FakeClock) -> None:
    now = clock()
    storage.store_tokens_bulk([make_token(f"t{i}", expires_at=now + timedelta(seconds=1)) for i in range(7)])
    storage.store_sessions_bulk([(f"s{i}", make_session(expires_at=now + timedelta(seconds=1))) for i in range(5)])
    for i in range(3):
        storage.store_kv(f"k{i}", b"x", ttl=1)
    clock.advance(2)
    seen: list[CleanupReport] = []
    report = storage.cleanup_expired(batch_size=2, progress=seen.append)
    assert report == CleanupReport(tokens=7, sessions=5, kv=3)
    assert len(seen) >= 4 and seen[-1] == report
    assert all(b.total - a.total <= 6 for a, b in zip([CleanupReport(), *seen], seen, strict=False))
    with pytest.raises(ValueError):
        storage.cleanup_expired(batch_size=0)


# -- id iteration -------------------------------------------------------------


def test_iter_ids(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_tokens_bulk([make_token(f"t{i}", expires_at=clock() - timedelta(seconds=1)) for i in range(7)])
    storage.store_sessions_bulk([(f"s{i}", make_session()) for i in range(5)])
    assert sorted(storage.iter_token_ids(batch_size=3)) == sorted(f"t{i}" for i in range(7))
    assert sorted(storage.iter_session_ids(batch_size=2)) == sorted(f"s{i}" for i in range(5))


# -- lock -------------------------------------------------------------------


def test_lock_is_mutually_exclusive_between_threads(storage: AuthStorage) -> None:
    inside = 0
    max_inside = 0
    counter = threading.Lock()

    def worker(_n: int) -> None:
        nonlocal inside, max_inside
        for _ in range(3):
            with storage.lock("critical", timeout=30):
                with counter:
                    inside += 1
                    max_inside = max(max_inside, inside)
                threading.Event().wait(0.002)
                with counter:
                    inside -= 1

    run_threads(worker, 8)
    assert max_inside == 1


def test_lock_times_out(storage: AuthStorage) -> None:
    acquired = threading.Event()
    release = threading.Event()

    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with storage.lock("busy", timeout=5):
                acquired.set()
                assert release.wait(30)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert acquired.wait(30), errors
        with pytest.raises(TimeoutError):
            with storage.lock("busy", timeout=0):
                pass
        with pytest.raises(TimeoutError):
            with storage.lock("busy", timeout=0.2):
                pass
        with storage.lock("other-name", timeout=0):
            pass
    finally:
        release.set()
        thread.join()
    assert errors == []
    with storage.lock("busy", timeout=1):
        pass


def test_lock_is_released_on_error(storage: AuthStorage) -> None:
    with pytest.raises(RuntimeError):
        with storage.lock("boom", timeout=1):
            raise RuntimeError("inside")
    with storage.lock("boom", timeout=0):
        pass


def test_lock_argument_errors(storage: AuthStorage) -> None:
    with pytest.raises(ValueError):
        storage.lock("x", timeout=-1).__enter__()
    with pytest.raises(ValueError):
        storage.lock("x", ttl=0).__enter__()
    with pytest.raises(TypeError):
        storage.lock("x", timeout="1").__enter__()  # type: ignore[arg-type]


# -- threads ----------------------------------------------------------------


def test_threads_share_one_storage(storage: AuthStorage) -> None:
    def worker(n: int) -> None:
        for i in range(25):
            key = f"w{n}-{i}"
            storage.store_kv(key, key.encode(), ttl=60)
            assert storage.get_kv(key) == key.encode()
            storage.store_token(make_token(key, user_id=f"user{n}", access_token=f"a-{key}"))
            assert storage.get_token_by_access_token(f"a-{key}") is not None
            storage.store_session(key, make_session(user_id=f"user{n}"))
            storage.store_kv("shared", f"{n}".encode())  # concurrent upserts of one key

    run_threads(worker, 8)
    assert len(storage.list_kv_keys("w")) == 200
    assert storage.count_active_sessions() == 200
    assert all(len(storage.list_user_tokens(f"user{n}")) == 25 for n in range(8))
    assert storage.get_kv("shared") in {str(n).encode() for n in range(8)}


def test_context_manager(storage: AuthStorage) -> None:
    with storage as entered:
        assert entered is storage


# -- atomic primitives (contract v2) -------------------------------------------


def test_create_session_only_if_no_live_one(storage: AuthStorage, clock: FakeClock) -> None:
    first = make_session(user_id="u1", data={"n": 1}, expires_at=clock() + timedelta(seconds=30))
    assert storage.create_session("s1", first) is True
    assert storage.get_session("s1") is not None  # a cached read, which the next writes must evict
    assert storage.create_session("s1", make_session(user_id="u2", data={"n": 2})) is False
    got = storage.get_session("s1")
    assert got is not None and got.user_id == "u1" and got.data == {"n": 1}
    assert [s.session_id for s in storage.list_user_sessions("u2")] == []
    clock.advance(31)  # expired, still stored: create takes its place
    assert storage.create_session("s1", make_session(user_id="u2", data={"n": 3})) is True
    got = storage.get_session("s1")
    assert got is not None and got.user_id == "u2" and got.data == {"n": 3}
    assert [s.session_id for s in storage.list_user_sessions("u2")] == ["s1"]
    assert storage.list_user_sessions("u1") == []


def test_create_session_round_trips_every_field(storage: AuthStorage, clock: FakeClock) -> None:
    now = clock()
    session = SessionData(
        session_id="s-full", user_id="user-ü", created_at=now.replace(microsecond=654321),
        expires_at=now + timedelta(hours=2, microseconds=3), last_activity=now, ip_address="10.0.0.1",
        user_agent="Mozilla/5.0", data={"cart": [1, 2, {"x": None}], "flag": True},
    )
    assert storage.create_session("s-full", session) is True
    assert storage.get_session("s-full") == session


def test_replace_session_only_if_live(storage: AuthStorage, clock: FakeClock) -> None:
    assert storage.replace_session("s1", make_session(data={"n": 0})) is False
    assert storage.get_session("s1") is None
    assert storage.stats()["sessions_live"] == 0
    storage.store_session("s1", make_session(user_id="u1", data={"n": 1}, expires_at=clock() + timedelta(seconds=30)))
    assert storage.get_session("s1") is not None
    assert storage.replace_session("s1", make_session(user_id="u2", data={"n": 2})) is True
    got = storage.get_session("s1")
    assert got is not None and got.data == {"n": 2} and got.user_id == "u2" and got.expires_at is None
    assert storage.list_user_sessions("u1") == []
    storage.store_session("s2", make_session(data={"n": 1}, expires_at=clock() + timedelta(seconds=30)))
    clock.advance(31)
    assert storage.replace_session("s2", make_session(data={"n": 2})) is False
    assert storage.get_session("s2") is None  # not revived


def test_touch_session_moves_expiry_only(storage: AuthStorage, clock: FakeClock) -> None:
    start = clock()
    session = make_session(
        user_id="u1", data={"cart": [1, 2]}, ip_address="10.0.0.1", user_agent="ua",
        created_at=start, last_activity=start, expires_at=start + timedelta(seconds=30),
    )
    storage.store_session("s1", session)
    assert storage.get_session("s1") is not None
    clock.advance(20)
    later = start + timedelta(minutes=5, microseconds=17)
    before = clock()
    assert storage.touch_session("s1", later) is True
    after = clock()
    clock.advance(20)  # past the old expiry: still live
    got = storage.get_session("s1")
    assert got is not None and got.expires_at == later and got.data == {"cart": [1, 2]}
    assert got.created_at == start and got.ip_address == "10.0.0.1" and got.user_agent == "ua"
    assert before <= got.last_activity <= after  # default: the storage clock's now
    assert [s.session_id for s in storage.list_user_sessions("u1")] == ["s1"]
    assert storage.count_active_sessions() == 1
    moment = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert storage.touch_session("s1", None, last_activity=moment) is True
    got = storage.get_session("s1")
    assert got is not None and got.expires_at is None and got.last_activity == moment
    assert storage.touch_session("missing", later) is False
    assert storage.get_session("missing") is None


def test_touch_session_of_an_expired_session_is_false(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_session("s1", make_session(expires_at=clock() + timedelta(seconds=10)))
    clock.advance(11)
    assert storage.touch_session("s1", clock() + timedelta(hours=1)) is False
    assert storage.get_session("s1") is None
    report = storage.cleanup_expired()
    assert report.sessions == 1


def test_touch_session_shortens_too(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_session("s1", make_session(expires_at=clock() + timedelta(hours=1)))
    assert storage.touch_session("s1", clock() + timedelta(seconds=5)) is True
    clock.advance(6)
    assert storage.get_session("s1") is None
    assert storage.count_active_sessions() == 0


def test_delete_user_sessions(storage: AuthStorage, clock: FakeClock) -> None:
    for i in range(3):
        storage.store_session(f"a{i}", make_session(user_id="u1"))
    storage.store_session("old", make_session(user_id="u1", expires_at=clock() + timedelta(seconds=5)))
    storage.store_session("b0", make_session(user_id="u2"))
    assert storage.get_session("a1") is not None
    clock.advance(6)
    assert storage.delete_user_sessions("u1", keep="a1") == 3  # a0, a2 and the expired one
    assert [s.session_id for s in storage.list_user_sessions("u1")] == ["a1"]
    assert storage.get_session("a0") is None and storage.get_session("a1") is not None
    assert storage.delete_user_sessions("u1") == 1
    assert storage.get_session("a1") is None
    assert storage.delete_user_sessions("u1") == 0
    assert storage.delete_user_sessions("nobody", keep="b0") == 0
    assert [s.session_id for s in storage.list_user_sessions("u2")] == ["b0"]
    assert storage.stats()["sessions_expired"] == 0


def test_delete_user_tokens(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_tokens_bulk([make_token(f"t{i}", user_id="u1") for i in range(3)])
    storage.store_token(make_token("expired", user_id="u1", expires_at=clock() + timedelta(seconds=5)))
    storage.store_token(make_token("other", user_id="u2"))
    assert storage.get_token_by_access_token("access-t1") is not None
    clock.advance(6)
    assert storage.delete_user_tokens("u1") == 4
    assert storage.list_user_tokens("u1") == []
    assert storage.get_token("t1") is None and storage.get_token_by_access_token("access-t1") is None
    assert storage.delete_user_tokens("u1") == 0
    assert [t.token_id for t in storage.list_user_tokens("u2")] == ["other"]
    assert storage.get_token_by_access_token("access-other") is not None
    # The ids are free again, indexes included.
    storage.store_token(make_token("t1", user_id="u3"))
    assert storage.get_token_by_access_token("access-t1") is not None


def test_add_kv_only_if_no_live_entry(storage: AuthStorage, clock: FakeClock) -> None:
    assert storage.add_kv("k", b"first", ttl=30) is True
    assert storage.get_kv("k") == b"first"
    assert storage.add_kv("k", b"second") is False
    entry = storage.get_kv_entry("k")
    assert entry is not None and entry.value == b"first" and entry.expires_at is not None
    clock.advance(31)
    assert storage.add_kv("k", bytearray(b"third")) is True
    assert storage.get_kv_entry("k") == KvEntry(b"third", None)
    assert storage.list_kv_keys() == ["k"]


def test_get_kv_entry(storage: AuthStorage, clock: FakeClock) -> None:
    import authkit

    assert authkit.KvEntry is KvEntry
    assert storage.get_kv_entry("missing") is None
    storage.store_kv("forever", b"v")
    assert storage.get_kv_entry("forever") == KvEntry(value=b"v", expires_at=None)
    before = clock()
    storage.store_kv("soon", memoryview(b"\x00\xff"), ttl=timedelta(seconds=10, microseconds=5))
    entry = storage.get_kv_entry("soon")
    assert entry is not None and entry.value == b"\x00\xff" and isinstance(entry.value, bytes)
    assert entry.expires_at is not None and entry.expires_at.tzinfo is not None
    assert before + timedelta(seconds=10, microseconds=5) <= entry.expires_at <= clock() + timedelta(seconds=11)
    clock.advance(11)
    assert storage.get_kv_entry("soon") is None


def test_touch_kv(storage: AuthStorage, clock: FakeClock) -> None:
    storage.store_kv("k", b"v", ttl=10)
    assert storage.get_kv("k") == b"v"
    clock.advance(8)
    assert storage.touch_kv("k", 10) is True
    clock.advance(8)  # past the old expiry
    entry = storage.get_kv_entry("k")
    assert entry is not None and entry.value == b"v"
    assert entry.expires_at is not None and entry.expires_at > clock()
    assert storage.touch_kv("k", None) is True
    clock.advance(3600)
    assert storage.get_kv_entry("k") == KvEntry(b"v", None)
    assert storage.touch_kv("missing", 10) is False
    assert storage.get_kv("missing") is None
    storage.store_kv("gone", b"v", ttl=1)
    clock.advance(2)
    assert storage.touch_kv("gone", 60) is False
    assert storage.get_kv("gone") is None
    assert storage.touch_kv("k", timedelta(seconds=1)) is True
    clock.advance(2)
    assert storage.get_kv("k") is None
    with pytest.raises(ValueError):
        storage.touch_kv("k", 0)


def test_incr_kv_counts(storage: AuthStorage, clock: FakeClock) -> None:
    assert storage.incr_kv("c") == 1
    assert storage.incr_kv("c") == 2
    assert storage.incr_kv("c", 5) == 7
    assert storage.incr_kv("c", -10) == -3
    assert storage.get_kv("c") == b"-3"
    assert storage.incr_kv("c", 3) == 0
    assert storage.get_kv("c") == b"0"
    assert storage.incr_kv("c", 0) == 0
    assert storage.get_kv_entry("c") == KvEntry(b"0", None)
    assert storage.incr_kv("d", -2) == -2
    assert storage.get_kv("d") == b"-2"


def test_incr_kv_is_a_fixed_window(storage: AuthStorage, clock: FakeClock) -> None:
    assert storage.incr_kv("rate", ttl=60) == 1
    first = storage.get_kv_entry("rate")
    assert first is not None and first.expires_at is not None
    clock.advance(30)
    assert storage.incr_kv("rate", ttl=60) == 2  # keeps the window's expiry
    assert storage.incr_kv("rate", ttl=None) == 3
    entry = storage.get_kv_entry("rate")
    assert entry == KvEntry(b"3", first.expires_at)
    clock.advance(31)  # the window is over: a new one starts at 0 with its own ttl
    assert storage.get_kv("rate") is None
    assert storage.incr_kv("rate", 4, ttl=60) == 4
    entry = storage.get_kv_entry("rate")
    assert entry is not None and entry.expires_at is not None and entry.expires_at > first.expires_at
    assert storage.list_kv_keys() == ["rate"]


def test_incr_kv_over_the_whole_int64_range(storage: AuthStorage) -> None:
    top, bottom = 2**63 - 1, -(2**63)
    assert storage.incr_kv("hi", top - 1) == top - 1
    assert storage.incr_kv("hi") == top
    assert storage.get_kv("hi") == str(top).encode()
    with pytest.raises(ValueError):
        storage.incr_kv("hi")
    assert storage.get_kv("hi") == str(top).encode()  # nothing changed
    assert storage.incr_kv("hi", bottom) == -1
    assert storage.incr_kv("lo", bottom) == bottom
    with pytest.raises(ValueError):
        storage.incr_kv("lo", -1)
    assert storage.get_kv("lo") == str(bottom).encode()
    assert storage.incr_kv("lo", top) == -1
    # Precision a float would lose: 2**53 + 1.
    assert storage.incr_kv("exact", 2**53) == 2**53
    assert storage.incr_kv("exact") == 2**53 + 1
    assert storage.get_kv("exact") == b"9007199254740993"


@pytest.mark.parametrize("value", [b"abc", b"1.5", b" 1", b"+1", b"01", b"-0", b"", b"9223372036854775808",
                                   b"\xff\x00", b"1" * 30])
def test_incr_kv_of_a_value_that_is_no_counter(storage: AuthStorage, clock: FakeClock, value: bytes) -> None:
    storage.store_kv("k", value, ttl=60)
    before = storage.get_kv_entry("k")
    with pytest.raises(ValueError):
        storage.incr_kv("k")
    assert storage.get_kv_entry("k") == before


def test_incr_kv_of_a_stored_number(storage: AuthStorage) -> None:
    from authkit.storage.encrypted import EncryptedStorage

    storage.store_kv("k", b"41")
    if isinstance(storage, EncryptedStorage):
        # store_kv seals the value; only incr_kv counters are kept in clear (docs/encryption.md).
        with pytest.raises(ValueError):
            storage.incr_kv("k")
        assert storage.get_kv("k") == b"41"
    else:
        assert storage.incr_kv("k") == 42


def test_incr_kv_arguments(storage: AuthStorage) -> None:
    for bad_type in (1.0, "1", True, None, b"1"):
        with pytest.raises(TypeError):
            storage.incr_kv("k", bad_type)  # type: ignore[arg-type]
    for bad_value in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(ValueError):
            storage.incr_kv("k", bad_value)
    with pytest.raises(ValueError):
        storage.incr_kv("k", ttl=0)
    assert storage.get_kv("k") is None


@pytest.mark.parametrize("bad", [*BAD_IDS, "\ud800"], ids=["empty", "256-chars", "nul", "surrogate"])
def test_primitives_reject_bad_ids(storage: AuthStorage, bad: str) -> None:
    calls = [
        lambda: storage.create_session(bad, make_session()),
        lambda: storage.create_session("ok", make_session(user_id=bad)),
        lambda: storage.replace_session(bad, make_session()),
        lambda: storage.touch_session(bad, None),
        lambda: storage.delete_user_sessions(bad),
        lambda: storage.delete_user_sessions("u1", keep=bad),
        lambda: storage.delete_user_tokens(bad),
        lambda: storage.add_kv(bad, b"v"),
        lambda: storage.incr_kv(bad),
        lambda: storage.get_kv_entry(bad),
        lambda: storage.touch_kv(bad, 10),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert storage.stats()["sessions_live"] == 0 and storage.stats()["kv_live"] == 0


def test_primitives_check_their_arguments(storage: AuthStorage) -> None:
    with pytest.raises(TypeError):
        storage.add_kv("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        storage.create_session("s", {"user_id": "u"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        storage.touch_session("s", datetime(2030, 1, 1))  # naive
    with pytest.raises(TypeError):
        storage.touch_session("s", "tomorrow")  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # the year 10000 in UTC
        storage.touch_session("s", datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))
    with pytest.raises(ValueError):
        storage.create_session("s1", make_session(session_id="s2"))
    with pytest.raises(TypeError):
        storage.delete_user_sessions("u1", "keep")  # type: ignore[misc]  # keep is keyword-only
    assert storage.stats() == dict.fromkeys(
        ["tokens_live", "tokens_expired", "sessions_live", "sessions_expired", "kv_live", "kv_expired"], 0
    )


# -- odd input: the same ValueError/TypeError on every backend, fast -------------


@pytest.mark.parametrize("text", ["\ud800", "a\udc80b"], ids=["high", "low"])
def test_lone_surrogates_are_value_errors(storage: AuthStorage, text: str) -> None:
    calls = [
        lambda: storage.get_token(text),
        lambda: storage.store_token(make_token(token_id=text)),
        lambda: storage.store_token(make_token(access_token=text)),
        lambda: storage.store_token(make_token(refresh_token=text)),
        lambda: storage.store_token(make_token(scopes=[text])),
        lambda: storage.store_token(make_token(client_id=text)),
        lambda: storage.get_token_by_access_token(text),
        lambda: storage.store_session(text, make_session()),
        lambda: storage.store_session("s", make_session(ip_address=text)),
        lambda: storage.get_session(text),
        lambda: storage.store_kv(text, b"v"),
        lambda: storage.get_kv(text),
        lambda: storage.list_kv_keys(text),
        lambda: storage.lock(text).__enter__(),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert storage.stats()["tokens_live"] == 0 and storage.stats()["sessions_live"] == 0


def test_json_with_lone_surrogates_round_trips(storage: AuthStorage) -> None:
    data = {"s": "\udc80 odd", "emoji": "\U0001f600"}
    storage.store_session("s1", make_session(data=data))
    got = storage.get_session("s1")
    assert got is not None and got.data == data


def test_self_referencing_json_is_a_value_error(storage: AuthStorage) -> None:
    loop: dict[str, object] = {"a": 1}
    loop["self"] = loop
    listed: list[object] = []
    listed.append(listed)
    storage.store_token(make_token(metadata={"ok": True}))
    storage.store_session("s1", make_session(data={"ok": True}))
    for value in (loop, {"l": listed}):
        with pytest.raises(ValueError):
            storage.store_token(make_token(metadata=value))
        with pytest.raises(ValueError):
            storage.store_session("s1", make_session(data=value))
        with pytest.raises(ValueError):
            storage.create_session("s2", make_session(data=value))
    # A failed write leaves the old record intact.
    got = storage.get_token("tok-1")
    assert got is not None and got.metadata == {"ok": True}
    got_session = storage.get_session("s1")
    assert got_session is not None and got_session.data == {"ok": True}
    # A value shared twice (not a cycle) is fine.
    shared = {"x": [1, 2]}
    storage.store_session("s3", make_session(data={"a": shared, "b": shared}))
    got_session = storage.get_session("s3")
    assert got_session is not None and got_session.data == {"a": {"x": [1, 2]}, "b": {"x": [1, 2]}}


def test_deep_nesting_is_a_value_error(storage: AuthStorage) -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError):
        storage.store_session("s1", make_session(data={"deep": deep}))
    with pytest.raises(ValueError):
        storage.store_token(make_token(metadata={"deep": deep}))
    doubling: list[object] = []
    for _ in range(64):
        doubling = [doubling, doubling]  # 2**64 values once written out, found at once
    with pytest.raises(ValueError):
        storage.store_session("s1", make_session(data={"d": doubling}))
    fine: list[object] = []
    for _ in range(100):
        fine = [fine]
    storage.store_session("s1", make_session(data={"fine": fine}))
    got = storage.get_session("s1")
    assert got is not None and got.data == {"fine": fine}


@pytest.mark.parametrize("ttl", [10**30, 1e300, timedelta.max, 2**1100], ids=["10**30", "1e300", "max", "huge-int"])
def test_huge_ttls_are_value_errors(storage: AuthStorage, ttl: object) -> None:
    for call in (
        lambda: storage.store_kv("k", b"v", ttl=ttl),  # type: ignore[arg-type]
        lambda: storage.add_kv("k", b"v", ttl=ttl),  # type: ignore[arg-type]
        lambda: storage.incr_kv("k", ttl=ttl),  # type: ignore[arg-type]
        lambda: storage.touch_kv("k", ttl),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError):
            call()
    assert storage.get_kv("k") is None


def test_huge_sizes_are_value_errors(storage: AuthStorage) -> None:
    with pytest.raises(ValueError):
        storage.cleanup_expired(batch_size=10**30)
    with pytest.raises(ValueError):
        list(storage.iter_token_ids(batch_size=2**64))
    with pytest.raises(ValueError):
        storage.lock("x", ttl=10**30).__enter__()
    with pytest.raises(ValueError):
        storage.lock("x", timeout=1e300).__enter__()
    with storage.lock("x", timeout=0):
        pass  # nothing was left held


# -- races: threads and processes -------------------------------------------------


def test_create_session_race_has_one_winner(storage: AuthStorage) -> None:
    wins: list[int] = []
    mutex = threading.Lock()

    def racer(n: int) -> None:
        for round_ in range(5):
            if storage.create_session(f"race-{round_}", make_session(user_id=f"u{n}", data={"n": n})):
                with mutex:
                    wins.append(round_)

    run_threads(racer, 8)
    assert sorted(wins) == [0, 1, 2, 3, 4]
    for round_ in range(5):
        got = storage.get_session(f"race-{round_}")
        assert got is not None and got.user_id == f"u{got.data['n']}"


def test_add_kv_race_has_one_winner(storage: AuthStorage) -> None:
    winners: list[int] = []
    mutex = threading.Lock()

    def racer(n: int) -> None:
        for round_ in range(5):
            if storage.add_kv(f"once-{round_}", str(n).encode(), ttl=60):
                with mutex:
                    winners.append(n)

    run_threads(racer, 8)
    assert len(winners) == 5
    values = [storage.get_kv(f"once-{round_}") for round_ in range(5)]
    assert values == [str(n).encode() for n in winners] or sorted(values) == sorted(  # type: ignore[type-var]
        str(n).encode() for n in winners
    )


def test_incr_kv_race_is_exact(storage: AuthStorage) -> None:
    threads, per_thread = 8, 25

    def racer(_n: int) -> None:
        for _ in range(per_thread):
            storage.incr_kv("counter", ttl=600)
            storage.incr_kv("down", -1)

    run_threads(racer, threads)
    assert storage.get_kv("counter") == str(threads * per_thread).encode()
    assert storage.get_kv("down") == str(-threads * per_thread).encode()


def _process_racer(how: tuple[object, ...], n: int, rounds: int, go: object, results: object) -> None:
    from tests.backends import reopen

    storage = reopen(how)
    try:
        go.wait(60)  # type: ignore[attr-defined]
        created = [r for r in range(rounds) if storage.create_session(f"p-{r}", make_session(user_id=f"u{n}"))]
        added = [r for r in range(rounds) if storage.add_kv(f"p-{r}", str(n).encode())]
        for _ in range(rounds):
            storage.incr_kv("p-counter")
        results.put((n, created, added))  # type: ignore[attr-defined]
    finally:
        storage.close()


def test_primitive_races_between_processes(storage: AuthStorage) -> None:
    import multiprocessing

    from tests.backends import recipe

    how = recipe(storage)
    if how is None:
        pytest.skip("this store lives in one process's memory")
    processes, rounds = 4, 10
    context = multiprocessing.get_context("spawn")
    go, results = context.Event(), context.Queue()
    workers = [context.Process(target=_process_racer, args=(how, n, rounds, go, results)) for n in range(processes)]
    for worker in workers:
        worker.start()
    try:
        go.set()
        outcome = [results.get(timeout=180) for _ in workers]
    finally:
        for worker in workers:
            worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * processes
    created = sorted(r for _, rounds_created, _ in outcome for r in rounds_created)
    added = sorted(r for _, _, rounds_added in outcome for r in rounds_added)
    assert created == list(range(rounds))  # exactly one winner per id
    assert added == list(range(rounds))
    assert storage.get_kv("p-counter") == str(processes * rounds).encode()
    winner_of = {r: n for n, _, rounds_added in outcome for r in rounds_added}
    assert all(storage.get_kv(f"p-{r}") == str(winner_of[r]).encode() for r in range(rounds))


def test_add_kv_of_a_large_value(storage: AuthStorage) -> None:
    big = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: MySQL sends it in pieces
    assert storage.add_kv("big", big) is True
    assert storage.add_kv("big", b"small") is False
    assert storage.get_kv("big") == big
