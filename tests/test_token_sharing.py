"""The shared token store: every session, thread and process that shares a store mints one
token between them, and a rejected token is replaced once (against FakeSalesforce, on every
backend across processes)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from authkit.models import AuthToken
from authkit.salesforce import AuthSession, JwtAuth, RefreshTokenAuth
from authkit.salesforce._token_store import shared_token_id
from authkit.storage import AuthStorage, MemoryStorage, open_storage
from authkit.testing import ConnectedApp, FakeSalesforce
from tests.auth_sessions import call_api, in_threads, make, refused
from tests.backends import drop_redis_keys
from tests.clock import FakeClock
from tests.services import MYSQL_URL, POSTGRES_URL, REDIS_URL, require, unique_prefix


@pytest.fixture
def org(clock: FakeClock) -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=clock) as fake:
        yield fake


@pytest.fixture
def app(org: FakeSalesforce) -> ConnectedApp:
    return org.register_jwt_app(run_as=org.default_user.username)


# -- the shared token store --------------------------------------------------------------------


def test_token_ids_are_stable_and_per_identity(org: FakeSalesforce, app: ConnectedApp) -> None:
    store = MemoryStorage()
    a = make("jwt", org, app, token_store=store)
    b = make("jwt", org, app, token_store=store)
    assert isinstance(a, JwtAuth) and a.token_id == b.token_id
    assert a.token_id == shared_token_id("jwt", org.login_url, app.client_id, org.default_user.username)
    org.add_user("second@example.com")
    assert app.private_key_pem is not None
    c = JwtAuth(app.client_id, "second@example.com", app.private_key_pem, login_url=org.login_url, token_store=store)
    d = make("password", org, app, token_store=store)
    e = make("client_credentials", org, app, token_store=store)
    ids = {a.token_id, c.token_id, d.token_id, e.token_id}
    assert len(ids) == 4
    tokens = {a.access_token(), b.access_token(), c.access_token(), d.access_token(), e.access_token()}
    assert len(tokens) == 4 and org.token_requests == 4
    stored = store.get_token(a.token_id or "")
    assert isinstance(stored, AuthToken)
    assert stored.user_id == org.default_user.username and stored.client_id == app.client_id
    assert stored.metadata["instance_url"] == org.instance_url and stored.metadata["flow"] == "jwt"
    assert stored.scopes == ["api", "refresh_token"] and stored.expires_at is None


def test_invalidate_clears_the_stored_token_only_if_it_still_holds_it(
    org: FakeSalesforce, app: ConnectedApp
) -> None:
    store = MemoryStorage()
    a = make("jwt", org, app, token_store=store)
    b = make("jwt", org, app, token_store=store)
    old = a.access_token()
    assert b.access_token() == old and org.token_requests == 1
    a.invalidate(old)
    new = a.access_token()
    assert org.token_requests == 2
    b.invalidate(old)  # b's 401 arrives later: the store already holds `new`
    assert b.access_token() == new and org.token_requests == 2
    stored = store.get_token(a.token_id or "")
    assert stored is not None and stored.access_token == new and not stored.metadata.get("invalidated")
    b.invalidate(new)
    stored = store.get_token(a.token_id or "")
    assert stored is not None and stored.metadata.get("invalidated") and stored.expires_at is not None


def test_many_sessions_sharing_a_store_mint_once(org: FakeSalesforce, app: ConnectedApp) -> None:
    """8 'processes' (sessions sharing only the store) x 8 threads, as with many workers."""
    store = MemoryStorage()
    sessions = [make("jwt", org, app, token_store=store) for _ in range(8)]
    org.token_delay = 0.2
    first = in_threads(64, _round_robin(sessions))
    assert org.token_requests == 1 and len(set(first)) == 1
    org.expire_sessions()
    second = in_threads(64, _round_robin(sessions))
    assert not [r for r in second if isinstance(r, Exception)]
    assert org.token_requests == 2 and len(set(second)) == 1


def test_waiting_too_long_for_another_minter_is_an_authentication_error(
    org: FakeSalesforce, app: ConnectedApp
) -> None:
    store = MemoryStorage()
    auth = make("jwt", org, app, token_store=store, lock_timeout=0.2)
    assert isinstance(auth, JwtAuth) and auth._shared is not None
    held = threading.Event()
    release = threading.Event()

    def other_process_minting() -> None:
        assert auth._shared is not None
        with store.lock(auth._shared.lock_name):
            held.set()
            release.wait(10)

    holder_errors: list[BaseException] = []

    def run_holder() -> None:
        try:
            other_process_minting()
        except BaseException as exc:
            holder_errors.append(exc)

    holder = threading.Thread(target=run_holder)
    holder.start()
    try:
        assert held.wait(10), holder_errors
        error = refused(auth)
        assert "timed out" in str(error) and isinstance(error.__cause__, TimeoutError)
        assert org.token_requests == 0
    finally:
        release.set()
        holder.join()
    assert holder_errors == []
    assert auth.access_token() and org.token_requests == 1


def test_an_encrypted_token_store_keeps_tokens_out_of_the_inner_store(org: FakeSalesforce) -> None:
    from authkit.storage.encrypted import EncryptedStorage, generate_key

    rotating = org.register_app(rotate_refresh_tokens=True)
    inner = MemoryStorage()
    store = EncryptedStorage(inner, [generate_key()])
    rt = org.issue_refresh_token(rotating.client_id)
    a = RefreshTokenAuth(rotating.client_id, rt, login_url=org.login_url, token_store=store)
    b = RefreshTokenAuth(rotating.client_id, rt, login_url=org.login_url, token_store=store)
    token = a.access_token()
    assert b.access_token() == token and org.token_requests == 1
    a.invalidate(token)
    b.invalidate(token)
    assert a.access_token() == b.access_token() != token and org.token_requests == 2
    raw = inner.get_token(a.token_id or "")
    stored = store.get_token(a.token_id or "")
    assert raw is not None and stored is not None and stored.refresh_token
    assert stored.access_token not in repr(vars(raw)) and stored.refresh_token not in repr(vars(raw))


def _round_robin(sessions: list[AuthSession]) -> Callable[[], str]:
    counter = iter(range(10**6))
    lock = threading.Lock()

    def call() -> str:
        with lock:
            session = sessions[next(counter) % len(sessions)]
        return call_api(session)

    return call


# -- across processes ------------------------------------------------------------------------------


def _process_worker(
    store_url: str, prefix: str, login_url: str, client_id: str, username: str, private_key: str,
    barrier: Any, go: list[Any], results: Any,
) -> None:
    """One worker process: its own JwtAuth on the shared store, 8 threads per round."""
    try:
        with open_storage(store_url, prefix=prefix, create_schema=False) as store:
            auth = JwtAuth(client_id, username, private_key, login_url=login_url, token_store=store)
            for event in go:
                if not event.wait(60):
                    raise TimeoutError("the parent never started the round")
                barrier.wait(60)
                tokens = in_threads(8, lambda: call_api(auth))
                errors = [repr(t) for t in tokens if isinstance(t, Exception)]
                results.put(errors or sorted(set(tokens)))
    except Exception as exc:  # report instead of dying silently
        results.put([f"worker failed: {exc!r}"])


@contextmanager
def _store(kind: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A storage URL and a prefix of its own, with its schema created, dropped afterwards."""
    prefix = unique_prefix("sf")
    if kind == "sqlite":
        pytest.importorskip("authkit.storage.sql")
        url = f"sqlite:///{tmp_path / 'tokens.db'}"
    elif kind == "postgresql":
        pytest.importorskip("authkit.storage.sql")
        url = require(POSTGRES_URL, "PostgreSQL")
    elif kind == "mysql":
        pytest.importorskip("authkit.storage.sql")
        url = require(MYSQL_URL, "MariaDB/MySQL")
    else:
        pytest.importorskip("authkit.storage.redis")
        url = require(REDIS_URL, "Redis")
        prefix = prefix.rstrip("_") + ":"
    storage = open_storage(url, prefix=prefix)
    try:
        yield url, prefix
    finally:
        _drop(storage, url, prefix)


