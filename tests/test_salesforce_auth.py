"""Salesforce auth sessions against a real local org (FakeSalesforce): every flow, every
error, single-flight under threads, the shared token store across processes, no leaked secrets."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from authkit.errors import AuthenticationError, ConfigurationError
from authkit.models import AuthToken
from authkit.salesforce import (
    AuthSession,
    ClientCredentialsAuth,
    JwtAuth,
    PasswordAuth,
    RefreshTokenAuth,
    StaticTokenAuth,
)
from authkit.salesforce._oauth import normalize_url
from authkit.salesforce._token_store import shared_token_id
from authkit.salesforce.auth import default_audience
from authkit.storage import AuthStorage, MemoryStorage, open_storage
from authkit.testing import ConnectedApp, FakeSalesforce
from tests.auth_sessions import make
from tests.clock import FakeClock
from tests.services import MYSQL_URL, POSTGRES_URL, REDIS_URL, require, unique_prefix

FLOWS = ["jwt", "refresh_token", "client_credentials", "password"]


@pytest.fixture
def org(clock: FakeClock) -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=clock) as fake:
        yield fake


@pytest.fixture
def app(org: FakeSalesforce) -> ConnectedApp:
    return org.register_jwt_app(run_as=org.default_user.username)


def call_api(auth: AuthSession) -> str:
    """What SalesforceClient does: use the token; on a rejection invalidate it and retry once."""
    token = auth.access_token()
    response = requests.get(auth.instance_url + "/services/oauth2/userinfo",
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if response.status_code == 403:
        auth.invalidate(token)
        token = auth.access_token()
        response = requests.get(auth.instance_url + "/services/oauth2/userinfo",
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return token


def in_threads(n: int, fn: Callable[[], Any]) -> list[Any]:
    """Run ``fn`` in ``n`` threads released together; return results (or exceptions)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# -- the contract --------------------------------------------------------------------


def test_auth_session_is_abstract_with_a_no_op_invalidate() -> None:
    with pytest.raises(TypeError):
        AuthSession()  # type: ignore[abstract]

    class Fixed(AuthSession):
        def access_token(self) -> str:
            return "t"

        @property
        def instance_url(self) -> str:
            return "https://x.my.salesforce.com"

    fixed = Fixed()
    fixed.invalidate("t")
    assert fixed.access_token() == "t"
    with pytest.raises(TypeError):
        fixed.invalidate(None)  # type: ignore[arg-type]


def test_static_token_auth() -> None:
    auth = StaticTokenAuth("00Dxx!secret-static", "https://acme.my.salesforce.com/")
    assert auth.instance_url == "https://acme.my.salesforce.com"
    assert auth.access_token() == "00Dxx!secret-static"
    auth.invalidate("00Dxx!secret-static")  # cannot refresh: still the same token
    assert auth.access_token() == "00Dxx!secret-static"
    assert "secret-static" not in repr(auth)
    with pytest.raises(ValueError):
        StaticTokenAuth("", "https://acme.my.salesforce.com")
    with pytest.raises(TypeError):
        StaticTokenAuth(None, "https://acme.my.salesforce.com")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StaticTokenAuth("t", "http://acme.my.salesforce.com")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://login.salesforce.com", "https://login.salesforce.com"),
        ("https://Acme.My.Salesforce.com/", "https://acme.my.salesforce.com"),
        ("https://acme.my.salesforce.com:8443", "https://acme.my.salesforce.com:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:9", "http://[::1]:9"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url, "login_url") == expected


