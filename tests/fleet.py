"""The measured fleet: processes x threads of mixed work on real servers, with faults mid-run.

One run, shared by ``tests/test_fleet.py`` (8 x 8, checked) and ``benchmarks/bench_fleet.py``
(printed)::

    report = run_fleet(FleetPlan(processes=8, threads=8), tmp_path)
    report.check()              # the promises below, as assertions
    print(report.table())

The servers (started here, on spare ports, never the shared ones): a Redis master, a replica and
three sentinels; a private PostgreSQL cluster (``initdb``; ports from ``tests/ports.py``)
behind a PgBouncer in transaction pooling mode; a ``FakeSalesforce``.  Every worker thread loops
over: create a session, save its own session, read it, read a token, two ``incr_kv`` counters on
the Sentinel-managed Redis, a short-lived session (for the cron to clean) and a Salesforce call
sharing one JWT token through the token store (PostgreSQL behind PgBouncer) under a fleet-wide
``RequestBudget``.  A "cron" process runs ``run_cleanup`` on every store in a loop.

Faults, one after the other, each once the fleet has made progress since the last one:
the org expires its sessions (token expiry 1); the Redis master is SIGKILLed just after a
``WAIT`` fence; PostgreSQL restarts in ``immediate`` mode (a crash: recovery from WAL);
the org expires its sessions again (token expiry 2).

What is checked (:meth:`FleetReport.check`), and the configuration that promises it:

- PostgreSQL, committed: every session create and save a worker saw return is there afterwards
  (the private cluster runs ``fsync=off``: an ``immediate`` restart is not an OS crash, so the
  WAL in the page cache is recovered).  Nothing cleanup must not delete was deleted.
- Redis, asynchronous replication: only what a ``WAIT 1`` fence covered is promised.  Every
  increment acknowledged before the fence survives the failover; increments acknowledged between
  the fence and the kill are counted and reported (Redis promises nothing for them).
- Exactly one Salesforce mint for the start and one per expiry, for the whole fleet.
- The budget: at most ``limit`` requests granted in any window, every grant reached the org, at
  most ``max_concurrent`` at the org at once.
"""

from __future__ import annotations

import itertools
import multiprocessing
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import redis

from authkit import open_storage
from authkit.errors import RequestLimitError, StorageError, StorageUnavailableError
from authkit.maintenance import run_cleanup
from authkit.models import AuthToken, SessionData
from authkit.salesforce import JwtAuth, RequestBudget, SalesforceClient
from authkit.storage import AuthStorage
from authkit.testing import FakeSalesforce
from tests.local_servers import SentinelSet, pgbouncer, redis_sentinel_set, wait_until_ready
from tests.private_servers import PrivatePostgres, private_server
from tests.services import unique_prefix

#: What each worker thread does, in turn.
OPS = ("create", "save", "read_session", "read_token", "incr", "salesforce", "short", "incr")
#: Which store each operation needs (its errors are counted there).
BACKEND = {"create": "postgresql", "save": "postgresql", "read_session": "postgresql", "read_token": "postgresql",
           "short": "postgresql", "incr": "redis", "salesforce": "salesforce"}
_KINDS = ("postgresql", "redis", "salesforce")
#: PgBouncer retries a failed server login after this long (its default, 15 s, would be the error
#: window after a PostgreSQL restart).
BOUNCER_SETTINGS = {"server_login_retry": "1", "query_wait_timeout": "10"}
FAULTS = ("token-expiry-1", "redis-master-killed", "postgresql-restarted", "token-expiry-2")
_RETRY_PAUSE = 0.05  # a worker's pause before retrying a call that failed (a client's backoff)


