"""SqlStorage on SQLite (file and memory), PostgreSQL and MariaDB/MySQL.

Per backend, each figure beside a baseline measured in the same run, in
interleaved rounds (medians, ± half the spread):

* single operations (``store_kv``, ``get_kv``, ``get_token_by_access_token``,
  ``store_token``, ``get_session``, ``store_session``) against a **persistent**
  raw-driver connection (psycopg / PyMySQL / sqlite3, autocommit) running the
  same SQL text: the ratio is everything authkit adds (argument checks, pool
  checkout, row conversion, error wrapping).  On PostgreSQL and MariaDB the
  round trips of one call of each, counted by a TCP proxy, are printed beside;
* ``store_tokens_bulk`` of 10,000 tokens against a loop of ``store_token``;
* ``get_token_by_access_token`` latency with 200,000 tokens stored against 1,000;
* on PostgreSQL and MariaDB, ``cleanup_expired`` of 200,000 expired sessions
  among 200,000 live ones against Django's ``clearsessions`` on its own db
  session backend with the same counts (in a process of its own:
  ``benchmarks/_django_clearsessions.py``), and authkit's longest statement.

``python -m benchmarks.run sql`` (add ``--quick`` for a smoke run with small sizes).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from authkit.models import AuthToken, SessionData
from authkit.storage._codec import digest as _digest
from authkit.storage._codec import dumps as _dumps
from authkit.storage._codec import micros as _micros
from authkit.storage.sql import SqlStorage
from benchmarks.harness import Table, best_time, interleaved, ratio_row
from tests.services import MYSQL_URL, POSTGRES_URL, reachable, unique_prefix
from tests.tcp_proxy import TcpProxy

UTC = timezone.utc


@contextmanager
def _open(url: str) -> Iterator[SqlStorage]:
    storage = SqlStorage(url, prefix=unique_prefix("b"))
    try:
        yield storage
    finally:
        storage.drop_schema()
        storage.close()


def _persistent_raw(storage: SqlStorage) -> Any:
    """A DBAPI connection of the storage's driver, opened once and kept, in autocommit mode."""
    url = storage.engine.url
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(url.database or ":memory:", check_same_thread=False, isolation_level=None)
        # The settings authkit's connections get (see _sql_engine.install_connect_hooks).
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute(f"PRAGMA mmap_size = {256 * 1024 * 1024}")
        return connection
    if url.get_backend_name() == "postgresql":
        import psycopg

        return psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                               dbname=url.database, autocommit=True)
    import pymysql

    return pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, password=url.password or "",
                           database=url.database, autocommit=True)


def _raw(connection: Any, sql: str, fetch: bool) -> Callable[[dict[str, Any]], object]:
    """The same SQL through the bare driver, on one persistent connection."""

    def run(params: dict[str, Any]) -> object:
        cursor = connection.cursor()
        cursor.execute(sql, params)
        row = cursor.fetchone() if fetch else None
        cursor.close()
        return row

    return run


def _token(i: int, now: datetime, expires: datetime | None = None, tag: str = "") -> AuthToken:
    return AuthToken(
        token_id=f"tok{tag}{i}",
        user_id=f"user{i % 1000}",
        access_token=f"00D{tag}{i:012d}!AQ4AQ" + "x" * 80,
        refresh_token="5Aep861" + "y" * 80,
        scopes=["api", "refresh_token"],
        issued_at=now,
        expires_at=expires,
        client_id="3MVG9client",
        metadata={"instance_url": "https://acme.my.salesforce.com"},
    )


def _token_row(token: AuthToken) -> dict[str, Any]:
    return {
        "token_id": token.token_id, "user_id": token.user_id, "access_token": token.access_token,
        "refresh_token": token.refresh_token, "token_type": token.token_type, "scopes": _dumps(token.scopes),
        "issued_at": _micros(token.issued_at), "expires_at": _micros(token.expires_at) if token.expires_at else None,
        "client_id": token.client_id,
        "metadata": _dumps(token.metadata), "access_digest": _digest(token.access_token),
    }


def _session_row(session_id: str, session: SessionData) -> dict[str, Any]:
    return {
        "session_id": session_id, "user_id": session.user_id, "created_at": _micros(session.created_at),
        "expires_at": _micros(session.expires_at) if session.expires_at else None,
        "last_activity": _micros(session.last_activity), "ip_address": session.ip_address,
        "user_agent": session.user_agent, "data": _dumps(session.data),
    }


def _round_trips(url: str, prefix: str, operations: dict[str, Callable[[SqlStorage], object]]) -> dict[str, int]:
    """Round trips of one call of each operation, counted by a proxy in front of the server."""
    parts = urlsplit(url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0) as proxy:
        storage = SqlStorage(proxy.url(url), prefix=prefix, create_schema=False)
        try:
            counts = {}
            for name, operation in operations.items():
                operation(storage)  # warm: the pooled connection is open
                proxy.reset()
                operation(storage)
                counts[name] = proxy.turns
            return counts
        finally:
            storage.close()


