"""The fleet-wide request budget: never over, never starved, nothing sent when spent."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from authkit import open_storage
from authkit.errors import RequestLimitError, StorageUnavailableError
from authkit.salesforce import RequestBudget, SalesforceClient, StaticTokenAuth
from authkit.storage import AuthStorage
from authkit.storage.memory import MemoryStorage
from authkit.testing import FakeSalesforce
from tests.backends import drop_redis_keys
from tests.services import POSTGRES_URL, REDIS_URL, require, unique_prefix
from tests.threads import run_threads


class _Frozen:
    """A clock that moves only when told to; ``sleep`` moves it (the budget's only way to wait)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
        self.slept: list[float] = []
        self._mutex = threading.Lock()

    def __call__(self) -> datetime:
        with self._mutex:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._mutex:
            self.slept.append(seconds)
            self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> _Frozen:
    return _Frozen()


@pytest.fixture
def store(clock: _Frozen) -> Iterator[MemoryStorage]:
    with MemoryStorage(clock=clock) as storage:
        yield storage


def _spend(budget: RequestBudget) -> None:
    with budget.acquire():
        pass


def test_limit_per_window_then_refused_without_waiting(store: MemoryStorage, clock: _Frozen) -> None:
    budget = RequestBudget(store, limit=3, window=60)
    for _ in range(3):
        _spend(budget)
    assert budget.used() == 3
    with pytest.raises(RequestLimitError) as caught:
        _spend(budget)
    assert caught.value.status_code == 429 and caught.value.error_code == "BUDGET_EXCEEDED"
    assert clock.slept == []
    clock.sleep(60)  # the next window: room again
    assert budget.used() == 0
    _spend(budget)


def test_waits_for_the_next_window_when_the_wait_allows(store: MemoryStorage, clock: _Frozen) -> None:
    budget = RequestBudget(store, limit=2, window=timedelta(seconds=10), wait=8, sleep=clock.sleep)
    clock.now += timedelta(seconds=4)  # 6 s left in this window
    for _ in range(4):
        _spend(budget)
    assert [round(s) for s in clock.slept] == [6]  # the third call waited for the next window
    with pytest.raises(RequestLimitError):  # the window after that starts 10 s ahead: past the wait
        _spend(budget)
    assert [round(s) for s in clock.slept] == [6]
    patient = RequestBudget(store, limit=2, window=timedelta(seconds=10), wait=25, sleep=clock.sleep)
    _spend(patient)
    assert [round(s) for s in clock.slept] == [6, 10]


def test_does_not_sleep_when_the_next_window_is_past_the_wait(store: MemoryStorage, clock: _Frozen) -> None:
    budget = RequestBudget(store, limit=1, window=3600, wait=30, sleep=clock.sleep)
    _spend(budget)
    with pytest.raises(RequestLimitError):
        _spend(budget)
    assert clock.slept == []


def test_budgets_with_other_names_are_separate(store: MemoryStorage) -> None:
    first = RequestBudget(store, limit=1, name="org-a")
    second = RequestBudget(store, limit=1, name="org-b")
    _spend(first)
    _spend(second)
    with pytest.raises(RequestLimitError):
        _spend(first)


def test_concurrency_cap_and_a_crashed_holders_slot_frees_itself(store: MemoryStorage, clock: _Frozen) -> None:
    budget = RequestBudget(store, limit=100, max_concurrent=2, wait=1, lease_ttl=30, sleep=clock.sleep)
    with budget.acquire(), budget.acquire():
        with pytest.raises(RequestLimitError, match="2 concurrent"):
            _spend(budget)
    _spend(budget)  # both slots were given back
    # A holder that dies inside its request never releases: its lease expires after lease_ttl.
    crashed = budget.acquire()
    crashed.__enter__()
    other = budget.acquire()
    other.__enter__()
    with pytest.raises(RequestLimitError):
        _spend(budget)
    clock.sleep(31)
    _spend(budget)
    assert not [key for key in store.list_kv_keys("authkit:budget:salesforce:slot:")
                if store.get_kv(key) is None]


def test_an_overrun_lease_does_not_release_the_next_holders_slot(store: MemoryStorage, clock: _Frozen) -> None:
    budget = RequestBudget(store, limit=100, max_concurrent=1, lease_ttl=10, sleep=clock.sleep)
    with budget.acquire():
        clock.sleep(11)  # this request overran its lease: the slot is free for another process
        late = budget.acquire()
        late.__enter__()
    # Leaving the overrun request did not free the slot the late one holds.
    with pytest.raises(RequestLimitError):
        _spend(budget)
    late.__exit__(None, None, None)
    _spend(budget)


def test_threads_never_exceed_the_limit_or_the_cap(store: MemoryStorage) -> None:
    budget = RequestBudget(store, limit=50, window=3600, max_concurrent=3, wait=30)
    in_flight = 0
    peak = 0
    granted = 0
    refused = 0
    mutex = threading.Lock()

    def work(_: int) -> None:
        nonlocal in_flight, peak, granted, refused
        for _ in range(10):
            try:
                with budget.acquire():
                    with mutex:
                        in_flight += 1
                        peak = max(peak, in_flight)
                        granted += 1
                    time.sleep(0.001)  # a request takes time, so the threads overlap
                    with mutex:
                        in_flight -= 1
            except RequestLimitError:
                with mutex:
                    refused += 1

    run_threads(work, 8)
    assert (granted, refused) == (50, 30)
    assert 1 <= peak <= 3


def test_a_storage_failure_sends_nothing(clock: _Frozen) -> None:
    class Down(MemoryStorage):
        def incr_kv(self, *args: Any, **kwargs: Any) -> int:
            raise StorageUnavailableError("down")

    with FakeSalesforce() as org, Down(clock=clock) as down:
        token = org.password_auth().access_token()
        sf = SalesforceClient(StaticTokenAuth(token, org.instance_url), budget=RequestBudget(down, limit=5))
        with pytest.raises(StorageUnavailableError):
            sf.get("limits")
        assert org.api_requests == 0


def test_the_client_sends_nothing_once_spent(clock: _Frozen, store: MemoryStorage) -> None:
    with FakeSalesforce() as org:
        token = org.password_auth().access_token()
        budget = RequestBudget(store, limit=2, window=60)
        with SalesforceClient(StaticTokenAuth(token, org.instance_url), budget=budget) as sf:
            sf.get("limits")
            sf.get("limits")
            with pytest.raises(RequestLimitError, match="nothing was sent"):
                sf.get("limits")
        assert org.api_requests == 2


def test_bad_arguments(store: MemoryStorage) -> None:
    with pytest.raises(TypeError):
        RequestBudget(object(), limit=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RequestBudget(store, limit=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RequestBudget(store, limit=0)
    with pytest.raises(ValueError):
        RequestBudget(store, limit=1, window=0)
    with pytest.raises(ValueError):
        RequestBudget(store, limit=1, max_concurrent=0)
    with pytest.raises(ValueError):
        RequestBudget(store, limit=1, wait=-1)
    with pytest.raises(ValueError):
        RequestBudget(store, limit=1, name="")
    with pytest.raises(TypeError):
        SalesforceClient(StaticTokenAuth("x", "https://x.my.salesforce.com"), budget=object())  # type: ignore[arg-type]


# -- 4 processes x 8 threads on a real server ---------------------------------------------

_PHASES = {
    # name: (limit, window, max_concurrent, wait, calls per thread)
    "spent": (40, 3600.0, None, 0.0, 3),      # 96 attempts, exactly 40 sent, 56 refused
    "capped": (10_000, 3600.0, 3, 120.0, 3),  # all 96 sent, never more than 3 at once
    "windows": (24, 0.5, None, 120.0, 2),     # 64 calls over >= 3 windows: every one eventually sent
}


def _budget_worker(url: str, prefix: str, instance_url: str, token: str, barrier: Any, results: Any) -> None:
    try:
        with open_storage(url, prefix=prefix, create_schema=False) as store:
            report: dict[str, tuple[int, int]] = {}
            for phase, (limit, window, cap, wait, calls) in _PHASES.items():
                budget = RequestBudget(store, limit=limit, window=window, max_concurrent=cap, wait=wait, name=phase)
                sf = SalesforceClient(StaticTokenAuth(token, instance_url), budget=budget, retries=0)
                counts = [0, 0]
                mutex = threading.Lock()

                def work(_: int, sf: SalesforceClient = sf, counts: list[int] = counts,
                         mutex: threading.Lock = mutex, calls: int = calls, phase: str = phase) -> None:
                    for _ in range(calls):
                        try:
                            sf.get("limits", params={"phase": phase})
                            outcome = 0
                        except RequestLimitError:
                            outcome = 1
                        with mutex:
                            counts[outcome] += 1

                barrier.wait(60)
                run_threads(work, 8)
                sf.close()
                report[phase] = (counts[0], counts[1])
            results.put(report)
    except Exception as exc:  # report instead of dying silently
        results.put({"failed": repr(exc)})


@contextmanager
def _shared_store(kind: str) -> Iterator[tuple[str, str]]:
    prefix = unique_prefix("bg")
    if kind == "redis":
        pytest.importorskip("redis")
        url = require(REDIS_URL, "Redis")
        prefix = prefix.rstrip("_") + ":"
    else:
        pytest.importorskip("psycopg")
        url = require(POSTGRES_URL, "PostgreSQL")
    storage: AuthStorage = open_storage(url, prefix=prefix)
    try:
        yield url, prefix
    finally:
        try:
            for key in storage.list_kv_keys("authkit:budget:"):
                storage.delete_kv(key)
            drop = getattr(storage, "drop_schema", None)
            if drop is not None:
                drop()
            else:  # Redis: its schema marker and kv index stay unless deleted
                drop_redis_keys(storage._client, prefix)  # type: ignore[attr-defined]
        finally:
            storage.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_four_processes_never_over_never_starved(kind: str) -> None:
    with _shared_store(kind) as (url, prefix), FakeSalesforce() as org:
        assert org.rest is not None
        token = org.password_auth().access_token()
        # Count what reaches the org, per phase, and how many requests it holds at once.
        seen: dict[str, int] = {}
        in_flight = {"now": 0, "peak": 0}
        mutex = threading.Lock()
        handle = org.rest.handle

        def counting(method: str, path: str, query: dict[str, list[str]], *args: Any) -> Any:
            phase = query.get("phase", ["?"])[0]
            with mutex:
                seen[phase] = seen.get(phase, 0) + 1
                in_flight["now"] += 1
                if phase == "capped":
                    in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
            try:
                time.sleep(0.005)  # a request takes time, so concurrent ones overlap at the server
                return handle(method, path, query, *args)
            finally:
                with mutex:
                    in_flight["now"] -= 1

        org.rest.handle = counting  # type: ignore[method-assign]
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(4)
        results = ctx.Queue()
        processes = [ctx.Process(target=_budget_worker, args=(url, prefix, org.instance_url, token, barrier, results))
                     for _ in range(4)]
        for process in processes:
            process.start()
        try:
            reports = [results.get(timeout=240) for _ in processes]
        finally:
            for process in processes:
                process.join(30)
                if process.is_alive():
                    process.kill()
        assert all("failed" not in r for r in reports), reports
        totals = {phase: tuple(sum(r[phase][i] for r in reports) for i in range(2)) for phase in _PHASES}
        assert totals["spent"] == (40, 56) and seen["spent"] == 40  # never over
        assert totals["capped"] == (96, 0) and seen["capped"] == 96  # never starved
        assert 1 <= in_flight["peak"] <= 3
        assert totals["windows"] == (64, 0) and seen["windows"] == 64


# -- fairness: waiters are served in the order they were refused ---------------------------

class _Turns:
    """A clock the test moves; ``sleep`` blocks (bounded) until the clock has passed its end."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)  # a window boundary
        self.sleeping = 0
        self.served: dict[int, datetime] = {}
        self.cond = threading.Condition()

    def __call__(self) -> datetime:
        with self.cond:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.cond:
            until = self.now + timedelta(seconds=seconds)
            self.sleeping += 1
            self.cond.notify_all()
            try:
                assert self.cond.wait_for(lambda: self.now >= until, timeout=30), "never woken"
            finally:
                self.sleeping -= 1

    def until(self, condition: Callable[[], bool]) -> None:
        with self.cond:
            assert self.cond.wait_for(condition, timeout=30), "the threads never got there"

    def advance(self, seconds: float) -> None:
        with self.cond:
            self.now += timedelta(seconds=seconds)
            self.cond.notify_all()


def test_waiters_are_served_in_order_and_newcomers_queue_behind_them() -> None:
    turns = _Turns()
    start = turns.now
    with MemoryStorage(clock=turns) as store:
        budget = RequestBudget(store, limit=2, window=10, wait=100, sleep=turns.sleep)

        def call(n: int) -> None:
            with budget.acquire() as window:
                with turns.cond:
                    turns.served[n] = window
                    turns.cond.notify_all()

        threads: list[threading.Thread] = []

        def arrive(n: int) -> None:
            # Strictly one after the other: each is served or asleep before the next one calls.
            thread = threading.Thread(target=call, args=(n,), daemon=True)
            threads.append(thread)
            thread.start()
            turns.until(lambda: len(turns.served) + turns.sleeping == len(threads))

        for n in range(8):
            arrive(n)
        assert sorted(turns.served) == [0, 1] and turns.sleeping == 6
        turns.advance(10.01)  # window 1: the two who were refused first, and only they
        turns.until(lambda: len(turns.served) == 4)
        arrive(8)  # a newcomer in window 1 queues behind every earlier waiter
        for served in (6, 8, 9):
            turns.advance(10)
            turns.until(lambda served=served: len(turns.served) == served)
        for thread in threads:
            thread.join(30)
        windows = {n: round((at - start).total_seconds() / 10) for n, at in turns.served.items()}
        assert windows == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2, 6: 3, 7: 3, 8: 4}


def test_a_late_increment_never_grants_in_a_window_that_is_over(clock: _Frozen) -> None:
    """A call whose ``incr_kv`` reaches the store after its window's counter expired (a slow
    round trip, a server restart) would restart that counter and be granted in a window that is
    over, on top of the current window's limit."""

    class Slow(MemoryStorage):
        delay = 0.0

        def incr_kv(self, key: str, amount: int = 1, ttl: Any = None) -> int:
            clock.sleep(self.delay)  # the statement runs this much later than it was sent
            self.delay = 0.0
            return super().incr_kv(key, amount, ttl)

    with Slow(clock=clock) as store:
        budget = RequestBudget(store, limit=1, window=10)
        windows = []
        with budget.acquire() as window:  # window 0
            windows.append(window)
        clock.sleep(5)
        store.delay = 20  # sent in window 0, runs in window 2, after window 0's counter expired
        with budget.acquire() as window:
            windows.append(window)
        with pytest.raises(RequestLimitError):  # window 2's one request is the late one
            _spend(budget)
        assert [round((w - windows[0]).total_seconds()) for w in windows] == [0, 20]