@dataclass(frozen=True)
class FleetPlan:
    processes: int = 8
    threads: int = 8
    progress: int = 100          # operations of each kind the fleet makes before, between and after faults
    budget_limit: int = 20       # Salesforce requests per window for the whole fleet...
    budget_window: float = 0.5   # ...of this many seconds: fewer than the fleet attempts
    budget_wait: float = 0.5     # a waiter may be served in the next window, no later
    max_concurrent: int = 12
    timeout: float = 5.0         # each store's bound on a call
    deadline: float = 240.0      # the whole run, faults included, or it fails
    faults: bool = True          # False: the same work with nothing injected (the benchmark's baseline)


@dataclass
class FleetReport:
    plan: FleetPlan
    elapsed: float = 0.0
    setup: dict[str, float] = field(default_factory=dict)            # wall time of the parts around the run
    ops: Counter[str] = field(default_factory=Counter)
    errors: dict[str, list[float]] = field(default_factory=dict)      # kind -> [first, last] error time
    error_types: Counter[str] = field(default_factory=Counter)
    faults: dict[str, float] = field(default_factory=dict)            # fault -> monotonic time it began
    wall_faults: dict[str, float] = field(default_factory=dict)       # fault -> time.time() it began
    injected: dict[str, float] = field(default_factory=dict)          # fault -> seconds injecting it took
    mints: list[int] = field(default_factory=list)                    # token requests after start, expiry 1, 2
    sessions_acked: int = 0
    sessions_missing: int = 0
    saves_behind: int = 0
    increments_fenced: int = 0
    fenced_lost: int = 0
    unfenced_acked: int = 0
    unfenced_lost: int = 0
    grants: Counter[int] = field(default_factory=Counter)            # window index -> requests granted
    arrivals: Counter[int] = field(default_factory=Counter)          # window index -> requests the org got
    sent_to_org: int = 0
    refused: int = 0
    org_peak_in_flight: int = 0
    cleanup: Counter[str] = field(default_factory=Counter)
    cleanup_runs: int = 0
    problems: list[str] = field(default_factory=list)                 # what a worker saw that it must not

    def error_window(self, kind: str) -> float:
        span = self.errors.get(kind)
        return span[1] - span[0] if span else 0.0

    def check(self) -> None:
        plan = self.plan
        assert not self.problems, self.problems[:5]
        assert self.sessions_acked > 0 and self.sessions_missing == 0, "an acknowledged session was lost"
        assert self.saves_behind == 0, "an acknowledged save was lost"
        assert self.increments_fenced > 0 and self.fenced_lost == 0, "an increment acknowledged before WAIT was lost"
        assert self.mints == [1, 1, 1], f"token mints at start, expiry 1, expiry 2: {self.mints}"
        over = {index: n for index, n in self.grants.items() if n > plan.budget_limit}
        assert not over, f"the budget was exceeded: {self._when(over)}"
        assert sum(self.grants.values()) == self.sent_to_org, (sum(self.grants.values()), self.sent_to_org)
        assert self.refused > 0, "the budget never refused: the run does not test it"
        assert 1 <= self.org_peak_in_flight <= plan.max_concurrent
        assert self.cleanup["sessions"] > 0 and self.cleanup_runs > 0
        assert self.errors.get("redis") and self.errors.get("postgresql"), "a fault caused no error: was it one?"

    def _when(self, windows: dict[int, int]) -> str:
        """Windows (index: count) with their start relative to each fault, for a failure message."""
        window = self.plan.budget_window
        return "; ".join(
            f"{n} in window {index} (" + ", ".join(f"{index * window - at:+.2f} s after {fault}"
                                                   for fault, at in self.wall_faults.items()) + ")"
            for index, n in sorted(windows.items()))

    def table(self) -> list[tuple[str, str]]:
        total = sum(self.ops.values())
        windows = sorted(self.grants.values())
        rows = [
            ("fleet", f"{self.plan.processes} processes x {self.plan.threads} threads, {self.elapsed:.1f} s"),
            ("throughput", f"{total / self.elapsed:,.0f} ops/s ({total:,} ops; faults included)"),
            *[(f"  {op}", f"{n / self.elapsed:,.0f}/s") for op, n in sorted(self.ops.items())],
        ]
        for kind in _KINDS:
            fault = {"redis": "redis-master-killed", "postgresql": "postgresql-restarted"}.get(kind)
            span, at = self.errors.get(kind), self.faults.get(fault or "")
            again = "" if span is None or at is None else (
                f"; errors from {span[0] - at:+.2f} to {span[1] - at:+.2f} s after {fault}"
                + (f" (the restart took {self.injected[fault]:.2f} s)" if fault == "postgresql-restarted" else ""))
            rows.append((f"error window: {kind}", f"{self.error_window(kind):.2f} s (first to last error){again}"))
        rows += [
            ("error types", ", ".join(f"{n} {name}" for name, n in self.error_types.most_common()) or "none"),
            ("token mints: start, expiry 1, expiry 2", ", ".join(map(str, self.mints))),
            ("sessions acknowledged / missing", f"{self.sessions_acked:,} / {self.sessions_missing}"),
            ("increments before the WAIT fence / lost", f"{self.increments_fenced:,} / {self.fenced_lost}"),
            ("increments after the fence, before the kill / lost",
             f"{self.unfenced_acked} / {self.unfenced_lost} (not promised)"),
            ("budget", f"limit {self.plan.budget_limit} per {self.plan.budget_window:g} s; peak {windows[-1]} in a "
                       f"window, median {statistics.median(windows):g} over {len(windows)} windows"),
            ("budget, at the org by arrival time", f"peak {max(self.arrivals.values())} in a window "
                                                   "(a request counts in the window it was granted in)"),
            ("Salesforce sent / refused by the budget", f"{self.sent_to_org:,} / {self.refused:,}"),
            ("at the org at once (cap)", f"{self.org_peak_in_flight} ({self.plan.max_concurrent})"),
            ("cron cleanup", f"{self.cleanup_runs} runs, deleted {dict(self.cleanup)}"),
            ("wall time around the run", ", ".join(f"{k} {v:.1f} s" for k, v in self.setup.items())),
        ]
        return rows


