"""What a fleet-wide ``RequestBudget`` costs per Salesforce request.

The same ``GET limits`` against a local ``FakeSalesforce``, by a client without a budget (the
baseline) and by one whose budget lives in Redis or PostgreSQL (one ``incr_kv`` per request),
and with a concurrency cap too (an ``add_kv`` slot taken and given back: three more round trips).
Alternating batches in one run; each side's rate over its fastest half of the batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from authkit import open_storage
from authkit.salesforce import RequestBudget, SalesforceClient, StaticTokenAuth
from authkit.storage import AuthStorage
from authkit.testing import FakeSalesforce
from benchmarks.harness import Table

_STORES = {
    "redis": "redis://127.0.0.1:6379/0",
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
}


def _interleaved(ours: Callable[[], object], base: Callable[[], object], rounds: int, batch: int = 20
                 ) -> tuple[float, float, float]:
    """Rates of ``ours`` and ``base`` (fastest half of alternating batches) and the spread of per-round ratios."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, out in ((base, times[1]), (ours, times[0])):
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            out.append(time.perf_counter() - start)
    ratios = sorted(o / b for o, b in zip(times[0], times[1], strict=True))
    spread = ratios[len(ratios) * 3 // 4] - ratios[len(ratios) // 4]
    rates = []
    for out in times:
        best = sorted(out)[: max(len(out) // 2, 1)]
        rates.append(batch * len(best) / sum(best))
    return rates[0], rates[1], spread


@contextmanager
def _store(url: str) -> Iterator[AuthStorage | None]:
    try:
        storage = open_storage(url, prefix="akbench_budget_" if url.startswith("postgresql") else "akbench:budget:")
    except Exception as exc:  # a service that is down: say so, skip its rows
        print(f"  ({url.split('://')[0]} unavailable: {type(exc).__name__})")
        yield None
        return
    try:
        yield storage
    finally:
        for key in storage.list_kv_keys("authkit:budget:"):
            storage.delete_kv(key)
        drop = getattr(storage, "drop_schema", None)
        if drop is not None:
            drop()
        storage.close()


def run(quick: bool) -> None:
    rounds = 4 if quick else 20
    table = Table("RequestBudget: GET limits with a budget in the store vs without (ratio = time with / without)")
    with FakeSalesforce() as org:
        auth = StaticTokenAuth(org.password_auth().access_token(), org.instance_url)
        plain = SalesforceClient(auth)
        for kind, url in _STORES.items():
            with _store(url) as storage:
                if storage is None:
                    continue
                for label, cap in (("limit", None), ("limit + max_concurrent", 20)):
                    budget = RequestBudget(storage, limit=10**9, window=3600, max_concurrent=cap, name=f"b{cap}")
                    with SalesforceClient(auth, budget=budget) as client:
                        ours, base, spread = _interleaved(lambda c=client: c.get("limits"),
                                                          lambda: plain.get("limits"), rounds)
                    table.rate(f"{kind}: {label}", ours, base, f"spread of round ratios {spread:.2f}")
        plain.close()
    table.print()


if __name__ == "__main__":
    run(False)