@pytest.mark.parametrize(
    "url",
    ["http://login.salesforce.com", "ftp://x", "login.salesforce.com", "https://x.com/services",
     "https://x.com?a=1", "https://user:pw@x.com", "https://x.com:99999", ""],
)
def test_normalize_url_rejects(url: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize_url(url, "login_url")
    assert "pw" not in str(info.value) or "user:pw" not in str(info.value)


@pytest.mark.parametrize(
    ("login_url", "audience"),
    [
        ("https://login.salesforce.com", "https://login.salesforce.com"),
        ("https://test.salesforce.com", "https://test.salesforce.com"),
        ("https://acme.my.salesforce.com", "https://login.salesforce.com"),
        ("https://acme--uat.sandbox.my.salesforce.com", "https://test.salesforce.com"),
        ("https://acme.my.site.com", "https://acme.my.site.com"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_default_jwt_audience(login_url: str, audience: str) -> None:
    assert default_audience(login_url) == audience


# -- every flow: happy path ----------------------------------------------------------------


@pytest.mark.parametrize("flow", FLOWS)
def test_flow_mints_once_and_caches(flow: str, org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make(flow, org, app)
    token = call_api(auth)
    assert auth.instance_url == org.instance_url
    assert auth.access_token() == token and call_api(auth) == token
    assert org.token_requests == 1
    assert token not in repr(auth) and app.client_secret not in repr(auth)


def test_instance_url_before_any_token_mints_one(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app)
    assert auth.instance_url == org.instance_url
    assert org.token_requests == 1
    auth.access_token()
    assert org.token_requests == 1


def test_jwt_assertion_claims(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app)
    assert isinstance(auth, JwtAuth)
    form = auth._grant()
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert jwt.get_unverified_header(form["assertion"])["alg"] == "RS256"
    claims = jwt.decode(form["assertion"], options={"verify_signature": False})
    assert claims["iss"] == app.client_id and claims["sub"] == org.default_user.username
    assert claims["aud"] == org.login_url
    assert time.time() < claims["exp"] <= time.time() + 181


def test_jwt_private_key_forms(org: FakeSalesforce, app: ConnectedApp, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = app.private_key_pem
    assert pem is not None
    key_file = tmp_path / "server.key"
    key_file.write_text(pem)
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"open sesame"))
    enc_file = tmp_path / "enc.key"
    enc_file.write_bytes(encrypted)
    user = org.default_user.username
    for private_key, passphrase in [(pem, None), (pem.encode(), None), (str(key_file), None), (key_file, None),
                                    (encrypted, "open sesame"), (enc_file, b"open sesame")]:
        auth = JwtAuth(app.client_id, user, private_key, login_url=org.login_url, passphrase=passphrase)
        assert auth.access_token()


def test_jwt_private_key_errors_never_show_the_key(org: FakeSalesforce, app: ConnectedApp, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = app.private_key_pem
    assert pem is not None
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"right"))
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    broken = pem[:200] + "garbage" + pem[220:]
    cases: list[tuple[Any, Any]] = [
        (encrypted, None), (encrypted, "wrong"), (pem, "unneeded"), (ec_pem, None), (broken, None),
        (str(tmp_path / "missing.key"), None),
    ]
    for private_key, passphrase in cases:
        with pytest.raises(ConfigurationError) as info:
            JwtAuth(app.client_id, "u@example.com", private_key, login_url=org.login_url, passphrase=passphrase)
        text = f"{info.value} {info.value!r} {info.value.__cause__!r}"
        assert "BEGIN" not in text and pem[40:80] not in text
    with pytest.raises(TypeError):
        JwtAuth(app.client_id, "u@example.com", 12345, login_url=org.login_url)  # type: ignore[arg-type]


def test_jwt_audience_override(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app, audience="https://community.example.com")
    with pytest.raises(AuthenticationError) as info:
        auth.access_token()
    assert (info.value.error, info.value.error_description) == ("invalid_grant", "audience is invalid")
    org.jwt_audiences.add("https://community.example.com")
    assert auth.access_token()


def test_bad_arguments(org: FakeSalesforce, app: ConnectedApp) -> None:
    with pytest.raises(ValueError):
        make("jwt", org, app, max_token_age=0)
    with pytest.raises(TypeError):
        make("jwt", org, app, max_token_age="1h")
    with pytest.raises(TypeError):
        make("jwt", org, app, on_refresh_token="print")
    with pytest.raises(TypeError):
        make("jwt", org, app, token_store="sqlite://")
    with pytest.raises(TypeError):
        make("jwt", org, app, session=object())
    with pytest.raises(ValueError):
        make("jwt", org, app, timeout=0)
    with pytest.raises(ValueError):
        make("jwt", org, app, retries=-1)
    with pytest.raises(ValueError):
        JwtAuth("c", "u", app.private_key_pem or "", login_url="http://login.salesforce.com")
    with pytest.raises(ValueError):
        PasswordAuth("c", "s", "", "p", login_url=org.login_url)
    with pytest.raises(TypeError):
        ClientCredentialsAuth("c", None, org.login_url)  # type: ignore[arg-type]


# -- errors ------------------------------------------------------------------------------


def refused(auth: AuthSession) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        auth.access_token()
    return info.value


def test_jwt_errors(org: FakeSalesforce, app: ConnectedApp) -> None:
    assert app.private_key_pem is not None
    unknown_client = JwtAuth("3MVG9nope", org.default_user.username, app.private_key_pem, login_url=org.login_url)
    error = refused(unknown_client)
    assert (error.error, error.error_description, error.status_code) == (
        "invalid_client_id", "client identifier invalid", 400)
    assert "invalid_client_id" in str(error)
    unknown_user = JwtAuth(app.client_id, "ghost@example.com", app.private_key_pem, login_url=org.login_url)
    assert refused(unknown_user).error_description == "user hasn't approved this consumer"
    other = org.register_jwt_app()
    assert other.private_key_pem is not None
    wrong_key = JwtAuth(app.client_id, org.default_user.username, other.private_key_pem, login_url=org.login_url)
    assert refused(wrong_key).error_description == "invalid assertion"


def test_refresh_token_errors(org: FakeSalesforce, app: ConnectedApp) -> None:
    error = refused(make("refresh_token", org, app, refresh_token="5Aep861bogus"))
    assert (error.error, error.error_description) == ("invalid_grant", "expired access/refresh token")
    error = refused(make("refresh_token", org, app, client_secret="wrong"))
    assert (error.error, error.error_description) == ("invalid_client", "invalid client credentials")


def test_client_credentials_and_password_errors(org: FakeSalesforce, app: ConnectedApp) -> None:
    cc = ClientCredentialsAuth(app.client_id, "wrong", org.login_url)
    assert refused(cc).error == "invalid_client"
    no_run_as = org.register_app()
    cc = ClientCredentialsAuth(no_run_as.client_id, no_run_as.client_secret, org.login_url)
    assert refused(cc).error_description == "no client credentials user enabled"
    user = org.default_user
    pw = PasswordAuth(app.client_id, app.client_secret, user.username, user.password, "", login_url=org.login_url)
    error = refused(pw)
    assert (error.error, error.error_description, error.status_code) == (
        "invalid_grant", "authentication failure", 400)


@pytest.mark.parametrize("flow", FLOWS)
def test_a_bad_credential_never_loops(flow: str, org: FakeSalesforce, app: ConnectedApp) -> None:
    """One call, one request; 64 threads queued behind a failing mint share its failure."""
    org.inject_token_error(400, "invalid_grant", "authentication failure", count=1000)
    auth = make(flow, org, app)
    refused(auth)
    assert org.token_requests == 1
    org.token_delay = 0.3
    results = in_threads(64, auth.access_token)
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert org.token_requests == 2
    refused(auth)  # a later call tries again (once): the caller decides when to give up
    assert org.token_requests == 3


@pytest.mark.parametrize("flow", FLOWS)
def test_signature_mismatch(flow: str, org: FakeSalesforce, app: ConnectedApp) -> None:
    org.tamper_signatures = True
    options = {"client_secret": app.client_secret} if flow == "jwt" else {}
    error = refused(make(flow, org, app, **options))
    assert error.error == "invalid_signature" and "signature" in str(error)
    if flow == "jwt":  # without the secret there is nothing to verify with
        assert make("jwt", org, app).access_token()


# -- transient failures, redirects, timeouts -------------------------------------------------


@pytest.mark.parametrize("flow", ["jwt", "client_credentials", "password"])
def test_transient_failures_are_retried_with_bounded_backoff(
    flow: str, org: FakeSalesforce, app: ConnectedApp, caplog: pytest.LogCaptureFixture
) -> None:
    org.inject_token_error(503, body=b"<html>Maintenance</html>", count=1)
    org.drop_token_connections(1)
    with caplog.at_level(logging.WARNING, "authkit.salesforce"):
        assert make(flow, org, app).access_token()
    assert org.token_requests == 3
    assert caplog.text.count("retrying") == 2
    org.inject_token_error(500, body=b"", count=10)
    error = refused(make(flow, org, app, retries=2))
    assert error.status_code == 500 and error.error is None
    assert org.token_requests == 6


def test_a_refresh_grant_is_never_resent_once_it_may_have_reached_the_server(
    org: FakeSalesforce, app: ConnectedApp
) -> None:
    rotating = org.register_app(rotate_refresh_tokens=True)
    rt = org.issue_refresh_token(rotating.client_id)
    auth = RefreshTokenAuth(rotating.client_id, rt, rotating.client_secret, login_url=org.login_url, backoff=0.01)
    org.drop_token_connections(1)  # the server spent the refresh token, the answer got lost
    error = refused(auth)
    assert "not retried" in str(error) and org.token_requests == 1
    org.inject_token_error(503, body=b"", count=1)
    refused(make("refresh_token", org, app))
    assert org.token_requests == 2


def test_an_unsent_refresh_grant_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    auth = RefreshTokenAuth("3MVG9x", "5Aep861-the-refresh-token", login_url=f"http://127.0.0.1:{port}",
                            retries=2, backoff=0.01)
    with caplog.at_level(logging.WARNING, "authkit.salesforce"):
        error = refused(auth)
    assert caplog.text.count("retrying") == 2
    assert error.status_code is None and isinstance(error.__cause__, requests.ConnectionError)


def test_redirects_are_not_followed(org: FakeSalesforce, app: ConnectedApp) -> None:
    org.inject_token_error(302, headers={"Location": org.login_url + "/elsewhere"})
    error = refused(make("jwt", org, app))
    assert error.status_code == 302 and "redirect" in str(error)
    assert [entry[1] for entry in org.requests_log] == ["/services/oauth2/token"]


def test_token_endpoint_timeout(org: FakeSalesforce, app: ConnectedApp) -> None:
    org.token_delay = 1.0
    started = time.perf_counter()
    error = refused(make("jwt", org, app, timeout=0.2, retries=0))
    assert time.perf_counter() - started < 0.9
    assert isinstance(error.__cause__, requests.Timeout)


def test_malformed_success_responses(org: FakeSalesforce, app: ConnectedApp) -> None:
    org.inject_token_error(200, body=b"<html>not json</html>")
    assert "no access_token" in str(refused(make("jwt", org, app)))
    org.inject_token_error(200, body=b'{"access_token": "x", "instance_url": "http://evil.example.com"}')
    assert "instance_url" in str(refused(make("jwt", org, app)))
    org.inject_token_error(400, body=b"Bad Request")
    error = refused(make("jwt", org, app))
    assert error.status_code == 400 and error.error is None


# -- single flight and compare-and-swap ---------------------------------------------------------


@pytest.mark.parametrize("flow", FLOWS)
def test_64_threads_cold_then_expired_cause_one_request_each(
    flow: str, org: FakeSalesforce, app: ConnectedApp
) -> None:
    auth = make(flow, org, app)
    org.token_delay = 0.2
    first = in_threads(64, lambda: call_api(auth))
    assert org.token_requests == 1 and len(set(first)) == 1
    org.expire_sessions()
    second = in_threads(64, lambda: call_api(auth))
    assert not [r for r in second if isinstance(r, Exception)]
    assert org.token_requests == 2 and len(set(second)) == 1 and second[0] != first[0]


def test_invalidate_is_compare_and_swap(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app)
    token = auth.access_token()
    auth.invalidate("some-older-token")
    assert auth.access_token() == token and org.token_requests == 1
    auth.invalidate(token)
    new = auth.access_token()
    assert new != token and org.token_requests == 2
    auth.invalidate(token)  # a late 401 for the old token changes nothing
    assert auth.access_token() == new and org.token_requests == 2
    with pytest.raises(TypeError):
        auth.invalidate(None)  # type: ignore[arg-type]


def test_max_token_age(org: FakeSalesforce, app: ConnectedApp, clock: FakeClock) -> None:
    store = MemoryStorage(clock=clock)
    auth = make("jwt", org, app, max_token_age=600, clock=clock, token_store=store)
    token = auth.access_token()
    clock.advance(599)
    assert auth.access_token() == token
    clock.advance(2)
    renewed = auth.access_token()
    assert renewed != token and org.token_requests == 2
    stored = store.get_token(auth.token_id or "")
    assert stored is not None and stored.access_token == renewed and stored.expires_at is not None


# -- rotation ------------------------------------------------------------------------------------


def test_rotated_refresh_tokens_are_adopted_persisted_and_announced(org: FakeSalesforce) -> None:
    rotating = org.register_app(rotate_refresh_tokens=True)
    initial = org.issue_refresh_token(rotating.client_id)
    seen: list[str] = []
    also: list[str] = []
    store = MemoryStorage()
    auth = RefreshTokenAuth(rotating.client_id, initial, rotating.client_secret, login_url=org.login_url,
                            token_store=store, on_refresh_token=[seen.append, also.append])
    token = auth.access_token()
    assert len(seen) == 1 and seen == also and seen[0] != initial
    stored = store.get_token(auth.token_id or "")
    assert stored is not None and stored.refresh_token == seen[0] and stored.access_token == token
    auth.invalidate(token)
    auth.access_token()  # works only if the rotated token was adopted: `initial` is spent
    assert len(seen) == 2 and org.token_requests == 2
    stored = store.get_token(auth.token_id or "")
    assert stored is not None and stored.refresh_token == seen[1]

    # Another process configured with the (spent) initial token takes the newest one from the store.
    org.expire_sessions()
    other = RefreshTokenAuth(rotating.client_id, initial, rotating.client_secret, login_url=org.login_url,
                             token_store=store)
    assert other.token_id == auth.token_id
    call_api(other)
    assert org.token_requests == 3


def test_a_failing_refresh_token_callback_does_not_fail_the_login(
    org: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    rotating = org.register_app(rotate_refresh_tokens=True)

    def broken(_: str) -> None:
        raise RuntimeError("vault is down")

    auth = RefreshTokenAuth(rotating.client_id, org.issue_refresh_token(rotating.client_id), login_url=org.login_url,
                            on_refresh_token=broken)
    with caplog.at_level(logging.ERROR, "authkit.salesforce"):
        assert auth.access_token()
    assert "on_refresh_token callback failed" in caplog.text


def test_configured_refresh_token_is_tried_when_the_stored_one_is_refused(org: FakeSalesforce) -> None:
    app = org.register_app()
    old = org.issue_refresh_token(app.client_id)
    store = MemoryStorage()
    first = RefreshTokenAuth(app.client_id, old, login_url=org.login_url, token_store=store, username="u")
    first.invalidate(first.access_token())
    org.revoke(old)  # the user re-authorized: a new refresh token was configured everywhere
    new = org.issue_refresh_token(app.client_id)
    second = RefreshTokenAuth(app.client_id, new, login_url=org.login_url, token_store=store, username="u")
    assert second.access_token()
    stored = store.get_token(second.token_id or "")
    assert stored is not None and stored.refresh_token == new


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
    drop = getattr(storage, "drop_schema", None) or getattr(storage, "drop", None)
    try:
        if drop is not None:
            drop()
        elif url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_fresh_lock_and_connection_pool(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app)
    assert isinstance(auth, JwtAuth)
    token = auth.access_token()  # leaves a kept-alive connection in the pool
    parent_session = auth._endpoint.session
    with auth._mint_lock:  # as if a parent thread were minting at the moment of the fork
        pid = os.fork()
        if pid == 0:  # the child: exit code says what went wrong
            signal.alarm(30)  # a deadlocked child dies instead of hanging the suite
            code = 0
            try:
                code = 1 if auth._endpoint.session is parent_session else code
                code = 2 if auth.access_token() != token else code
                auth.invalidate(token)
                code = 3 if auth.access_token() == token else code
            except BaseException:
                code = 4
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert org.token_requests == 2
    assert auth.access_token() == token  # the parent is untouched


# -- secrets never leak ------------------------------------------------------------------------------


def test_no_secret_in_logs_reprs_or_errors(
    org: FakeSalesforce, app: ConnectedApp, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    rotating = org.register_app(rotate_refresh_tokens=True)
    initial_rt = org.issue_refresh_token(rotating.client_id)
    user = org.default_user
    assert app.private_key_pem is not None
    secrets = {app.client_secret, rotating.client_secret, user.password, user.security_token,
               user.password + user.security_token, initial_rt}
    secrets |= {line for line in app.private_key_pem.splitlines() if "-----" not in line}
    texts: list[str] = []
    rotated: list[str] = []
    store = MemoryStorage()
    with caplog.at_level(logging.DEBUG):
        sessions: list[AuthSession] = [
            make(flow, org, app, token_store=store) for flow in ("jwt", "client_credentials", "password")
        ]
        sessions.append(RefreshTokenAuth(rotating.client_id, initial_rt, rotating.client_secret,
                                         login_url=org.login_url, token_store=store, on_refresh_token=rotated.append))
        for auth in sessions:
            token = call_api(auth)
            secrets.add(token)
            auth.invalidate(token)
            secrets.add(call_api(auth))
            texts.append(repr(auth))
            assert isinstance(auth, JwtAuth | ClientCredentialsAuth | PasswordAuth | RefreshTokenAuth)
            if isinstance(auth, JwtAuth):
                secrets.add(auth._grant()["assertion"])
        secrets |= set(rotated)
        texts += [repr(t) for t in store.list_user_tokens(user.username)]
        # Every kind of failure, with the secrets in play.
        failing: list[AuthSession] = [
            make("password", org, app),
            PasswordAuth(app.client_id, app.client_secret, user.username, "wrong-" + user.password,
                         login_url=org.login_url),
            RefreshTokenAuth(rotating.client_id, initial_rt, rotating.client_secret, login_url=org.login_url),
            make("jwt", org, app, client_secret=app.client_secret),
        ]
        for auth in failing:
            org.tamper_signatures = auth is failing[0] or auth is failing[3]
            with pytest.raises(AuthenticationError) as info:
                auth.access_token()
            error: BaseException | None = info.value
            while error is not None:
                texts += [str(error), repr(error)]
                error = error.__cause__ or error.__context__
    texts.append(caplog.text)
    texts += [record.getMessage() for record in caplog.records]
    joined = "\n".join(texts)
    assert "eyJ" not in joined  # no JWT (assertion) anywhere
    leaked = [s for s in secrets if s and s in joined]
    assert not leaked, f"{len(leaked)} secret(s) leaked"
