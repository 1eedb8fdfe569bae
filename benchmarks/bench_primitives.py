"""The atomic primitives against what they replace: ``lock()`` + read + write.

Per backend (SQLite file, PostgreSQL, MariaDB, Redis), each row times one
primitive and, as its baseline, the lock-based sequence an application (and
authkit's own Flask/Django sessions, before issue 9) needed for the same effect:

* ``incr_kv`` vs ``with lock: get_kv; store_kv(value + 1)``;
* ``create_session`` (a new id) vs ``with lock: get_session; store_session``;
* ``add_kv`` on a taken key (the losing racer) vs ``with lock: get_kv``;
* ``touch_session`` vs ``get_session; store_session`` with the new expiry.

Rounds alternate primitive and baseline (A, B, A, B, ...); the table shows the
median of the per-round ratios and their spread (min-max), so load on a shared
machine moves both sides alike.

``python -m benchmarks.run primitives`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from authkit.models import SessionData
from authkit.storage import AuthStorage
from benchmarks.harness import Table, sql_storage
from tests.services import MYSQL_URL, POSTGRES_URL, REDIS_URL, reachable, unique_prefix


@contextmanager
def _redis(url: str) -> Iterator[AuthStorage]:
    from authkit.storage.redis import RedisStorage
    from tests.backends import drop_redis_keys

    prefix = unique_prefix("b").rstrip("_") + ":"
    storage = RedisStorage.from_url(url, prefix=prefix)
    try:
        yield storage
    finally:
        drop_redis_keys(storage._client, prefix)
        storage.close()


def _interleaved(
    a: Callable[[int], object], b: Callable[[int], object], n: int, rounds: int
) -> tuple[float, float, float]:
    """Median, min and max over ``rounds`` of time(a) / time(b), each round ``n`` calls of each, alternated."""
    ratios = []
    offset = 0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(n):
            a(offset + i)
        middle = time.perf_counter()
        for i in range(n):
            b(offset + i)
        end = time.perf_counter()
        offset += n
        ratios.append((middle - start) / (end - middle))
    return statistics.median(ratios), min(ratios), max(ratios)


def _bench(name: str, storage: AuthStorage, n: int, rounds: int) -> None:
    table = Table(f"{name}: primitive vs lock + read + write (time ratio, median of {rounds} interleaved rounds)")
    rows: list[tuple[str, Callable[[int], object], Callable[[int], object]]] = []

    def incr(i: int) -> object:
        return storage.incr_kv("counter-a")

    def incr_locked(i: int) -> object:
        with storage.lock("counter-b"):
            value = int(storage.get_kv("counter-b") or b"0")
            storage.store_kv("counter-b", str(value + 1).encode())
        return value

    rows.append(("incr_kv", incr, incr_locked))

    def create(i: int) -> object:
        return storage.create_session(f"a{i}", SessionData("", "u1", data={"n": i}))

    def create_locked(i: int) -> object:
        with storage.lock(f"session:b{i}"):
            if storage.get_session(f"b{i}") is None:
                storage.store_session(f"b{i}", SessionData("", "u1", data={"n": i}))
        return None

    rows.append(("create_session (new id)", create, create_locked))

    storage.store_kv("taken", b"x")

    def add_taken(i: int) -> object:
        return storage.add_kv("taken", b"y")

    def add_taken_locked(i: int) -> object:
        with storage.lock("taken"):
            return storage.get_kv("taken")

    rows.append(("add_kv (key taken)", add_taken, add_taken_locked))
    storage.store_session("hot", SessionData("", "u1", data={"cart": list(range(50))}))

    def touch(i: int) -> object:
        return storage.touch_session("hot", storage.now() + timedelta(minutes=30))

    def touch_rewrite(i: int) -> object:
        session = storage.get_session("hot")
        assert session is not None
        session.expires_at = storage.now() + timedelta(minutes=30)
        storage.store_session("hot", session)
        return None

    rows.append(("touch_session (vs read + rewrite, no lock)", touch, touch_rewrite))
    for what, ours, baseline in rows:
        median, low, high = _interleaved(ours, baseline, n, rounds)
        table.note(what, f"{median:.2f}x", f"spread {low:.2f}-{high:.2f}x; < 1 = primitive faster")
    table.print()


def run(quick: bool) -> None:
    n, rounds = (20, 3) if quick else (200, 7)
    with tempfile.TemporaryDirectory() as tmp, sql_storage(f"sqlite:///{tmp}/bench.db") as storage:
        _bench("SQLite file", storage, n, rounds)
    for name, url, opener in (("PostgreSQL", POSTGRES_URL, sql_storage), ("MariaDB", MYSQL_URL, sql_storage),
                              ("Redis", REDIS_URL, _redis)):
        if not reachable(url):
            print(f"\n## {name}: not reachable, skipped")
            continue
        with opener(url) as storage:
            _bench(name, storage, n, rounds)
