"""10,000 record creates, updates and deletes: ``sf.collections`` vs a loop of single calls vs simple-salesforce.

All three talk to the same FakeSalesforce over HTTP, running in a process of its own.  simple-salesforce has no sObject
Collections call of its own, so its fastest REST way is its ``restful()`` on
``composite/sobjects`` with the chunking done by hand (200 records per request) — the
same requests authkit sends (the same URLs; the same records, which it encodes its own way),
and both sides end with the same per-record results, so the ratio is the clients' own
overhead (plus the identical work of the fake org).  Its ``Account.create`` loop is the single-call way and
costs what authkit's loop does; the loop is measured on a tenth of the records and its
time scaled up (10,000 round trips per operation would take minutes on a shared machine).

Rounds alternate authkit / simple-salesforce (who goes first alternates too); medians, the
spread and each round's ratio are printed: wall time, and the client process's CPU time
(``time.process_time``: what each client costs, less sensitive to the load of a shared
machine).  The in-memory rows answer from a canned adapter instead of the org, so all that is
left is the clients' own work; they are CPU time too.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter

from authkit.salesforce import SalesforceClient, StaticTokenAuth
from authkit.testing import FakeSalesforce
from authkit.testing.fake_rest import FakeRestApi
from benchmarks.harness import Table

CHUNK = 200


def _records(n: int) -> list[dict[str, Any]]:
    return [{"attributes": {"type": "Account"}, "Name": f"bench {i}"} for i in range(n)]


def _authkit_collections(sf: SalesforceClient, n: int) -> None:
    ids = [r["id"] for r in sf.collections.create(_records(n))]
    updated = sf.collections.update({"attributes": {"type": "Account"}, "Id": i, "Industry": "Energy"} for i in ids)
    deleted = sf.collections.delete(ids)
    _check(ids, updated, deleted, n)


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
    # Each side ends with what authkit's calls return: every record's result, in input order
    # (a record that fails does not raise, on either side: its result is the only place to see it).
    updated: list[Any] = []
    for start in range(0, n, CHUNK):
        updated += ss.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
            {"attributes": {"type": "Account"}, "Id": i, "Industry": "Energy"} for i in ids[start:start + CHUNK]]})
    deleted: list[Any] = []
    for start in range(0, n, CHUNK):
        # The query in the path, as authkit sends it: with params= each comma goes as %2C, which
        # costs simple-salesforce (urlencode, then urllib3's slow path for a query with escapes)
        # 14% more instructions for the whole run.
        query = f"ids={','.join(ids[start:start + CHUNK])}&allOrNone=false"
        deleted += ss.restful(f"composite/sobjects?{query}", method="DELETE")
    _check(ids, updated, deleted, n)


def _check(ids: list[str], updated: list[Any], deleted: list[Any], n: int) -> None:
    """The same check on both sides' results (untimed work would differ otherwise)."""
    if not (len(ids) == len(updated) == len(deleted) == n and all(r["success"] for r in updated)
            and all(r["success"] for r in deleted)):
        raise AssertionError("every record was to be updated and deleted")


class _Org:
    """FakeSalesforce in a process of its own, so the org's work does not share a GIL with the
    clients being measured.  ``reset()`` empties it and says how many Accounts were left."""

    def __init__(self) -> None:
        self._process = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_collections", "--serve"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None and self._process.stdin is not None
        info = json.loads(self._process.stdout.readline())
        self.instance_url: str = info["instance_url"]
        self.token: str = info["token"]

    def reset(self) -> int:
        return int(self._ask("reset"))

    def cpu(self) -> float:
        """CPU seconds the org's process has used so far (every thread)."""
        return float(self._ask("cpu"))

    def _ask(self, command: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._process.stdout.readline()

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=30)


def _serve() -> None:
    with FakeSalesforce() as org:
        token = org.jwt_auth().access_token()
        print(json.dumps({"instance_url": org.instance_url, "token": token}), flush=True)
        for line in sys.stdin:
            if line.strip() == "reset":
                left = len(org.rest.records("Account")) if org.rest is not None else 0
                org.rest = FakeRestApi()
                print(left, flush=True)
            elif line.strip() == "cpu":
                print(time.process_time(), flush=True)


class _Counter:
    """Counts the HTTP requests a session sends (a response hook)."""

    def __init__(self, *sessions: requests.Session) -> None:
        self.count = 0
        for session in sessions:
            session.hooks["response"].append(self)

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.count += 1


class _CannedOrg(BaseAdapter):
    """Answers sObject Collections in memory — one success per record sent — so what is left to
    time is each client's own Python work (the answers cost both sides the same)."""

    _ID = "001000000000000AAA"

    def __init__(self) -> None:
        super().__init__()
        self._answers: dict[int, bytes] = {}

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: object = None,
             verify: object = True, cert: object = None, proxies: object = None) -> requests.Response:
        if request.method == "DELETE":
            # Decoded: simple-salesforce's params= sends the commas as %2C.
            count = parse_qs(urlsplit(request.url or "").query)["ids"][0].count(",") + 1
        else:
            body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
            count = body.count(b'"attributes"')
        answer = self._answers.get(count)
        if answer is None:
            answer = self._answers[count] = json.dumps(
                [{"id": self._ID, "success": True, "errors": []}] * count).encode()
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "application/json;charset=UTF-8"
        response._content = answer
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        return None


