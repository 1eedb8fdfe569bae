"""N worker processes, one Salesforce token: ``python examples/multiprocess_workers.py [--workers 4]``

Each worker is its own process (as gunicorn workers, Celery workers or cron jobs are) with its
own ``JwtAuth`` and ``SalesforceClient``. They share nothing but a SQLite token store, and
still log in to Salesforce exactly once between them: the first one to need a token mints it
under ``token_store.lock()``, the others find it in the store. When the org ends the session,
one of them logs in again and the rest pick up the new token.

It runs against a local ``FakeSalesforce``; for a real org, give every worker the same
``JwtAuth(...)`` settings and the same ``token_store`` URL (SQLite on one host; PostgreSQL,
MySQL or Redis across hosts).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from authkit import open_storage
from authkit.salesforce import JwtAuth, SalesforceClient
from authkit.testing import FakeSalesforce

USERNAME = "integration@example.com"


def worker(number: int, store_url: str, client_id: str, private_key: str, login_url: str,
           start: Any, requests: int) -> int:
    """One worker process: wait for the starting gun, then make ``requests`` API calls."""
    with open_storage(store_url) as store:
        auth = JwtAuth(client_id, USERNAME, private_key, login_url=login_url, token_store=store)
        with SalesforceClient(auth) as client:
            start.wait()
            for _ in range(requests):
                client.get("limits")
    return number


def run_round(pool: Any, manager: Any, workers: int, args: tuple[object, ...], requests: int) -> None:
    """Every worker makes ``requests`` calls, all starting at the same moment."""
    start = manager.Event()
    results = [pool.apply_async(worker, (n, *args, start, requests)) for n in range(workers)]
    time.sleep(0.2)  # let the workers pick up their task, so they all race for the token
    start.set()
    for result in results:
        result.get(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5, help="API calls per worker and round")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeSalesforce(token_delay=0.2) as org:
        store_url = f"sqlite:///{Path(tmp) / 'tokens.db'}"
        app = org.register_jwt_app(USERNAME)
        assert app.private_key_pem is not None
        args = (store_url, app.client_id, app.private_key_pem, org.login_url)
        print(f"{options.workers} worker processes, one SQLite token store ({store_url})")

        ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like separate servers
        with ctx.Manager() as manager, ctx.Pool(options.workers) as pool:
            run_round(pool, manager, options.workers, args, options.requests)
            print(f"round 1: {options.workers * options.requests} API calls, "
                  f"token_requests == {org.token_requests}")

            org.expire_sessions()  # Salesforce ends every session: each worker gets a 401 next
            run_round(pool, manager, options.workers, args, options.requests)
            print(f"round 2 (after the org expired every session): token_requests == {org.token_requests}")
        if org.token_requests != 2:
            sys.exit(f"expected 2 token requests in total, got {org.token_requests}")


if __name__ == "__main__":
    main()
