"""Bulk API 2.0: ``sf.bulk`` against simple-salesforce's Bulk 2.0 client, same fake org, same data.

The org (FakeSalesforce with its strict Bulk 2.0) runs in its own process, so the
client's memory is measured alone (``tracemalloc``) and the org's CPU is not the
client's.  Both clients load the same rows (``Item__c``: Name, Value__c) as dicts
and extract them back as dict rows; simple-salesforce's query pages are CSV text,
parsed with ``csv.DictReader`` as its users do.  Timed rounds alternate the two
clients; the table shows medians and the spread (min-max) of each side.

    python -m benchmarks.run bulk                              # 100,000 rows, 3 rounds per side
    python -m benchmarks.bench_bulk --rows 1000000 --rounds 2  # the 1M-row table (a few minutes)
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from authkit.salesforce import Bulk, SalesforceClient
from authkit.testing._org_process import OrgProcess
from benchmarks.harness import Table

ROUNDS = 3
PAGE = 50_000  # query rows per result page, for both clients (simple-salesforce's default)


def _rows(count: int) -> list[dict[str, str]]:
    return [{"Name": f"Item {n}", "Value__c": f"{n}, \"quoted\" value {n % 97}"} for n in range(count)]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _mb(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def _spread(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})"


class _Sides:
    """The two clients on one org process."""

    def __init__(self, org: OrgProcess) -> None:
        from simple_salesforce.bulk2 import SFBulk2Handler

        self.org = org
        self.client = SalesforceClient(org.auth())
        self.bulk = Bulk(self.client, poll_interval=0.1)
        version = self.client.api_version
        # simple-salesforce builds https:// URLs from an instance; its Bulk 2.0 handler takes the URL as given.
        self.peer = SFBulk2Handler(org.auth().access_token(), f"{org.instance_url}/services/data/v{version}/jobs/")

    def ours_load(self, rows: Any) -> None:
        result = self.bulk.insert("Item__c", rows)
        assert result.records_failed == 0

    def peer_load(self, rows: list[dict[str, str]]) -> None:
        results = self.peer.Item__c.insert(records=rows, wait=0.1)
        assert sum(int(r["numberRecordsFailed"]) for r in results) == 0

    def ours_extract(self) -> int:
        return sum(1 for _ in self.bulk.query("SELECT Id, Name, Value__c FROM Item__c", max_records=PAGE))

    def peer_extract(self) -> int:
        count = 0
        for page in self.peer.Item__c.query("SELECT Id, Name, Value__c FROM Item__c", max_records=PAGE, wait=0.1):
            count += sum(1 for _ in csv.DictReader(io.StringIO(page)))
        return count


def _requests(org: OrgProcess, fn: Callable[[], object]) -> dict[str, int]:
    before = org.counters()
    fn()
    after = org.counters()
    return {key: after[key] - before[key] for key in after}


def _describe(counts: dict[str, int]) -> str:
    return (f"{counts['requests']} requests: {counts['jobs_created']} job(s), {counts['uploads']} upload(s), "
            f"{counts['job_polls']} poll(s), {counts['result_requests']} result page(s)")


def bench(rows: int, rounds: int = ROUNDS) -> None:
    """The two clients in alternating rounds on ``rows`` rows; prints the table."""
    table = Table(f"Bulk API 2.0, {rows:,} rows (baseline: simple-salesforce {_peer_version()} Bulk 2.0)")
    data = _rows(rows)
    with OrgProcess() as org:
        sides = _Sides(org)
        load_ours: list[float] = []
        load_peer: list[float] = []
        for _ in range(rounds):  # alternate, clearing the org between loads
            org.clear()
            load_peer.append(_timed(lambda: sides.peer_load(data)))
            org.clear()
            load_ours.append(_timed(lambda: sides.ours_load(data)))
        assert org.count() == rows
        ours_rate, peer_rate = rows / statistics.median(load_ours), rows / statistics.median(load_peer)
        table.rate("ingest (dicts -> records)", ours_rate, peer_rate, ">= 1.0x peer throughput (ratio <= 1.00x)")
        table.note("  ingest time, authkit / peer", f"{_spread(load_ours)} / {_spread(load_peer)}")
        extract_ours: list[float] = []
        extract_peer: list[float] = []
        for _ in range(rounds):
            extract_peer.append(_timed(sides.peer_extract))
            extract_ours.append(_timed(sides.ours_extract))
        assert sides.ours_extract() == rows
        ours_rate, peer_rate = rows / statistics.median(extract_ours), rows / statistics.median(extract_peer)
        table.rate("extract (query -> dict rows)", ours_rate, peer_rate, ">= 1.0x peer throughput (ratio <= 1.00x)")
        table.note("  extract time, authkit / peer", f"{_spread(extract_ours)} / {_spread(extract_peer)}")

        org.clear()
        ours_mem = _peak(lambda: sides.ours_load(iter(data)))  # a one-pass iterator, as a generator would be
        org.clear()
        peer_mem = _peak(lambda: sides.peer_load(data))
        table.note("peak memory, ingest (input excluded)", f"authkit {_mb(ours_mem)} / peer {_mb(peer_mem)}",
                   "flat in the row count")
        ours_mem = _peak(sides.ours_extract)
        peer_mem = _peak(sides.peer_extract)
        table.note("peak memory, extract", f"authkit {_mb(ours_mem)} / peer {_mb(peer_mem)}", "flat in the row count")
        org.clear()
        counts = _requests(org, lambda: sides.ours_load(data))
        table.note("requests per load, authkit", _describe(counts))
        org.clear()
        counts = _requests(org, lambda: sides.peer_load(data))
        table.note("requests per load, peer", _describe(counts))
    table.print()


def _peer_version() -> str:
    from importlib.metadata import version

    return version("simple-salesforce")


def run(quick: bool) -> None:
    try:
        _peer_version()
    except Exception:
        print("\n## Bulk API 2.0: skipped (pip install -e '.[bench]' for simple-salesforce)")
        return
    bench(10_000 if quick else 100_000)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows (default 100,000)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"timed rounds per side (default {ROUNDS})")
    args = parser.parse_args()
    bench(args.rows, args.rounds)
