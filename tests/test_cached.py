"""CachedStorage beyond the conformance suite: hits, invalidation by this
process's writes, the staleness bound for other writers, expiry, copies,
threads, and other processes.

The cache's ``ttl`` is measured by an injected timer, the records' expiry by
the storage's ``FakeClock``: neither test sleeps.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from authkit.errors import NotFoundError
from authkit.models import AuthToken, SessionData
from authkit.storage import MemoryStorage, open_storage
from authkit.storage._marker import MARKER_KEY
from authkit.storage.cached import CachedStorage
from authkit.storage.encrypted import EncryptedStorage, generate_key
from tests.clock import FakeClock
from tests.threads import run_threads


class Timer:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingMemory(MemoryStorage):
    """A MemoryStorage that counts the reads that reach it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.reads = {"token": 0, "session": 0, "kv": 0}

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        self.reads["token"] += 1
        return super()._get_token_by_access_token(access_token, now)

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        self.reads["session"] += 1
        return super()._get_session(session_id, now)

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        if key != MARKER_KEY:  # EncryptedStorage reads its marker once, before its first write
            self.reads["kv"] += 1
        return super()._get_kv_entry(key, now)


@pytest.fixture
def timer() -> Timer:
    return Timer()


@pytest.fixture
def inner(clock: FakeClock) -> CountingMemory:
    return CountingMemory(clock)


@pytest.fixture
def cached(inner: CountingMemory, timer: Timer) -> CachedStorage:
    # Over EncryptedStorage, which reports kv expiry, so kv reads are cached too.
    return CachedStorage(EncryptedStorage(inner, [generate_key()]), ttl=5.0, maxsize=100, timer=timer)


@pytest.fixture
def other(inner: CountingMemory, cached: CachedStorage) -> EncryptedStorage:
    """Another writer on the same store, bypassing this cache (as another process would)."""
    assert isinstance(cached.inner, EncryptedStorage)
    return cached.inner


def token(token_id: str = "t1", access_token: str = "a1", **fields: object) -> AuthToken:
    return AuthToken(token_id=token_id, user_id="u1", access_token=access_token, **fields)  # type: ignore[arg-type]


def session(**fields: object) -> SessionData:
    return SessionData(session_id="", user_id="u1", **fields)  # type: ignore[arg-type]


# -- hits -------------------------------------------------------------------------


def test_repeated_reads_are_served_from_the_cache(cached: CachedStorage, inner: CountingMemory) -> None:
    stored = token()
    cached.store_token(stored)
    cached.store_session("s1", session(data={"x": 1}))
    cached.store_kv("k", b"v")
    for _ in range(5):
        assert cached.get_token_by_access_token("a1") == stored
        got = cached.get_session("s1")
        assert got is not None and got.data == {"x": 1}
        assert cached.get_kv("k") == b"v"
    assert inner.reads == {"token": 1, "session": 1, "kv": 1}


def test_misses_are_not_cached(cached: CachedStorage, other: EncryptedStorage) -> None:
    assert cached.get_session("s1") is None
    assert cached.get_kv("k") is None
    assert cached.get_token_by_access_token("a1") is None
    other.store_session("s1", session())
    other.store_kv("k", b"v")
    other.store_token(token())
    # A record another process has just created is seen at once.
    assert cached.get_session("s1") is not None
    assert cached.get_kv("k") == b"v"
    assert cached.get_token_by_access_token("a1") is not None


def test_kv_entries_are_cached_with_their_expiry(inner: CountingMemory, timer: Timer, clock: FakeClock) -> None:
    cached = CachedStorage(inner, timer=timer)
    cached.store_kv("k", b"v", ttl=60)
    assert cached.get_kv("k") == b"v"
    assert cached.get_kv("k") == b"v"
    assert inner.reads["kv"] == 1
    clock.advance(61)  # past the entry's own expiry, well within the cache's ttl
    assert cached.get_kv("k") is None


# -- this process's writes evict ---------------------------------------------------


