"""10,000 record creates, updates and deletes: ``sf.collections`` vs a loop of single calls vs simple-salesforce.

All three talk to the same FakeSalesforce over HTTP.  simple-salesforce has no sObject
Collections call of its own, so its fastest REST way is its ``restful()`` on
``composite/sobjects`` with the chunking done by hand (200 records per request) — the
same requests authkit sends, so the ratio is the clients' own overhead (plus the
identical work of the fake org).  Its ``Account.create`` loop is the single-call way and
costs what authkit's loop does; the loop is measured on a tenth of the records and its
time scaled up (10,000 round trips per operation would take minutes on a shared machine).

Rounds alternate authkit / simple-salesforce; medians and the spread are printed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from authkit.salesforce import SalesforceClient
from authkit.testing import FakeSalesforce
from authkit.testing.fake_rest import FakeRestApi
from benchmarks.harness import Table

CHUNK = 200


def _records(n: int) -> list[dict[str, Any]]:
    return [{"attributes": {"type": "Account"}, "Name": f"bench {i}"} for i in range(n)]


def _authkit_collections(sf: SalesforceClient, n: int) -> None:
    ids = [r["id"] for r in sf.collections.create(_records(n))]
    sf.collections.update({"attributes": {"type": "Account"}, "Id": i, "Industry": "Energy"} for i in ids)
    sf.collections.delete(ids)


def _authkit_loop(sf: SalesforceClient, n: int) -> None:
    accounts = sf.sobject("Account")
    ids = [accounts.create({"Name": f"bench {i}"})["id"] for i in range(n)]
    for record_id in ids:
        accounts.update(record_id, {"Industry": "Energy"})
    for record_id in ids:
        accounts.delete(record_id)


def _simple_collections(ss: Any, n: int) -> None:
    records = _records(n)
    ids: list[str] = []
    for start in range(0, n, CHUNK):
        answer = ss.restful("composite/sobjects", method="POST",
                            json={"allOrNone": False, "records": records[start:start + CHUNK]})
        ids += [r["id"] for r in answer]
    for start in range(0, n, CHUNK):
        ss.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
            {"attributes": {"type": "Account"}, "Id": i, "Industry": "Energy"} for i in ids[start:start + CHUNK]]})
    for start in range(0, n, CHUNK):
        ss.restful("composite/sobjects", method="DELETE",
                   params={"ids": ",".join(ids[start:start + CHUNK]), "allOrNone": "false"})


def _measure(org: FakeSalesforce, fn: Callable[[], None]) -> tuple[float, int]:
    org.rest = FakeRestApi()  # an empty org each time: the same work for every side
    before = len(org.requests_log)
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    assert org.rest.records("Account") == [], "every record was to be deleted"
    return elapsed, len(org.requests_log) - before


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:,.0f} ms (min {min(values) * 1000:,.0f}, " \
           f"max {max(values) * 1000:,.0f})"


def run(quick: bool) -> None:
    n = 1_000 if quick else 10_000
    rounds = 2 if quick else 5
    table = Table(f"sObject Collections: {n:,} creates + updates + deletes (FakeSalesforce on 127.0.0.1)")
    try:
        from simple_salesforce import Salesforce
    except ImportError:
        print("\n## sObject Collections: simple-salesforce is not installed (pip install -e '.[bench]'); skipped")
        return
    with FakeSalesforce() as org:
        auth = org.jwt_auth()
        sf = SalesforceClient(auth)
        ss = Salesforce(instance_url=auth.instance_url, session_id=auth.access_token(), version="62.0")
        ss.base_url = f"{auth.instance_url}/services/data/v62.0/"  # it assumes https; the fake org is http
        _measure(org, lambda: _authkit_collections(sf, CHUNK))  # warm both connection pools
        _measure(org, lambda: _simple_collections(ss, CHUNK))
        ours: list[float] = []
        peer: list[float] = []
        requests = peer_requests = 0
        for _ in range(rounds):
            elapsed, requests = _measure(org, lambda: _authkit_collections(sf, n))
            ours.append(elapsed)
            elapsed, peer_requests = _measure(org, lambda: _simple_collections(ss, n))
            peer.append(elapsed)
        loop_n = max(n // 10, 100)
        loop_time, loop_requests = _measure(org, lambda: _authkit_loop(sf, loop_n))
        scale = n / loop_n
        ours_median, peer_median = statistics.median(ours), statistics.median(peer)
        table.seconds("collections vs simple-salesforce restful(composite/sobjects)", ours_median, peer_median,
                      "<= 1.0x (ratio = authkit time / peer time)")
        table.seconds("collections vs loop of single calls (scaled)", ours_median, loop_time * scale,
                      f"loop measured on {loop_n:,} records x {scale:.0f}")
        table.note("requests, authkit collections", f"{requests:,} ({requests // 3:,} per operation)",
                   f"goal: {n // CHUNK:,} per operation")
        table.note("requests, simple-salesforce hand-chunked", f"{peer_requests:,}")
        table.note("requests, loop of single calls", f"{int(loop_requests * scale):,} (scaled)")
        table.note("authkit collections", _spread(ours))
        table.note("simple-salesforce", _spread(peer))
        sf.close()
    table.print()