def _single_ops(table: Table, storage: SqlStorage, url: str, n: int, rounds: int) -> None:
    now = storage.now()
    keys = [f"key{i}" for i in range(200)]
    value = b"v" * 100
    for key in keys:
        storage.store_kv(key, value, ttl=3600)
    tokens = [_token(i, now) for i in range(200)]
    storage.store_tokens_bulk(tokens)
    sessions = [(f"sess{i}", SessionData("", f"user{i}", expires_at=now + timedelta(hours=1), data={"cart": [1, 2]}))
                for i in range(200)]
    storage.store_sessions_bulk(sessions)
    connection = _persistent_raw(storage)
    hour = timedelta(hours=1)
    # The raw side does what a hand-written version must do too: compute the expiry,
    # hash the access token, serialise the fields.  It skips authkit's argument checks,
    # defensive copies, pool checkout and building objects from rows.
    cases: dict[str, tuple[Callable[[SqlStorage, int], object], Callable[[int], object]]] = {}
    kv_put = _raw(connection, storage._sql.upsert_kv, fetch=False)
    kv_get = _raw(connection, storage._sql.get_kv_entry, fetch=True)
    tok_get = _raw(connection, storage._sql.get_token_by_access, fetch=True)
    tok_put = _raw(connection, storage._sql.upsert_token, fetch=False)
    ses_get = _raw(connection, storage._sql.get_session, fetch=True)
    ses_put = _raw(connection, storage._sql.upsert_session, fetch=False)
    cases["store_kv"] = (
        lambda s, i: s.store_kv(keys[i % 200], value, ttl=3600),
        lambda i: kv_put({"name": keys[i % 200], "value": value, "expires_at": _micros(datetime.now(UTC) + hour)}),
    )
    cases["get_kv"] = (
        lambda s, i: s.get_kv(keys[i % 200]),
        lambda i: kv_get({"id": keys[i % 200], "now": _micros(datetime.now(UTC))}),
    )
    cases["get_token_by_access_token"] = (
        lambda s, i: s.get_token_by_access_token(tokens[i % 200].access_token),
        lambda i: tok_get({"digest": _digest(tokens[i % 200].access_token), "now": _micros(datetime.now(UTC))}),
    )
    cases["store_token"] = (
        lambda s, i: s.store_token(tokens[i % 200]),
        lambda i: tok_put(_token_row(tokens[i % 200])),
    )
    cases["get_session"] = (
        lambda s, i: s.get_session(sessions[i % 200][0]),
        lambda i: ses_get({"id": sessions[i % 200][0], "now": _micros(datetime.now(UTC))}),
    )
    cases["store_session"] = (
        lambda s, i: s.store_session(*sessions[i % 200]),
        lambda i: ses_put(_session_row(*sessions[i % 200])),
    )
    trips: dict[str, int] = {}
    if not url.startswith("sqlite"):
        once = {name: (lambda s, f=ours: f(s, 0)) for name, (ours, _) in cases.items()}
        trips = _round_trips(url, storage.prefix, once)
    try:
        for name, (ours, raw) in cases.items():
            ours_times, raw_times = interleaved(
                [lambda ours=ours: [ours(storage, i) for i in range(n)], lambda raw=raw: [raw(i) for i in range(n)]],
                rounds,
            )
            extra = f"  ({trips[name]} round trip{'s' if trips[name] != 1 else ''} vs 1)" if name in trips else ""
            goal = "" if url.startswith("sqlite") else "<= 1.3x"  # the goal is for the network servers
            ratio_row(table, name, ours_times, raw_times, goal, per=n, extra=extra)
    finally:
        connection.close()


def _bulk(table: Table, storage: SqlStorage, n: int) -> None:
    """New tokens on both sides (inserts, not no-op rewrites of identical rows)."""
    now = storage.now()
    batches = iter([[_token(i, now, tag=f"b{run}-") for i in range(n)] for run in range(2)])
    bulk = best_time(lambda: storage.store_tokens_bulk(next(batches)), repeat=2)
    singles = [_token(i, now, tag="s-") for i in range(n)]

    def loop() -> None:
        for token in singles:
            storage.store_token(token)

    looped = best_time(loop, repeat=1)
    table.rows.append((f"store_tokens_bulk({n:,})", f"{bulk * 1000:,.0f} ms", f"{looped * 1000:,.0f} ms (loop)",
                       f"{looped / bulk:.1f}x faster", ">= 10x"))