def test_token_writes_evict(cached: CachedStorage, inner: CountingMemory) -> None:
    cached.store_token(token(access_token="old"))
    assert cached.get_token_by_access_token("old") is not None
    cached.store_token(token(access_token="new"))  # same id, new access token: "old" must go
    assert cached.get_token_by_access_token("old") is None
    got = cached.get_token_by_access_token("new")
    assert got is not None and got.access_token == "new"
    cached.update_token(token(access_token="new", scopes=["api"]))
    got = cached.get_token_by_access_token("new")
    assert got is not None and got.scopes == ["api"]
    cached.delete_token("t1")
    assert cached.get_token_by_access_token("new") is None


def test_bulk_token_writes_evict(cached: CachedStorage) -> None:
    cached.store_tokens_bulk([token(f"t{i}", f"a{i}") for i in range(10)])
    assert all(cached.get_token_by_access_token(f"a{i}") is not None for i in range(10))
    cached.store_tokens_bulk([token(f"t{i}", f"b{i}") for i in range(5)])
    assert all(cached.get_token_by_access_token(f"a{i}") is None for i in range(5))
    assert all(cached.get_token_by_access_token(f"a{i}") is not None for i in range(5, 10))
    cached.delete_tokens_bulk([f"t{i}" for i in range(10)])
    assert all(cached.get_token_by_access_token(f"{p}{i}") is None for i in range(10) for p in "ab")


def test_an_access_token_taken_over_by_another_token_id(cached: CachedStorage) -> None:
    cached.store_token(token("t1", "shared"))
    assert cached.get_token_by_access_token("shared") is not None
    cached.store_token(token("t2", "shared"))
    got = cached.get_token_by_access_token("shared")
    assert got is not None and got.token_id == "t2"


def test_session_writes_evict(cached: CachedStorage) -> None:
    cached.store_session("s1", session(data={"v": 1}))
    assert cached.get_session("s1") is not None
    cached.store_session("s1", session(data={"v": 2}))
    got = cached.get_session("s1")
    assert got is not None and got.data == {"v": 2}
    cached.store_sessions_bulk([("s1", session(data={"v": 3})), ("s2", session())])
    got = cached.get_session("s1")
    assert got is not None and got.data == {"v": 3}
    assert cached.get_session("s2") is not None
    cached.delete_sessions_bulk(["s2"])
    assert cached.get_session("s2") is None
    cached.delete_session("s1")
    assert cached.get_session("s1") is None


def test_kv_writes_evict(cached: CachedStorage) -> None:
    cached.store_kv("k", b"1")
    assert cached.get_kv("k") == b"1"
    cached.store_kv("k", b"2")
    assert cached.get_kv("k") == b"2"
    cached.delete_kv("k")
    assert cached.get_kv("k") is None


def test_a_failed_write_still_evicts(cached: CachedStorage) -> None:
    cached.store_token(token())
    assert cached.get_token_by_access_token("a1") is not None
    with pytest.raises(NotFoundError):
        cached.update_token(token("missing", "a1"))
    assert cached.get_token_by_access_token("a1") is not None  # re-read, still right


def test_cleanup_evicts(cached: CachedStorage, clock: FakeClock, inner: CountingMemory) -> None:
    cached.store_session("s1", session(expires_at=clock() + timedelta(seconds=10)))
    cached.store_session("s2", session())
    cached.get_session("s1")
    cached.get_session("s2")
    clock.advance(11)
    assert cached.cleanup_expired().sessions == 1
    reads = inner.reads["session"]
    assert cached.get_session("s1") is None
    assert cached.get_session("s2") is not None
    assert inner.reads["session"] == reads + 2


# -- other writers: the staleness bound --------------------------------------------


