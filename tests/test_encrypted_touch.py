"""Touching through EncryptedStorage: one step on the inner store, and still tamper-evident.

``touch_session`` moves the expiry and its expiry tag (a MAC of the session id
and expiry, in the inner record's ``ip_address``) in one inner call, reading
nothing; ``touch_kv`` moves the inner store's TTL, which is not bound.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest

from authkit.errors import EncryptionError
from authkit.models import SessionData
from authkit.storage import MemoryStorage
from authkit.storage.encrypted import EncryptedStorage, generate_key
from tests.clock import FakeClock
from tests.threads import run_threads


class Counting(MemoryStorage):
    """Counts the session hooks EncryptedStorage calls on its inner storage."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.calls: list[str] = []

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        self.calls.append("get")
        return super()._get_session(session_id, now)

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        self.calls.append("replace")
        return super()._replace_session(session, now)

    def _touch_session_ip(self, session_id: str, expires_at: datetime | None, last_activity: datetime,
                          ip_address: str | None, now: datetime) -> bool:
        self.calls.append("touch")
        return super()._touch_session_ip(session_id, expires_at, last_activity, ip_address, now)


@pytest.fixture
def inner(clock: FakeClock) -> Counting:
    return Counting(clock)


@pytest.fixture
def storage(inner: Counting) -> EncryptedStorage:
    return EncryptedStorage(inner, [generate_key()])


def _session(clock: FakeClock, **fields: object) -> SessionData:
    values: dict[str, object] = {"expires_at": clock() + timedelta(minutes=5), "ip_address": "10.1.2.3",
                                 "user_agent": "ua", "data": {"secret": "s"}}
    values.update(fields)
    return SessionData("", "u1", **values)  # type: ignore[arg-type]


def test_touch_session_is_one_inner_step_that_reads_nothing(storage: EncryptedStorage, inner: Counting,
                                                            clock: FakeClock) -> None:
    storage.store_session("s1", _session(clock))
    storage.get_session("s1")  # (reads the marker state once)
    inner.calls.clear()
    later = clock() + timedelta(hours=2)
    assert storage.touch_session("s1", later) is True
    assert inner.calls == ["touch"]
    assert storage.touch_session("missing", later) is False
    got = storage.get_session("s1")
    assert got is not None and got.expires_at == later and got.data == {"secret": "s"}
    assert got.ip_address == "10.1.2.3" and got.user_agent == "ua"


def test_a_changed_expiry_after_a_touch_is_detected(storage: EncryptedStorage, inner: Counting,
                                                    clock: FakeClock) -> None:
    storage.store_session("s1", _session(clock))
    later = clock() + timedelta(hours=2)
    assert storage.touch_session("s1", later)
    for forged in (later + timedelta(days=30), None, later + timedelta(microseconds=1)):
        raw = inner.get_session("s1")
        assert raw is not None
        raw.expires_at = forged
        inner.store_session("s1", raw)
        with pytest.raises(EncryptionError, match="tampered"):
            storage.get_session("s1")
    raw = inner.get_session("s1")
    assert raw is not None
    raw.expires_at = later
    inner.store_session("s1", raw)
    assert storage.get_session("s1") is not None  # back as it was: verifies again


def test_an_expiry_tag_moved_from_another_session_is_detected(storage: EncryptedStorage, inner: Counting,
                                                              clock: FakeClock) -> None:
    expires = clock() + timedelta(hours=1)
    storage.store_session("victim", _session(clock, expires_at=clock() + timedelta(minutes=1)))
    storage.store_session("donor", _session(clock, expires_at=expires))
    victim, donor = inner.get_session("victim"), inner.get_session("donor")
    assert victim is not None and donor is not None
    victim.expires_at, victim.ip_address = donor.expires_at, donor.ip_address  # a longer life, tag and all
    inner.store_session("victim", victim)
    with pytest.raises(EncryptionError, match="tampered"):
        storage.get_session("victim")


def test_a_missing_or_malformed_tag_is_detected(storage: EncryptedStorage, inner: Counting,
                                                clock: FakeClock) -> None:
    storage.store_session("s1", _session(clock))
    good = inner.get_session("s1")
    assert good is not None and good.ip_address is not None
    for tag in (None, "", "zz" * 20, good.ip_address[:-1], good.ip_address + "0", "\u00e9" * 40):
        raw = inner.get_session("s1")
        assert raw is not None
        raw.ip_address = tag
        inner.store_session("s1", raw)
        with pytest.raises(EncryptionError):
            storage.get_session("s1")


