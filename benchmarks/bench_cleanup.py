"""``cleanup_expired()`` on PostgreSQL and MariaDB against Django's ``clearsessions``.

200,000 expired sessions among 200,000 live ones (``--quick``: 10,000 each), the
same rows on both sides (:func:`rows_sql`), as a real session table's are:
expired and live rows alternate in insertion order, the keys are random-looking
(their order is not the insertion order), and every row has an expiry of its
own, spread over two weeks before or after now (one shared expiry would flatter
batching: every batch would be one contiguous run of the index).  Django's ``clearsessions`` runs on its own
db session backend in a process of its own (``benchmarks/_django_clearsessions.py``).
Rounds alternate the two sides, each on freshly filled tables, and only the
cleanup is timed.

Printed beside the ratio: authkit's statements per run (one round trip each),
the longest and the 95th percentile, then one more run with a writer beside it
(``store_session``, half of the calls reviving expired rows, every revived
session checked to survive the cleanup) and the writer's longest wait.

``python -m benchmarks.run cleanup`` (add ``--quick`` for a smoke run).
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from authkit.models import SessionData
from authkit.storage._codec import micros as _micros
from authkit.storage.sql import SqlStorage
from benchmarks.harness import Table, ratio_row, sql_storage
from tests.services import MYSQL_URL, POSTGRES_URL, reachable

_SPREAD_MICROS = 14 * 24 * 3600 * 1_000_000  # expiries spread over two weeks either side of now,
_HOUR_MICROS = 3600 * 1_000_000  # an hour at least: no live row expires while the benchmark runs


def rows_sql(postgresql: bool, expired: int, live: int) -> tuple[str, str, str, str]:
    """The benchmark's rows as SQL pieces, for either side's one set-based INSERT.

    ``(source, key, is_expired, offset)``: the row source (``FROM`` it); row
    ``i``'s key (the MD5 of its number 1..expired+live, as :func:`key`: the keys'
    order has nothing to do with the insertion order, as with random session
    ids); the condition that row ``i`` is expired (the expired rows evenly
    interleaved with the live ones, as :func:`is_expired`); and its distance from
    now in microseconds (an hour plus a multiplicative hash of ``i`` up to two
    weeks): expired rows expire that long before now, live ones that long after.
    """
    total = expired + live
    if postgresql:
        source, i, div = f"generate_series(1, {total}) AS s(i)", "s.i::bigint", "/"
    else:
        source, i, div = f"seq_1_to_{total} AS s", "s.seq", "DIV"
    condition = f"({i} * {expired}) {div} {total} <> (({i} - 1) * {expired}) {div} {total}"
    key = f"md5({i}::text)" if postgresql else f"MD5({i})"
    return source, key, condition, f"({_HOUR_MICROS} + ({i} * 2654435761) % {_SPREAD_MICROS})"


def key(i: int) -> str:
    """Row ``i``'s key in :func:`rows_sql`."""
    return hashlib.md5(str(i).encode()).hexdigest()


def is_expired(i: int, expired: int, live: int) -> bool:
    """Whether row ``i`` of :func:`rows_sql` is an expired one."""
    total = expired + live
    return (i * expired) // total != ((i - 1) * expired) // total


def _fill_sessions(storage: SqlStorage, expired: int, live: int) -> None:
    """Insert the sessions with one set-based statement: only the cleanup is being measured."""
    t = storage._tables.sessions.name
    postgresql = storage.engine.dialect.name == "postgresql"
    now, created = _micros(storage.now()), _micros(storage.now() - timedelta(days=1))
    source, sid, condition, offset = rows_sql(postgresql, expired, live)
    sql = (
        f"INSERT INTO {t} (session_id, user_id, created_at, expires_at, last_activity, data) "
        f"SELECT {sid}, 'user', {created}, CASE WHEN {condition} THEN {now} - {offset} ELSE {now} + {offset} END, "
        f"{created}, {'repeat' if postgresql else 'REPEAT'}('x', 100) FROM {source}"
    )
    connection = storage.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        cursor.execute(f"ANALYZE {t}" if postgresql else f"ANALYZE TABLE {t}")
        if not postgresql:
            cursor.fetchall()
        cursor.close()
    finally:
        connection.close()