def _in_memory(n: int, rounds: int) -> tuple[list[float], list[float]]:
    """Client-side seconds of ``n`` creates + updates + deletes for authkit and simple-salesforce."""
    from simple_salesforce import Salesforce

    session = requests.Session()
    session.mount("http://", _CannedOrg())
    sf = SalesforceClient(StaticTokenAuth("00Dcanned!token", "http://127.0.0.1:9"), session=session)
    peer_session = requests.Session()
    peer_session.mount("http://", _CannedOrg())
    ss = Salesforce(instance_url="http://127.0.0.1:9", session_id="00Dcanned!token", version="62.0",
                    session=peer_session)
    ss.base_url = "http://127.0.0.1:9/services/data/v62.0/"
    ours: list[float] = []
    peer: list[float] = []
    for i in range(rounds):
        sides = [(ours, lambda: _authkit_collections(sf, n)), (peer, lambda: _simple_collections(ss, n))]
        for out, fn in sides if i % 2 == 0 else reversed(sides):
            start = time.process_time()
            fn()
            out.append(time.process_time() - start)
    return ours, peer


def _measure(org: _Org, counter: _Counter, fn: Callable[[], None]) -> tuple[float, float, float, int]:
    """Wall seconds, this process's CPU seconds, the org's CPU seconds and requests of ``fn()`` on an empty org."""
    org.reset()  # an empty org each time: the same work for every side
    before, org_cpu = counter.count, org.cpu()
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    org_cpu = org.cpu() - org_cpu
    requests_made = counter.count - before
    assert org.reset() == 0, "every record was to be deleted"
    return elapsed, cpu, org_cpu, requests_made


def _ratios(table: Table, what: str, ours: list[float], peer: list[float], goal: str) -> None:
    """A row of medians and one of the per-round ratios."""
    table.seconds(what, statistics.median(ours), statistics.median(peer), goal)
    ratios = sorted(o / p for o, p in zip(ours, peer, strict=True))
    table.note("  per-round ratios (same round)", ", ".join(f"{r:.2f}" for r in ratios),
               f"median {statistics.median(ratios):.2f}x")


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:,.0f} ms (min {min(values) * 1000:,.0f}, " \
           f"max {max(values) * 1000:,.0f})"


def run(quick: bool) -> None:
    n = 1_000 if quick else 10_000
    rounds = 3 if quick else 7
    table = Table(f"sObject Collections: {n:,} creates + updates + deletes (FakeSalesforce in its own process)")
    try:
        from simple_salesforce import Salesforce
    except ImportError:
        print("\n## sObject Collections: simple-salesforce is not installed (pip install -e '.[bench]'); skipped")
        return
    org = _Org()
    try:
        sf = SalesforceClient(StaticTokenAuth(org.token, org.instance_url))
        ss = Salesforce(instance_url=org.instance_url, session_id=org.token, version="62.0")
        ss.base_url = f"{org.instance_url}/services/data/v62.0/"  # it assumes https; the fake org is http
        counter = _Counter(sf.session, ss.session)
        _measure(org, counter, lambda: _authkit_collections(sf, CHUNK))  # warm both connection pools
        _measure(org, counter, lambda: _simple_collections(ss, CHUNK))
        ours: list[float] = []
        peer: list[float] = []
        ours_cpu: list[float] = []
        peer_cpu: list[float] = []
        ours_org: list[float] = []
        peer_org: list[float] = []
        requests_made = peer_requests = 0
        for i in range(rounds):
            # Alternate who goes first, so a slow spell on the machine does not always hit the same side.
            sides = [("ours", lambda: _authkit_collections(sf, n)), ("peer", lambda: _simple_collections(ss, n))]
            for name, fn in sides if i % 2 == 0 else reversed(sides):
                elapsed, cpu, org_cpu, made = _measure(org, counter, fn)
                if name == "ours":
                    ours.append(elapsed)
                    ours_cpu.append(cpu)
                    ours_org.append(org_cpu)
                    requests_made = made
                else:
                    peer.append(elapsed)
                    peer_cpu.append(cpu)
                    peer_org.append(org_cpu)
                    peer_requests = made
        loop_n = max(n // 10, 100)
        loop_time, _, _, loop_requests = _measure(org, counter, lambda: _authkit_loop(sf, loop_n))
        scale = n / loop_n
        _ratios(table, "collections vs simple-salesforce restful(composite/sobjects)", ours, peer,
                "<= 1.0x (authkit time / peer time)")
        _ratios(table, "  the same rounds, client CPU time", ours_cpu, peer_cpu, "<= 1.0x")
        _ratios(table, "  the same rounds, the org's CPU time", ours_org, peer_org, "the same work: ~1.0x")
        table.seconds("collections vs loop of single calls (scaled)", statistics.median(ours), loop_time * scale,
                      f"loop measured on {loop_n:,} records x {scale:.0f}")
        canned_ours, canned_peer = _in_memory(n, rounds)
        _ratios(table, "in-memory org, CPU time (client-side cost alone)", canned_ours, canned_peer, "<= 1.0x")
        table.note("requests, authkit collections", f"{requests_made:,} ({requests_made // 3:,} per operation)",
                   f"goal: {n // CHUNK:,} per operation")
        table.note("requests, simple-salesforce hand-chunked", f"{peer_requests:,}")
        table.note("requests, loop of single calls", f"{int(loop_requests * scale):,} (scaled)")
        table.note("authkit collections", _spread(ours))
        table.note("simple-salesforce", _spread(peer))
        sf.close()
    finally:
        org.close()
    table.print()


if __name__ == "__main__":
    if "--serve" in sys.argv:
        _serve()