def _drop(storage: AuthStorage, url: str, prefix: str) -> None:
    try:
        if url.startswith("redis"):
            drop_redis_keys(storage._client, prefix)  # type: ignore[attr-defined]
        else:
            storage.drop_schema()  # type: ignore[attr-defined]
    finally:
        storage.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql", "redis"])
def test_processes_sharing_a_store_mint_once(kind: str, tmp_path: Path) -> None:
    """4 processes x 8 threads: 1 token request in total, and 1 more after the sessions expire."""
    with _store(kind, tmp_path) as (url, prefix), FakeSalesforce(token_delay=0.3) as org:
        app = org.register_jwt_app(org.default_user.username)
        assert app.private_key_pem is not None
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(4)
        go = [ctx.Event(), ctx.Event()]
        results = ctx.Queue()
        processes = [
            ctx.Process(target=_process_worker, args=(url, prefix, org.login_url, app.client_id,
                                                      org.default_user.username, app.private_key_pem,
                                                      barrier, go, results))
            for _ in range(4)
        ]
        for process in processes:
            process.start()
        try:
            go[0].set()
            first = [results.get(timeout=120) for _ in processes]
            assert all(len(r) == 1 and not r[0].startswith("worker failed") for r in first), first
            assert len({r[0] for r in first}) == 1 and org.token_requests == 1
            org.expire_sessions()
            go[1].set()
            second = [results.get(timeout=120) for _ in processes]
            assert all(len(r) == 1 for r in second), second
            assert len({r[0] for r in second}) == 1 and second[0][0] != first[0][0]
            assert org.token_requests == 2
        finally:
            for process in processes:
                process.join(30)
                if process.is_alive():
                    process.kill()