class _TimedCursor:
    """A DBAPI cursor that records how long each statement takes (one round trip each)."""

    def __init__(self, cursor: Any, times: list[float]) -> None:
        self._cursor = cursor
        self._times = times

    def execute(self, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._cursor.execute(*args)
        finally:
            self._times.append(time.perf_counter() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _Writer:
    """A thread writing sessions while a cleanup runs: how long does any one write wait?

    It alternates between rewriting a live session and reviving an expired one
    (``store_session`` with a new expiry): the revival races the cleanup for the
    very rows it deletes, the case where a writer could be blocked, or a cleanup
    could delete a record a concurrent write made live.
    """

    def __init__(self, storage: SqlStorage, expired: int, live: int) -> None:
        self.storage = storage
        total = expired + live
        self.expired_ids = [i for i in range(1, total + 1) if is_expired(i, expired, live)]
        self.live_ids = [i for i in range(1, total + 1) if not is_expired(i, expired, live)]
        self.waits: list[float] = []
        self.revived: set[str] = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        now = self.storage.now()
        session = SessionData("", "user", expires_at=now + timedelta(days=1), data={"n": 1})
        rng = random.Random(7)
        try:
            while not self._stop.is_set():
                revive = len(self.waits) % 2 == 1
                number = rng.choice(self.expired_ids if revive else self.live_ids)
                start = time.perf_counter()
                self.storage.store_session(key(number), session)
                self.waits.append(time.perf_counter() - start)
                if revive:
                    self.revived.add(key(number))
        except BaseException as exc:  # reported by the benchmark, not lost in the thread
            self.error = exc


def _authkit_cleanup(url: str, expired: int, live: int, statements: list[float],
                     waits: list[float] | None = None) -> float:
    """Seconds of one ``cleanup_expired()`` on freshly filled tables.

    The time of each statement the cleanup runs goes into ``statements``.  With
    ``waits``, a writer runs beside the cleanup (see ``_Writer``) and the times of
    its calls go there.
    """
    with sql_storage(url) as storage:
        _fill_sessions(storage, expired, live)
        writer = _Writer(storage, expired, live)
        cleaner = threading.get_ident()
        original = storage._run

        def timed(work: Any, **options: Any) -> Any:
            if threading.get_ident() != cleaner:  # the writer's calls are timed by the writer
                return original(work, **options)
            return original(lambda cursor: work(_TimedCursor(cursor, statements)), **options)

        storage._run = timed  # type: ignore[method-assign]
        with writer if waits is not None else nullcontext():
            start = time.perf_counter()
            report = storage.cleanup_expired()
            elapsed = time.perf_counter() - start
        storage._run = original  # type: ignore[method-assign]
        if writer.error is not None:
            raise writer.error
        if waits is not None:
            waits.extend(writer.waits)
        # Every session the writer made live again survived the cleanup.
        assert all(storage.get_session(sid) is not None for sid in writer.revived)
        assert expired - len(writer.revived) <= report.sessions <= expired, report
        assert storage.count_active_sessions() == live + len(writer.revived)
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
    waits: list[float] = []
    ours: list[float] = []
    theirs: list[float] = []
    for round_ in range(rounds):  # alternating, who goes first too
        sides = [lambda: ours.append(_authkit_cleanup(url, expired, expired, statements)),
                 lambda: theirs.append(_django_cleanup(url, expired, expired))]
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            side()
    ratio_row(table, f"cleanup_expired: {expired:,} expired + {expired:,} live sessions", ours, theirs,
              "<= 2x Django clearsessions")
    ordered = sorted(statements)
    table.note("  statements (= round trips) per run; longest, 95th pct",
               f"{len(statements) // rounds}; {ordered[-1] * 1000:,.1f} ms, "
               f"{ordered[int(len(ordered) * 0.95)] * 1000:,.1f} ms", "<= 50 ms")
    # One more run with a writer beside it (apart: the writer's load would tilt the ratio).
    _authkit_cleanup(url, expired, expired, [], waits)
    waits.sort()
    table.note("  a writer beside it: calls; longest, 99th pct, median wait",
               f"{len(waits)}; {waits[-1] * 1000:,.1f} ms, {waits[int(len(waits) * 0.99)] * 1000:,.1f} ms, "
               f"{statistics.median(waits) * 1000:,.1f} ms", "<= 50 ms")


def run(quick: bool) -> None:
    expired = 10_000 if quick else 200_000
    rounds = 1 if quick else 5
    for title, url in (("PostgreSQL", POSTGRES_URL), ("MariaDB", MYSQL_URL)):
        if not reachable(url):
            print(f"\n## cleanup_expired on {title}: SKIPPED, server not reachable")
            continue
        table = Table(f"cleanup_expired on {title} (baseline: Django's clearsessions, same rows)")
        _cleanup(table, url, expired, rounds)
        table.print()