def test_touch_after_a_key_rotation_tags_with_the_new_key_and_reencrypt_moves_both(
    inner: Counting, clock: FakeClock
) -> None:
    old_key, new_key = generate_key(), generate_key()
    EncryptedStorage(inner, [old_key]).store_session("s1", _session(clock))
    rotated = EncryptedStorage(inner, [new_key, old_key])
    later = clock() + timedelta(hours=3)
    assert rotated.touch_session("s1", later)  # new-key tag on an old-key ciphertext
    got = rotated.get_session("s1")
    assert got is not None and got.expires_at == later
    with pytest.raises(EncryptionError):  # the old key alone cannot verify the new tag
        EncryptedStorage(inner, [old_key]).get_session("s1")
    assert rotated.reencrypt() == 1
    moved = EncryptedStorage(inner, [new_key]).get_session("s1")
    assert moved is not None and moved.expires_at == later and moved.data == {"secret": "s"}
    assert rotated.reencrypt() == 0  # ciphertext and tag both under the new key now


def test_touches_never_undo_concurrent_writes(storage: EncryptedStorage, clock: FakeClock) -> None:
    """A touch writes only the expiry and its tag: data written meanwhile always survives."""
    storage.store_session("s1", _session(clock))
    later = clock() + timedelta(hours=1)
    stop = threading.Event()

    def toucher(_: int) -> None:
        while not stop.is_set():
            assert storage.touch_session("s1", later)

    def writer(n: int) -> None:
        try:
            for i in range(200):
                assert storage.replace_session("s1", _session(clock, data={"n": i}, expires_at=later))
                got = storage.get_session("s1")
                assert got is not None and got.data == {"n": i}
        finally:
            stop.set()

    run_threads(lambda n: writer(n) if n == 0 else toucher(n), 4)
    got = storage.get_session("s1")
    assert got is not None and got.data == {"n": 199} and got.expires_at == later


def test_touch_kv_keeps_the_value_bound_to_its_key(inner: Counting, clock: FakeClock) -> None:
    storage = EncryptedStorage(inner, [generate_key()])
    storage.store_kv("a", b"secret-a", ttl=10)
    storage.store_kv("b", b"secret-b", ttl=10)
    before = clock()
    assert storage.touch_kv("a", 3600) is True
    after = clock()
    clock.advance(60)
    entry = storage.get_kv_entry("a")
    assert entry is not None and entry.value == b"secret-a" and entry.expires_at is not None
    assert before + timedelta(seconds=3600) <= entry.expires_at <= after + timedelta(seconds=3600)
    assert storage.get_kv("b") is None  # untouched: expired
    # The value stays bound to its key: a touched value moved to another key does not open.
    raw = inner.get_kv("a")
    assert raw is not None
    inner.store_kv("b", raw)
    with pytest.raises(EncryptionError, match="tampered"):
        storage.get_kv("b")
    # The expiry is the inner store's TTL and not bound: changing it in the database is not detected
    # (documented: kv entries carry no access-granting fields; counters are in clear anyway).
    inner.touch_kv("a", 10**6)
    assert storage.get_kv("a") == b"secret-a"


def test_touch_during_a_migration_seals_a_plaintext_session(inner: Counting, clock: FakeClock) -> None:
    inner.store_session("s1", _session(clock))  # plaintext, from before the migration
    storage = EncryptedStorage(inner, [generate_key()])
    storage.begin_encrypt_existing()
    later = clock() + timedelta(hours=2)
    assert storage.touch_session("s1", later) is True
    raw = inner.get_session("s1")
    assert raw is not None and raw.data == {} and raw.ip_address != "10.1.2.3"  # sealed now, tag in place
    got = storage.get_session("s1")
    assert got is not None and got.expires_at == later and got.ip_address == "10.1.2.3"
    assert got.data == {"secret": "s"}
    assert storage.touch_session("s1", later + timedelta(hours=1)) is True  # sealed: the one-step touch
    assert inner.calls[-1] == "touch"