# -- servers ------------------------------------------------------------------------------

@dataclass
class _Servers:
    sentinels: SentinelSet
    postgres: PrivatePostgres
    bouncer: str


@contextmanager
def _servers(tmp: Path) -> Iterator[_Servers]:
    with redis_sentinel_set(tmp) as sentinels, private_server("postgresql") as postgres:
        assert isinstance(postgres, PrivatePostgres)
        with pgbouncer(upstream_url=postgres.url, settings=BOUNCER_SETTINGS) as bouncer:
            wait_until_ready(sentinels)
            yield _Servers(sentinels, postgres, bouncer)


# -- the worker processes -----------------------------------------------------------------

def _stores(where: dict[str, Any], timeout: float) -> tuple[AuthStorage, AuthStorage, AuthStorage]:
    sessions = open_storage(where["bouncer"], prefix=where["sql"], create_schema=False, timeout=timeout)
    tokens = open_storage(where["bouncer"], prefix=where["tokens"], create_schema=False, timeout=timeout)
    cache = open_storage(where["sentinel"], prefix=where["redis"], create_schema=False,
                         socket_timeout=1.0, socket_connect_timeout=1.0)
    return sessions, tokens, cache


class _Recorder:
    """What one process saw, under one mutex; shared counters the parent polls for progress."""

    def __init__(self, n: int, progress: Any) -> None:
        self.n = n
        self.progress = progress
        self.mutex = threading.Lock()
        self.ops: Counter[str] = Counter()
        self.errors: dict[str, list[float]] = {}
        self.error_types: Counter[str] = Counter()
        self.problems: list[str] = []
        self.grants: Counter[int] = Counter()
        self.refused = 0

    def done(self, op: str) -> None:
        with self.mutex:
            self.ops[op] += 1
        slot = (self.n * len(_KINDS) + _KINDS.index(BACKEND[op]))
        with self.progress.get_lock():
            self.progress[slot] += 1

    def failed(self, op: str, exc: BaseException) -> None:
        now = time.monotonic()
        if not isinstance(exc, StorageUnavailableError):  # a server that is away is the only excuse
            self.problem(f"{op}: {exc!r}")
        with self.mutex:
            span = self.errors.setdefault(BACKEND[op], [now, now])
            span[1] = now
            self.error_types[f"{op}: {type(exc).__name__}"] += 1

    def problem(self, what: str) -> None:
        with self.mutex:
            self.problems.append(what)


