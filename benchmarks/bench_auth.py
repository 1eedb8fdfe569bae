"""Salesforce AuthSession.access_token(): the warm cache, and the shared store read.

* warm cache: ``access_token()`` with a token cached, against the least any
  thread-safe cache can do (a bare attribute read under a lock).  With a
  ``token_store`` the warm path is the same: the store is not read per call.
* shared read: the first ``access_token()`` of a session whose token another
  process already stored (one ``get_token`` plus checks), against a bare
  ``storage.get_token`` of the same id.  SQLite always; Redis when it is up
  and ``authkit.storage.redis`` exists.

``python -m benchmarks.run auth [--quick]``
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections.abc import Callable
from typing import Any

from authkit.salesforce import JwtAuth
from authkit.storage import AuthStorage, open_storage
from authkit.testing import FakeSalesforce
from benchmarks.harness import Table, best_rate

REDIS_URL = os.environ.get("AUTHKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _key(pem: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(pem.encode(), password=None)


def _shared_read(table: Table, label: str, storage: AuthStorage, org: FakeSalesforce, n: int) -> None:
    app = org.register_jwt_app(org.default_user.username)
    assert app.private_key_pem is not None
    key = _key(app.private_key_pem)

    def session() -> JwtAuth:
        return JwtAuth(app.client_id, org.default_user.username, key, login_url=org.login_url, token_store=storage)

    first = session()
    first.access_token()  # minted once and stored; every later session adopts it
    token_id = first.token_id
    assert token_id is not None
    before = org.token_requests
    fresh = [session() for _ in range(n * 3)]
    it = iter(fresh)

    def adopt(_: int) -> object:
        return next(it).access_token()

    ours = best_rate(adopt, n)
    assert org.token_requests == before, "a session minted instead of adopting the stored token"
    table.rate(f"{label}: first access_token() (store read)", ours,
               best_rate(lambda _: storage.get_token(token_id), n), "baseline: bare get_token")
    warm = fresh[0]
    table.rate(f"{label}: warm access_token()", best_rate(lambda _: warm.access_token(), n * 50),
               best_rate(lambda _: first.access_token(), n * 50), "baseline: same, no store")


def _redis_storage() -> tuple[AuthStorage, Callable[[], None]] | None:
    try:
        import redis

        import authkit.storage.redis  # noqa: F401
    except ImportError:
        return None
    prefix = f"akbench{uuid.uuid4().hex[:8]}:"
    try:
        storage = open_storage(REDIS_URL, prefix=prefix)
    except Exception:
        return None

    def cleanup() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        storage.close()

    return storage, cleanup


def run(quick: bool) -> None:
    n = 200_000 if quick else 2_000_000
    table = Table("Salesforce AuthSession.access_token()")
    with FakeSalesforce() as org:
        auth = org.jwt_auth()
        token = auth.access_token()
        lock = threading.Lock()

        class Holder:
            value = token

        holder = Holder()

        def bare(_: int) -> object:
            with lock:
                return holder.value

        table.rate("warm cache, no store", best_rate(lambda _: auth.access_token(), n), best_rate(bare, n),
                   "within 3x of an attribute read under a lock")
        aged = org.jwt_auth(max_token_age=3600)
        aged.access_token()
        table.rate("warm cache, max_token_age set", best_rate(lambda _: aged.access_token(), n), best_rate(bare, n),
                   "within 3x")

        m = 300 if quick else 3000
        with tempfile.TemporaryDirectory() as tmp:
            prefix = f"akbench{uuid.uuid4().hex[:8]}_"
            with open_storage(f"sqlite:///{tmp}/tokens.db", prefix=prefix) as sqlite:
                _shared_read(table, "sqlite", sqlite, org, m)
        redis_storage = _redis_storage()
        if redis_storage is None:
            table.note("redis", "skipped: authkit.storage.redis or the Redis server is not available")
        else:
            storage, cleanup = redis_storage
            try:
                _shared_read(table, "redis", storage, org, m)
            finally:
                cleanup()
    table.print()
