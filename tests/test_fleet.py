"""A small fleet on real servers the test starts: Redis behind Sentinel, PostgreSQL behind PgBouncer.

4 processes x 4 threads do mixed work — sessions created through PgBouncer, kv counters on the
Sentinel-managed Redis, Salesforce calls sharing one token (JwtAuth with a PostgreSQL token
store) under a fleet request budget — and the Redis master is killed mid-run. Checked: no
session acknowledged through PgBouncer is lost; every Redis counter increment acknowledged and
WAITed for before the kill survives it; one token mint for the whole fleet; the budget is never
exceeded. Prints throughput and each process's Redis error window (``pytest -s``).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis")
pytest.importorskip("psycopg")

import redis

from authkit import open_storage
from authkit.errors import StorageUnavailableError
from authkit.models import SessionData
from authkit.salesforce import JwtAuth, RequestBudget, SalesforceClient
from authkit.testing import FakeSalesforce
from tests.local_servers import PGBOUNCER_OPTIONS, pgbouncer, redis_sentinel_set, wait_until_ready
from tests.services import POSTGRES_URL, require, unique_prefix
from tests.threads import run_threads

PROCESSES = 4
THREADS = 4
PER_PHASE = 10  # operations of each kind per thread, before and after the kill
BUDGET = 300    # Salesforce calls allowed for the whole fleet: fewer than it attempts (4 x 4 x 20 = 320)


def _fleet_worker(urls: dict[str, str], prefixes: dict[str, str], sf: dict[str, str], n: int,
                  barrier: Any, killed: Any, results: Any) -> None:
    try:
        sessions = open_storage(urls["bouncer"], prefix=prefixes["sql"], create_schema=False, **PGBOUNCER_OPTIONS)
        cache = open_storage(urls["sentinel"], prefix=prefixes["redis"], socket_timeout=1.0,
                             socket_connect_timeout=1.0)
        tokens = open_storage(urls["postgres"], prefix=prefixes["tokens"], create_schema=False)
        auth = JwtAuth(sf["client_id"], sf["username"], sf["key"], login_url=sf["login_url"], token_store=tokens)
        budget = RequestBudget(tokens, limit=BUDGET, window=3600)
        client = SalesforceClient(auth, budget=budget, retries=0)
        acked_sessions: list[str] = []
        counts = {"incr_acked": 0, "sf_ok": 0, "sf_refused": 0, "redis_errors": 0, "ops": 0}
        error_span: list[float] = []
        mutex = threading.Lock()

        def phase(tag: str) -> None:
            def work(t: int) -> None:
                for i in range(PER_PHASE):
                    sid = f"p{n}t{t}{tag}{i}"
                    assert sessions.create_session(sid, SessionData(sid, f"user{t}"))
                    while True:  # a Redis call retried through the failover: errors are StorageUnavailable only
                        try:
                            cache.incr_kv("hits")
                            break
                        except StorageUnavailableError:
                            with mutex:
                                counts["redis_errors"] += 1
                                error_span.append(time.monotonic())
                            time.sleep(0.05)
                    try:
                        client.get("limits")
                        ok = "sf_ok"
                    except Exception as exc:  # only the budget may refuse
                        assert type(exc).__name__ == "RequestLimitError", repr(exc)
                        ok = "sf_refused"
                    with mutex:
                        acked_sessions.append(sid)
                        counts["incr_acked"] += 1
                        counts[ok] += 1
                        counts["ops"] += 3

            run_threads(work, THREADS, timeout=300)

        barrier.wait(120)
        started = time.monotonic()
        phase("a")
        results.put(("phase-a-done", n, counts["incr_acked"]))
        if not killed.wait(120):
            raise TimeoutError("the parent never killed the master")
        phase("b")
        elapsed = time.monotonic() - started
        window = (error_span[-1] - error_span[0]) if error_span else 0.0
        results.put(("done", n, {**counts, "sessions": acked_sessions, "elapsed": elapsed, "window": window}))
        client.close()
        for storage in (sessions, cache, tokens):
            storage.close()
    except BaseException as exc:  # report instead of dying silently
        results.put(("failed", n, repr(exc)))


@pytest.mark.slow
def test_fleet_through_a_redis_failover(tmp_path: Path) -> None:
    postgres = require(POSTGRES_URL, "PostgreSQL")
    with redis_sentinel_set(tmp_path, 16920) as servers, pgbouncer(16970) as bouncer, FakeSalesforce() as org:
        wait_until_ready(servers)
        prefixes = {"sql": unique_prefix("fs"), "tokens": unique_prefix("ft"),
                    "redis": unique_prefix("fr").rstrip("_") + ":"}
        urls = {"bouncer": bouncer, "sentinel": servers.url, "postgres": postgres}
        sql_store = open_storage(bouncer, prefix=prefixes["sql"], **PGBOUNCER_OPTIONS)
        token_store = open_storage(postgres, prefix=prefixes["tokens"])
        app = org.register_jwt_app(org.default_user.username)
        assert app.private_key_pem is not None
        sf = {"client_id": app.client_id, "username": org.default_user.username, "key": app.private_key_pem,
              "login_url": org.login_url}
        ctx = multiprocessing.get_context("spawn")
        barrier, killed, results = ctx.Barrier(PROCESSES), ctx.Event(), ctx.Queue()
        processes = [ctx.Process(target=_fleet_worker, args=(urls, prefixes, sf, n, barrier, killed, results))
                     for n in range(PROCESSES)]
        master = redis.Redis(port=servers.master_port)
        try:
            for process in processes:
                process.start()
            early = [results.get(timeout=300) for _ in processes]
            assert all(r[0] == "phase-a-done" for r in early), early
            acked_before = sum(r[2] for r in early)
            assert master.wait(1, 5000) == 1  # every increment so far is on the replica
            servers.servers.kill("master")
            killed.set()
            done = [results.get(timeout=300) for _ in processes]
        finally:
            killed.set()
            for process in processes:
                process.join(30)
                if process.is_alive():
                    process.kill()
            master.close()
        try:
            assert all(r[0] == "done" for r in done), done
            reports = [r[2] for r in done]
            acked = [sid for r in reports for sid in r["sessions"]]
            assert len(acked) == PROCESSES * THREADS * PER_PHASE * 2
            assert all(sql_store.get_session(sid) is not None for sid in acked)  # nothing acknowledged lost
            cache = open_storage(servers.url, prefix=prefixes["redis"])
            try:
                hits = int(cache.get_kv("hits") or b"0")
            finally:
                cache.close()
            assert hits >= acked_before  # WAITed increments survived the failover
            assert org.token_requests == 1  # one mint for the fleet
            sent = sum(r["sf_ok"] for r in reports)
            assert sent == BUDGET and org.api_requests == BUDGET  # never over the budget
            ops = sum(r["ops"] for r in reports)
            elapsed = max(r["elapsed"] for r in reports)
            windows = ", ".join(f"{r['window']:.2f}s" for r in reports)
            print(f"\nfleet: {PROCESSES}x{THREADS}, {ops} ops in {elapsed:.1f}s ({ops / elapsed:.0f} ops/s), "
                  f"Redis error window per process: {windows}; increments acked {sum(r['incr_acked'] for r in reports)}"
                  f", counter after failover {hits}; Salesforce sent {sent}, refused "
                  f"{sum(r['sf_refused'] for r in reports)}; token mints {org.token_requests}")
        finally:
            drop = getattr(sql_store, "drop_schema", None)
            if drop is not None:
                drop()
            sql_store.close()
            drop = getattr(token_store, "drop_schema", None)
            if drop is not None:
                drop()
            token_store.close()