class _RecordingBudget(RequestBudget):
    """The budget, noting which window each granted request counted in."""

    recorder: _Recorder
    window_us: int

    @contextmanager
    def acquire(self) -> Iterator[datetime]:
        with super().acquire() as window:
            index = (window - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=self.window_us)
            with self.recorder.mutex:
                self.recorder.grants[index] += 1
            yield window


def _worker(plan: FleetPlan, where: dict[str, Any], n: int, barrier: Any, stop: Any, progress: Any,
            results: Any) -> None:
    try:
        sessions, tokens, cache = _stores(where, plan.timeout)
        recorder = _Recorder(n, progress)
        sf = where["salesforce"]
        auth = JwtAuth(sf["client_id"], sf["username"], sf["key"], login_url=sf["login_url"], token_store=tokens)
        budget = _RecordingBudget(tokens, limit=plan.budget_limit, window=plan.budget_window,
                                  max_concurrent=plan.max_concurrent, wait=plan.budget_wait, name="fleet")
        budget.recorder = recorder
        budget.window_us = round(plan.budget_window * 1_000_000)
        client = SalesforceClient(auth, budget=budget, retries=0)
        acked: list[str] = []
        saves: dict[str, int] = {}
        counters: dict[str, list[tuple[float, int]]] = {}

        def attempt(op: str, call: Callable[[], Any]) -> Any:
            """``call()`` until it succeeds: a store that is down is retried, as a client would."""
            while True:
                try:
                    result = call()
                except StorageError as exc:
                    recorder.failed(op, exc)
                    if stop.is_set():
                        raise
                    time.sleep(_RETRY_PAUSE)
                    continue
                recorder.done(op)
                return result

        for t in range(plan.threads):  # each thread's own session, saved again and again
            home = f"p{n}t{t}home"
            attempt("create", lambda home=home: sessions.create_session(home, SessionData(home, "u", data={"v": 0})))
            saves[home] = 0

        def work(t: int) -> None:
            home = f"p{n}t{t}home"
            counter = f"c:p{n}t{t}"
            token_id = f"tok-p{n}t{t}"
            counters[counter] = []
            i = 0
            while not stop.is_set():
                op = OPS[i % len(OPS)]
                i += 1
                now = datetime.now(timezone.utc)
                if op == "create":
                    sid = f"p{n}t{t}s{i}"
                    # False after a failed attempt: that attempt did store it (the id is this thread's alone).
                    attempt(op, lambda sid=sid, until=now + timedelta(hours=1): sessions.create_session(
                        sid, SessionData(sid, f"u{t}", expires_at=until)))
                    acked.append(sid)
                elif op == "save":
                    version = saves[home] + 1
                    if not attempt(op, lambda v=version: sessions.replace_session(
                            home, SessionData(home, f"u{t}", data={"v": v}))):
                        recorder.problem(f"save of {home}: no live session")
                    saves[home] = version
                elif op == "read_session":
                    found = attempt(op, lambda: sessions.get_session(home))
                    if found is None or found.data["v"] < saves[home]:
                        recorder.problem(f"read of {home}: {found!r} behind save {saves[home]}")
                elif op == "read_token":
                    token = attempt(op, lambda: tokens.get_token_by_access_token(f"access-{token_id}"))
                    if token is None or token.token_id != token_id:
                        recorder.problem(f"token {token_id} read as {token!r}")
                elif op == "incr":
                    value = attempt(op, lambda: cache.incr_kv(counter))
                    counters[counter].append((time.monotonic(), value))
                elif op == "short":
                    sid = f"p{n}t{t}x{i}"
                    attempt(op, lambda sid=sid, until=now + timedelta(milliseconds=300): sessions.create_session(
                        sid, SessionData(sid, f"u{t}", expires_at=until)))
                else:
                    try:
                        attempt(op, lambda: client.get("limits"))
                    except RequestLimitError:
                        with recorder.mutex:
                            recorder.refused += 1
                    except Exception as exc:  # anything else is a finding, not a crash
                        recorder.problem(f"salesforce: {exc!r}")

        threads = [threading.Thread(target=_guarded, args=(work, t, recorder), daemon=True)
                   for t in range(plan.threads)]
        barrier.wait(120)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(plan.deadline)
        if any(thread.is_alive() for thread in threads):
            recorder.problem("a worker thread never finished")
        results.put(("worker", n, {
            "ops": recorder.ops, "errors": recorder.errors, "error_types": recorder.error_types,
            "problems": recorder.problems, "grants": recorder.grants, "refused": recorder.refused,
            "acked": acked, "saves": saves, "counters": counters,
        }))
        client.close()
        for storage in (sessions, tokens, cache):
            storage.close()
    except BaseException as exc:  # report instead of dying silently
        results.put(("failed", n, repr(exc)))


