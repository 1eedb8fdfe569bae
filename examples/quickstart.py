"""authkit in one minute: ``pip install -e . && python examples/quickstart.py``

Runs entirely on this machine: a local fake Salesforce org (``authkit.testing.FakeSalesforce``,
a real HTTP server on 127.0.0.1) and a SQLite file in a temporary directory. It shows

1. tokens, sessions and key-value data stored and read back;
2. a Salesforce token minted once and shared by every thread and client through the store;
3. a session expiring;
4. a dead Salesforce session (401 INVALID_SESSION_ID) retried transparently;
5. the cleanup of expired records, as ``authkit cleanup`` runs it from cron.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from authkit import AuthToken, SessionData, open_storage
from authkit.salesforce import JwtAuth, SalesforceClient
from authkit.testing import FakeSalesforce


class MovableClock:
    """Real time plus an offset, so the demo can jump an hour ahead instead of waiting."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(timezone.utc) + self.offset

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.offset += timedelta(**delta)


def step(title: str) -> None:
    print(f"\n== {title}")


def main() -> None:
    started = time.monotonic()
    clock = MovableClock()
    with tempfile.TemporaryDirectory() as tmp, FakeSalesforce() as org:
        url = f"sqlite:///{Path(tmp) / 'authkit.db'}"
        print(f"storage:    {url}")
        print(f"salesforce: a local fake org at {org.login_url}")

        with open_storage(url, clock=clock) as storage:
            step("1. Tokens, sessions and key-value data in one store")
            storage.store_token(AuthToken("github:alice", "alice", "demo-access-token-not-a-real-one",
                                          scopes=["repo"], expires_at=clock() + timedelta(hours=1)))
            token = storage.get_token("github:alice")
            assert token is not None
            masked = repr(token).split(", refresh_token")[0] + ", ...)"
            print(f"store_token / get_token     -> {masked}")
            storage.store_session("sess-1", SessionData("sess-1", "alice", expires_at=clock() + timedelta(minutes=30),
                                                        data={"cart": [42]}))
            session = storage.get_session("sess-1")
            assert session is not None
            print(f"store_session / get_session -> user {session.user_id}, data {session.data}, "
                  f"expires in 30 minutes")
            storage.store_kv("rate:alice", b"17", ttl=60)
            print(f"store_kv / get_kv           -> {storage.get_kv('rate:alice')!r} (ttl 60 s)")

            step("2. Salesforce: one token, minted once, shared through the store")
            app = org.register_jwt_app("integration@example.com")
            assert app.private_key_pem is not None
            org.rest.insert("Account", {"Name": "Acme"})
            org.rest.insert("Account", {"Name": "Globex"})
            # Two clients stand in for two processes (gunicorn workers, a cron job): each has its
            # own JwtAuth, and they meet in the token store.
            clients = [
                SalesforceClient(JwtAuth(app.client_id, "integration@example.com", app.private_key_pem,
                                         login_url=org.login_url, token_store=storage))
                for _ in range(2)
            ]
            soql = "SELECT Id, Name FROM Account ORDER BY Name"
            with ThreadPoolExecutor(max_workers=16) as pool:
                results = list(pool.map(lambda i: list(clients[i % 2].query(soql)), range(32)))
            names = [r["Name"] for r in results[0]]
            print(f"32 queries from 16 threads on 2 clients -> {names}")
            print(f"token requests to Salesforce: {org.token_requests}  (minted once, shared by all)")

            step("3. A session expires")
            clock.advance(minutes=31)
            print(f"31 minutes later: get_session('sess-1') -> {storage.get_session('sess-1')}")
            print(f"                  get_kv('rate:alice')   -> {storage.get_kv('rate:alice')}")

            step("4. Salesforce ends the session: 401 INVALID_SESSION_ID, retried transparently")
            org.expire_sessions()
            accounts = list(clients[0].query(soql))
            unauthorized = sum(1 for _method, _path, status in org.requests_log if status == 401)
            print(f"query after the org killed every session -> {len(accounts)} accounts, no exception")
            print(f"the org answered 401 {unauthorized} time(s); the client logged in again and retried once")
            print(f"token requests to Salesforce: {org.token_requests}  (one new login, then the retry)")
            for client in clients:
                client.close()

            step("5. Cleanup, as `authkit cleanup` runs it from cron")
            stats = storage.stats()
            print(f"before: {stats['sessions_expired']} expired session(s), {stats['kv_expired']} expired kv "
                  f"entr{'y' if stats['kv_expired'] == 1 else 'ies'}")
            with storage.lock("authkit-cleanup", timeout=0):
                report = storage.cleanup_expired()
            print(f"cleanup_expired() -> deleted tokens {report.tokens}, sessions {report.sessions}, kv {report.kv}")

    print(f"\ndone in {time.monotonic() - started:.1f} s. Next: README.md, `authkit --help`.")


if __name__ == "__main__":
    sys.exit(main())