def _lookup_latency(table: Table, url: str, small: int, large: int, lookups: int) -> None:
    def fill(storage: SqlStorage, count: int) -> list[str]:
        now = storage.now()
        for start in range(0, count, 10_000):
            storage.store_tokens_bulk([_token(i, now, tag="l") for i in range(start, min(count, start + 10_000))])
        picks = [_token(random.randrange(count), now, tag="l").access_token for _ in range(lookups)]
        for access in picks[:50]:  # warm the pool and the plan cache
            storage.get_token_by_access_token(access)
        return picks

    # Both stores open at once (two prefixes in one database), measured in alternating
    # rounds so that load from elsewhere on the machine hits both alike.
    with _open(url) as few_store, _open(url) as many_store:
        sides = [(few_store, fill(few_store, small)), (many_store, fill(many_store, large))]
        best = [float("inf"), float("inf")]
        for _ in range(5):
            for side, (storage, picks) in enumerate(sides):
                start = time.perf_counter()
                for access in picks:
                    assert storage.get_token_by_access_token(access) is not None
                best[side] = min(best[side], (time.perf_counter() - start) / len(picks))
    few, many = best
    table.rows.append((f"get_token_by_access_token latency, {large:,} vs {small:,} tokens",
                       f"{many * 1e6:,.0f} us", f"{few * 1e6:,.0f} us", f"{many / few:.2f}x", "<= 1.5x"))


def _fill_sessions(storage: SqlStorage, expired: int, live: int) -> None:
    """Insert the sessions with one set-based statement: only the cleanup is being measured."""
    t = storage._tables.sessions.name
    now = storage.now()
    past, future, created = (_micros(now - timedelta(hours=1)), _micros(now + timedelta(days=1)),
                             _micros(now - timedelta(days=1)))
    total = expired + live
    if storage.engine.dialect.name == "postgresql":
        source, i, sid, data = f"generate_series(1, {total}) AS s(i)", "i", "'sess' || i", "repeat('x', 100)"
    else:
        source, i, sid, data = f"seq_1_to_{total} AS s", "s.seq", "CONCAT('sess', s.seq)", "REPEAT('x', 100)"
    sql = (
        f"INSERT INTO {t} (session_id, user_id, created_at, expires_at, last_activity, data) "
        f"SELECT {sid}, 'user', {created}, CASE WHEN {i} <= {expired} THEN {past} ELSE {future} END, "
        f"{created}, {data} FROM {source}"
    )
    connection = storage.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        cursor.execute(f"ANALYZE {t}" if storage.engine.dialect.name == "postgresql" else f"ANALYZE TABLE {t}")
        if storage.engine.dialect.name != "postgresql":
            cursor.fetchall()
        cursor.close()
    finally:
        connection.close()


def _authkit_cleanup(url: str, expired: int, live: int, statements: list[float]) -> float:
    """Seconds of one ``cleanup_expired()`` on freshly filled tables; statement times into ``statements``."""
    with _open(url) as storage:
        _fill_sessions(storage, expired, live)
        original = storage._execute

        def timed(sql: str, params: dict[str, Any]) -> int:
            start = time.perf_counter()
            try:
                return original(sql, params)
            finally:
                statements.append(time.perf_counter() - start)

        storage._execute = timed  # type: ignore[method-assign]
        start = time.perf_counter()
        report = storage.cleanup_expired()
        elapsed = time.perf_counter() - start
        assert report.sessions == expired, report
        assert storage.count_active_sessions() == live
        return elapsed


def _django_cleanup(url: str, expired: int, live: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks._django_clearsessions", url, str(expired), str(live)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["deleted"] == expired, result
    return float(result["seconds"])


def _cleanup(table: Table, url: str, expired: int, rounds: int) -> None:
    statements: list[float] = []
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):  # alternating; each side on freshly filled tables, only the cleanup timed
        ours.append(_authkit_cleanup(url, expired, expired, statements))
        theirs.append(_django_cleanup(url, expired, expired))
    ratio_row(table, f"cleanup_expired: {expired:,} expired + {expired:,} live sessions", ours, theirs,
              "<= 2x Django clearsessions")
    table.note("  longest cleanup statement / statements per run",
               f"{max(statements) * 1000:,.1f} ms / {len(statements) // rounds}", "<= 50 ms")


def run(quick: bool) -> None:
    n = 200 if quick else 2000
    rounds = 3 if quick else 7
    bulk_n = 1000 if quick else 10_000
    small, large = 1000, (10_000 if quick else 200_000)
    lookups = 100 if quick else 1000
    cleanup_n = 10_000 if quick else 200_000
    cleanup_rounds = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        urls = {
            "SQLite file": f"sqlite:///{os.path.join(tmp, 'bench.db')}",
            "SQLite memory": "sqlite://",
            "PostgreSQL": POSTGRES_URL,
            "MariaDB": MYSQL_URL,
        }
        for title, url in urls.items():
            if not url.startswith("sqlite") and not reachable(url):
                print(f"\n## SqlStorage on {title}: SKIPPED, server not reachable")
                continue
            table = Table(f"SqlStorage on {title} (baseline: a persistent raw-driver connection, same SQL)")
            with _open(url) as storage:
                if url != "sqlite://":  # in memory, a second connection would be another database
                    _single_ops(table, storage, url, n, rounds)
                _bulk(table, storage, bulk_n)
            _lookup_latency(table, url, small, large, lookups)
            if not url.startswith("sqlite"):
                _cleanup(table, url, cleanup_n, cleanup_rounds)
            table.print()