def _guarded(work: Callable[[int], None], t: int, recorder: _Recorder) -> None:
    try:
        work(t)
    except BaseException as exc:  # reported, and the run fails on it
        recorder.problem(f"thread {t}: {exc!r}")


def _cron(where: dict[str, Any], barrier: Any, stop: Any, results: Any) -> None:
    """The "cron" process: ``run_cleanup`` on every store, again and again, until told to stop."""
    try:
        stores = _stores(where, 5.0)
        deleted: Counter[str] = Counter()
        runs = errors = 0
        barrier.wait(120)
        while not stop.wait(0.1):  # the cron's interval
            for storage in stores:
                try:
                    report = run_cleanup(storage)
                except StorageError:
                    errors += 1
                    continue
                if report is not None:
                    runs += 1
                    deleted.update(tokens=report.tokens, sessions=report.sessions, kv=report.kv)
        results.put(("cron", -1, {"deleted": deleted, "runs": runs, "errors": errors}))
        for storage in stores:
            storage.close()
    except BaseException as exc:  # report instead of dying silently
        results.put(("failed", -1, repr(exc)))


# -- the run ------------------------------------------------------------------------------

class _Progress:
    """The fleet's progress per store, from the counters the workers bump."""

    def __init__(self, shared: Any, processes: int) -> None:
        self.shared = shared
        self.processes = processes

    def of(self, kind: str) -> int:
        k = _KINDS.index(kind)
        with self.shared.get_lock():
            return sum(self.shared[n * len(_KINDS) + k] for n in range(self.processes))

    def wait(self, need: dict[str, int], deadline: float, what: str, extra: Callable[[], bool] = lambda: True) -> None:
        """Poll (bounded by ``deadline``) until each store made ``need[kind]`` more operations."""
        start = {kind: self.of(kind) for kind in need}
        while not (all(self.of(kind) - start[kind] >= n for kind, n in need.items()) and extra()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the fleet made no progress {what}: {({k: self.of(k) for k in need})}")
            time.sleep(0.02)


def run_fleet(plan: FleetPlan, tmp: Path) -> FleetReport:
    """Start the servers, run the fleet through the faults, stop everything; the report (unchecked)."""
    report = FleetReport(plan)
    begun = time.monotonic()
    with _servers(tmp) as servers, FakeSalesforce() as org:
        report.setup["servers"] = time.monotonic() - begun
        where = _prepare(plan, servers, org)
        in_flight, arrivals = _count_at_the_org(org, plan.budget_window)
        # Children forked from one server that imported this module once: 9 spawned interpreters
        # importing it each cost seconds of a shared 2-core machine.  (No effect if the fork server
        # is already running, then it is only slower.)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        barrier = ctx.Barrier(plan.processes + 2)  # the workers, the cron and this process
        stop = ctx.Event()
        shared = ctx.Array("q", plan.processes * len(_KINDS))
        results = ctx.Queue()
        processes = [ctx.Process(target=_worker, args=(plan, where, n, barrier, stop, shared, results))
                     for n in range(plan.processes)]
        processes.append(ctx.Process(target=_cron, args=(where, barrier, stop, results)))
        deadline = time.monotonic() + plan.deadline
        progress = _Progress(shared, plan.processes)
        # Salesforce calls are one in eight, and the budget holds them back: half as many of them.
        everything = {kind: plan.progress // 2 if kind == "salesforce" else plan.progress for kind in _KINDS}
        try:
            for process in processes:
                process.start()
            barrier.wait(plan.deadline)
            started = time.monotonic()
            report.setup["processes"] = started - begun - sum(report.setup.values())
            progress.wait(everything, deadline, "at the start")
            minted = [0]  # token requests before each expiry, then at the end
            for fault in FAULTS:
                if not plan.faults:  # the baseline: the same amount of work, nothing injected
                    progress.wait(everything, deadline, f"in place of {fault}")
                    continue
                before = org.token_requests
                if fault.startswith("token"):
                    minted.append(before)
                report.faults[fault] = time.monotonic()
                report.wall_faults[fault] = time.time()
                _inject(fault, servers, org, report)
                report.injected[fault] = time.monotonic() - report.faults[fault]
                kind = {"redis-master-killed": "redis", "postgresql-restarted": "postgresql"}.get(fault, "salesforce")
                progress.wait({kind: 1}, deadline, f"after {fault}")
                new_token = (lambda b=before: org.token_requests > b) if fault.startswith("token") else (lambda: True)
                progress.wait(everything, deadline, f"after {fault}", new_token)
            stop.set()
            report.elapsed = time.monotonic() - started
            finished = [results.get(timeout=max(1.0, deadline - time.monotonic()) + 30) for _ in processes]
        finally:
            stop.set()
            for process in processes:
                process.join(30)
                if process.is_alive():
                    process.kill()
        minted.append(org.token_requests)
        report.mints = [b - a for a, b in itertools.pairwise(minted)]
        report.sent_to_org = sum(1 for _, path, _ in org.requests_log if path.startswith("/services/data"))
        report.org_peak_in_flight = in_flight["peak"]
        report.arrivals = arrivals
        checked = time.monotonic()
        _collect(report, finished, where)
        report.setup["checks"] = time.monotonic() - checked
    report.setup["total"] = time.monotonic() - begun
    return report


def _prepare(plan: FleetPlan, servers: _Servers, org: FakeSalesforce) -> dict[str, Any]:
    """Schemas, the tokens workers read, and what each process needs to open the same stores."""
    where: dict[str, Any] = {
        "bouncer": servers.bouncer, "sentinel": servers.sentinels.url, "postgres": servers.postgres.url,
        "sql": unique_prefix("fs"), "tokens": unique_prefix("ft"), "redis": unique_prefix("fr").rstrip("_") + ":",
        "master_port": servers.sentinels.master_port,
    }
    for prefix in (where["sql"], where["tokens"]):  # create the schemas (directly: DDL needs no pooler)
        open_storage(servers.postgres.url, prefix=prefix).close()
    with open_storage(servers.postgres.url, prefix=where["tokens"], create_schema=False) as tokens:
        tokens.store_tokens_bulk([AuthToken(f"tok-p{n}t{t}", f"u{t}", f"access-tok-p{n}t{t}")
                                  for n in range(plan.processes) for t in range(plan.threads)])
    open_storage(servers.sentinels.url, prefix=where["redis"]).close()  # the marker key
    app = org.register_jwt_app(org.default_user.username)
    assert app.private_key_pem is not None
    where["salesforce"] = {"client_id": app.client_id, "username": org.default_user.username,
                           "key": app.private_key_pem, "login_url": org.login_url}
    return where


def _count_at_the_org(org: FakeSalesforce, window: float) -> tuple[dict[str, int], Counter[int]]:
    """Count the API requests the org serves at once (and the peak), and how many arrive per budget window."""
    counts = {"now": 0, "peak": 0}
    arrivals: Counter[int] = Counter()
    window_us = round(window * 1_000_000)
    mutex = threading.Lock()
    data = org._data

    def counting(*args: Any, **kwargs: Any) -> Any:
        with mutex:
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
            arrivals[time.time_ns() // 1000 // window_us] += 1
        try:
            return data(*args, **kwargs)
        finally:
            with mutex:
                counts["now"] -= 1

    org._data = counting  # type: ignore[method-assign]
    return counts, arrivals


def _inject(fault: str, servers: _Servers, org: FakeSalesforce, report: FleetReport) -> None:
    if fault.startswith("token-expiry"):
        org.expire_sessions()
    elif fault == "redis-master-killed":
        master = redis.Redis(port=servers.sentinels.master_port, socket_timeout=5)
        try:
            # A write of our own, then WAIT: every write acknowledged before it was sent is on the replica.
            report.faults["fence"] = time.monotonic()
            master.set("fleet:fence", "1")
            assert master.wait(1, 5000) == 1, "the replica did not acknowledge the fence"
        finally:
            master.close()
        servers.sentinels.servers.kill("master")
        report.faults[fault] = time.monotonic()
    else:
        servers.postgres.restart("immediate")


def _collect(report: FleetReport, finished: list[tuple[str, int, Any]], where: dict[str, Any]) -> None:
    failed = [f"{kind} {n}: {data}" for kind, n, data in finished if kind == "failed"]
    assert not failed, failed
    acked: list[str] = []
    saves: dict[str, int] = {}
    counters: dict[str, list[tuple[float, int]]] = {}
    for kind, _, data in finished:
        if kind == "cron":
            report.cleanup.update(data["deleted"])
            report.cleanup_runs = data["runs"]
            continue
        report.ops.update(data["ops"])
        report.error_types.update(data["error_types"])
        report.problems += data["problems"]
        report.grants.update(data["grants"])
        report.refused += data["refused"]
        for store, (first, last) in data["errors"].items():
            span = report.errors.setdefault(store, [first, last])
            span[0], span[1] = min(span[0], first), max(span[1], last)
        acked += data["acked"]
        saves.update(data["saves"])
        counters.update(data["counters"])
    with open_storage(where["postgres"], prefix=where["sql"], create_schema=False) as sessions:
        report.sessions_acked = len(acked)
        report.sessions_missing = sum(1 for sid in acked if sessions.get_session(sid) is None)
        report.saves_behind = sum(1 for sid, v in saves.items()
                                  if (s := sessions.get_session(sid)) is None or s.data["v"] < v)
    if "fence" not in report.faults:
        return
    fence, killed = report.faults["fence"], report.faults["redis-master-killed"]
    for values in counters.values():
        fenced = [v for at, v in values if at < fence]
        between = [v for at, v in values if fence <= at < killed]
        after = [v for at, v in values if at >= killed]
        report.increments_fenced += len(fenced)
        report.unfenced_acked += len(between)
        if not after:
            report.problems.append("a counter saw no increment after the failover")
            continue
        # The counter is this thread's alone: its first value after the failover says where the
        # promoted replica stood, and every acknowledged value above that is lost.
        stood = after[0] - 1
        report.fenced_lost += sum(1 for v in fenced if v > stood)
        report.unfenced_lost += sum(1 for v in between if v > stood)
