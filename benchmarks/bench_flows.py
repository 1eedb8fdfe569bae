"""Mints per flow under concurrency: how many token requests a burst of threads causes.

For every minting flow (JWT, refresh token, client credentials, password, token
exchange), against FakeSalesforce with a slow token endpoint (50 ms, to widen
every race window):

* cold: 64 threads call ``access_token()`` on one fresh session at once;
* after a 401: 64 threads each ``invalidate(token)`` then ``access_token()``;
* shared store: 8 sessions (as 8 processes would build them) sharing one SQLite
  store, 8 threads each, cold.

The baseline is what a cache without single flight would send (one request
per thread); the goal is one request per burst.  The time column is the
burst's wall time against one lone mint (its ratio shows the waiters cost
nothing beyond the one request they share).

``python -m benchmarks.run flows [--quick]``
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from authkit.salesforce import (
    ClientCredentialsAuth,
    JwtAuth,
    PasswordAuth,
    RefreshTokenAuth,
    TokenExchangeAuth,
)
from authkit.storage import AuthStorage, open_storage
from authkit.testing import ConnectedApp, FakeSalesforce
from benchmarks.harness import Table

_SUBJECT = "bench-subject-token"


def _factory(flow: str, org: FakeSalesforce, app: ConnectedApp) -> Callable[..., Any]:
    user = org.default_user
    if flow == "jwt":
        assert app.private_key_pem is not None
        return lambda **o: JwtAuth(app.client_id, user.username, app.private_key_pem, login_url=org.login_url, **o)
    if flow == "refresh_token":
        refresh = org.issue_refresh_token(app.client_id)
        return lambda **o: RefreshTokenAuth(app.client_id, refresh, app.client_secret, org.login_url,
                                            username=user.username, **o)
    if flow == "client_credentials":
        return lambda **o: ClientCredentialsAuth(app.client_id, app.client_secret, org.login_url, **o)
    if flow == "password":
        return lambda **o: PasswordAuth(app.client_id, app.client_secret, user.username, user.password,
                                        user.security_token, login_url=org.login_url, **o)
    return lambda **o: TokenExchangeAuth(app.client_id, _SUBJECT, "access_token", login_url=org.login_url,
                                         client_secret=app.client_secret, username=user.username, **o)


def _burst(count: int, work: Callable[[int], object]) -> float:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait(60)
            work(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def _measure(table: Table, flow: str, threads: int, sessions: int, store: AuthStorage) -> None:
    with FakeSalesforce(token_delay=0.05) as org:
        app = org.register_jwt_app(run_as=org.default_user.username)
        org.add_subject_token(_SUBJECT)
        make = _factory(flow, org, app)

        lone = make()
        started = time.perf_counter()
        token = lone.access_token()
        one_mint = time.perf_counter() - started

        before = org.token_requests
        auth = make()
        seconds = _burst(threads, lambda _: auth.access_token())
        table.seconds(f"{flow}: {threads} threads cold -> {org.token_requests - before} request(s), "
                      f"naive {threads}", seconds, one_mint, "1 request")

        token = auth.access_token()
        before = org.token_requests

        def after_401(_: int) -> None:
            auth.invalidate(token)
            auth.access_token()

        seconds = _burst(threads, after_401)
        table.seconds(f"{flow}: {threads} threads after a 401 -> {org.token_requests - before} request(s), "
                      f"naive {threads}", seconds, one_mint, "1 request")

        before = org.token_requests
        shared = [make(token_store=store) for _ in range(sessions)]
        per = max(1, threads // sessions)
        seconds = _burst(sessions * per, lambda n: shared[n % sessions].access_token())
        table.seconds(f"{flow}: {sessions} sessions x {per} threads, one store -> "
                      f"{org.token_requests - before} request(s), naive {sessions * per}",
                      seconds, one_mint, "1 request")


def run(quick: bool) -> None:
    threads, sessions = (16, 4) if quick else (64, 8)
    table = Table("Mints per flow under concurrency (time: the burst vs one lone mint)")
    with tempfile.TemporaryDirectory() as tmp:
        with open_storage(f"sqlite:///{os.path.join(tmp, 'store.db')}") as store:
            for flow in ("jwt", "refresh_token", "client_credentials", "password", "token_exchange"):
                _measure(table, flow, threads, sessions, store)
    table.print()