def test_other_writers_are_seen_within_ttl(cached: CachedStorage, other: EncryptedStorage, timer: Timer) -> None:
    cached.store_kv("k", b"old")
    cached.store_session("s1", session(data={"v": "old"}))
    cached.store_token(token(scopes=["old"]))
    assert cached.get_kv("k") == b"old"
    cached.get_session("s1")
    cached.get_token_by_access_token("a1")
    other.store_kv("k", b"new")
    other.store_session("s1", session(data={"v": "new"}))
    other.update_token(token(scopes=["new"]))
    timer.advance(4.9)  # within ttl: the documented staleness
    assert cached.get_kv("k") == b"old"
    got_session = cached.get_session("s1")
    assert got_session is not None and got_session.data == {"v": "old"}
    got_token = cached.get_token_by_access_token("a1")
    assert got_token is not None and got_token.scopes == ["old"]
    timer.advance(0.2)  # past ttl: fresh
    assert cached.get_kv("k") == b"new"
    got_session = cached.get_session("s1")
    assert got_session is not None and got_session.data == {"v": "new"}
    got_token = cached.get_token_by_access_token("a1")
    assert got_token is not None and got_token.scopes == ["new"]


def test_clear_cache(cached: CachedStorage, other: EncryptedStorage) -> None:
    cached.store_kv("k", b"old")
    cached.get_kv("k")
    other.store_kv("k", b"new")
    cached.clear_cache()
    assert cached.get_kv("k") == b"new"


# -- expiry ---------------------------------------------------------------------------


def test_never_served_past_its_own_expiry(cached: CachedStorage, clock: FakeClock) -> None:
    now = clock()
    cached.store_token(token(expires_at=now + timedelta(seconds=2)))
    cached.store_session("s1", session(expires_at=now + timedelta(seconds=2)))
    cached.store_kv("k", b"v", ttl=2)
    assert cached.get_token_by_access_token("a1") is not None
    assert cached.get_session("s1") is not None
    assert cached.get_kv("k") == b"v"
    clock.advance(2)  # the cache's own ttl (5 s) has not passed; the records' expiry has
    assert cached.get_token_by_access_token("a1") is None
    assert cached.get_session("s1") is None
    assert cached.get_kv("k") is None


def test_an_extension_by_another_writer_is_picked_up_at_expiry(
    cached: CachedStorage, other: EncryptedStorage, clock: FakeClock
) -> None:
    cached.store_session("s1", session(expires_at=clock() + timedelta(seconds=2)))
    assert cached.get_session("s1") is not None
    other.store_session("s1", session(expires_at=clock() + timedelta(hours=1)))
    clock.advance(3)
    got = cached.get_session("s1")  # the cached copy expired, so the store is asked again
    assert got is not None and got.expires_at is not None and got.expires_at > clock()


# -- copies -----------------------------------------------------------------------------


def test_callers_never_alias_cache_entries(cached: CachedStorage) -> None:
    original = token(scopes=["api"], metadata={"list": [1]})
    cached.store_token(original)
    first = cached.get_token_by_access_token("a1")
    assert first is not None
    first.scopes.append("mutated")
    first.metadata["list"].append(2)
    second = cached.get_token_by_access_token("a1")
    assert second is not None and second.scopes == ["api"] and second.metadata == {"list": [1]}
    assert second is not first

    cached.store_session("s1", session(data={"cart": []}))
    got = cached.get_session("s1")
    assert got is not None
    got.data["cart"].append("x")
    again = cached.get_session("s1")
    assert again is not None and again.data == {"cart": []}


# -- bounds and arguments ------------------------------------------------------------


def test_maxsize_bounds_the_cache(inner: CountingMemory, timer: Timer) -> None:
    cached = CachedStorage(inner, ttl=60, maxsize=10, timer=timer)
    cached.store_tokens_bulk([token(f"t{i}", f"a{i}") for i in range(50)])
    for _ in range(3):
        for i in range(50):
            assert cached.get_token_by_access_token(f"a{i}") is not None
    assert len(cached._cache) <= 10
    assert len(cached._access_by_id) <= 2 * 10 + 1


