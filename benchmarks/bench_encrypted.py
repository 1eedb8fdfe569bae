"""EncryptedStorage over SQLite, PostgreSQL and Redis against the same backend unencrypted,
and ``encrypt_existing`` (``authkit encrypt``) of a plaintext store.

``python -m benchmarks.run encrypted`` (``--quick`` for a smoke run).

Both storages of a pair are the same kind on the same server (or in the same
directory), each on its own prefix or file.  Each operation is timed in short
rounds that alternate between the two (plain, encrypted, plain, ...), so load
from other jobs on a shared machine hits both alike; the ratio printed is the
median of the per-round ratios (encrypted time / plain time), with the
interquartile range beside it, then the median time encryption adds to one
operation (encrypted minus plain, per round).  Goal: <= 1.3x on every operation.

Two "floor" rows follow SQLite's: a read that does only what no sealed format
can skip (the inner read of the sealed row, one decryption, one parse of the
plaintext), against the plain read.  No format change can do better than them.

The migration figure: a plaintext store of 200,000 records (100,000 tokens,
60,000 sessions, 40,000 kv entries; 2,000 with ``--quick``) sealed in place
with ``encrypt_existing(batch_size=1000)`` on SQLite, PostgreSQL and Redis:
records per second, the longest single write (the longest write transaction
other writers wait for), and the round trips it took (statements on SQL,
commands on Redis), counted by wrapping the inner storage's hooks.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from authkit.models import utcnow
from authkit.storage import AuthStorage, _seal, open_storage
from authkit.storage.encrypted import EncryptedStorage, generate_key
from benchmarks.encryption_cost import session as _session
from benchmarks.encryption_cost import token as _token
from benchmarks.harness import Table

GOAL = "<= 1.3x"


def _round(fn: Callable[[int], object], n: int, timer: Callable[[], float] = time.perf_counter) -> float:
    start = timer()
    for i in range(n):
        fn(i)
    return timer() - start


def _compare(table: Table, label: str, plain: AuthStorage, encrypted: AuthStorage, rounds: int,
             timer: Callable[[], float] = time.perf_counter) -> None:
    """``timer``: wall time by default; SQLite runs in this process, so its rows are measured
    again in this process's CPU time, which other jobs on a loaded machine do not inflate."""
    records = 200
    base_tokens = [_token(i) for i in range(records)]
    base_sessions = [(f"sess-{i}", _session(i)) for i in range(records)]

    def fill(storage: AuthStorage) -> None:
        storage.store_tokens_bulk(base_tokens)
        storage.store_sessions_bulk(base_sessions)
        for i in range(records):
            storage.store_kv(f"kv-{i}", b"v" * 256, ttl=3600)

    for storage in (plain, encrypted):
        fill(storage)
    tokens = base_tokens
    # The writes alternate between two versions of each record, so every write changes the
    # row, as a real one does (a refresh brings a new access token).  Rewriting the same
    # record again would flatter the plain side: SQLite skips a page whose bytes a write
    # leaves unchanged, and a plaintext rewrite is byte for byte the same (a sealed one
    # never is: the nonce is new).
    versions = 2 * records
    token_versions = [_token(i % records, version=i // records) for i in range(versions)]
    session_versions = [_session(i % records, version=i // records) for i in range(versions)]
    kv_versions = [b"v" * 256, b"w" * 256]
    later = utcnow() + timedelta(hours=3)

    def writes(storage: AuthStorage, write: Callable[[AuthStorage, int], object]) -> Callable[[int], object]:
        count = itertools.count()  # per storage: both sides walk the same versions in the same order
        return lambda _: write(storage, next(count) % versions)

    operations: list[tuple[str, Callable[[AuthStorage], Callable[[int], object]]]] = [
        ("store_token", lambda s: writes(s, lambda s, n: s.store_token(token_versions[n]))),
        ("get_token", lambda s: lambda i: s.get_token(f"tok-{i % records}")),
        ("get_token_by_access_token",
         lambda s: lambda i: s.get_token_by_access_token(tokens[i % records].access_token)),
        ("store_session", lambda s: writes(s, lambda s, n: s.store_session(f"sess-{n % records}",
                                                                            session_versions[n]))),
        ("get_session", lambda s: lambda i: s.get_session(f"sess-{i % records}")),
        ("touch_session", lambda s: lambda i: s.touch_session(f"sess-{i % records}", later)),
        ("store_kv (256 B)", lambda s: writes(s, lambda s, n: s.store_kv(f"kv-{n % records}",
                                                                          kv_versions[n // records], ttl=3600))),
        ("get_kv (256 B)", lambda s: lambda i: s.get_kv(f"kv-{i % records}")),
    ]
    for name, make in operations:
        _ratio_row(table, f"{label} {name}", make(encrypted), make(plain), rounds, timer)
        if name.startswith("store"):
            for storage in (plain, encrypted):  # the reads that follow find the records they look for
                fill(storage)


def _ratio_row(table: Table, what: str, ours: Callable[[int], object], base: Callable[[int], object], rounds: int,
               timer: Callable[[], float]) -> None:
    """A row: ``ours`` over ``base`` in interleaved rounds, median ratio and interquartile range,
    then the median of what ``ours`` adds per operation, in microseconds.

    The microseconds say what the ratio alone hides: the same added cost is a larger
    ratio over a faster baseline (docs/encryption.md, "The ratio and the plain read").
    """
    per_round = 100
    _round(base, per_round)  # warm both (statement caches, connections)
    _round(ours, per_round)
    ours_times, base_times = [], []
    for r in range(rounds):
        # Alternate which side goes first, so neither always follows the other.
        if r % 2:
            t_ours, t_base = _round(ours, per_round, timer), _round(base, per_round, timer)
        else:
            t_base, t_ours = _round(base, per_round, timer), _round(ours, per_round, timer)
        ours_times.append(t_ours)
        base_times.append(t_base)
    pairs = list(zip(ours_times, base_times, strict=True))
    ratios = [o / b for o, b in pairs]
    added = [(o - b) / per_round * 1e6 for o, b in pairs]
    median = statistics.median(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (median, median, median)
    ours_rate = per_round / statistics.median(ours_times)
    base_rate = per_round / statistics.median(base_times)
    table.rows.append((what, f"{ours_rate:,.0f}/s", f"{base_rate:,.0f}/s",
                       f"{median:.2f}x [{q1:.2f}-{q3:.2f}] {statistics.median(added):+.1f} us", GOAL))


def _floor(table: Table, plain: AuthStorage, encrypted: EncryptedStorage, rounds: int) -> None:
    """The least any sealed record format can cost a SQLite read, against the plain read (CPU time).

    A sealed read cannot skip three steps: the inner storage's read of the sealed
    row, one AEAD decryption and one parse of the plaintext.  Here each read does
    only those, on the store's own records and key; everything else a real read
    does (decoding the carrier text, building the associated data, comparing the
    bound copies) is done once beforehand.  No format change can bring a read
    below this row's ratio.
    """
    records = 200
    plain.store_tokens_bulk([_token(i) for i in range(records)])
    encrypted.store_tokens_bulk([_token(i) for i in range(records)])
    sessions = [(f"sess-{i}", _session(i)) for i in range(records)]
    plain.store_sessions_bulk(sessions)
    encrypted.store_sessions_bulk(sessions)
    inner, key = encrypted._inner, encrypted._ring.current
    decrypt, scan = key.aead.decrypt, _seal._SCAN

    def parts(text: str | None, ad: bytes) -> tuple[bytes, bytes, bytes]:
        """A record's nonce, ciphertext and full associated data, from its carrier text."""
        assert text is not None
        envelope = _seal._envelope(text, "record")
        return envelope[_seal.HEADER_SIZE:_seal._NONCE_END], envelope[_seal._NONCE_END:], key.header + ad

    token_parts, session_parts = [], []
    for i in range(records):
        token = inner._get_sealed_token(f"tok-{i}")
        session = inner._get_sealed_session(f"sess-{i}", encrypted.now())
        assert token is not None and session is not None
        token_parts.append(parts(token.refresh_token, _seal.token_ad(token)))
        session_parts.append(parts(session.user_agent, _seal.session_ad(session)))

    def token_floor(i: int) -> object:
        token = inner._get_sealed_token(f"tok-{i % records}")
        nonce, body, ad = token_parts[i % records]
        return token, scan(decrypt(nonce, body, ad).decode(), 0)

    def session_floor(i: int) -> object:
        session = inner._get_sealed_session(f"sess-{i % records}", encrypted.now())
        nonce, body, ad = session_parts[i % records]
        return session, scan(decrypt(nonce, body, ad).decode(), 0)

    for what, floor, read in (
        ("get_token", token_floor, lambda i: plain.get_token(f"tok-{i % records}")),
        ("get_session", session_floor, lambda i: plain.get_session(f"sess-{i % records}")),
    ):
        _ratio_row(table, f"sqlite (CPU time) {what} floor: inner read + decrypt + parse only", floor, read, rounds,
                   time.process_time)


@contextmanager
def _sqlite_pair() -> Iterator[tuple[AuthStorage, AuthStorage]]:
    with tempfile.TemporaryDirectory() as tmp:
        plain = open_storage(f"sqlite:///{Path(tmp) / 'plain.db'}")
        encrypted = open_storage(f"sqlite:///{Path(tmp) / 'encrypted.db'}", encryption_keys=[generate_key()])
        try:
            yield plain, encrypted
        finally:
            plain.close()
            encrypted.close()


@contextmanager
def _sql_pair(url: str) -> Iterator[tuple[AuthStorage, AuthStorage]]:
    from authkit.storage.sql import SqlStorage
    from tests.services import unique_prefix

    plain = SqlStorage(url, prefix=unique_prefix("bp"))
    inner = SqlStorage(url, prefix=unique_prefix("be"))
    try:
        yield plain, EncryptedStorage(inner, [generate_key()])
    finally:
        for storage in (plain, inner):
            storage.drop_schema()
            storage.close()


@contextmanager
def _redis_pair(url: str) -> Iterator[tuple[AuthStorage, AuthStorage]]:
    from authkit.storage.redis import RedisStorage
    from tests.backends import drop_redis_keys

    run = uuid.uuid4().hex[:8]
    plain = RedisStorage.from_url(url, prefix=f"akbench{run}p:")
    inner = RedisStorage.from_url(url, prefix=f"akbench{run}e:")
    try:
        yield plain, EncryptedStorage(inner, [generate_key()])
    finally:
        for storage in (plain, inner):
            drop_redis_keys(storage._client, storage.prefix)
            storage.close()


def _migration(label: str, storage: AuthStorage, total: int) -> None:
    """Fill ``storage`` with ``total`` plaintext records, seal them in place, print the figures."""
    table = Table(f"encrypt_existing (authkit encrypt) of a plaintext store: {label}")
    tokens, sessions = total // 2, total * 3 // 10
    kv = total - tokens - sessions
    chunk = 5000
    for start in range(0, tokens, chunk):
        storage.store_tokens_bulk([_token(i) for i in range(start, min(start + chunk, tokens))])
    for start in range(0, sessions, chunk):
        storage.store_sessions_bulk([(f"sess-{i}", _session(i)) for i in range(start, min(start + chunk, sessions))])
    expires = utcnow() + timedelta(days=1)
    for start in range(0, kv, chunk):  # (setup, not timed: the bulk hook spares 40,000 round trips)
        storage._store_kv_entries([(f"kv-{i}", b"v" * 64, expires) for i in range(start, min(start + chunk, kv))])
    encrypted = EncryptedStorage(storage, [generate_key()])
    calls = _count_hooks(storage)
    started = time.perf_counter()
    summary = encrypted.encrypt_existing(batch_size=1000)
    seconds = time.perf_counter() - started
    sealed = summary["tokens"] + summary["sessions"] + summary["kv"]
    assert sealed == total, summary
    table.note(f"{label} encrypt_existing: {total:,} records",
               f"{sealed / seconds:,.0f} records/s ({seconds:.1f} s, {sum(calls.values()):,} storage calls)",
               f"longest write {summary['longest_write_seconds'] * 1000:.1f} ms")
    table.print()


def _count_hooks(storage: AuthStorage) -> dict[str, int]:
    """Count the calls of the inner storage's read and write hooks (each one round trip or one
    transaction), by shadowing them on the instance."""
    calls: dict[str, int] = {}
    names = ["_token_page", "_session_page", "_kv_page", "_get_token", "_get_session", "_get_kv_entry",
             "_store_tokens", "_store_sessions", "_store_kv", "_token_id_page", "_session_id_page"]
    for name in names:
        hook = getattr(storage, name)

        def counted(*args: object, _hook: Callable[..., object] = hook, _name: str = name) -> object:
            calls[_name] = calls.get(_name, 0) + 1
            return _hook(*args)

        setattr(storage, name, counted)
    return calls


def run(quick: bool) -> None:
    from tests.services import POSTGRES_URL, REDIS_URL, reachable

    rounds = 5 if quick else 31
    table = Table("EncryptedStorage over its inner storage (baseline: the same backend unencrypted; "
                  "median ratio of interleaved rounds [interquartile range])")
    with _sqlite_pair() as (plain, encrypted):
        _compare(table, "sqlite", plain, encrypted, rounds)
    with _sqlite_pair() as (plain, encrypted):
        _compare(table, "sqlite (CPU time)", plain, encrypted, rounds, timer=time.process_time)
    with _sqlite_pair() as (plain, encrypted):
        assert isinstance(encrypted, EncryptedStorage)
        _floor(table, plain, encrypted, rounds)
    if reachable(POSTGRES_URL):
        with _sql_pair(POSTGRES_URL) as (plain, encrypted):
            _compare(table, "postgresql", plain, encrypted, rounds)
    else:
        table.note("postgresql", f"skipped: no PostgreSQL at {POSTGRES_URL}")
    try:
        import authkit.storage.redis  # noqa: F401
    except ImportError:
        table.note("redis", "skipped: RedisStorage is not available")
    else:
        if reachable(REDIS_URL):
            with _redis_pair(REDIS_URL) as (plain, encrypted):
                _compare(table, "redis", plain, encrypted, rounds)
        else:
            table.note("redis", f"skipped: no Redis at {REDIS_URL}")
    table.print()

    total = 2_000 if quick else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{Path(tmp) / 'migrate.db'}")
        try:
            _migration("sqlite", storage, total)
        finally:
            storage.close()
    if reachable(POSTGRES_URL):
        with _sql_pair(POSTGRES_URL) as (plain, _encrypted):
            _migration("postgresql", plain, total)
    if reachable(REDIS_URL):
        with _redis_pair(REDIS_URL) as (plain, _encrypted):
            _migration("redis", plain, total)