def test_constructor_arguments(inner: CountingMemory) -> None:
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            CachedStorage(inner, ttl=ttl)
    with pytest.raises(TypeError):
        CachedStorage(inner, ttl="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CachedStorage(inner, maxsize=0)
    with pytest.raises(TypeError):
        CachedStorage(inner, maxsize=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CachedStorage("memory://")  # type: ignore[arg-type]
    cached = CachedStorage(inner, ttl=2, maxsize=7)
    assert repr(cached) == "CachedStorage(MemoryStorage(), ttl=2.0, maxsize=7)"
    assert cached.inner is inner


def test_delegation_and_close(clock: FakeClock, timer: Timer) -> None:
    class Closing(MemoryStorage):
        closed = False

        def close(self) -> None:
            self.closed = True

    inner = Closing(clock=clock)
    cached = CachedStorage(inner, timer=timer)
    cached.store_session("s1", session())
    assert cached.count_active_sessions() == 1 and cached.stats() == inner.stats()
    assert list(cached.iter_session_ids()) == ["s1"]
    with cached.lock("job", timeout=0):
        with pytest.raises(TimeoutError):
            with inner.lock("job", timeout=0):
                pass
    with cached:
        pass
    assert inner.closed


# -- threads ----------------------------------------------------------------------------


def test_a_read_racing_a_write_never_caches_the_old_value(clock: FakeClock, timer: Timer) -> None:
    """A read that fetched the old value before a write must not cache it after the write."""
    entered, release = threading.Event(), threading.Event()

    class SlowMemory(MemoryStorage):
        block = False

        def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
            found = super()._get_session(session_id, now)
            if self.block:
                entered.set()
                release.wait(10)
            return found

    inner = SlowMemory(clock=clock)
    cached = CachedStorage(inner, ttl=60, timer=timer)
    cached.store_session("s1", session(data={"v": "old"}))
    inner.block = True
    results: list[SessionData | None] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            results.append(cached.get_session("s1"))
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert entered.wait(10), errors
    inner.block = False
    cached.store_session("s1", session(data={"v": "new"}))  # while the reader holds the old value
    release.set()
    reader.join(10)
    assert errors == [] and not reader.is_alive()
    assert results[0] is not None and results[0].data == {"v": "old"}  # it read before the write
    got = cached.get_session("s1")
    assert got is not None and got.data == {"v": "new"}  # ...but did not cache it


def test_threads_read_their_own_writes(cached: CachedStorage) -> None:
    def worker(n: int) -> None:
        for i in range(60):
            key = f"w{n}"
            cached.store_kv(key, str(i).encode())
            assert cached.get_kv(key) == str(i).encode()
            cached.store_session(key, session(data={"i": i}))
            got = cached.get_session(key)
            assert got is not None and got.data == {"i": i}
            cached.store_token(token(key, f"{key}-{i}"))
            assert cached.get_token_by_access_token(f"{key}-{i}") is not None
            if i:
                assert cached.get_token_by_access_token(f"{key}-{i - 1}") is None
            cached.get_kv("shared")
            cached.store_kv("shared", str(n).encode())

    run_threads(worker, 8)
    assert cached.get_kv("shared") == cached.inner.get_kv("shared")


# -- another process on SQLite ---------------------------------------------------------


def test_another_process_write_is_seen_after_ttl(tmp_path: Path, timer: Timer) -> None:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    cached = CachedStorage(open_storage(url), ttl=5.0, timer=timer)
    try:
        cached.store_session("s1", session(data={"v": "old"}))
        assert cached.get_session("s1") is not None
        code = (
            "from authkit.models import SessionData\n"
            "from authkit.storage import open_storage\n"
            f"with open_storage({url!r}) as s:\n"
            "    s.store_session('s1', SessionData('', 'u1', data={'v': 'new'}))\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
        got = cached.get_session("s1")
        assert got is not None and got.data == {"v": "old"}  # stale, within ttl
        timer.advance(5.01)
        got = cached.get_session("s1")
        assert got is not None and got.data == {"v": "new"}
    finally:
        cached.close()
